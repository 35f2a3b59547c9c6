//! Running the ONNX files with ONNX Runtime (the `ort` crate, library loaded from `$ORT_DYLIB_PATH`):
//! [`session`] opens a model on CUDA (falling back to the CPU) or the CPU and records, from ORT's own
//! profile, which execution provider ran each node ([`placement`]); [`metrics`] measures accuracy and speed.

mod error;
pub mod metrics;
pub mod placement;
pub mod session;

pub use error::EvalError;
pub use metrics::{evaluate, EvalReport, ModelMetrics, Timing, MIB};
pub use placement::Placement;
pub use session::{OnnxSession, Provider, ORT_DYLIB_PATH};
