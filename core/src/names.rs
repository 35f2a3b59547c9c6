//! The names a run is made of: the values its flags take and the four models it writes.

use serde::{Deserialize, Serialize};

/// The recipes `--profile` accepts (the recipes themselves are `vggq::profile::Profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// The seed's recipe exactly: 128 px, full VGG11-BN, pretrained, 40,000 / 10,000 images, 5 epochs.
    Full,
    /// The same pipeline, small enough for 2 CPU cores in minutes: 32 px, width/4, hidden 512, random
    /// init, 8,000 / 2,000 images, 2 epochs.
    Smoke,
}

/// The shapes of a profile's network, which xtask's benchmarks (built without Burn) need too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Input side in pixels.
    pub input_size: usize,
    /// VGG11's conv widths are divided by this.
    pub width_divisor: usize,
    /// Width of the classifier's hidden Linears.
    pub hidden: usize,
}

impl ProfileName {
    pub fn model_shape(self) -> ModelShape {
        match self {
            // The seed's: 128 px, VGG11-BN's widths, 8192 -> 4096 -> 4096 -> 10.
            ProfileName::Full => ModelShape { input_size: 128, width_divisor: 1, hidden: 4096 },
            ProfileName::Smoke => ModelShape { input_size: 32, width_divisor: 4, hidden: 512 },
        }
    }
}

/// The seed's batch size, every profile's: vggq's loaders and benchmarks, xtask's and the GPU check's.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// What the user asked for with `--device`: where Burn trains and which execution provider ONNX Runtime
/// evaluates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// CUDA when the probe finds a usable GPU (driver, device, NVRTC, headers, and a binary built with
    /// the `cuda` feature), else a GPU wgpu offers (not a CPU adapter such as Mesa's lavapipe; a binary
    /// built with the `wgpu` feature), else the CPU; the choice and its reason are printed and recorded.
    Auto,
    /// CUDA for training and for ONNX Runtime, or an error naming what is missing (ONNX Runtime still runs
    /// the nodes its CUDA provider has no kernel for on its CPU provider, as the placement column shows,
    /// and evaluates on the CPU provider beside it).
    Cuda,
    /// Burn's wgpu backend for training (Vulkan, Metal or DX12: its default adapter, whatever its type,
    /// lavapipe included), ONNX Runtime's CPU provider for evaluation.
    Wgpu,
    /// The CPU for both.
    Cpu,
}

/// How the network starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// torchvision's ImageNet-1k weights for the features, a new classifier.
    Pretrained,
    /// torchvision's own initialisation (`VGG(init_weights=True)`) for the features, `nn.Linear`'s
    /// default for the rebuilt classifier.
    Random,
}

/// Where QAT starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QatMode {
    /// The FP32 recipe (same initialisation, optimizer, epochs and seed), with fake quantization from the
    /// first step.
    Fp32match,
    /// Fine-tunes the trained FP32 model for 1 epoch at a tenth of its learning rate.
    Finetune,
}

/// One of the four models a run writes, each as a `.pth` and as ONNX. Serialized as its [`key`](Variant::key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Fp32,
    /// `quantize_dynamic`: the Linears in INT8 with activations quantized on the fly.
    DynamicInt8,
    /// FX static PTQ: every conv and Linear in INT8, activations calibrated.
    StaticInt8,
    /// FX QAT, converted to the static INT8 form.
    Qat(QatMode),
}

impl Variant {
    /// The four variants of a run whose QAT ran in `qat` mode, in the report's order.
    pub fn all(qat: QatMode) -> [Variant; 4] {
        [Variant::Fp32, Variant::DynamicInt8, Variant::StaticInt8, Variant::Qat(qat)]
    }

    /// Every variant any run can write.
    pub fn every() -> [Variant; 5] {
        [
            Variant::Fp32,
            Variant::DynamicInt8,
            Variant::StaticInt8,
            Variant::Qat(QatMode::Fp32match),
            Variant::Qat(QatMode::Finetune),
        ]
    }

    /// The variant's name in files, manifests, reports and ONNX metadata.
    pub fn key(self) -> &'static str {
        match self {
            Variant::Fp32 => "fp32",
            Variant::DynamicInt8 => "dynamic_int8",
            Variant::StaticInt8 => "static_int8_fx",
            Variant::Qat(QatMode::Fp32match) => "qat_int8_fp32match",
            Variant::Qat(QatMode::Finetune) => "qat_int8_finetune",
        }
    }

    /// The user's name for the `.pth` file: `mission_16_vgg11bn_<key>.pth`.
    pub fn pth_file(self) -> String {
        format!("mission_16_vgg11bn_{}.pth", self.key())
    }

    /// The user's name for the ONNX file. Sic: the user names three of them `mission16_` and the QAT one
    /// `mission_16_`, and puts `int8` before the method only in the PTQ ones.
    pub fn onnx_file(self) -> &'static str {
        match self {
            Variant::Fp32 => "mission16_vgg11bn_fp32.onnx",
            Variant::DynamicInt8 => "mission16_vgg11bn_int8_dynamic.onnx",
            Variant::StaticInt8 => "mission16_vgg11bn_int8_static.onnx",
            Variant::Qat(QatMode::Fp32match) => "mission_16_vgg11bn_qat_int8_fp32match.onnx",
            Variant::Qat(QatMode::Finetune) => "mission_16_vgg11bn_qat_int8_finetune.onnx",
        }
    }

    /// The short name tables and charts use.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Fp32 => "FP32",
            Variant::DynamicInt8 => "INT8 dynamic",
            Variant::StaticInt8 => "INT8 static",
            Variant::Qat(QatMode::Fp32match) => "INT8 QAT (fp32match)",
            Variant::Qat(QatMode::Finetune) => "INT8 QAT (finetune)",
        }
    }

    /// The variant a `.pth` or ONNX file name belongs to.
    pub fn of_file(name: &str) -> Option<Variant> {
        Variant::every().into_iter().find(|v| v.onnx_file() == name || v.pth_file() == name)
    }

    /// The variant whose [`key`](Variant::key) is `key`.
    pub fn of_key(key: &str) -> Option<Variant> {
        Variant::every().into_iter().find(|v| v.key() == key)
    }
}

impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        Variant::of_key(&key).ok_or_else(|| serde::de::Error::custom(format!("unknown variant `{key}`")))
    }
}

/// `value` as the command line spells it (`--device cuda`, `--qat-mode finetune`): for passing a typed
/// value on to another command.
pub fn flag_value(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().expect("no value is skipped").get_name().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_file_names() {
        let files: Vec<(String, &str)> = Variant::all(QatMode::Fp32match).iter().map(|v| (v.pth_file(), v.onnx_file())).collect();
        assert_eq!(
            files,
            [
                ("mission_16_vgg11bn_fp32.pth".to_string(), "mission16_vgg11bn_fp32.onnx"),
                ("mission_16_vgg11bn_dynamic_int8.pth".to_string(), "mission16_vgg11bn_int8_dynamic.onnx"),
                ("mission_16_vgg11bn_static_int8_fx.pth".to_string(), "mission16_vgg11bn_int8_static.onnx"),
                ("mission_16_vgg11bn_qat_int8_fp32match.pth".to_string(), "mission_16_vgg11bn_qat_int8_fp32match.onnx"),
            ]
        );
    }

    #[test]
    fn every_file_name_names_one_variant() {
        for variant in Variant::every() {
            assert_eq!(Variant::of_file(variant.onnx_file()), Some(variant));
            assert_eq!(Variant::of_file(&variant.pth_file()), Some(variant));
        }
        assert_eq!(Variant::of_file("model.onnx"), None);
    }

    #[test]
    fn flag_values_are_what_clap_accepts() {
        assert_eq!(flag_value(DeviceRequest::Cuda), "cuda");
        assert_eq!(flag_value(DeviceRequest::Wgpu), "wgpu");
        assert_eq!(flag_value(QatMode::Fp32match), "fp32match");
        assert_eq!(flag_value(ProfileName::Smoke), "smoke");
    }
}
