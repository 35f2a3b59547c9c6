//! ONNX files of the four variants, written with prost from the vendored `onnx.proto` (no protoc, no
//! Python): opset 17, input `input` `[N, 3, H, W]`, output `logits` `[N, classes]`, dynamic batch.
//!
//! - [`FoldedVgg`] (from a Burn model) -> [`fp32::model`] and [`dynamic::model`];
//! - [`QuantVgg`] (from the quantization stage) -> [`qdq::model`] for static PTQ and QAT.
//!
//! Bytes are deterministic: the same weights and provenance always encode to the same file.

pub mod dynamic;
mod folded;
pub mod fp32;
pub mod graph;
mod layers;
pub mod minmax;
mod provenance;
pub mod proto;
pub mod qdq;

use std::path::{Path, PathBuf};

pub use folded::{Dense, FoldedConv, FoldedVgg};
pub use provenance::{Provenance, Variant, CALIBRATION_KEY, NO_PTH, SOURCE_PTH_SHA256_KEY, TRAINING_KEY, VARIANT_KEY};
pub use qdq::{ActivationQuant, ChannelInt8, QuantConv, QuantDense, QuantVgg};

/// What can go wrong writing an ONNX file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `AdaptiveAvgPool2d` to a side that does not divide the features' side has no fixed-kernel ONNX form.
    #[error("adaptive average pool from {side}x{side} to {pool_size}x{pool_size} has no AveragePool form")]
    UnsupportedPool { side: usize, pool_size: usize },
    /// A bias does not fit int32 at its scale (input scale x weight scale is too small).
    #[error("bias of `{layer}` channel {channel} overflows int32 at its quantization scale")]
    BiasOverflow { layer: String, channel: usize },
    #[error("writing `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Encodes `model` and writes it atomically (`vggq::atomic::write`) to `path`.
pub fn write(path: &Path, model: &proto::ModelProto) -> Result<(), ExportError> {
    crate::atomic::write(path, &graph::encode(model)).map_err(|source| ExportError::Io { path: path.to_path_buf(), source })
}
