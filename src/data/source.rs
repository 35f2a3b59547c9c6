//! Where CIFAR-10 comes from, and loading it from there into memory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::cifar_binary::{self, BATCH_FOLDER, TRAIN_BATCHES};
use crate::data::digest::DigestAlgorithm;
use crate::data::download::{download_verified, ExpectedFile};
use crate::data::error::DataError;
use crate::data::file_tree::{join, DataOrigin, FileTree};
use crate::data::image_folder::{self, TEST_FOLDER, TRAIN_FOLDER};
use crate::data::image_set::ImageSet;

/// The canonical location of the official binary archive.
pub const CIFAR10_BINARY_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The official archive as its authors publish it (MD5 only: they give no SHA-256).
pub const CIFAR10_BINARY_ARCHIVE: ExpectedFile<'static> =
    ExpectedFile { length: Some(170_052_171), algorithm: DigestAlgorithm::Md5, digest: "c32a1d4ab5d03f1284b67883e8d87530" };
/// File name of the archive in a download cache folder.
pub const CIFAR10_BINARY_FILE_NAME: &str = "cifar-10-binary.tar.gz";
/// Labels are stored as u8.
pub const MAX_CLASSES: usize = 256;

/// Where to get CIFAR-10 from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The official binary archive, downloaded into (or found already verified in) `cache_dir`.
    Download { cache_dir: PathBuf },
    /// A local CIFAR-10 binary archive or folder, or an ImageFolder archive or folder, told apart by content.
    Local { path: PathBuf },
}

impl DataSource {
    /// The data at `path` when the user named some, else the official archive through the cache.
    pub fn local_or_download(path: Option<PathBuf>) -> Self {
        match path {
            Some(path) => DataSource::Local { path },
            None => DataSource::Download { cache_dir: vggq_core::places::cache_dir() },
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Download { cache_dir } => write!(f, "{CIFAR10_BINARY_URL} (cached in {})", cache_dir.display()),
            DataSource::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

/// What identifies the data a model was trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub origin: DataOrigin,
    /// Lowercase hex SHA-256; see `DataOrigin` for what it covers.
    pub sha256: String,
}

/// The digest and the source's name, not its full path: the fingerprint ends up in artifacts (ONNX
/// metadata), which must not change with the folder a checkout happens to live in.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |path: &std::path::Path| {
            path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
        };
        match &self.origin {
            DataOrigin::Archive(path) => write!(f, "sha256:{} {}", self.sha256, archive_origin(&name(path))),
            DataOrigin::Folder(path) => write!(f, "sha256:{} (listing of folder {})", self.sha256, name(path)),
        }
    }
}

/// How a fingerprint names an archive it covers.
fn archive_origin(file_name: &str) -> String {
    format!("(archive {file_name})")
}

/// CIFAR-10 in memory: 50,000 training and 10,000 test images for the real data set.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    pub train: ImageSet,
    pub test: ImageSet,
    /// Class names indexed by label (airplane ... truck for CIFAR-10).
    pub classes: Vec<String>,
    pub fingerprint: Fingerprint,
}

impl Cifar10 {
    pub fn image_counts(&self) -> ImageCounts {
        ImageCounts { train: self.train.len(), test: self.test.len() }
    }
}

/// How many training and test images a data set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageCounts {
    pub train: usize,
    pub test: usize,
}

impl ImageCounts {
    /// CIFAR-10's, which every profile's recipe is written for.
    pub const CIFAR10: ImageCounts = ImageCounts { train: 50_000, test: 10_000 };

    /// How data of these counts departs from CIFAR-10, `None` where it does not: a copy cut short (a
    /// batch file cut at a record's end reads as fewer images) or another data set, which trains
    /// another model than the recipe's.
    pub fn departure_from_cifar10(self) -> Option<String> {
        (self != Self::CIFAR10).then(|| {
            format!(
                "the data holds {} training and {} test images where CIFAR-10 has {} and {}",
                self.train,
                self.test,
                Self::CIFAR10.train,
                Self::CIFAR10.test
            )
        })
    }
}

/// What identifies the data at `source` without decoding it, for a step's key: the official archive by
/// the digest it is verified against, a local archive by its bytes, a folder by its files' (every file
/// read, as loading reads them).
pub fn source_digest(source: &DataSource) -> Result<String, DataError> {
    match source {
        DataSource::Download { .. } => Ok(format!("md5:{} (the official archive)", CIFAR10_BINARY_ARCHIVE.digest)),
        DataSource::Local { path } => {
            // Known as CIFAR-10 first: data of neither layout is not CIFAR-10, whatever its digest.
            let (tree, _) = FileTree::read(path, |tree| Layout::of(tree, path))?;
            Ok(tree.fingerprint().to_string())
        }
    }
}

/// What names a data digest's content: its `sha256:<hex>`, without the name the archive or folder had (a
/// renamed or linked copy of the data is the same data).
pub fn content_of(digest: &str) -> &str {
    digest.split_once(' ').map_or(digest, |(content, _)| content)
}

/// Whether the data at `source`, whose [`source_digest`] is `digest`, is the data a run recorded as
/// `dataset` (its [`Fingerprint`]): local data by that fingerprint's content ([`content_of`]); the official
/// archive, whose SHA-256 is known only once downloaded, by the name its download is saved under, so that
/// a run trained on other data is told before anything is downloaded.
pub fn is_recorded_as(source: &DataSource, digest: &str, dataset: &str) -> bool {
    match source {
        DataSource::Local { .. } => content_of(digest) == content_of(dataset),
        DataSource::Download { .. } => dataset.ends_with(&archive_origin(CIFAR10_BINARY_FILE_NAME)),
    }
}

/// Loads CIFAR-10 from `source`, downloading it first if asked to.
pub fn load(source: &DataSource) -> Result<Cifar10, DataError> {
    match source {
        DataSource::Download { cache_dir } => {
            let archive = cache_dir.join(CIFAR10_BINARY_FILE_NAME);
            download_verified(CIFAR10_BINARY_URL, &archive, &CIFAR10_BINARY_ARCHIVE)?;
            load_local(&archive)
        }
        DataSource::Local { path } => load_local(path),
    }
}

fn load_local(path: &Path) -> Result<Cifar10, DataError> {
    let (tree, layout) = FileTree::read(path, |tree| Layout::of(tree, path))?;
    match layout {
        Layout::Batches(folder) => cifar_binary::read(&tree, &folder),
        Layout::ImageFolder(root) => image_folder::read(&tree, &root),
    }
}

/// Which of CIFAR-10's layouts a tree holds, and where in it.
enum Layout {
    /// The binary batches, in this folder of the tree.
    Batches(String),
    /// `train/<class>/` and `test/<class>/` under this folder of the tree.
    ImageFolder(String),
}

impl Layout {
    /// The layout of `tree`, read from `path`, from its names alone; an error naming `path` and what it
    /// holds where it holds neither.
    fn of(tree: &FileTree, path: &Path) -> Result<Layout, DataError> {
        let root = tree.content_root(&[BATCH_FOLDER, TRAIN_BATCHES[0], TRAIN_FOLDER, TEST_FOLDER]);
        let batch_folder = join(&root, BATCH_FOLDER);
        if cifar_binary::is_batch_folder(tree, &batch_folder) {
            Ok(Layout::Batches(batch_folder))
        } else if cifar_binary::is_batch_folder(tree, &root) {
            Ok(Layout::Batches(root))
        } else if image_folder::is_image_folder(tree, &root) {
            Ok(Layout::ImageFolder(root))
        } else {
            Err(DataError::UnknownLayout { path: path.to_owned(), holds: holdings(&tree.entries(&root), &root) })
        }
    }
}

/// How an error says what `folder` (the tree's root where empty) holds: its first few `entries`.
fn holdings(entries: &[String], folder: &str) -> String {
    /// Enough names to see a misplaced archive or folder among them, few enough for one line.
    const SHOWN: usize = 6;
    let place = if folder.is_empty() { "it".to_owned() } else { format!("its one folder `{folder}/`") };
    let held = match entries.len() {
        0 => "nothing".to_owned(),
        count => {
            let named = entries.iter().take(SHOWN).map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
            if count > SHOWN {
                format!("{named} and {} more", count - SHOWN)
            } else {
                named
            }
        }
    };
    format!("{place} holds {held}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's `dataset`, as training records it, from an archive called `name`.
    fn recorded(name: &str) -> String {
        Fingerprint { origin: DataOrigin::Archive(PathBuf::from("/data").join(name)), sha256: "ab".repeat(32) }.to_string()
    }

    #[test]
    fn local_data_is_the_runs_by_its_content_and_the_download_by_its_name() {
        let jpeg = recorded("cifar10-jpeg.tar.gz");
        let local = DataSource::Local { path: PathBuf::from("elsewhere/cifar10-jpeg.tar.gz") };
        assert!(is_recorded_as(&local, &jpeg, &jpeg));
        assert!(is_recorded_as(&local, &recorded("my-cifar.tar.gz"), &jpeg), "same bytes, renamed");
        assert!(!is_recorded_as(&local, &jpeg.replace("ab", "cd"), &jpeg), "other bytes, same name");
        let download = DataSource::Download { cache_dir: PathBuf::from("cache") };
        let digest = source_digest(&download).unwrap();
        assert!(is_recorded_as(&download, &digest, &recorded(CIFAR10_BINARY_FILE_NAME)));
        assert!(!is_recorded_as(&download, &digest, &jpeg));
    }
}
