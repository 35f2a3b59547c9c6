//! Verified downloads: a file is only ever seen at its destination whole and with the expected digest.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::digest::{file_digest, DigestAlgorithm, Hasher, StreamDigest};
use crate::data::error::DataError;

/// Long enough for a slow link, short enough that a dead server does not hang a training run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence tolerated between two reads of the body.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK_BYTES: usize = 64 * 1024;
const PROGRESS_TEMPLATE: &str = "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// What a downloaded file must be: its length, where published, and its digest (lowercase hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedFile<'a> {
    pub length: Option<u64>,
    pub algorithm: DigestAlgorithm,
    /// The whole digest, or the leading hex digits where only those are published: torchvision names
    /// its checkpoints after the first 8 hex digits of their SHA-256, and `torch.hub` checks just those.
    pub digest: &'a str,
}

/// Whether `download_verified` had to fetch the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// `dest` already existed with the expected length and digest; nothing was fetched.
    Cached,
    Downloaded,
}

/// A file `download_verified` made sure of: how, and its whole digest (where only a prefix may have been
/// expected), so that a caller who records it need not read the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub outcome: DownloadOutcome,
    pub digest: StreamDigest,
}

/// Makes `dest` a verified copy of `url`: keeps an existing `dest` that verifies, else downloads into a
/// temporary file in `dest`'s folder, checks length and digest, and renames it over `dest`. On any failure
/// the temporary file is deleted and `dest` is left as it was; a killed download's, the next one removes.
pub fn download_verified(url: &str, dest: &Path, expected: &ExpectedFile<'_>) -> Result<Verified, DataError> {
    if dest.is_file() {
        let digest = file_digest(dest, expected.algorithm)?;
        if verify(url, &digest, expected).is_ok() {
            return Ok(Verified { outcome: DownloadOutcome::Cached, digest });
        }
    }
    // A stale or partial file at `dest` is replaced below, only once a verified copy exists.
    let folder = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(folder).map_err(DataError::io(folder))?;

    let agent = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout_read(READ_TIMEOUT).build();
    let response =
        agent.get(url).call().map_err(|source| DataError::Request { url: url.to_owned(), source: Box::new(source) })?;
    // One byte past the expected length is enough to tell an oversized body apart without storing it all.
    let mut body = response.into_reader().take(expected.length.map_or(u64::MAX, |length| length.saturating_add(1)));

    let progress = ProgressBar::new(expected.length.unwrap_or(0))
        .with_style(ProgressStyle::with_template(PROGRESS_TEMPLATE).expect("the progress template is valid"))
        .with_message(dest.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default());
    let mut hasher = Hasher::new(expected.algorithm);
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut fetched = None;
    // The project's atomic write: only a verified copy is renamed into place, and a download killed midway
    // (Ctrl-C) leaves a temporary file that the next download of `dest` removes (hundreds of MB each).
    crate::atomic::write_with(dest, |out| -> Result<(), Fetch> {
        loop {
            let read = match body.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Fetch::Data(DataError::Transfer { url: url.to_owned(), source })),
            };
            hasher.update(&chunk[..read]);
            out.write_all(&chunk[..read])?;
            progress.inc(read as u64);
        }
        progress.finish_and_clear();
        let digest = hasher.finish();
        verify(url, &digest, expected).map_err(Fetch::Data)?;
        fetched = Some(digest);
        Ok(())
    })
    .map_err(|error| match error {
        Fetch::Data(error) => error,
        Fetch::Io(source) => DataError::Io { path: dest.to_owned(), source },
    })?;
    let digest = fetched.expect("a write that succeeded verified its digest");
    Ok(Verified { outcome: DownloadOutcome::Downloaded, digest })
}

/// Why a download failed: the transfer or the check (named), or writing the file (named by the caller).
enum Fetch {
    Data(DataError),
    Io(io::Error),
}

impl From<io::Error> for Fetch {
    fn from(error: io::Error) -> Self {
        Fetch::Io(error)
    }
}

fn verify(url: &str, actual: &StreamDigest, expected: &ExpectedFile<'_>) -> Result<(), DataError> {
    if let Some(length) = expected.length.filter(|&length| length != actual.length) {
        return Err(DataError::LengthMismatch { url: url.to_owned(), expected: length, actual: actual.length });
    }
    let expected_hex = expected.digest.to_ascii_lowercase();
    if expected_hex.is_empty() || !actual.hex.starts_with(&expected_hex) {
        return Err(DataError::DigestMismatch {
            url: url.to_owned(),
            algorithm: expected.algorithm,
            expected: expected.digest.to_owned(),
            actual: actual.hex.clone(),
        });
    }
    Ok(())
}
