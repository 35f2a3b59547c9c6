//! Quantization-aware training as `prepare_qat_fx` with `get_default_qat_qconfig_mapping("fbgemm")` sets
//! it up, then `convert_fx` to the same int8 form as static quantization.
//!
//! - Fake quantization (`FusedMovingAvgObsFakeQuantize`): the observer is updated first, then the
//!   tensor is quantized and dequantized with parameters from fbgemm's `ChooseQuantizationParams`;
//!   gradients pass straight through inside the quantization range and are zero outside it.
//! - Activations: quint8 per-tensor affine, moving-average min/max (constant 0.01), range 0..127, at the
//!   network input and after every fused conv and Linear.
//! - Weights: qint8 per-channel symmetric, moving-average per-channel min/max.
//! - Conv+BN+ReLU as `ConvBnReLU2d._forward_approximate`: the weight is scaled by
//!   `gamma / sqrt(running_var + eps)` before fake quantization, the conv output unscaled, the conv bias
//!   added, then BatchNorm runs with batch statistics.
//! - Conversion folds BN with the final running statistics; each weight observer sees the folded weight
//!   once more (as `from_float` calls it), and the observers' `calculate_qparams` give the parameters.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

use super::float_model::FloatVgg;
use super::model::{QuantMethod, QuantizedVgg};
use super::observer::{MinMax, MovingAverageMinMax};
use super::qparams::{affine_qparams, runtime_qparams, QParams, QuantRange};
use super::static_ptq::{convert, FusedVgg};
use crate::data::BatchLoader;
use crate::model::{Vgg, VggConfig, BATCH_NORM_EPS};
use crate::train::{train_with, EpochReport, TrainConfig};

/// Where QAT starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QatMode {
    /// The FP32 recipe (same initialisation, optimizer, epochs and seed), with fake quantization from the
    /// first step.
    Fp32match,
    /// Fine-tunes the trained FP32 model for 1 epoch at a tenth of its learning rate.
    Finetune,
}

/// Epochs of [`QatMode::Finetune`].
pub const FINETUNE_EPOCHS: usize = 1;
/// [`QatMode::Finetune`]'s learning rate relative to the FP32 recipe's.
pub const FINETUNE_LR_FACTOR: f64 = 0.1;

impl QatMode {
    /// The training recipe of this mode, derived from the FP32 one.
    pub fn recipe(self, fp32: &TrainConfig) -> TrainConfig {
        match self {
            QatMode::Fp32match => fp32.clone(),
            QatMode::Finetune => TrainConfig {
                epochs: FINETUNE_EPOCHS,
                learning_rate: fp32.learning_rate * FINETUNE_LR_FACTOR,
                ..fp32.clone()
            },
        }
    }
}

/// The observers of every fake quantizer: activations (input, convs, Linears) and per-channel weights
/// (convs, Linears).
#[derive(Debug, Clone)]
pub struct QatObservers {
    pub activations: Vec<MovingAverageMinMax>,
    pub weights: Vec<Vec<MovingAverageMinMax>>,
}

impl QatObservers {
    pub fn new(config: &VggConfig) -> Self {
        let layers = config.features().iter().filter(|l| matches!(l, crate::model::FeatureLayer::Conv(_))).count() + 3;
        QatObservers { activations: vec![MovingAverageMinMax::default(); layers + 1], weights: vec![Vec::new(); layers] }
    }
}

fn scalar<B: Backend>(x: Tensor<B, 1>) -> f32 {
    x.into_scalar().elem()
}

/// Per-tensor activation fake quantization with a straight-through gradient.
fn fake_quantize_activation<B: AutodiffBackend, const D: usize>(x: Tensor<B, D>, observer: &mut MovingAverageMinMax) -> Tensor<B, D> {
    let values = x.clone().detach();
    observer.observe(MinMax { min: scalar(values.clone().min()), max: scalar(values.clone().max()) });
    let q = runtime_qparams(observer.range.min, observer.range.max, QuantRange::QUINT8_REDUCED, false);
    let range = QuantRange::QUINT8_REDUCED;
    let integer = (values.clone() * (1.0 / q.scale)).round() + q.zero_point as f32;
    let inside = integer.clone().greater_equal_elem(range.min as f32).bool_and(integer.clone().lower_equal_elem(range.max as f32)).float();
    let dequantized = (integer.clamp(range.min as f32, range.max as f32) - q.zero_point as f32) * q.scale;
    straight_through(x, dequantized, inside)
}

/// `x` with the value `quantized` and the gradient `mask * dL/dy`.
fn straight_through<B: AutodiffBackend, const D: usize>(x: Tensor<B, D>, quantized: Tensor<B, D>, mask: Tensor<B, D>) -> Tensor<B, D> {
    let passed = x * mask.clone();
    passed.clone() + (quantized - passed.detach()).detach()
}

/// Per-channel symmetric weight fake quantization of a `[C, K]` view of a weight.
fn fake_quantize_weight<B: AutodiffBackend>(weight: Tensor<B, 2>, observers: &mut Vec<MovingAverageMinMax>) -> Tensor<B, 2> {
    let [channels, _] = weight.dims();
    let values = weight.clone().detach();
    let mins = values.clone().min_dim(1).into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let maxs = values.clone().max_dim(1).into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    if observers.is_empty() {
        *observers = vec![MovingAverageMinMax::default(); channels];
    }
    let qparams: Vec<QParams> = observers
        .iter_mut()
        .zip(mins.iter().zip(&maxs))
        .map(|(observer, (&min, &max))| {
            observer.observe(MinMax { min, max });
            runtime_qparams(observer.range.min, observer.range.max, QuantRange::QINT8, true)
        })
        .collect();
    let device = weight.device();
    let inverse: Vec<f32> = qparams.iter().map(|q| 1.0 / q.scale).collect();
    let scales: Vec<f32> = qparams.iter().map(|q| q.scale).collect();
    let column = |v: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(v, [channels]), &device).reshape([channels, 1]);
    let integer = (values * column(inverse)).round();
    let range = QuantRange::QINT8;
    let inside = integer.clone().greater_equal_elem(range.min as f32).bool_and(integer.clone().lower_equal_elem(range.max as f32)).float();
    let dequantized = integer.clamp(range.min as f32, range.max as f32) * column(scales);
    straight_through(weight, dequantized, inside)
}

/// The QAT training forward pass of `model` (an autodiff model in training mode).
pub fn qat_forward<B: AutodiffBackend>(model: &Vgg<B>, images: Tensor<B, 4>, observers: &mut QatObservers) -> Tensor<B, 2> {
    let (activations, weights) = (&mut observers.activations, &mut observers.weights);
    let mut x = fake_quantize_activation(images, &mut activations[0]);
    for (i, block) in model.features.iter().enumerate() {
        let norm = &block.norm;
        let weight = block.conv.weight.val();
        let [c, k_in, kh, kw] = weight.dims();
        let factor = norm.weight.val() / (norm.running_var.value() + f64::from(BATCH_NORM_EPS)).sqrt();
        let scaled = (weight * factor.clone().reshape([c, 1, 1, 1])).reshape([c, k_in * kh * kw]);
        let quantized = fake_quantize_weight(scaled, &mut weights[i]).reshape([c, k_in, kh, kw]);
        let y = conv2d(x, quantized, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1)) / factor.reshape([1, c, 1, 1]);
        let y = match &block.conv.bias {
            Some(bias) => y + bias.val().reshape([1, c, 1, 1]),
            None => y,
        };
        let y = fake_quantize_activation(norm.forward(y).clamp_min(0.0), &mut activations[i + 1]);
        x = if block.pool { model.max_pool.forward(y) } else { y };
    }
    let convs = model.features.len();
    // The average pool and flatten share their input's fake quantization: none of their own.
    let mut x = model.avgpool.forward(x).flatten::<2>(1, 3);
    let head = &model.classifier;
    let linears = [&head.hidden1, &head.hidden2, &head.output];
    for (j, linear) in linears.into_iter().enumerate() {
        let weight = fake_quantize_weight(linear.weight.val().transpose(), &mut weights[convs + j]).transpose();
        x = x.matmul(weight);
        if let Some(bias) = &linear.bias {
            x = x + bias.val().unsqueeze();
        }
        let last = j == 2;
        if !last {
            x = x.clamp_min(0.0);
        }
        x = fake_quantize_activation(x, &mut activations[convs + 1 + j]);
        if !last {
            x = head.dropout.forward(x);
        }
    }
    x
}

/// Trains `model` with fake quantization for `recipe`, then converts it to int8.
pub fn train_qat<B: AutodiffBackend>(
    model: Vgg<B>,
    config: &VggConfig,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    recipe: &TrainConfig,
    device: &B::Device,
) -> (QuantizedVgg, Vec<EpochReport>) {
    let mut observers = QatObservers::new(config);
    let (model, epochs) =
        train_with(model, train_batches, val_batches, recipe, device, |model, images| qat_forward(model, images, &mut observers));
    (convert_qat(&FloatVgg::from_model(&model.valid(), config), &mut observers), epochs)
}

/// `convert_fx` of a QAT model whose float parameters are `model`.
pub fn convert_qat(model: &FloatVgg, observers: &mut QatObservers) -> QuantizedVgg {
    let fused = FusedVgg::fuse(model);
    let layer_weights = fused
        .convs
        .iter()
        .map(|c| MinMax::per_channel(&c.weight, c.out_channels))
        .chain(fused.classifier.iter().map(|l| MinMax::per_channel(&l.weight, l.out_features)));
    let weight_ranges: Vec<Vec<MinMax>> = layer_weights
        .zip(observers.weights.iter_mut())
        .map(|(batch, layer)| {
            if layer.is_empty() {
                *layer = vec![MovingAverageMinMax::default(); batch.len()];
            }
            layer.iter_mut().zip(batch).map(|(observer, range)| {
                observer.observe(range);
                observer.range
            }).collect()
        })
        .collect();
    let activations: Vec<QParams> = observers
        .activations
        .iter()
        .map(|o| affine_qparams(o.range.min, o.range.max, QuantRange::QUINT8_REDUCED))
        .collect();
    convert(&fused, &activations, &weight_ranges, QuantMethod::Qat)
}
