//! What can go wrong running an ONNX file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The ONNX Runtime shared library was not given.
    #[error("`ORT_DYLIB_PATH` is not set: run `cargo xtask setup` (it fetches ONNX Runtime and says where it is), or point it at libonnxruntime.so")]
    MissingLibrary,
    /// The library could not be loaded or initialised.
    #[error("loading ONNX Runtime from `{path}`: {message}")]
    Library { path: PathBuf, message: String },
    /// ONNX Runtime refused an operation (a model it cannot load, a requested EP it lacks, a failed run).
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The CUDA execution provider cannot run here; the reason names the missing piece.
    #[error("CUDA execution provider unavailable: {0}")]
    CudaUnavailable(String),
    /// The profile ORT wrote is not what we read the node placement from.
    #[error("ONNX Runtime profile `{path}`: {message}")]
    Profile { path: PathBuf, message: String },
    /// The model's output is not `[batch, classes]`.
    #[error("unexpected output shape {shape:?} for a batch of {batch}")]
    OutputShape { shape: Vec<i64>, batch: usize },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl<E> From<ort::Error<E>> for EvalError {
    fn from(error: ort::Error<E>) -> Self {
        EvalError::Ort(error.to_string())
    }
}
