//! The GPU code path on wgpu (Mesa's lavapipe where CI runs it): one training step of the smoke model on
//! burn-wgpu, Burn's composed operations compiled by cubecl, against the same step on burn-flex with our
//! CPU kernels, from the same weights on the same batch (dropout off: its masks are each backend's).

#![cfg(feature = "wgpu")]

use burn::module::AutodiffModule;
use burn::nn::DropoutConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use vggq::backend::{CpuBackend, WgpuBackend};
use vggq::model::{kernels, TrainingBackend, Vgg, VggConfig};
use vggq::profile::Profile;
use vggq::quant::float_model::FloatVgg;
use vggq::train::TrainConfig;

/// The largest difference allowed between the two forward passes (logits, loss), relative to the largest
/// magnitude: both compute in FP32, in other orders (measured on lavapipe: 2.8e-6 and 0).
const FORWARD_BOUND: f64 = 2e-5;
/// The same for each parameter's update (after minus before): an update is 1e-5 to 1e-3 of a parameter,
/// so the parameters' own FP32 spacing alone makes 1e-4 of it (measured on lavapipe: at most 2.4e-4).
const UPDATE_BOUND: f64 = 1e-3;
/// A conv bias's gradient is zero in exact arithmetic (training-mode BatchNorm follows and removes any
/// shift), and its weight decay too (it starts at 0): each update is rounding, measured at most 2.4e-10.
const CONV_BIAS_UPDATE: f32 = 1e-8;

/// One SGD step of the seed's optimizer: the logits, the loss, and the model after the step.
fn step<B: TrainingBackend>(start: &FloatVgg, images: &[f32], labels: &[i64], device: &B::Device) -> (Vec<f32>, f32, FloatVgg) {
    let config = &start.config;
    let mut model: Vgg<B> = start.to_model(device);
    // Dropout's masks come from each backend's own generator: without it, the two steps are one function.
    model.classifier.dropout = DropoutConfig::new(0.0).init();
    let side = config.input_size;
    let images = Tensor::<B, 1>::from_floats(images, device).reshape([labels.len(), 3, side, side]);
    let labels = Tensor::<B, 1, Int>::from_ints(labels, device);
    let logits = model.forward(images);
    let loss = kernels::cross_entropy(logits.clone(), labels);
    let loss_value = loss.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let train = TrainConfig::seed();
    let model = train.optimizer::<B>().step(train.learning_rate, model, grads);
    let logits = logits.into_data().to_vec::<f32>().unwrap();
    (logits, loss_value, FloatVgg::from_model(&model.valid(), config))
}

/// Every parameter of `model` in one list per tensor, named.
fn parameters(model: &FloatVgg) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (i, block) in model.blocks.iter().enumerate() {
        out.push((format!("features.{i}.conv.weight"), block.weight.clone()));
        out.push((format!("features.{i}.conv.bias"), block.bias.clone()));
        out.push((format!("features.{i}.norm.weight"), block.norm.weight.clone()));
        out.push((format!("features.{i}.norm.bias"), block.norm.bias.clone()));
        out.push((format!("features.{i}.norm.running_mean"), block.norm.running_mean.clone()));
        out.push((format!("features.{i}.norm.running_var"), block.norm.running_var.clone()));
    }
    for (i, linear) in model.classifier.iter().enumerate() {
        out.push((format!("classifier.{i}.weight"), linear.weight.clone()));
        out.push((format!("classifier.{i}.bias"), linear.bias.clone()));
    }
    out
}

/// `|a - b|` at its largest, over the largest `|b|`.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max) / scale
}

#[test]
fn a_training_step_on_wgpu_is_the_cpu_step() {
    let config: VggConfig = Profile::smoke().model;
    let cpu = Default::default();
    CpuBackend::seed(&cpu, 7);
    let start = FloatVgg::from_model(&config.init::<CpuBackend>(&cpu), &config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let batch = 32;
    let images: Vec<f32> = (0..batch * 3 * config.input_size * config.input_size).map(|_| rng.random_range(-2.0..2.0)).collect();
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();

    let (cpu_logits, cpu_loss, cpu_after) = step::<CpuBackend>(&start, &images, &labels, &cpu);
    let (gpu_logits, gpu_loss, gpu_after) = step::<WgpuBackend>(&start, &images, &labels, &Default::default());

    let logits = relative(&gpu_logits, &cpu_logits);
    let loss = f64::from((gpu_loss - cpu_loss).abs() / cpu_loss.abs());
    println!("logits {logits:.2e}, loss {loss:.2e} (cpu {cpu_loss}, wgpu {gpu_loss})");
    assert!(logits <= FORWARD_BOUND && loss <= FORWARD_BOUND, "logits {logits:.2e}, loss {loss:.2e}");
    let before = parameters(&start);
    let mut worst = (0.0, String::new());
    for ((name, initial), ((_, on_cpu), (_, on_gpu))) in
        before.iter().zip(parameters(&cpu_after).iter().zip(parameters(&gpu_after).iter()))
    {
        let update = |after: &[f32]| after.iter().zip(initial).map(|(a, b)| a - b).collect::<Vec<f32>>();
        let (cpu_update, gpu_update) = (update(on_cpu), update(on_gpu));
        if name.ends_with("conv.bias") {
            let largest = cpu_update.iter().chain(&gpu_update).map(|v| v.abs()).fold(0.0, f32::max);
            assert!(largest <= CONV_BIAS_UPDATE, "{name} moved {largest:.2e}");
            continue;
        }
        let error = relative(&gpu_update, &cpu_update);
        if error > worst.0 {
            worst = (error, name.clone());
        }
    }
    println!("largest relative difference of an update: {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 <= UPDATE_BOUND, "{} updated {:.2e} apart (relative)", worst.1, worst.0);
}
