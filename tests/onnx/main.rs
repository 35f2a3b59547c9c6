//! The ONNX files: what independent consumers (onnx's checker, ONNX Runtime) make of them, and whether
//! they compute what our Burn model computes.
//!
//! Needs `VGGQ_PYTHON` (onnx's checker) and `ORT_DYLIB_PATH` (ONNX Runtime); `cargo xtask test` sets both,
//! and without them these tests fail rather than skip.

mod file;
mod fp32;
mod int8;
mod pth;
/// The datasets and helpers every test binary shares.
#[path = "../util/mod.rs"]
mod shared;
mod torch;
mod util;
