//! What every ONNX file says about itself in `metadata_props`: which variant it is, which `.pth` it was
//! built from, how its weights were trained and its activations calibrated.

use super::graph::Metadata;

/// The four models the project ships, named as the user's files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Fp32,
    Int8Dynamic,
    Int8Static,
    QatInt8,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Fp32, Variant::Int8Dynamic, Variant::Int8Static, Variant::QatInt8];

    pub fn file_name(self) -> &'static str {
        match self {
            Variant::Fp32 => "mission16_vgg11bn_fp32.onnx",
            Variant::Int8Dynamic => "mission16_vgg11bn_int8_dynamic.onnx",
            Variant::Int8Static => "mission16_vgg11bn_int8_static.onnx",
            // Sic: the user's file name has the extra underscore.
            Variant::QatInt8 => "mission_16_vgg11bn_qat_int8_fp32match.onnx",
        }
    }

    /// The `.pth` layout of the same variant.
    pub fn pth_variant(self) -> vggq_pth::layout::Variant {
        match self {
            Variant::Fp32 => vggq_pth::layout::Variant::Fp32,
            Variant::Int8Dynamic => vggq_pth::layout::Variant::DynamicInt8,
            Variant::Int8Static => vggq_pth::layout::Variant::StaticInt8Fx,
            Variant::QatInt8 => vggq_pth::layout::Variant::QatInt8Fx,
        }
    }

    /// The value of the `variant` metadata entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Fp32 => "fp32",
            Variant::Int8Dynamic => "int8-dynamic",
            Variant::Int8Static => "int8-static",
            Variant::QatInt8 => "qat-int8",
        }
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
            (VARIANT_KEY.into(), self.variant.as_str().into()),
            (SOURCE_PTH_SHA256_KEY.into(), self.source_pth_sha256.clone().unwrap_or_else(|| NO_PTH.into())),
            (TRAINING_KEY.into(), self.training.clone()),
        ];
        if let Some(calibration) = &self.calibration {
            metadata.push((CALIBRATION_KEY.into(), calibration.clone()));
        }
        metadata
    }
}
