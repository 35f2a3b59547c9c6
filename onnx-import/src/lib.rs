//! burn-import as a second, independent consumer of our FP32 ONNX.
//!
//! `onnx/vgg11bn_tiny_fp32.onnx` is what vggq's exporter writes for [`fixture_model`] (a tiny VGG11-BN
//! with deterministic weights); the build script turns it into Burn code ([`imported`]). The tests check
//! that the committed file is still what the exporter writes, and that the imported model computes the
//! logits of our Burn model.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use vggq::export::onnx::{self, Provenance, Variant};
use vggq::model::{Vgg, VggConfig};
use vggq::quant::{FloatVgg, FusedVgg};

/// The committed fixture, relative to this crate.
pub const FIXTURE: &str = "onnx/vgg11bn_tiny_fp32.onnx";

/// The model burn-import generated from [`FIXTURE`].
pub mod imported {
    include!(concat!(env!("OUT_DIR"), "/model/vgg11bn_tiny_fp32.rs"));
}

/// 1/16 width, 32-px input (1x1 pool: GlobalAveragePool), hidden 64.
pub fn fixture_config() -> VggConfig {
    VggConfig::for_input(16, 32, 64, 10)
}

/// Deterministic values in `[-amplitude, amplitude)`: a fixed integer hash of the index, so the fixture
/// depends on no random number generator.
pub fn pattern<B: Backend, const D: usize>(dims: [usize; D], salt: u64, amplitude: f32, device: &B::Device) -> Tensor<B, D> {
    let count: usize = dims.iter().product();
    let values: Vec<f32> = (0..count as u64)
        .map(|i| {
            let mut h = (i ^ (salt << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 32;
            ((h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect();
    Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape(dims)
}

/// The fixture's model: every weight and BatchNorm statistic from [`pattern`], scaled like a default
/// initialisation so activations stay in a sensible range.
pub fn fixture_model<B: Backend>(device: &B::Device) -> Vgg<B> {
    let config = fixture_config();
    let mut model = config.init::<B>(device);
    let mut salt = 0;
    let mut next = || {
        salt += 1;
        salt
    };
    for block in &mut model.features {
        let [out, inp, kh, kw] = block.conv.weight.dims();
        let fan_in = (inp * kh * kw) as f32;
        block.conv.weight = Param::from_tensor(pattern([out, inp, kh, kw], next(), (6.0 / fan_in).sqrt(), device));
        block.conv.bias = Some(Param::from_tensor(pattern([out], next(), 0.1, device)));
        block.norm.weight = Param::from_tensor(pattern::<B, 1>([out], next(), 0.5, device).add_scalar(1.0));
        block.norm.bias = Param::from_tensor(pattern([out], next(), 0.2, device));
        block.norm.running_mean = RunningState::new(pattern([out], next(), 0.5, device));
        block.norm.running_var = RunningState::new(pattern::<B, 1>([out], next(), 0.5, device).add_scalar(1.0));
    }
    for linear in [&mut model.classifier.hidden1, &mut model.classifier.hidden2, &mut model.classifier.output] {
        let [inputs, outputs] = linear.weight.dims();
        linear.weight = Param::from_tensor(pattern([inputs, outputs], next(), (6.0 / inputs as f32).sqrt(), device));
        linear.bias = Some(Param::from_tensor(pattern([outputs], next(), 0.1, device)));
    }
    model
}

/// What vggq's exporter writes for [`fixture_model`]: the bytes [`FIXTURE`] must hold.
pub fn fixture_onnx() -> Vec<u8> {
    let device = Default::default();
    let model = fixture_model::<burn::backend::Flex>(&device);
    let provenance = Provenance {
        variant: Variant::Fp32,
        // No .pth stands behind this fixture.
        source_pth_sha256: None,
        training: "deterministic test fixture (vggq-onnx-import)".into(),
        calibration: None,
    };
    let fused = FusedVgg::fuse(&FloatVgg::from_model(&model, &fixture_config()));
    let proto = onnx::fp32::model(&fused, &provenance).expect("the fixture's pool is 1x1");
    onnx::graph::encode(&proto)
}
