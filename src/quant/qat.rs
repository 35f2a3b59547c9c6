//! Quantization-aware training as `prepare_qat_fx` with `get_default_qat_qconfig_mapping("fbgemm")` sets
//! it up, then `convert_fx` to the same int8 form as static quantization.
//!
//! - Fake quantization (`FusedMovingAvgObsFakeQuantize`): the observer is updated first, then the
//!   tensor is quantized and dequantized with parameters from fbgemm's `ChooseQuantizationParams`;
//!   gradients pass straight through inside the quantization range and are zero outside it.
//! - All of it stays on the device: observers keep their running minimum and maximum as tensors and the
//!   parameters are computed from them there ([`device_qparams`], fbgemm's formula in f32 where fbgemm
//!   takes f64 intermediates: a scale may differ from fbgemm's in its last bit). The host reads the
//!   observers once, at conversion.
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
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
pub use vggq_core::QatMode;

use super::float_model::FloatVgg;
use super::model::{QuantMethod, QuantizedVgg};
use super::observer::{MinMax, MovingAverageMinMax, DEFAULT_AVERAGING_CONSTANT};
use super::qparams::{affine_qparams, QParams, QuantRange, SMALL_SCALE_THRESHOLD};
use super::static_ptq::{convert, FusedVgg};
use crate::data::BatchLoader;
use crate::host_reads;
use crate::model::kernels;
use crate::model::{linear_bias, FeatureLayer, TrainingBackend, Vgg, VggConfig, BATCH_NORM_EPS};
use crate::train::{train_with, EpochReport, TrainConfig, TrainingForward};

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

/// `MovingAverageMinMaxObserver` (per tensor: shape `[1]`) or its per-channel twin (`[C]`), on the device.
#[derive(Debug, Clone)]
pub struct DeviceMovingAverage<B: Backend> {
    /// Running minimum and maximum; `None` before the first observation.
    range: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> Default for DeviceMovingAverage<B> {
    fn default() -> Self {
        DeviceMovingAverage { range: None }
    }
}

impl<B: Backend> DeviceMovingAverage<B> {
    /// Folds in a batch whose minimum and maximum are `min` and `max`; returns the updated range.
    fn observe(&mut self, min: Tensor<B, 1>, max: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let c = f64::from(DEFAULT_AVERAGING_CONSTANT);
        let range = match self.range.take() {
            None => (min, max),
            Some((old_min, old_max)) => (old_min.clone() + (min - old_min) * c, old_max.clone() + (max - old_max) * c),
        };
        self.range = Some(range.clone());
        range
    }

    /// The host twin of this observer: one read of its range.
    fn to_host(&self) -> Vec<MovingAverageMinMax> {
        let Some((min, max)) = &self.range else { return Vec::new() };
        let channels = min.dims()[0];
        let both = host_reads::values(Tensor::cat(vec![min.clone(), max.clone()], 0));
        (0..channels)
            .map(|i| MovingAverageMinMax { range: MinMax { min: both[i], max: both[channels + i] }, ..Default::default() })
            .collect()
    }
}

/// fbgemm's `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity)` element-wise on device
/// tensors of ranges, as `FusedMovingAvgObsFakeQuantize` calls it: returns `(scale, zero_point)`, the
/// zero point as a float holding an integer. Each step is computed in the precision fbgemm computes it
/// in (the range in f32, the scale and the zero point's arithmetic in f64), so the results are
/// fbgemm's exactly. The host twin is [`super::qparams::runtime_qparams`].
pub fn device_qparams<B: Backend>(
    min: Tensor<B, 1>,
    max: Tensor<B, 1>,
    range: QuantRange,
    preserve_sparsity: bool,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let (qmin, qmax) = (f64::from(range.min), f64::from(range.max));
    let span = qmax - qmin;
    let wide = |t: Tensor<B, 1>| t.cast(FloatDType::F64);
    let narrow = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
    let (mut min, mut max) = (min, max);
    let symmetric = preserve_sparsity.then(|| min.clone().lower_elem(0.0).bool_and(max.clone().greater_elem(0.0)));
    if let Some(symmetric) = &symmetric {
        let (symmetric_qmin, symmetric_qmax) =
            (f64::from(-((range.max - range.min) / 2 + 1)), f64::from((range.max - range.min) / 2));
        let max_scale = wide((min.clone() / symmetric_qmin).abs().max_pair((max.clone() / symmetric_qmax).abs()));
        min = min.mask_where(symmetric.clone(), narrow(max_scale.clone() * symmetric_qmin));
        max = max.mask_where(symmetric.clone(), narrow(max_scale * symmetric_qmax));
    }
    let (mut min, mut max) = (min.clamp_max(0.0), max.clamp_min(0.0));
    let mut scale = (wide(max.clone()) - wide(min.clone())) / span;
    let scale_f32 = narrow(scale.clone());
    let degenerate = scale_f32.clone().equal_elem(0.0).bool_or(scale_f32.recip().is_inf());
    scale = scale.mask_fill(degenerate, 0.1);
    let original = narrow(scale.clone());
    let small = original.clone().lower_elem(SMALL_SCALE_THRESHOLD);
    // A range with one end at 0 keeps it there and gets the smallest scale's span; others grow (in f32)
    // by the factor the scale grew.
    let amplifier = original.recip() * SMALL_SCALE_THRESHOLD;
    let (min_zero, max_zero) = (min.clone().equal_elem(0.0), max.clone().equal_elem(0.0));
    let threshold_span = SMALL_SCALE_THRESHOLD * span as f32;
    let amplified_min =
        (min.clone() * amplifier.clone()).mask_fill(max_zero.bool_and(min_zero.clone().bool_not()), -threshold_span);
    let amplified_max = (max.clone() * amplifier).mask_fill(min_zero, threshold_span);
    min = min.mask_where(small.clone(), amplified_min);
    max = max.mask_where(small.clone(), amplified_max);
    let scale = scale.mask_fill(small, f64::from(SMALL_SCALE_THRESHOLD));
    let (min_steps, max_steps) = (wide(min) / scale.clone(), wide(max) / scale.clone());
    let from_min_error = min_steps.clone().abs().neg() + qmin.abs();
    let from_max_error = max_steps.clone().abs().neg() + qmax.abs();
    let initial = (max_steps.neg() + qmax).mask_where(from_min_error.lower(from_max_error), min_steps.neg() + qmin);
    let initial = match symmetric {
        Some(symmetric) => initial.mask_fill(symmetric, (qmin + qmax) / 2.0),
        None => initial,
    };
    (narrow(scale), narrow(initial.clamp(qmin, qmax).round()))
}

/// The classifier's dropouts, each followed by a fake quantizer of its own.
const DROPOUTS: usize = 2;

/// QAT's training forward pass and its observers: activations (the input, each fused conv and Linear,
/// each dropout) per tensor, weights (each conv and Linear) per channel, all on the device.
pub struct QatForward<B: AutodiffBackend> {
    activations: Vec<DeviceMovingAverage<B::InnerBackend>>,
    dropouts: Vec<DeviceMovingAverage<B::InnerBackend>>,
    weights: Vec<DeviceMovingAverage<B::InnerBackend>>,
}

impl<B: AutodiffBackend> QatForward<B> {
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
        let per_tensor = |observers: &[DeviceMovingAverage<B::InnerBackend>]| -> Vec<MovingAverageMinMax> {
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
    /// The QAT training forward pass of `model` (an autodiff model in training mode).
    fn forward(&mut self, model: &Vgg<B>, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let (activations, dropouts, weights) = (&mut self.activations, &mut self.dropouts, &mut self.weights);
        let mut x = fake_quantize_activation(images, &mut activations[0]);
        for (i, block) in model.features.iter().enumerate() {
            let norm = &block.norm;
            let weight = block.conv.weight.val();
            let [c, k_in, kh, kw] = weight.dims();
            // `value_sync`: `value` may not hold the last batch's update yet, and PyTorch scales by the updated statistics.
            let factor = norm.weight.val() / (norm.running_var.value_sync() + f64::from(BATCH_NORM_EPS)).sqrt();
            let scaled = (weight * factor.clone().reshape([c, 1, 1, 1])).reshape([c, k_in * kh * kw]);
            let quantized = fake_quantize_weight(scaled, &mut weights[i]).reshape([c, k_in, kh, kw]);
            // The conv with a zero bias (PyTorch's `zero_bias`), unscaled, then the conv's own bias.
            let zero_bias = Tensor::zeros([c], &x.device());
            let y = kernels::conv3x3(x, quantized, zero_bias) / factor.reshape([1, c, 1, 1]);
            let y = match &block.conv.bias {
                Some(bias) => y + bias.val().reshape([1, c, 1, 1]),
                None => y,
            };
            let y = fake_quantize_activation(norm.forward_relu(y), &mut activations[i + 1]);
            x = if block.pool { fake_quantize_activation(kernels::max_pool2x2(y), &mut activations[i + 1]) } else { y };
        }
        let convs = model.features.len();
        let x = fake_quantize_activation(model.avgpool.forward(x), &mut activations[convs]);
        let mut x = fake_quantize_activation(x.flatten::<2>(1, 3), &mut activations[convs]);
        let head = &model.classifier;
        let linears = [&head.hidden1, &head.hidden2, &head.output];
        for (j, linear) in linears.into_iter().enumerate() {
            let weight = fake_quantize_weight(linear.weight.val().transpose(), &mut weights[convs + j]).transpose();
            x = kernels::linear(x, weight, linear_bias(linear));
            let last = j == 2;
            if !last {
                x = x.clamp_min(0.0);
            }
            x = fake_quantize_activation(x, &mut activations[convs + 1 + j]);
            if !last {
                x = fake_quantize_activation(head.dropout.forward(x), &mut dropouts[j]);
            }
        }
        x
    }
}

/// Per-tensor activation fake quantization (quint8, fbgemm's reduced range) with a straight-through
/// gradient.
fn fake_quantize_activation<B: AutodiffBackend, const D: usize>(
    x: Tensor<B, D>,
    observer: &mut DeviceMovingAverage<B::InnerBackend>,
) -> Tensor<B, D> {
    let values = x.clone().inner();
    let (min, max) = observer.observe(values.clone().min(), values.clone().max());
    let (scale, zero_point) = device_qparams(min, max, QuantRange::QUINT8_REDUCED, false);
    let shape = [1; D];
    let (scale, zero_point) = (scale.reshape(shape), zero_point.reshape(shape));
    straight_through(x, fake_quantize(values, scale, zero_point, QuantRange::QUINT8_REDUCED))
}

/// Per-channel symmetric weight fake quantization (qint8) of a `[C, K]` view of a weight.
fn fake_quantize_weight<B: AutodiffBackend>(
    weight: Tensor<B, 2>,
    observer: &mut DeviceMovingAverage<B::InnerBackend>,
) -> Tensor<B, 2> {
    let values = weight.clone().inner();
    let [channels, _] = values.dims();
    let per_channel = |t: Tensor<B::InnerBackend, 2>| t.reshape([channels]);
    let (min, max) = observer.observe(per_channel(values.clone().min_dim(1)), per_channel(values.clone().max_dim(1)));
    let (scale, zero_point) = device_qparams(min, max, QuantRange::QINT8, true);
    let column = |t: Tensor<B::InnerBackend, 1>| t.reshape([channels, 1]);
    straight_through(weight, fake_quantize(values, column(scale), column(zero_point), QuantRange::QINT8))
}

/// `fake_quantize_*_affine_cachemask`: `(clamp(round(x * (1 / scale)) + zero_point) - zero_point) * scale`
/// (the reciprocal in f32, as fbgemm multiplies by it), and the mask of values whose integer fell inside
/// the range (where the gradient passes).
fn fake_quantize<B: Backend, const D: usize>(
    values: Tensor<B, D>,
    scale: Tensor<B, D>,
    zero_point: Tensor<B, D>,
    range: QuantRange,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let (qmin, qmax) = (range.min as f32, range.max as f32);
    let integer = (values * scale.clone().recip()).round() + zero_point.clone();
    let inside = integer.clone().greater_equal_elem(qmin).bool_and(integer.clone().lower_equal_elem(qmax)).float();
    ((integer.clamp(qmin, qmax) - zero_point) * scale, inside)
}

/// `x` with the value `dequantized` and the gradient `mask * dL/dy`.
fn straight_through<B: AutodiffBackend, const D: usize>(
    x: Tensor<B, D>,
    (dequantized, mask): (Tensor<B::InnerBackend, D>, Tensor<B::InnerBackend, D>),
) -> Tensor<B, D> {
    let passed = x * Tensor::from_inner(mask);
    passed.clone() + Tensor::from_inner(dequantized - passed.clone().inner())
}

/// The observers of every fake quantizer, on the host: activations (input, convs, Linears: what the
/// converted model keeps), the dropouts' (training only) and per-channel weights (convs, Linears).
#[derive(Debug, Clone)]
pub struct QatObservers {
    pub activations: Vec<MovingAverageMinMax>,
    pub dropouts: Vec<MovingAverageMinMax>,
    pub weights: Vec<Vec<MovingAverageMinMax>>,
}

/// Trains `model` with fake quantization for `recipe`, then converts it to int8.
pub fn train_qat<B: TrainingBackend>(
    model: Vgg<B>,
    config: &VggConfig,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    recipe: &TrainConfig,
    device: &B::Device,
) -> (QuantizedVgg, Vec<EpochReport>) {
    let mut forward = QatForward::<B>::new(config);
    let (model, epochs) = train_with(model, train_batches, val_batches, recipe, device, &mut forward);
    (convert_qat(&FloatVgg::from_model(&model.valid(), config), &mut forward.observers()), epochs)
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

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::quant::qparams::runtime_qparams;

    /// The device formula against the host's (fbgemm's) on ranges of every kind: identical.
    #[test]
    fn device_qparams_are_fbgemms() {
        use rand::{Rng, SeedableRng};
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut ranges: Vec<(f32, f32)> =
            vec![(0.0, 0.0), (0.0, 2.54), (-1.28, 0.5), (-3.0, 0.0), (1e-7, 2e-6), (-4e-6, 1e-6), (0.5, 4.0), (-4.0, -0.5)];
        ranges.extend((0..2000).map(|_| {
            let magnitude = 10f32.powf(random.random_range(-6.0..2.0));
            let (a, b) = (random.random_range(-1.0..1.0) * magnitude, random.random_range(-1.0..1.0) * magnitude);
            (a.min(b), a.max(b))
        }));
        let device = Default::default();
        for (range, symmetric) in [(QuantRange::QUINT8_REDUCED, false), (QuantRange::QINT8, true)] {
            let column = |values: Vec<f32>| Tensor::<Flex, 1>::from_floats(values.as_slice(), &device);
            let (scales, zero_points) = device_qparams(
                column(ranges.iter().map(|r| r.0).collect()),
                column(ranges.iter().map(|r| r.1).collect()),
                range,
                symmetric,
            );
            let (scales, zero_points) = (host_reads::values(scales), host_reads::values(zero_points));
            for (i, &(min, max)) in ranges.iter().enumerate() {
                let host = runtime_qparams(min, max, range, symmetric);
                assert_eq!(zero_points[i] as i32, host.zero_point, "zero point of [{min}, {max}] ({range:?})");
                assert_eq!(scales[i], host.scale, "scale of [{min}, {max}] ({range:?})");
            }
        }
    }
}
