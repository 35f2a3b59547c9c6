//! What every ONNX file says about itself in `metadata_props`: which variant it is, which `.pth` it was
//! built from, how its weights were trained and its activations calibrated.

use super::graph::Metadata;

pub use vggq_core::Variant;

/// The `.pth` layout of `variant`: the keys, dtypes and qschemes PyTorch writes for it.
pub fn pth_layout(variant: Variant) -> vggq_pth::layout::Variant {
    match variant {
        Variant::Fp32 => vggq_pth::layout::Variant::Fp32,
        Variant::DynamicInt8 => vggq_pth::layout::Variant::DynamicInt8,
        Variant::StaticInt8 => vggq_pth::layout::Variant::StaticInt8Fx,
        Variant::Qat(_) => vggq_pth::layout::Variant::QatInt8Fx,
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub variant: Variant,
    /// SHA-256 (hex) of the `.pth` the model was built from (`vggq export` always has one); `None` for a
    /// model exported from memory, as tests and fixtures do (the metadata then says `none`, so a reader
    /// never mistakes another file's digest for it).
    pub source_pth_sha256: Option<String>,
    /// How the weights were obtained, e.g. `trained: 5 epochs` or `untrained (--epochs 0): for benchmarks only`.
    pub training: String,
    /// How activation ranges were calibrated, for the static variants (e.g. `min/max over 512 CIFAR-10
    /// training images`); `None` where nothing was calibrated, and then the key is absent.
    pub calibration: Option<String>,
}

/// Metadata keys.
pub const VARIANT_KEY: &str = "variant";
pub const SOURCE_PTH_SHA256_KEY: &str = "source_pth_sha256";
pub const TRAINING_KEY: &str = "training";
pub const CALIBRATION_KEY: &str = "calibration";
/// The `source_pth_sha256` value of a model exported without a `.pth`.
pub const NO_PTH: &str = "none";

impl Provenance {
    pub fn metadata(&self) -> Metadata {
        let mut metadata = vec![
            (VARIANT_KEY.into(), self.variant.key().into()),
            (SOURCE_PTH_SHA256_KEY.into(), self.source_pth_sha256.clone().unwrap_or_else(|| NO_PTH.into())),
            (TRAINING_KEY.into(), self.training.clone()),
        ];
        if let Some(calibration) = &self.calibration {
            metadata.push((CALIBRATION_KEY.into(), calibration.clone()));
        }
        metadata
    }
}
