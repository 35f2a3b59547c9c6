//! Running the ONNX files with ONNX Runtime (the `ort` crate, library loaded from `$ORT_DYLIB_PATH`):
//! [`plan`] chooses the execution providers, [`session`] opens a model on one and records, from ORT's
//! own profile, which provider ran each node ([`placement`]); [`cuda_libraries`] loads what the CUDA
//! provider needs; [`metrics`] measures accuracy and speed.

pub mod cuda_libraries;
mod error;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod session;

pub use error::EvalError;
pub use metrics::{evaluate, warmup_within, EvalReport, ModelMetrics, Timing, MIB};
pub use placement::Placement;
pub use plan::{EvalRun, ProviderPlan, Unavailable};
pub use session::{load_runtime, OnnxSession, Provider, SessionSettings, ORT_DYLIB_PATH};
