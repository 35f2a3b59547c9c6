//! Helpers for the integration tests: generated datasets, a loopback HTTP server, and the shared folder.
// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod fixtures;
pub mod http_server;

use std::path::PathBuf;

/// The project's read-only `shared/` folder (`../shared` from the crate root), or `$VGGQ_SHARED`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("VGGQ_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// Largest absolute difference between two equally long sequences, panicking on a length mismatch.
pub fn max_abs_diff<T: Copy + Into<f64>>(actual: &[T], expected: &[T]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (a.into() - e.into()).abs())
        .fold(0.0, f64::max)
}
