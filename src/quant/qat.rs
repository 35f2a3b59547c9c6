//! Quantization-aware training as `prepare_qat_fx` with `get_default_qat_qconfig_mapping("fbgemm")` sets
//! it up, then `convert_fx` to the same int8 form as static quantization.
//!
//! - Fake quantization (`FusedMovingAvgObsFakeQuantize`): the observer is updated first, then the
//!   tensor is quantized and dequantized with parameters from fbgemm's `ChooseQuantizationParams`;
//!   gradients pass straight through inside the quantization range and are zero outside it.
//! - The fake quantizers are the backend's operations ([`kernels::fake_quantize_activation`],
//!   [`kernels::fake_quantize_weight`], [`kernels::fake_quantize_linear_weight`], [`kernels::unscale_bias`]):
//!   fused kernels on the CPU, Burn's
//!   operations composed on a GPU. All of it stays on the device: observers keep their running minimum
//!   and maximum as tensors and the parameters are computed from them there (fbgemm's formula,
//!   `device_qparams` on a GPU). The host reads the observers once, at conversion.
//! - Activations: quint8 per-tensor affine, moving-average min/max (constant 0.01), range 0..127, where
//!   FX's graph puts its fake quantizers: the network input, every fused conv and Linear, and each
//!   classifier dropout (an observer of its own, used in training only); a max-pool, the average pool
//!   and the flatten reuse their input's fake quantizer, which therefore updates again on their outputs.
//! - Weights: qint8 per-channel symmetric, moving-average per-channel min/max.
//! - Conv+BN+ReLU as `ConvBnReLU2d._forward_approximate`: the weight is scaled by
//!   `gamma / sqrt(running_var + eps)` before fake quantization, the conv output unscaled, the conv bias
//!   added, then BatchNorm runs with batch statistics.
//! - Conversion folds BN with the final running statistics; each weight observer sees the folded weight
//!   once more (as `from_float` calls it), and the observers' `calculate_qparams` give the parameters.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;
pub use vggq_core::QatMode;

use super::float_model::FloatVgg;
use super::model::{QuantMethod, QuantizedVgg};
use super::observer::{MinMax, MovingAverageMinMax};
use super::qparams::{affine_qparams, QParams, QuantRange};
use super::static_ptq::{convert, FusedVgg};
use crate::data::BatchLoader;
use crate::host_reads;
use crate::model::kernels::{self, Observed};
use crate::model::{linear_bias, ConvBlock, FeatureLayer, TrainingBackend, Vgg, VggConfig, BATCH_NORM_EPS};
use crate::train::{
    train_with, CheckpointError, Checkpoints, EpochReport, ForwardState, ObservedRange, TrainConfig, TrainingForward,
};

/// Epochs of [`QatMode::Finetune`].
pub const FINETUNE_EPOCHS: usize = 1;
/// [`QatMode::Finetune`]'s learning rate relative to the FP32 recipe's.
pub const FINETUNE_LR_FACTOR: f64 = 0.1;

/// The training recipe of `mode`, derived from the FP32 one: the same (`fp32match`), or
/// [`FINETUNE_EPOCHS`] at [`FINETUNE_LR_FACTOR`] of its learning rate (`finetune`).
pub fn qat_recipe(mode: QatMode, fp32: &TrainConfig) -> TrainConfig {
    match mode {
        QatMode::Fp32match => fp32.clone(),
        QatMode::Finetune => {
            TrainConfig { epochs: FINETUNE_EPOCHS, learning_rate: fp32.learning_rate * FINETUNE_LR_FACTOR, ..fp32.clone() }
        }
    }
}

/// `MovingAverageMinMaxObserver` (per tensor: shape `[1]`) or its per-channel twin (`[C]`), on the device:
/// what the fake quantizer it belongs to keeps between steps ([`kernels::fake_quantize_activation`],
/// [`kernels::fake_quantize_weight`]).
#[derive(Debug, Clone)]
pub struct DeviceMovingAverage<B: Backend> {
    /// Running minimum and maximum; `None` before the first observation.
    observed: Option<Observed<B>>,
}

impl<B: Backend> Default for DeviceMovingAverage<B> {
    fn default() -> Self {
        DeviceMovingAverage { observed: None }
    }
}

impl<B: Backend> DeviceMovingAverage<B> {
    /// Its running range, read by the host (one read); `None` before the first observation.
    fn range(&self) -> Option<ObservedRange> {
        let observed = self.observed.as_ref()?;
        let range = |t: &FloatTensor<B>| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t.clone()));
        let (min, max) = (range(&observed.min), range(&observed.max));
        let channels = min.dims()[0];
        let mut min = host_reads::values(Tensor::cat(vec![min, max], 0));
        let max = min.split_off(channels);
        Some(ObservedRange { min, max })
    }

    /// The observer whose running range is `range` (a checkpoint's), on `device`.
    fn from_range(range: Option<ObservedRange>, device: &B::Device) -> Self {
        let tensor = |values: Vec<f32>| {
            let channels = values.len();
            Tensor::<B, 1>::from_data(TensorData::new(values, [channels]), device).into_primitive().tensor()
        };
        DeviceMovingAverage { observed: range.map(|range| Observed { min: tensor(range.min), max: tensor(range.max) }) }
    }

    /// The host twin of this observer.
    fn to_host(&self) -> Vec<MovingAverageMinMax> {
        let Some(range) = self.range() else { return Vec::new() };
        (range.min.into_iter().zip(range.max))
            .map(|(min, max)| MovingAverageMinMax { range: MinMax { min, max }, ..Default::default() })
            .collect()
    }
}

/// The classifier's dropouts, each followed by a fake quantizer of its own.
const DROPOUTS: usize = 2;

/// QAT's training forward pass and its observers: activations (the input, each fused conv and Linear,
/// each dropout) per tensor, weights (each conv and Linear) per channel, all on the device.
pub struct QatForward<B: Backend> {
    activations: Vec<DeviceMovingAverage<B>>,
    dropouts: Vec<DeviceMovingAverage<B>>,
    weights: Vec<DeviceMovingAverage<B>>,
}

impl<B: Backend> QatForward<B> {
    pub fn new(config: &VggConfig) -> Self {
        let layers = config.features().iter().filter(|l| matches!(l, FeatureLayer::Conv(_))).count() + 3;
        QatForward {
            activations: vec![DeviceMovingAverage::default(); layers + 1],
            dropouts: vec![DeviceMovingAverage::default(); DROPOUTS],
            weights: vec![DeviceMovingAverage::default(); layers],
        }
    }

    /// The observers' state, read by the host (once per observer): what conversion starts from.
    pub fn observers(&self) -> QatObservers {
        let per_tensor = |observers: &[DeviceMovingAverage<B>]| -> Vec<MovingAverageMinMax> {
            observers.iter().map(|o| o.to_host().first().copied().unwrap_or_default()).collect()
        };
        QatObservers {
            activations: per_tensor(&self.activations),
            dropouts: per_tensor(&self.dropouts),
            weights: self.weights.iter().map(DeviceMovingAverage::to_host).collect(),
        }
    }
}

impl<B: TrainingBackend> TrainingForward<B> for QatForward<B> {
    /// The observers' ranges: activations, dropouts, weights.
    fn state(&self) -> ForwardState {
        let observers = self.activations.iter().chain(&self.dropouts).chain(&self.weights);
        ForwardState { observers: observers.map(DeviceMovingAverage::range).collect() }
    }

    fn restore(&mut self, state: ForwardState, device: &B::Device) -> bool {
        let (activations, dropouts) = (self.activations.len(), self.dropouts.len());
        if state.observers.len() != activations + dropouts + self.weights.len() {
            return false;
        }
        let mut observers = state.observers.into_iter().map(|range| DeviceMovingAverage::from_range(range, device));
        self.activations = observers.by_ref().take(activations).collect();
        self.dropouts = observers.by_ref().take(dropouts).collect();
        self.weights = observers.collect();
        true
    }

    /// The QAT training forward pass of `model` (an autodiff model in training mode).
    fn forward(&mut self, model: &Vgg<B>, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let (activations, dropouts, weights) = (&mut self.activations, &mut self.dropouts, &mut self.weights);
        let mut x = kernels::fake_quantize_activation(images, &mut activations[0].observed);
        for (i, block) in model.features.iter().enumerate() {
            let norm = &block.norm;
            let weight = block.conv.weight.val();
            let [c, k_in, kh, kw] = weight.dims();
            // `value_sync`: `value` may not hold the last batch's update yet, and PyTorch scales by the updated statistics.
            let factor = norm.weight.val() / (norm.running_var.value_sync() + f64::from(BATCH_NORM_EPS)).sqrt();
            let scaled = weight.reshape([c, k_in * kh * kw]);
            let quantized = kernels::fake_quantize_weight(scaled, factor.clone(), &mut weights[i].observed);
            // The conv with a zero bias (PyTorch's `zero_bias`), unscaled, then the conv's own bias.
            let zero_bias = Tensor::zeros([c], &x.device());
            let y = kernels::conv3x3(x, quantized.reshape([c, k_in, kh, kw]), zero_bias);
            let y = kernels::unscale_bias(y, factor, conv_bias(block));
            let y = kernels::fake_quantize_activation(norm.forward_relu(y), &mut activations[i + 1].observed);
            x = if block.pool {
                kernels::fake_quantize_activation(kernels::max_pool2x2(y), &mut activations[i + 1].observed)
            } else {
                y
            };
        }
        let convs = model.features.len();
        let x = kernels::fake_quantize_activation(model.avgpool.forward(x), &mut activations[convs].observed);
        let mut x = kernels::fake_quantize_activation(x.flatten::<2>(1, 3), &mut activations[convs].observed);
        let head = &model.classifier;
        let linears = [&head.hidden1, &head.hidden2, &head.output];
        for (j, linear) in linears.into_iter().enumerate() {
            let weight = kernels::fake_quantize_linear_weight(linear.weight.val(), &mut weights[convs + j].observed);
            x = kernels::linear(x, weight, linear_bias(linear));
            let last = j == 2;
            if !last {
                x = x.clamp_min(0.0);
            }
            x = kernels::fake_quantize_activation(x, &mut activations[convs + 1 + j].observed);
            if !last {
                x = kernels::fake_quantize_activation(head.dropout.forward(x), &mut dropouts[j].observed);
            }
        }
        x
    }
}

/// A conv block's own bias (VGG's convolutions have one).
fn conv_bias<B: Backend>(block: &ConvBlock<B>) -> Tensor<B, 1> {
    block.conv.bias.as_ref().expect("VGG's convolutions have biases").val()
}

/// The observers of every fake quantizer, on the host: activations (input, convs, Linears: what the
/// converted model keeps), the dropouts' (training only) and per-channel weights (convs, Linears).
#[derive(Debug, Clone)]
pub struct QatObservers {
    pub activations: Vec<MovingAverageMinMax>,
    pub dropouts: Vec<MovingAverageMinMax>,
    pub weights: Vec<Vec<MovingAverageMinMax>>,
}

/// Trains `model` with fake quantization for `recipe` (resuming from and saving to `checkpoints` where
/// given, as [`train_with`]), then converts it to int8.
pub fn train_qat<B: TrainingBackend>(
    model: Vgg<B>,
    config: &VggConfig,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    recipe: &TrainConfig,
    device: &B::Device,
    checkpoints: Option<&Checkpoints>,
) -> Result<(QuantizedVgg, Vec<EpochReport>), CheckpointError> {
    let mut forward = QatForward::<B>::new(config);
    let (model, epochs) = train_with(model, train_batches, val_batches, recipe, device, &mut forward, checkpoints)?;
    Ok((convert_qat(&FloatVgg::from_model(&model.valid(), config), &mut forward.observers()), epochs))
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
            layer
                .iter_mut()
                .zip(batch)
                .map(|(observer, range)| {
                    observer.observe(range);
                    observer.range
                })
                .collect()
        })
        .collect();
    let activations: Vec<QParams> =
        observers.activations.iter().map(|o| affine_qparams(o.range.min, o.range.max, QuantRange::QUINT8_REDUCED)).collect();
    convert(&fused, &activations, &weight_ranges, QuantMethod::Qat)
}
