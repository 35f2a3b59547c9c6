//! A folder or `.tar.gz` archive read into memory as one tree of files, so that both dataset layouts are
//! parsed by one code path whatever container they come in (and archives need no extraction to disk).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use rayon::prelude::*;

use crate::data::digest::{DigestAlgorithm, DigestReader, Hasher};
use crate::data::error::DataError;
use crate::data::source::Fingerprint;

/// Largest single file accepted: the biggest real one is a 30 MB CIFAR-10 batch.
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Largest total of file contents accepted, so a malformed or hostile archive cannot exhaust memory.
const MAX_TREE_BYTES: u64 = 2 << 30;
/// Most files and folders accepted (CIFAR-10 as ImageFolder has 60,000 and 22): entries of no bytes
/// cost memory too, and a gzip of empty tar headers holds millions in a few megabytes.
const MAX_TREE_ENTRIES: usize = 1 << 18;
/// The first bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Where a tar header says what it is, and what it says ("ustar", in POSIX's and GNU's formats alike).
pub(crate) const TAR_MAGIC: (usize, &[u8]) = (257, b"ustar");

/// Where a dataset was read from, which decides what its SHA-256 fingerprint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOrigin {
    /// A `.tar.gz` file: fingerprint = SHA-256 of the archive's bytes.
    Archive(PathBuf),
    /// A folder: fingerprint = SHA-256 of its listing, one `sha256sum`-style line `<hex>  <relative path>\n`
    /// per file, sorted by path (`find . -type f | sort | xargs sha256sum` without the `./`).
    Folder(PathBuf),
}

impl DataOrigin {
    /// The archive or folder the data was read from.
    pub fn path(&self) -> &Path {
        match self {
            DataOrigin::Archive(path) | DataOrigin::Folder(path) => path,
        }
    }
}

/// Files (by `/`-separated relative path) and folders of a folder or archive.
pub(crate) struct FileTree {
    pub(crate) origin: DataOrigin,
    pub(crate) sha256: String,
    files: BTreeMap<String, Vec<u8>>,
    folders: BTreeSet<String>,
}

impl FileTree {
    /// Reads a folder or a `.tar.gz` archive, telling them apart by content rather than by name, and what
    /// `recognise` makes of its names (the layout it holds, or why none). `recognise` reads names only
    /// ([`has_file`](Self::has_file), the folders): a folder's files are read once their names are
    /// recognised, so that a folder of other things (a home folder named by mistake) is refused as such,
    /// not read first, up to the limits, and then refused for its size.
    pub(crate) fn read<T>(
        path: &Path,
        recognise: impl FnOnce(&FileTree) -> Result<T, DataError>,
    ) -> Result<(FileTree, T), DataError> {
        let metadata = fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => DataError::MissingSource { path: path.to_owned() },
            _ => DataError::Io { path: path.to_owned(), source },
        })?;
        if metadata.is_dir() {
            return Self::read_folder(path, recognise);
        }
        if metadata.len() == 0 {
            return Err(DataError::EmptyFile { path: path.to_owned() });
        }
        // Enough of the file to tell a gzip stream (its first bytes) from a tar archive left uncompressed.
        let mut head = Vec::new();
        File::open(path)
            .and_then(|file| file.take((TAR_MAGIC.0 + TAR_MAGIC.1.len()) as u64).read_to_end(&mut head))
            .map_err(DataError::io(path))?;
        if head.starts_with(&GZIP_MAGIC) {
            // A gzip stream lists its names only as it is read.
            let tree = Self::read_tar_gz(path)?;
            let recognised = recognise(&tree)?;
            return Ok((tree, recognised));
        }
        let plain_tar = head.get(TAR_MAGIC.0..) == Some(TAR_MAGIC.1);
        Err(DataError::NotGzip { path: path.to_owned(), plain_tar })
    }

    fn read_tar_gz(archive_path: &Path) -> Result<FileTree, DataError> {
        let file = File::open(archive_path).map_err(DataError::io(archive_path))?;
        let hashed = DigestReader::new(BufReader::new(file), DigestAlgorithm::Sha256);
        let mut archive = tar::Archive::new(GzDecoder::new(hashed));
        let mut tree = FileTree::empty(DataOrigin::Archive(archive_path.to_owned()));
        let mut total: u64 = 0;
        // Past opening the file, a read that fails almost always means the archive is cut short or
        // damaged; the error says so, with what the reader said (a disk's own error would show there).
        let damaged = || DataError::damaged_archive(archive_path, None);
        for (index, entry) in archive.entries().map_err(damaged())?.enumerate() {
            if index == MAX_TREE_ENTRIES {
                return Err(DataError::TooManyEntries { path: archive_path.to_owned(), limit: MAX_TREE_ENTRIES });
            }
            let mut entry = entry.map_err(damaged())?;
            let name = normalise(&entry.path().map_err(damaged())?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                tree.add_folder(&name);
            } else if kind.is_file() {
                let size = entry.size();
                total = total.saturating_add(size);
                let entry_path = archive_path.join(&name);
                if size > MAX_FILE_BYTES {
                    return Err(DataError::TooLarge { path: entry_path, limit: MAX_FILE_BYTES });
                }
                if total > MAX_TREE_BYTES {
                    return Err(DataError::TooLarge { path: archive_path.to_owned(), limit: MAX_TREE_BYTES });
                }
                // The size is bounded above, so the capacity is a safe hint.
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(DataError::damaged_archive(archive_path, Some(&name)))?;
                tree.add_file(name, bytes);
            }
            // Links and special entries carry no data either layout uses.
        }
        // gzip checks its CRC-32 only at the stream's end, which lies past the tar's end marker: read to it,
        // or bytes damaged inside a file would be taken as they came out (a JPEG's pixels, say).
        let mut decoder = archive.into_inner();
        std::io::copy(&mut decoder, &mut std::io::sink()).map_err(damaged())?;
        tree.sha256 = decoder.into_inner().finish().map_err(damaged())?.hex;
        Ok(tree)
    }

    fn read_folder<T>(
        root: &Path,
        recognise: impl FnOnce(&FileTree) -> Result<T, DataError>,
    ) -> Result<(FileTree, T), DataError> {
        // The names first, each file listed with no contents: what `recognise` reads.
        let mut tree = FileTree::empty(DataOrigin::Folder(root.to_owned()));
        let mut file_sizes = Vec::new();
        let listed = tree.list_folder(root, &mut file_sizes);
        let recognised = match (recognise(&tree), listed) {
            (Ok(recognised), Ok(())) => recognised,
            // A folder of other things is refused as such even where its listing stopped (at a link looping
            // back in a home folder named by mistake, say), with why it stopped: the names it holds decide,
            // and they are listed first.
            (Err(DataError::UnknownLayout { path, holds }), Err(stopped)) => {
                return Err(DataError::UnknownLayout { path, holds: format!("{holds} (listing it stopped early: {stopped})") })
            }
            (Err(refused), _) | (Ok(_), Err(refused)) => return Err(refused),
        };
        if let Some((name, _)) = file_sizes.iter().find(|(_, size)| *size > MAX_FILE_BYTES) {
            return Err(DataError::TooLarge { path: root.join(name), limit: MAX_FILE_BYTES });
        }
        let total = file_sizes.iter().fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
        if total > MAX_TREE_BYTES {
            return Err(DataError::TooLarge { path: root.to_owned(), limit: MAX_TREE_BYTES });
        }
        // Tens of thousands of small files: reading them in parallel hides the per-file latency.
        let contents: Vec<(String, Vec<u8>)> = file_sizes
            .into_par_iter()
            .map(|(name, _)| {
                let path = root.join(&name);
                fs::read(&path).map(|bytes| (name, bytes)).map_err(DataError::io(path))
            })
            .collect::<Result<_, _>>()?;
        tree.files.extend(contents);
        tree.sha256 = tree.listing_sha256();
        Ok((tree, recognised))
    }

    /// Lists the folder `root` into this tree, its files with no contents and their sizes in `file_sizes`,
    /// shallowest first: where it stops at an error, the names nearest the root, which tell a layout, are
    /// listed.
    fn list_folder(&mut self, root: &Path, file_sizes: &mut Vec<(String, u64)>) -> Result<(), DataError> {
        let mut pending = VecDeque::from([String::new()]);
        // Each folder by where its links lead, so that a link to a folder above it is read once.
        let mut read_folders = BTreeSet::new();
        while let Some(folder) = pending.pop_front() {
            let folder_path = root.join(&folder);
            if !read_folders.insert(fs::canonicalize(&folder_path).map_err(DataError::io(&folder_path))?) {
                return Err(DataError::FolderReadTwice { path: folder_path });
            }
            for dir_entry in fs::read_dir(&folder_path).map_err(DataError::io(&folder_path))? {
                let dir_entry = dir_entry.map_err(DataError::io(&folder_path))?;
                if self.files.len() + self.folders.len() == MAX_TREE_ENTRIES {
                    return Err(DataError::TooManyEntries { path: root.to_owned(), limit: MAX_TREE_ENTRIES });
                }
                let name = join(&folder, &dir_entry.file_name().to_string_lossy());
                // Follows symlinks, as a user who links a data folder in expects.
                let metadata = fs::metadata(dir_entry.path()).map_err(DataError::io(dir_entry.path()))?;
                if metadata.is_dir() {
                    self.add_folder(&name);
                    pending.push_back(name);
                } else {
                    self.add_file(name.clone(), Vec::new());
                    file_sizes.push((name, metadata.len()));
                }
            }
        }
        Ok(())
    }

    fn empty(origin: DataOrigin) -> Self {
        FileTree { origin, sha256: String::new(), files: BTreeMap::new(), folders: BTreeSet::new() }
    }

    fn add_file(&mut self, name: String, bytes: Vec<u8>) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.add_folder(parent);
        }
        self.files.insert(name, bytes);
    }

    /// Records `name` and its ancestors: archives need not list a folder before its contents.
    fn add_folder(&mut self, name: &str) {
        let mut end = name.len();
        while end > 0 && self.folders.insert(name[..end].to_owned()) {
            end = name[..end].rfind('/').unwrap_or(0);
        }
    }

    fn listing_sha256(&self) -> String {
        let mut listing = Hasher::new(DigestAlgorithm::Sha256);
        for (name, bytes) in &self.files {
            let mut file = Hasher::new(DigestAlgorithm::Sha256);
            file.update(bytes);
            listing.update(format!("{}  {name}\n", file.finish().hex).as_bytes());
        }
        listing.finish().hex
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        Fingerprint { origin: self.origin.clone(), sha256: self.sha256.clone() }
    }

    /// The path to show in messages for a relative name in this tree.
    pub(crate) fn display_path(&self, name: &str) -> PathBuf {
        match &self.origin {
            DataOrigin::Archive(root) | DataOrigin::Folder(root) => root.join(name),
        }
    }

    pub(crate) fn has_folder(&self, name: &str) -> bool {
        name.is_empty() || self.folders.contains(name)
    }

    /// Whether the tree lists a file `name` (what [`read`](Self::read)'s `recognise` may ask).
    pub(crate) fn has_file(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    pub(crate) fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Names of the folders directly inside `folder`, sorted.
    pub(crate) fn subfolders(&self, folder: &str) -> Vec<String> {
        let prefix = join(folder, "");
        self.folders
            .range(prefix.clone()..)
            .take_while(|name| name.starts_with(&prefix))
            .filter_map(|name| {
                let rest = &name[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    /// What `folder` holds directly, sorted: its folders' names with a `/` after them, then its files'.
    pub(crate) fn entries(&self, folder: &str) -> Vec<String> {
        let folders = self.subfolders(folder).into_iter().map(|name| name + "/");
        let prefix_len = join(folder, "").len();
        let files = self.files_below(folder).filter(|(name, _)| !name[prefix_len..].contains('/'));
        folders.chain(files.map(|(name, _)| name[prefix_len..].to_owned())).collect()
    }

    /// Files anywhere below `folder`, sorted by name, as (name, bytes).
    pub(crate) fn files_below<'a>(&'a self, folder: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = join(folder, "");
        self.files
            .range(prefix.clone()..)
            .take_while(move |(name, _)| name.starts_with(&prefix))
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
    }

    /// The folder a layout should be looked for in: the root when it holds one of `markers`, else the single
    /// folder an archive may wrap everything in (as `tar czf x.tar.gz dataset/` does).
    pub(crate) fn content_root(&self, markers: &[&str]) -> String {
        let marked = |name: &&str| self.has_folder(name) || self.has_file(name);
        if markers.iter().any(marked) {
            return String::new();
        }
        let root_has_files = self.files.keys().any(|name| !name.contains('/'));
        match self.subfolders("").as_slice() {
            [only] if !root_has_files => only.clone(),
            _ => String::new(),
        }
    }
}

/// `folder/name`, or `name` at the root.
pub(crate) fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// Archive member names without `./` prefixes or trailing slashes.
fn normalise(name: &str) -> String {
    let name = name.replace('\\', "/");
    let mut name = name.as_str();
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_strips_dot_prefix_and_trailing_slash() {
        assert_eq!(normalise("./train/cat/"), "train/cat");
        assert_eq!(normalise("train/cat/1.jpg"), "train/cat/1.jpg");
    }

    /// An archive of more entries than any data set of the two layouts, each of no bytes, is refused at
    /// the limit rather than listed whole.
    #[test]
    fn an_archive_of_too_many_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("many.tar.gz");
        let encoder = flate2::write::GzEncoder::new(File::create(&archive).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for index in 0..=MAX_TREE_ENTRIES {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("d{index}"), std::io::empty()).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        match FileTree::read(&archive, |_| Ok(())) {
            Err(DataError::TooManyEntries { path, limit }) => assert_eq!((path, limit), (archive, MAX_TREE_ENTRIES)),
            other => panic!("expected TooManyEntries, got {:?}", other.err()),
        }
    }

    #[test]
    fn oversized_archive_entry_is_refused_before_reading_it() {
        let mut header = tar::Header::new_gnu();
        header.set_path("cifar-10-batches-bin/data_batch_1.bin").unwrap();
        header.set_size(MAX_FILE_BYTES + 1);
        header.set_cksum();
        // Only the header: the claimed data never comes, and must not be waited for or allocated.
        let mut tar_bytes = header.as_bytes().to_vec();
        tar_bytes.extend([0u8; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("huge.tar.gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&archive).unwrap(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &tar_bytes).unwrap();
        encoder.finish().unwrap();
        match FileTree::read(&archive, |_| Ok(())) {
            Err(DataError::TooLarge { path, limit }) => {
                assert_eq!(limit, MAX_FILE_BYTES);
                assert!(path.ends_with("data_batch_1.bin"), "{}", path.display());
            }
            other => panic!("expected TooLarge, got {:?}", other.err()),
        }
    }

    /// A folder's names are recognised before its files are read: one of neither layout is refused as
    /// such however large its files, and a file over the limit is refused only in one that is.
    #[test]
    fn a_folders_names_are_recognised_before_its_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("videos")).unwrap();
        // Sparse: no bytes written, but its length over the limit.
        File::create(dir.path().join("videos/large.mp4")).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        let refused = |tree: &FileTree| {
            assert!(tree.has_file("videos/large.mp4") && tree.has_folder("videos"));
            Err::<(), _>(DataError::UnknownLayout { path: dir.path().to_owned(), holds: tree.entries("").join(", ") })
        };
        match FileTree::read(dir.path(), refused) {
            Err(DataError::UnknownLayout { holds, .. }) => assert_eq!(holds, "videos/"),
            other => panic!("expected UnknownLayout, got {:?}", other.err()),
        }
        match FileTree::read(dir.path(), |_| Ok(())) {
            Err(DataError::TooLarge { path, limit }) => {
                assert_eq!((path, limit), (dir.path().join("videos/large.mp4"), MAX_FILE_BYTES));
            }
            other => panic!("expected TooLarge, got {:?}", other.err()),
        }
    }

    #[test]
    fn folders_are_implied_by_files() {
        let mut tree = FileTree::empty(DataOrigin::Folder(PathBuf::from("/x")));
        tree.add_file("data/train/cat/1.png".into(), vec![1]);
        tree.add_folder("data/test");
        assert!(tree.has_folder("data/train/cat"));
        assert_eq!(tree.subfolders("data"), ["test", "train"]);
        assert_eq!(tree.subfolders("data/train"), ["cat"]);
        assert_eq!(tree.content_root(&["train"]), "data");
        assert_eq!(tree.content_root(&["data"]), "");
        assert_eq!(tree.files_below("data/train").count(), 1);
        assert_eq!(tree.files_below("data/tr").count(), 0);
        tree.add_file("data/notes.txt".into(), vec![2]);
        assert_eq!(tree.entries("data"), ["test/", "train/", "notes.txt"]);
        assert_eq!(tree.entries(""), ["data/"]);
    }
}
