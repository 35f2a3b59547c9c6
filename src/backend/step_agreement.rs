//! How closely one training step on a backend follows the same step on the CPU with our kernels: the
//! smoke model from the same weights (initialised on the host) on the same batch, the seed's optimizer,
//! dropout off (its masks come from each backend's own generator; without it the two steps are one
//! function). `vggq device --check-step` runs it on the chosen backend; tests/wgpu.rs holds lavapipe
//! to the bounds measured there.

use burn::module::AutodiffModule;
use burn::nn::DropoutConfig;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::CpuBackend;
use crate::model::{TrainingBackend, Vgg};
use crate::profile::Profile;
use crate::quant::float_model::{torchvision_conv_indices, FloatVgg};
use crate::quant::state_dict::{f32_le, fp32_state_dict};
use crate::train::{training_step, FloatForward, TrainConfig};

/// The seed of the start weights and of the batch: any fixed one.
const SEED: u64 = 7;

/// The differences of one training step on a backend from the CPU's, each relative to the CPU's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepAgreement {
    /// The largest difference of a logit over the largest logit.
    pub logits: f64,
    /// The difference of the loss over the loss.
    pub loss: f64,
    /// The largest difference of a parameter's update (after minus before) over its largest update, at
    /// the parameter where it is largest: an update is 1e-5 to 1e-3 of a parameter, so the parameters'
    /// own FP32 spacing makes 1e-4 of it alone.
    pub update: f64,
    /// That parameter, by its PyTorch name; none where every update is the CPU's exactly.
    pub update_parameter: Option<String>,
    /// The largest update of a conv bias, on either backend: zero in exact arithmetic (training-mode
    /// BatchNorm follows each conv and removes any shift, and the bias starts at 0, so does its weight
    /// decay), so it is rounding alone. Left out of `update`, where it would divide rounding by rounding.
    pub conv_bias_update: f64,
}

/// One step of the smoke model on `B` (on `device`) and on the CPU, compared.
pub fn measure<B: TrainingBackend>(device: &B::Device) -> StepAgreement {
    let config = Profile::smoke().model;
    let cpu = Default::default();
    CpuBackend::seed(&cpu, SEED);
    let start = FloatVgg::from_model(&config.init::<CpuBackend>(&cpu), &config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let batch = crate::data::DEFAULT_BATCH_SIZE;
    let pixels = batch * 3 * config.input_size * config.input_size;
    let images: Vec<f32> = (0..pixels).map(|_| rng.random_range(-2.0..2.0)).collect();
    let classes = config.classes as i64;
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % classes).collect();

    let on_cpu = step::<CpuBackend>(&start, &images, &labels, &cpu);
    let on_backend = step::<B>(&start, &images, &labels, device);

    let before = parameters(&start);
    let (cpu_after, backend_after) = (parameters(&on_cpu.after), parameters(&on_backend.after));
    let conv_biases: Vec<String> =
        torchvision_conv_indices(&config).iter().map(|index| format!("features.{index}.bias")).collect();
    let (mut update, mut update_parameter, mut conv_bias_update) = (0.0f64, None, 0.0);
    for (((name, initial), (_, cpu)), (_, backend)) in before.iter().zip(&cpu_after).zip(&backend_after) {
        let update_of = |after: &[f32]| after.iter().zip(initial).map(|(a, b)| a - b).collect::<Vec<f32>>();
        let (cpu_update, backend_update) = (update_of(cpu), update_of(backend));
        if conv_biases.contains(name) {
            let moved = cpu_update.iter().chain(&backend_update).map(|v| f64::from(v.abs()));
            conv_bias_update = largest(moved.chain([conv_bias_update]));
            continue;
        }
        let difference = relative(&backend_update, &cpu_update);
        // The first NaN stays: it names the parameter that went wrong.
        if !update.is_nan() && (difference.is_nan() || difference > update) {
            (update, update_parameter) = (difference, Some(name.clone()));
        }
    }
    StepAgreement {
        logits: relative(&on_backend.logits, &on_cpu.logits),
        loss: f64::from((on_backend.loss - on_cpu.loss).abs() / on_cpu.loss.abs()),
        update,
        update_parameter,
        conv_bias_update,
    }
}

/// What one step gives: the logits, the loss, and the model after the step.
struct Step {
    logits: Vec<f32>,
    loss: f32,
    after: FloatVgg,
}

/// One step of training's own SGD step ([`training_step`]) with the seed's optimizer, from `start` on
/// `images` (NCHW, flat) and `labels`.
fn step<B: TrainingBackend>(start: &FloatVgg, images: &[f32], labels: &[i64], device: &B::Device) -> Step {
    let config = &start.config;
    let mut model: Vgg<B> = start.to_model(device);
    model.classifier.dropout = DropoutConfig::new(0.0).init();
    let side = config.input_size;
    let images = Tensor::<B, 1>::from_floats(images, device).reshape([labels.len(), 3, side, side]);
    let labels = Tensor::<B, 1, Int>::from_ints(labels, device);
    let train = TrainConfig::seed();
    let (model, logits, loss) =
        training_step(model, &mut train.optimizer::<B>(), train.learning_rate, images, labels, &mut FloatForward);
    let logits = logits.into_data().to_vec::<f32>().expect("FP32 logits");
    Step { logits, loss: loss.into_scalar().elem::<f32>(), after: FloatVgg::from_model(&model.valid(), config) }
}

/// Every FP32 parameter and buffer of `model` with its PyTorch name (the step moves the BatchNorms'
/// running statistics too).
fn parameters(model: &FloatVgg) -> Vec<(String, Vec<f32>)> {
    let state_dict = fp32_state_dict(model).expect("a model of its own config fits its layout");
    state_dict
        .entries
        .into_iter()
        .filter_map(|(name, value)| match value {
            vggq_pth::Value::Tensor(tensor) if tensor.dtype == vggq_pth::DType::F32 => Some((name, f32_le(&tensor.data))),
            _ => None,
        })
        .collect()
}

/// `|a - b|` at its largest, over the largest `|b|`.
pub(super) fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = largest(b.iter().map(|v| f64::from(v.abs()))).max(f64::MIN_POSITIVE);
    largest(a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs()))) / scale
}

/// The largest of `values`, NaN where any is NaN: a backend that computes NaN must not look exact, as it
/// would through `f64::max`, which skips NaN.
pub(super) fn largest(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |most, value| if value.is_nan() || value > most { value } else { most })
}
