//! Post-training and quantization-aware INT8 quantization of VGG11-BN with the numbers PyTorch's
//! `torch.ao.quantization` produces (fbgemm defaults), as plain data for the `.pth` and ONNX writers.
//!
//! - [`qparams`]: rounding, quantization ranges, and both of PyTorch's formulas for scale and zero point.
//! - [`observer`]: MinMax, moving average, histogram (a faithful port) and percentile observers.
//! - [`float_model`]: the FP32 model as plain data, read from Burn or from a `.pth`; [`fold`]: BN folding.
//! - [`model`]: [`QuantizedVgg`], the one quantized-model type every writer consumes.
//! - [`dynamic`], [`static_ptq`], [`qat`]: the three flows.
//! - [`simulate`]: Burn forward passes of the quantized models; [`state_dict`]: PyTorch state_dicts.

pub mod dynamic;
pub mod float_model;
pub mod fold;
pub mod model;
pub mod observer;
pub mod qat;
pub mod qparams;
pub mod simulate;
pub mod state_dict;
pub mod static_ptq;

pub use dynamic::quantize_dynamic;
pub use float_model::FloatVgg;
pub use model::{QuantMethod, QuantizedConv, QuantizedFeatures, QuantizedLinear, QuantizedVgg, QuantizedWeight, WeightScheme};
pub use observer::Calibration;
pub use qparams::{QParams, QuantRange};
pub use simulate::SimulatedVgg;
pub use static_ptq::{quantize_static, FusedVgg};

/// What can go wrong quantizing a model.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A state_dict entry the FP32 model needs is missing or has the wrong type or shape.
    #[error("state_dict entry `{key}` {reason}")]
    StateDict { key: String, reason: String },
    /// Calibration saw no data at an observation point (no batches).
    #[error("observation point {point} saw no data: calibration needs at least one batch")]
    NotCalibrated { point: usize },
    /// A state_dict built here does not have PyTorch's layout: a bug, reported with the offending key.
    #[error("the {variant} state_dict does not match PyTorch's layout: {source}")]
    Layout { variant: &'static str, source: vggq_pth::Error },
}
