//! What can go wrong running an ONNX file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The ONNX Runtime shared library was not given.
    #[error(
        "`ORT_DYLIB_PATH` is not set: point it at libonnxruntime.so (`cargo xtask all` fetches ONNX Runtime into the \
         target folder's `onnxruntime/` and sets it for the steps it runs; `cargo xtask setup` fetches it and says \
         where it put it)"
    )]
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
    /// The model lacks the input or output vggq feeds and reads (the names its export gives them).
    #[error("the model has no {role} named `{expected}` (its {role}s: {found}): vggq evaluates classifiers with input `{input}` [N, 3, side, side] and output `{output}` [N, classes]", input = crate::export::onnx::graph::INPUT_NAME, output = crate::export::onnx::graph::OUTPUT_NAME)]
    Interface { role: &'static str, expected: &'static str, found: String },
    /// The model's output is not `[batch, classes]` logits, with classes a label can name.
    #[error("the model's output has shape {shape:?} for a batch of {batch}: vggq reads logits [{batch}, classes], 1 to {max_classes} classes", max_classes = crate::data::MAX_CLASSES)]
    OutputShape { shape: Vec<i64>, batch: usize },
    /// The model's logits are not one per class of the data: its top-1 would score another task's labels.
    #[error("the model gives logits for {found} classes, and the data has {classes}: it is not a model of these classes")]
    ClassCount { found: usize, classes: usize },
    /// The model gave a logit that is not a number (or is infinite): no class is its prediction, and a
    /// top-1 counted from such rows would hide a broken model.
    #[error("the model's logits for test image {image} include {value}: a broken model (or export)")]
    NonFiniteLogits { image: usize, value: f32 },
    /// Fewer images than one batch: the timing needs a full one.
    #[error("{images} images are fewer than one batch of {batch}, and the timing needs a full one")]
    NoFullBatch { images: usize, batch: usize },
    /// The temporary folder for ONNX Runtime's profile (where the node placement is read from).
    #[error("making a temporary folder for ONNX Runtime's profile: {0}")]
    ProfileFolder(#[source] std::io::Error),
}

impl<E> From<ort::Error<E>> for EvalError {
    fn from(error: ort::Error<E>) -> Self {
        EvalError::Ort(error.to_string())
    }
}
