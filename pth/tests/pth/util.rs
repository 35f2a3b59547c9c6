//! Paths and processes shared by the test modules.

use std::path::PathBuf;

/// The four reference files PyTorch wrote, by stem.
pub const REFERENCE_STEMS: [&str; 4] = ["tiny_fp32", "tiny_dynamic_int8", "tiny_static_int8_fx", "tiny_qat_int8_fx"];

pub use vggq_core::places::shared_dir;

/// The folder holding the torch reference files and their README.
pub fn reference_dir() -> PathBuf {
    shared_dir().join("fixtures/torch-reference")
}

/// Bytes of a reference `.pth`.
pub fn reference_bytes(stem: &str) -> Vec<u8> {
    let path = reference_dir().join(format!("{stem}.pth"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read reference {}: {e}", path.display()))
}

/// The Python interpreter with torch, from `VGGQ_PYTHON`; its absence fails the test.
pub fn python() -> PathBuf {
    vggq_core::places::test_python()
}

/// A fresh temporary folder, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
