//! ONNX files of the four variants, written with prost from the vendored `onnx.proto` (no protoc, no
//! Python): opset 17, input `input` `[N, 3, H, W]`, output `logits` `[N, classes]`, dynamic batch.
//!
//! The exporters take the models of [`crate::quant`], the same values the `.pth` writer takes:
//! - [`FusedVgg`] (the FP32 model, BatchNorm folded) -> [`fp32::model`];
//! - the dynamic [`QuantizedVgg`] -> [`dynamic::model`];
//! - the static PTQ and QAT [`QuantizedVgg`]s -> [`qdq::model`].
//!
//! [`model_from_state_dict`] reads a variant's `.pth` state_dict back into that model and exports it:
//! `vggq export` writes every ONNX file from the `.pth` `vggq quantize` wrote. Bytes are deterministic:
//! the same weights and provenance always encode to the same file.

pub mod dynamic;
pub mod fp32;
pub mod graph;
mod layers;
pub mod proto;
mod provenance;
pub mod qdq;

use std::path::{Path, PathBuf};

use vggq_pth::StateDict;

pub use provenance::{
    pth_layout, Provenance, Variant, CALIBRATION_KEY, NO_PTH, SOURCE_PTH_SHA256_KEY, TRAINING_KEY, VARIANT_KEY,
};

use crate::model::VggConfig;
use crate::quant::float_model::pth_config;
use crate::quant::state_dict::int8_from_state_dict;
use crate::quant::{FloatVgg, FusedVgg, QuantError, QuantMethod, QuantizedVgg};

/// What can go wrong writing an ONNX file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `AdaptiveAvgPool2d` to a side that does not divide the features' side has no fixed-kernel ONNX form.
    #[error("adaptive average pool from {side}x{side} to {pool_size}x{pool_size} has no AveragePool form")]
    UnsupportedPool { side: usize, pool_size: usize },
    /// A bias does not fit int32 at its scale (input scale x weight scale is too small).
    #[error("bias of `{layer}` channel {channel} overflows int32 at its quantization scale")]
    BiasOverflow { layer: String, channel: usize },
    /// A zero point does not fit the integer type ONNX stores it as.
    #[error("zero point {zero_point} of `{tensor}` does not fit {data_type:?}")]
    ZeroPoint { tensor: String, zero_point: i32, data_type: proto::tensor_proto::DataType },
    /// A quantized model of another method than the exporter writes (the dynamic exporter takes float
    /// features, the QDQ exporter int8 ones).
    #[error("the {exporter} exporter cannot write a {method:?} model")]
    WrongMethod { exporter: &'static str, method: QuantMethod },
    /// The `.pth` state_dict is not the one PyTorch holds for the variant.
    #[error("the {} state_dict does not have PyTorch's layout: {source}", variant.key())]
    Layout { variant: Variant, source: vggq_pth::Error },
    /// The `.pth` state_dict has the layout but not values the quantized model can hold.
    #[error(transparent)]
    StateDict(#[from] QuantError),
    #[error("writing `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The ONNX model of `provenance.variant` from the state_dict of its `.pth` (`vggq quantize`'s, or
/// PyTorch's own for the same variant), for a network shaped like `config`.
pub fn model_from_state_dict(
    state_dict: &StateDict<'_>,
    config: &VggConfig,
    provenance: &Provenance,
) -> Result<proto::ModelProto, ExportError> {
    let variant = provenance.variant;
    // Checked against PyTorch's keys, dtypes and shapes first, so the exporters can trust every shape.
    vggq_pth::layout::validate(state_dict, &vggq_pth::layout::layout(&pth_config(config), pth_layout(variant)))
        .map_err(|source| ExportError::Layout { variant, source })?;
    let quantized = |method| -> Result<QuantizedVgg, ExportError> { Ok(int8_from_state_dict(state_dict, config, method)?) };
    match variant {
        Variant::Fp32 => fp32::model(&FusedVgg::fuse(&FloatVgg::from_state_dict(state_dict, config)?), provenance),
        Variant::DynamicInt8 => dynamic::model(&quantized(QuantMethod::Dynamic)?, provenance),
        Variant::StaticInt8 => qdq::model(&quantized(QuantMethod::Static)?, provenance),
        Variant::Qat(_) => qdq::model(&quantized(QuantMethod::Qat)?, provenance),
    }
}

/// Encodes `model` and writes it atomically (`vggq::atomic::write`) to `path`.
pub fn write(path: &Path, model: &proto::ModelProto) -> Result<(), ExportError> {
    crate::atomic::write(path, &graph::encode(model)).map_err(|source| ExportError::Io { path: path.to_path_buf(), source })
}
