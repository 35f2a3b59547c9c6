//! Helpers for the integration tests: generated datasets, a loopback HTTP server, and the shared folder.
// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub mod fixtures;
pub mod http_server;

pub use vggq_core::places::{shared_cifar10_jpeg, shared_dir};

/// The run folder `cargo xtask test` (its smoke run) or `cargo xtask all` points `VGGQ_GOLDEN_RUN` at:
/// the tests that read a whole run read that one instead of training their own.
pub fn golden_run() -> std::path::PathBuf {
    std::env::var_os("VGGQ_GOLDEN_RUN")
        .expect("VGGQ_GOLDEN_RUN is not set: run through `cargo xtask test` or `cargo xtask all`, which set it to their run")
        .into()
}

/// Largest absolute difference between two equally long sequences, panicking on a length mismatch.
pub fn max_abs_diff<T: Copy + Into<f64>>(actual: &[T], expected: &[T]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual.iter().zip(expected).map(|(&a, &e)| (a.into() - e.into()).abs()).fold(0.0, f64::max)
}
