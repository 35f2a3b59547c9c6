//! File digests (MD5 for the official CIFAR-10 archive, SHA-256 for everything we publish) computed while
//! bytes stream past, so that nothing is read twice.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::data::error::DataError;

/// A hash function a download can be verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// Only because the CIFAR-10 authors publish nothing stronger for their archive.
    Md5,
    Sha256,
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgorithm::Md5 => "md5",
            DigestAlgorithm::Sha256 => "sha256",
        })
    }
}

/// Length and lowercase hex digest of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigest {
    pub length: u64,
    pub hex: String,
}

/// A running hash of one of the supported algorithms.
pub(crate) struct Hasher {
    state: HasherState,
    length: u64,
}

enum HasherState {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    pub(crate) fn new(algorithm: DigestAlgorithm) -> Self {
        let state = match algorithm {
            DigestAlgorithm::Md5 => HasherState::Md5(Md5::new()),
            DigestAlgorithm::Sha256 => HasherState::Sha256(Sha256::new()),
        };
        Hasher { state, length: 0 }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        // usize always fits u64 on the platforms Rust supports.
        self.length += bytes.len() as u64;
        match &mut self.state {
            HasherState::Md5(h) => h.update(bytes),
            HasherState::Sha256(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> StreamDigest {
        let hex = match self.state {
            HasherState::Md5(h) => hex::encode(h.finalize()),
            HasherState::Sha256(h) => hex::encode(h.finalize()),
        };
        StreamDigest { length: self.length, hex }
    }
}

/// A reader that hashes everything read through it.
pub(crate) struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> DigestReader<R> {
    pub(crate) fn new(inner: R, algorithm: DigestAlgorithm) -> Self {
        DigestReader { inner, hasher: Hasher::new(algorithm) }
    }

    /// Reads what is left of the stream (a consumer such as a tar reader may stop before the end) and
    /// returns the digest of the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<StreamDigest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Length and digest of a file.
pub fn file_digest(path: &Path, algorithm: DigestAlgorithm) -> Result<StreamDigest, DataError> {
    let file = File::open(path).map_err(DataError::io(path))?;
    DigestReader::new(io::BufReader::new(file), algorithm).finish().map_err(DataError::io(path))
}

/// Length and digest of bytes already in memory (a file read once for its digest and its contents).
pub fn bytes_digest(bytes: &[u8], algorithm: DigestAlgorithm) -> StreamDigest {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let digest = |algorithm| {
            let mut reader = DigestReader::new(&b"abc"[..], algorithm);
            let mut sink = Vec::new();
            reader.read_to_end(&mut sink).unwrap();
            reader.finish().unwrap()
        };
        assert_eq!(digest(DigestAlgorithm::Md5).hex, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(digest(DigestAlgorithm::Sha256).hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digest(DigestAlgorithm::Sha256).length, 3);
    }

    #[test]
    fn finish_hashes_the_unread_rest() {
        let mut reader = DigestReader::new(&b"abc"[..], DigestAlgorithm::Md5);
        let mut first = [0u8; 1];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(reader.finish().unwrap().hex, "900150983cd24fb0d6963f7d28e17f72");
    }
}
