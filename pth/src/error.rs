//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while writing, reading or validating a `.pth` file.
///
/// Messages are lowercase and name the offending key, zip entry or pickle offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the file at `path` failed.
    #[error("i/o error on `{path}`: {source}")]
    File {
        /// The file or folder involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Writing to a caller-supplied stream failed.
    #[error("i/o error while writing the archive: {0}")]
    Io(#[from] std::io::Error),
    /// The archive name (the folder inside the zip) is empty or contains a path separator.
    #[error("invalid archive name `{0}`: it must be non-empty and free of `/` and `\\`")]
    InvalidArchiveName(String),
    /// The input ends before a structure that it announces.
    #[error("file is truncated: {what} does not fit")]
    Truncated {
        /// The structure that was being read.
        what: &'static str,
    },
    /// No zip end record where every zip file has one, in its last bytes: the file was cut short (a copy
    /// or a write that did not finish), or it is no zip archive at all.
    #[error("no zip end record in the file's last {searched} bytes: it is cut short, or not a zip archive as torch.save writes")]
    MissingEndRecord {
        /// How many bytes from the end were searched.
        searched: usize,
    },
    /// A zip record does not start with its signature.
    #[error("bad {what} signature at offset {offset}")]
    BadSignature {
        /// The record kind.
        what: &'static str,
        /// Its byte offset in the file.
        offset: u64,
    },
    /// A zip entry uses a feature this crate does not read (compression, zip64 sizes, encryption).
    #[error("zip entry `{entry}` is unsupported: {reason}")]
    UnsupportedZipEntry {
        /// The entry name.
        entry: String,
        /// Which feature.
        reason: &'static str,
    },
    /// A zip entry's data does not match the CRC-32 recorded for it.
    #[error("zip entry `{entry}` fails its crc-32 check")]
    CrcMismatch {
        /// The entry name.
        entry: String,
    },
    /// An entry that every PyTorch archive has, or that the pickle refers to, is absent.
    #[error("zip entry `{entry}` not found")]
    MissingEntry {
        /// The entry name.
        entry: String,
    },
    /// A metadata entry (`byteorder`, `.format_version`, ...) holds a value this crate does not read.
    #[error("zip entry `{entry}` holds unsupported value `{found}`")]
    UnsupportedRecord {
        /// The entry name.
        entry: String,
        /// What it holds.
        found: String,
    },
    /// A size read from the input or requested by the caller is above one of this crate's named limits.
    #[error("{what} is {found}, above the limit of {limit}")]
    LimitExceeded {
        /// The quantity, named after its limit constant.
        what: &'static str,
        /// The value found.
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// The pickle uses an opcode that PyTorch's `weights_only` unpickler (and so this reader) refuses.
    #[error("pickle opcode 0x{opcode:02x} at offset {offset} is not allowed")]
    ForbiddenOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its offset in `data.pkl`.
        offset: usize,
    },
    /// The pickle names a global outside the allowlist; it is reported, never imported or called.
    #[error("pickle global `{module}.{name}` at offset {offset} is not allowed")]
    ForbiddenGlobal {
        /// The module part.
        module: String,
        /// The attribute part.
        name: String,
        /// Its offset in `data.pkl`.
        offset: usize,
    },
    /// The pickle is structurally broken (stack underflow, unknown memo slot, missing STOP, ...).
    #[error("malformed pickle at offset {offset}: {reason}")]
    MalformedPickle {
        /// Offset of the opcode that failed.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A state_dict entry holds an object of the wrong form.
    #[error("entry `{key}`: expected {expected}")]
    UnexpectedObject {
        /// The state_dict key (or `_metadata`, or the whole dict as `<root>`).
        key: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A tensor's dtype, shape, strides, storage or quantizer is inconsistent.
    #[error("tensor `{key}`: {reason}")]
    InvalidTensor {
        /// The state_dict key holding the tensor.
        key: String,
        /// What is inconsistent.
        reason: String,
    },
    /// The same key appears twice in a state_dict or in its `_metadata`.
    #[error("duplicate key `{key}`")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A key that the layout expects is absent from the state_dict.
    #[error("key `{key}` is missing (the layout expects {expected})")]
    MissingKey {
        /// The missing key.
        key: String,
        /// Its expected signature.
        expected: String,
    },
    /// The state_dict holds a key that the layout does not expect.
    #[error("key `{key}` is not in the layout")]
    UnexpectedKey {
        /// The extra key.
        key: String,
    },
    /// A key is present but out of the order PyTorch writes.
    #[error("key `{key}` is at position {found}, the layout puts it at {expected}")]
    KeyOutOfOrder {
        /// The key.
        key: String,
        /// Its position in the state_dict.
        found: usize,
        /// Its position in the layout.
        expected: usize,
    },
    /// A key holds a value whose signature differs from the layout's.
    #[error("key `{key}`: expected {expected}, found {found}")]
    SignatureMismatch {
        /// The key.
        key: String,
        /// The layout's signature.
        expected: String,
        /// The state_dict's signature.
        found: String,
    },
    /// The `_metadata` module versions differ from the layout's.
    #[error("_metadata entry `{prefix}`: expected {expected}, found {found}")]
    MetadataMismatch {
        /// The module prefix (`""` is the root module).
        prefix: String,
        /// The expected version, or `absent`.
        expected: String,
        /// The version found, or `absent`.
        found: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
