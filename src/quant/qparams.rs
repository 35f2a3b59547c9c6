//! Quantization parameters and the arithmetic that maps reals to integers, as PyTorch computes them.
//!
//! Two formulas choose parameters: the observers' `_calculate_qparams` (Python, f32 tensors), which gives
//! the parameters stored in converted models, and fbgemm's `ChooseQuantizationParams` (C++, f64
//! intermediates), which quantizes activations at run time in dynamic Linears and drives the fake
//! quantization of QAT.

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
/// `qmin - round(min / scale)`, all in f32.
pub fn affine_qparams(min: f32, max: f32, range: QuantRange) -> QParams {
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

/// fbgemm's `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity)` (ATen's
/// `quant_utils.h`): f64 arithmetic, the zero point chosen from the end with the smaller rounding
/// error; with `preserve_sparsity` the range is made symmetric and the zero point the middle of it.
/// Used by dynamic Linears for their inputs and by QAT's fused fake quantization.
pub fn runtime_qparams(min: f32, max: f32, range: QuantRange, preserve_sparsity: bool) -> QParams {
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
    let from_min_error = (qmin as f64).abs() - (min as f64 / scale).abs();
    let from_max_error = (qmax as f64).abs() - (max as f64 / scale).abs();
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn runtime_qparams_match_fbgemm_for_a_relu_range() {
        // torch.ops.quantized.linear_dynamic on an input in [0, 2.54] with reduce_range: scale 0.02, zp 0.
        let q = runtime_qparams(0.0, 2.54, QuantRange::QUINT8_REDUCED, false);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 0.02).abs() < 1e-7);
        // Symmetric (QAT weights): the scale covers |min| / 128 and |max| / 127, the zero point is 0.
        let w = runtime_qparams(-1.28, 0.5, QuantRange::QINT8, true);
        assert_eq!(w.zero_point, 0);
        assert!((w.scale - 0.01).abs() < 1e-8);
    }
}
