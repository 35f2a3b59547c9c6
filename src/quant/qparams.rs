//! Quantization parameters and the arithmetic that maps reals to integers, as PyTorch computes them.
//!
//! Two formulas choose parameters: the observers' `_calculate_qparams` (Python, f32 tensors), which gives
//! the parameters stored in converted models, and fbgemm's `ChooseQuantizationParams` (C++, f64
//! intermediates), which quantizes activations at run time in dynamic Linears and drives the fake
//! quantization of QAT.

use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// `torch.finfo(torch.float32).eps`: the smallest scale an observer returns.
pub const SCALE_EPS: f32 = f32::EPSILON;

/// fbgemm's `SMALL_SCALE_THRESHOLD`: smaller runtime scales are raised to it.
pub const SMALL_SCALE_THRESHOLD: f32 = 6.1e-5;

/// An inclusive integer range values are clamped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantRange {
    pub min: i32,
    pub max: i32,
}

impl QuantRange {
    /// `torch.qint8`: weights.
    pub const QINT8: QuantRange = QuantRange { min: -128, max: 127 };
    /// `torch.quint8`: the storage range of activations.
    pub const QUINT8: QuantRange = QuantRange { min: 0, max: 255 };
    /// `torch.quint8` with `reduce_range=True`: fbgemm's activation observers keep one bit of headroom
    /// against overflow of its 16-bit intermediate sums.
    pub const QUINT8_REDUCED: QuantRange = QuantRange { min: 0, max: 127 };

    fn clamp(self, value: f32) -> f32 {
        value.clamp(self.min as f32, self.max as f32)
    }
}

/// One scale and zero point: `real = (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QParams {
    /// `zero_point + round_half_even(x * (1 / scale))`, clamped: fbgemm's `Quantize`, which multiplies
    /// by the f32 reciprocal rather than dividing.
    pub fn quantize(self, value: f32, range: QuantRange) -> i32 {
        let inverse = 1.0 / self.scale;
        range.clamp((value * inverse).round_ties_even() + self.zero_point as f32) as i32
    }

    pub fn dequantize(self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }
}

/// Observer `_calculate_qparams` for `per_tensor_affine` / `per_channel_affine` (activations):
/// the range is widened to include 0, `scale = (max - min) / (qmax - qmin)`, and the zero point is
/// `qmin - round(min / scale)`, all in f32. An observer that saw nothing (its range still `+inf..-inf`:
/// a QAT run of 0 epochs) gives scale 1 and zero point 0, as `check_min_max_valid` makes PyTorch's
/// ("must run observer before calling calculate_qparams. Returning default values.").
pub fn affine_qparams(min: f32, max: f32, range: QuantRange) -> QParams {
    if min == f32::INFINITY && max == f32::NEG_INFINITY {
        return QParams { scale: 1.0, zero_point: 0 };
    }
    let (min_neg, max_pos) = (min.min(0.0), max.max(0.0));
    let scale = ((max_pos - min_neg) / (range.max - range.min) as f32).max(SCALE_EPS);
    let zero_point = range.min - (min_neg / scale).round_ties_even() as i32;
    QParams { scale, zero_point: zero_point.clamp(range.min, range.max) }
}

/// Observer `_calculate_qparams` for `per_tensor_symmetric` / `per_channel_symmetric` on qint8
/// (weights): `scale = max(-min, max) / ((qmax - qmin) / 2)`, zero point 0. For qint8 the divisor is
/// 127.5, not 127: PyTorch's formula, kept.
pub fn symmetric_qparams(min: f32, max: f32, range: QuantRange) -> QParams {
    let max_abs = (-min.min(0.0)).max(max.max(0.0));
    let half_range = (range.max - range.min) as f64 / 2.0;
    QParams { scale: (max_abs / half_range as f32).max(SCALE_EPS), zero_point: 0 }
}

/// ATen's `quant_utils::ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity)`: f64
/// arithmetic, the zero point chosen from the end with the smaller rounding error; with
/// `preserve_sparsity` the range is made symmetric and the zero point the middle of it. What dynamic
/// Linears quantize their inputs with.
pub fn runtime_qparams(min: f32, max: f32, range: QuantRange, preserve_sparsity: bool) -> QParams {
    choose_qparams(min, max, range, preserve_sparsity, Chooser::Aten)
}

/// fbgemm's own `ChooseQuantizationParams`, which x86 builds of PyTorch (`USE_FBGEMM`) call in
/// `fused_moving_avg_obs_fake_quant`, QAT's fake quantization: as [`runtime_qparams`], but the scale is
/// rounded to f32 before the zero point is computed from it, and each end's error is the sum of its
/// terms' magnitudes. The two give another zero point for about one range in two million: on
/// [-0.016910309, 0.029274836] in 0..127, 46 (ATen's) against fbgemm's 47, which PyTorch's fused op
/// gives. The device twin is [`device_qparams`].
pub fn fbgemm_qparams(min: f32, max: f32, range: QuantRange, preserve_sparsity: bool) -> QParams {
    choose_qparams(min, max, range, preserve_sparsity, Chooser::Fbgemm)
}

/// Which of PyTorch's two `ChooseQuantizationParams` to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chooser {
    /// ATen's `quant_utils.h`.
    Aten,
    /// fbgemm's `QuantUtils.cc`.
    Fbgemm,
}

fn choose_qparams(min: f32, max: f32, range: QuantRange, preserve_sparsity: bool, chooser: Chooser) -> QParams {
    let (qmin, qmax) = (range.min, range.max);
    let (mut min, mut max) = (min, max);
    let symmetric = min < 0.0 && max > 0.0 && preserve_sparsity;
    if symmetric {
        let symmetric_qmin = -((qmax - qmin) / 2 + 1);
        let symmetric_qmax = (qmax - qmin) / 2;
        let max_scale = (min / symmetric_qmin as f32).abs().max((max / symmetric_qmax as f32).abs()) as f64;
        min = (max_scale * symmetric_qmin as f64) as f32;
        max = (max_scale * symmetric_qmax as f64) as f32;
    }
    min = min.min(0.0);
    max = max.max(0.0);
    let mut scale = (max as f64 - min as f64) / (qmax - qmin) as f64;
    if chooser == Chooser::Fbgemm {
        scale = f64::from(scale as f32);
    }
    if scale as f32 == 0.0 || (1.0 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    if (scale as f32) < SMALL_SCALE_THRESHOLD {
        let original = scale as f32;
        scale = SMALL_SCALE_THRESHOLD as f64;
        if min == 0.0 {
            max = SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else if max == 0.0 {
            min = -SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else {
            let amplifier = SMALL_SCALE_THRESHOLD / original;
            min *= amplifier;
            max *= amplifier;
        }
    }
    let from_min = qmin as f64 - min as f64 / scale;
    let from_max = qmax as f64 - max as f64 / scale;
    let error = |q: i32, steps: f64| match chooser {
        Chooser::Aten => f64::from(q).abs() - steps.abs(),
        Chooser::Fbgemm => f64::from(q).abs() + steps.abs(),
    };
    let (from_min_error, from_max_error) = (error(qmin, min as f64 / scale), error(qmax, max as f64 / scale));
    let mut initial = if from_min_error < from_max_error { from_min } else { from_max };
    if symmetric {
        initial = (qmin + qmax) as f64 / 2.0;
    }
    let zero_point = if initial < qmin as f64 {
        qmin
    } else if initial > qmax as f64 {
        qmax
    } else {
        initial.round_ties_even() as i32
    };
    QParams { scale: scale as f32, zero_point }
}

/// fbgemm's `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity)` element-wise on device
/// tensors of ranges, as `FusedMovingAvgObsFakeQuantize` calls it: returns `(scale, zero_point)`, the
/// zero point as a float holding an integer. Each step is computed in the precision fbgemm computes it
/// in (the range and the scale in f32, the zero point's arithmetic in f64), so the results are
/// fbgemm's exactly. The host twin is [`fbgemm_qparams`].
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
    let mut scale = wide(narrow((wide(max.clone()) - wide(min.clone())) / span));
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
    let from_min_error = min_steps.clone().abs() + qmin.abs();
    let from_max_error = max_steps.clone().abs() + qmax.abs();
    let initial = (max_steps.neg() + qmax).mask_where(from_min_error.lower(from_max_error), min_steps.neg() + qmin);
    let initial = match symmetric {
        Some(symmetric) => initial.mask_fill(symmetric, (qmin + qmax) / 2.0),
        None => initial,
    };
    (narrow(scale), narrow(initial.clamp(qmin, qmax).round()))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::host_reads;

    #[test]
    fn rounding_is_half_to_even() {
        let unit = QParams { scale: 1.0, zero_point: 0 };
        let got: Vec<i32> = [0.5, 1.5, 2.5, -0.5, -1.5].iter().map(|&v| unit.quantize(v, QuantRange::QINT8)).collect();
        assert_eq!(got, vec![0, 2, 2, 0, -2]);
        assert_eq!(unit.quantize(300.0, QuantRange::QINT8), 127);
    }

    #[test]
    fn symmetric_qint8_divides_by_127_5() {
        let q = symmetric_qparams(-2.0, 1.0, QuantRange::QINT8);
        assert_eq!(q, QParams { scale: 2.0 / 127.5, zero_point: 0 });
    }

    #[test]
    fn affine_zero_point_comes_from_the_minimum() {
        let q = affine_qparams(-1.0, 3.0, QuantRange::QUINT8_REDUCED);
        assert_eq!(q.scale, 4.0 / 127.0);
        assert_eq!(q.zero_point, 32); // round(31.75)
                                      // An all-zero tensor still gets a usable scale.
        assert_eq!(affine_qparams(0.0, 0.0, QuantRange::QUINT8_REDUCED).scale, SCALE_EPS);
        // One that observed nothing, PyTorch's default values.
        let unobserved = crate::quant::observer::MinMax::default();
        let q = affine_qparams(unobserved.min, unobserved.max, QuantRange::QUINT8_REDUCED);
        assert_eq!(q, QParams { scale: 1.0, zero_point: 0 });
    }

    #[test]
    fn runtime_qparams_match_fbgemm_for_a_relu_range() {
        // torch.ops.quantized.linear_dynamic on an input in [0, 2.54] with reduce_range: scale 0.02, zp 0.
        let q = runtime_qparams(0.0, 2.54, QuantRange::QUINT8_REDUCED, false);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 0.02).abs() < 1e-7);
        // Symmetric (QAT weights): the scale covers |min| / 128 and |max| / 127, the zero point is 0.
        let w = fbgemm_qparams(-1.28, 0.5, QuantRange::QINT8, true);
        assert_eq!(w.zero_point, 0);
        assert!((w.scale - 0.01).abs() < 1e-8);
    }

    /// PyTorch's two formulas on a range whose zero point lies on a half in exact arithmetic,
    /// [-0.016910309, 0.029274836] in 0..127 (PyTorch 2.15, x86): QAT's fused fake quantization
    /// (`torch.fused_moving_avg_obs_fake_quant`, fbgemm's, the scale rounded to f32 first) gives scale
    /// 0.0003636625478975475 and zero point 47; a dynamic Linear's (`torch._choose_qparams_per_tensor`
    /// with `reduce_range`, ATen's, the scale kept in f64) 0.00036366256027240454 and 46.
    #[test]
    fn fake_quantization_and_dynamic_inputs_each_take_their_formula() {
        let (min, max) = (-0.016910309, 0.029274836);
        let fused = fbgemm_qparams(min, max, QuantRange::QUINT8_REDUCED, false);
        assert_eq!(fused, QParams { scale: 0.000_363_662_55, zero_point: 47 });
        assert_eq!(runtime_qparams(min, max, QuantRange::QUINT8_REDUCED, false).zero_point, 46);
    }

    /// The device formula against the host's (fbgemm's) on ranges of every kind: identical.
    #[test]
    fn device_qparams_are_fbgemms() {
        use rand::{Rng, SeedableRng};
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut ranges: Vec<(f32, f32)> = vec![
            (0.0, 0.0),
            (0.0, 2.54),
            (-1.28, 0.5),
            (-3.0, 0.0),
            (1e-7, 2e-6),
            (-4e-6, 1e-6),
            (0.5, 4.0),
            (-4.0, -0.5),
            (-0.016910309, 0.029274836),
        ];
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
                let host = fbgemm_qparams(min, max, range, symmetric);
                assert_eq!(zero_points[i] as i32, host.zero_point, "zero point of [{min}, {max}] ({range:?})");
                assert_eq!(scales[i], host.scale, "scale of [{min}, {max}] ({range:?})");
            }
        }
    }
}
