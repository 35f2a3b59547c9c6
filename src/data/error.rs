//! The one error type of the data pipeline: every variant names the file, folder or URL at fault.

use std::io;
use std::path::{Path, PathBuf};

use crate::data::digest::DigestAlgorithm;

/// Why reading, downloading or preparing CIFAR-10 failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("i/o error on `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A `.tar.gz` could not be read to its end: cut short (an interrupted copy or download), damaged, or
    /// not a gzip-compressed tar at all past its start. `entry` is the file it was reading, if any.
    #[error("`{archive}` is cut short or damaged{}: {source}", entry.as_ref().map(|e| format!(" (reading {e})")).unwrap_or_default())]
    DamagedArchive {
        archive: PathBuf,
        entry: Option<String>,
        #[source]
        source: io::Error,
    },

    /// The data source given (`--data`, `$VGGQ_DATA`) is not there.
    #[error(
        "`{path}` does not exist: --data (or $VGGQ_DATA) names CIFAR-10 as a folder or .tar.gz, in its binary layout \
         (cifar-10-batches-bin/) or as ImageFolder (train/<class>/, test/<class>/); without it, vggq downloads the official archive"
    )]
    MissingSource { path: PathBuf },

    /// A local data source, or an image in it, is a file of no bytes (a copy or download that never began).
    #[error("`{path}` is empty (0 bytes): a copy or download of it that never began?")]
    EmptyFile { path: PathBuf },

    /// A local data source is neither a CIFAR-10 binary folder/archive nor an ImageFolder folder/archive
    /// (told from its names, before a folder's files are read).
    #[error(
        "`{path}` is neither a CIFAR-10 binary folder or archive (cifar-10-batches-bin/) nor an ImageFolder \
         folder or archive (train/<class>/, test/<class>/): {holds}"
    )]
    UnknownLayout {
        path: PathBuf,
        /// What its top folder holds, as a user would look for a misplaced copy.
        holds: String,
    },

    /// A local data source is a file, but not a gzip-compressed archive (an uncompressed tar, say).
    #[error("`{path}` is {}: --data (or $VGGQ_DATA) names CIFAR-10 as a folder or a .tar.gz", not_gzip(*.plain_tar))]
    NotGzip { path: PathBuf, plain_tar: bool },

    /// A folder the layout requires (train/ or test/) is absent.
    #[error("missing folder `{path}`")]
    MissingFolder { path: PathBuf },

    /// A file the layout requires (a CIFAR-10 batch or batches.meta.txt) is absent.
    #[error("missing file `{path}`")]
    MissingFile { path: PathBuf },

    /// A class folder holds no image.
    #[error("class folder `{path}` holds no image")]
    EmptyClassFolder { path: PathBuf },

    /// A file lies directly in train/ or test/ instead of in a class folder.
    #[error("unexpected file `{path}` outside a class folder")]
    FileOutsideClassFolder { path: PathBuf },

    /// A file in a class folder is not a decodable JPEG or PNG image.
    #[error("`{path}` is not a decodable image: {source}")]
    NotAnImage {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// An image does not have the source side every CIFAR-10 image has.
    #[error("`{path}` is {width}x{height} pixels, expected {expected}x{expected}")]
    WrongImageSize { path: PathBuf, width: u32, height: u32, expected: usize },

    /// A CIFAR-10 binary batch is not a whole number of records (truncated or not a batch at all).
    #[error("`{path}` has {length} bytes, not a whole non-zero number of {record_bytes}-byte records")]
    TruncatedRecord { path: PathBuf, length: usize, record_bytes: usize },

    /// A CIFAR-10 binary record carries a label with no class name.
    #[error("record {record} of `{path}` has label {label}, but there are only {class_count} classes")]
    LabelOutOfRange { path: PathBuf, record: usize, label: u8, class_count: usize },

    /// The class list (batches.meta.txt, or train/'s class folders) is empty or too long for u8 labels.
    #[error("`{path}` names {count} classes, expected between 1 and {max}")]
    ClassCount { path: PathBuf, count: usize, max: usize },

    /// The data's classes are not as many as the model's outputs (CIFAR-10's ten).
    #[error("`{path}` has {} classes ({classes:?}), but the model classifies CIFAR-10's {model}", classes.len())]
    ClassesForModel { path: PathBuf, classes: Vec<String>, model: usize },

    /// train/ and test/ do not hold the same class folders.
    #[error("class folders differ between `{train}` ({train_classes:?}) and `{test}` ({test_classes:?})")]
    ClassMismatch { train: PathBuf, test: PathBuf, train_classes: Vec<String>, test_classes: Vec<String> },

    /// A data folder reaches a folder it has read already, through a link: a link to a folder above it
    /// would have every path through it read, one more level each time.
    #[error("`{path}` is a folder this data folder has already been read through (a link to it, or to a folder above it): vggq reads each folder once")]
    FolderReadTwice { path: PathBuf },

    /// A data folder or archive holds more files and folders than the limit this reader accepts.
    #[error("`{path}` holds more than {limit} files and folders: no CIFAR-10 copy has as many")]
    TooManyEntries { path: PathBuf, limit: usize },

    /// An archive entry, or the archive as a whole, is larger than the limit this reader accepts.
    #[error("`{path}` is larger than the {limit}-byte limit")]
    TooLarge { path: PathBuf, limit: u64 },

    /// The HTTP request failed (connection, TLS or a non-success status).
    #[error("downloading `{url}` failed: {source}")]
    Request {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    /// The connection broke while the body was being received.
    #[error("receiving `{url}` failed: {source}")]
    Transfer {
        url: String,
        #[source]
        source: io::Error,
    },

    /// A download (or cached file) does not have the expected length.
    #[error("`{url}` has {actual} bytes, expected {expected}")]
    LengthMismatch { url: String, expected: u64, actual: u64 },

    /// A download (or cached file) does not have the expected digest.
    #[error("`{url}` has {algorithm} {actual}, expected {expected}")]
    DigestMismatch { url: String, algorithm: DigestAlgorithm, expected: String, actual: String },

    /// A loader setting is out of range.
    #[error("invalid loader setting: {reason}")]
    LoaderConfig { reason: String },
}

impl DataError {
    /// Wraps an i/o error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    pub(crate) fn damaged_archive(archive: &Path, entry: Option<&str>) -> impl FnOnce(io::Error) -> DataError {
        let (archive, entry) = (archive.to_owned(), entry.map(str::to_owned));
        move |source| DataError::DamagedArchive { archive, entry, source }
    }
}

/// What a file that is no gzip archive is, for [`DataError::NotGzip`].
fn not_gzip(plain_tar: bool) -> &'static str {
    if plain_tar {
        "an uncompressed tar archive (gzip it, or unpack it and give the folder)"
    } else {
        "a file but not a gzip-compressed archive"
    }
}
