//! Quantization-aware training's operations on the CPU, on plain slices: the fused moving-average
//! observer and fake quantizer of `prepare_qat_fx` (`FusedMovingAvgObsFakeQuantize`), per tensor for
//! activations and per output channel for weights (scaled first by ConvBnReLU2d's
//! `gamma / sqrt(running_var + eps)`), with its straight-through gradient, and the conv output's
//! unscaling. One pass finds the range (fixed chunks, combined in order), one quantizes and keeps the
//! mask the gradient passes through; the parameters are fbgemm's (`fbgemm_qparams`, which the composed
//! GPU version, `device_qparams`, matches bit for bit).

use rayon::prelude::*;

use super::cpu::{lane_sum, per_channel_sums, Nchw};
use super::fresh::Fresh;
use super::isa::vectorized;
use super::FakeQuantization;
use crate::quant::qparams::{fbgemm_qparams, QParams};

/// Values a task of the range or quantization pass takes.
const CHUNK: usize = 1 << 14;

/// What a fake quantizer computed: the dequantized values, where the gradient passes, and its observer's
/// updated range per row.
pub(super) struct FakeQuantizedValues {
    pub output: Vec<f32>,
    /// 1 where the value's integer fell inside the range (the gradient passes), else 0.
    pub mask: Vec<u8>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

vectorized! {
/// Fake-quantizes `values`, `rows` rows of equal length (one for a tensor, one per output channel for a
/// weight), each row scaled by `factor[row]` first where given: the observer's range `observed` (per
/// row; `None` before the first batch) folds in each row's minimum and maximum, `quantization` gives the
/// grid and its parameters follow from the range.
pub(super) fn fake_quantize(
    values: &[f32],
    rows: usize,
    factor: Option<&[f32]>,
    observed: Option<(&[f32], &[f32])>,
    quantization: FakeQuantization,
) -> FakeQuantizedValues {
    let len = values.len() / rows.max(1);
    let scale_of = |row: usize| factor.map_or(1.0, |factor| factor[row]);
    let row_values = |row: usize| &values[row * len..(row + 1) * len];
    // Each row's range: fixed chunks in parallel, combined in order (the same on any core count).
    let ranges: Vec<(f32, f32)> = (0..rows)
        .into_par_iter()
        .map(|row| {
            let f = scale_of(row);
            row_values(row)
                .par_chunks(CHUNK)
                .map(|chunk| scaled_range(chunk, f))
                .collect::<Vec<_>>()
                .into_iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), earlier_on_ties)
        })
        .collect();
    let (min, max) = observe(&ranges, observed, quantization);
    let qparams = qparams(&min, &max, quantization);
    let mut output = Fresh::new(values.len());
    let mut mask = Fresh::new(values.len());
    let rows = output.parts(len.max(1)).zip(mask.parts(len.max(1))).collect::<Vec<_>>();
    rows.into_par_iter().enumerate().for_each(|(row, (out, inside))| {
        let grid = Grid::new(qparams[row], scale_of(row), quantization);
        out.par_chunks_mut(CHUNK)
            .zip(inside.par_chunks_mut(CHUNK))
            .zip(row_values(row).par_chunks(CHUNK))
            .for_each(|((out, inside), values)| quantize_values(values, out, inside, grid));
    });
    FakeQuantizedValues { output: output.into_vec(), mask: mask.into_vec(), min, max }
}
}

/// Lanes of [`scaled_range`].
const RANGE_LANES: usize = 16;

/// `(min, max)` of the products `v * f` over `values`, NaNs left out (infinite where every product is
/// NaN, or there are none); a zero extreme takes the sign of the first zero product. Computed in
/// [`RANGE_LANES`] lanes the compiler vectorizes: a fold in order ran a value at a time, bound by its
/// chain of compares (3.8 % of a smoke bench's samples), and `f32::min` and `max` have no rule for equal
/// zeros of both signs (LLVM may return either), so the fold's zero was whichever the compiler's code
/// kept, where this one is defined. The lanes compare with [`lower`] and [`higher`]: with `f32::min` and
/// `max` the compiler kept them on the stack and compared a value at a time (`fake_quantize` of 1 to 33
/// million values took 1.65-2.2x as long, both cores of an AVX-512 Xeon).
#[inline(always)]
fn scaled_range(values: &[f32], f: f32) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; RANGE_LANES], [f32::NEG_INFINITY; RANGE_LANES]);
    let blocks = values.chunks_exact(RANGE_LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for ((lo, hi), &value) in lo.iter_mut().zip(&mut hi).zip(block) {
            let v = value * f;
            (*lo, *hi) = (lower(*lo, v), higher(*hi, v));
        }
    }
    let lanes = lo.into_iter().zip(hi);
    let (mut min, mut max) =
        lanes.chain(rest.iter().map(|&v| (v * f, v * f))).fold((f32::INFINITY, f32::NEG_INFINITY), earlier_on_ties);
    let first_zero = || values.iter().map(|&v| v * f).find(|&v| v == 0.0);
    if min == 0.0 {
        min = first_zero().unwrap_or(min);
    }
    if max == 0.0 {
        max = first_zero().unwrap_or(max);
    }
    (min, max)
}

/// Two ranges, `earlier`'s values first, combined: an extreme equal in both (a zero of either sign) is
/// `earlier`'s, so that chunks combined in order keep [`scaled_range`]'s rule (`f32::min` and `max` have
/// none). A NaN in `later` is left out; `earlier` holds none.
#[inline(always)]
fn earlier_on_ties((lo, hi): (f32, f32), (l, h): (f32, f32)) -> (f32, f32) {
    (lower(lo, l), higher(hi, h))
}

/// `later` where it is below `earlier`, else `earlier`: the earlier of equal values, and `earlier` where
/// `later` is NaN. A compare and a select, which is what x86's `minps` does (`f32::min` also needs a NaN
/// check of `earlier`).
#[inline(always)]
fn lower(earlier: f32, later: f32) -> f32 {
    if later < earlier {
        later
    } else {
        earlier
    }
}

/// [`lower`]'s twin for the maximum.
#[inline(always)]
fn higher(earlier: f32, later: f32) -> f32 {
    if later > earlier {
        later
    } else {
        earlier
    }
}

/// One channel's grid: what each of its values is scaled by first, and fbgemm's parameters.
#[derive(Clone, Copy)]
struct Grid {
    factor: f32,
    /// fbgemm multiplies by the scale's f32 reciprocal.
    inverse: f32,
    scale: f32,
    zero_point: f32,
    qmin: f32,
    qmax: f32,
}

impl Grid {
    fn new(q: QParams, factor: f32, quantization: FakeQuantization) -> Self {
        let (qmin, qmax) = Grid::integers(quantization);
        Grid { factor, inverse: 1.0 / q.scale, scale: q.scale, zero_point: q.zero_point as f32, qmin, qmax }
    }

    /// The least and greatest integer of `quantization`'s range, as floats.
    fn integers(quantization: FakeQuantization) -> (f32, f32) {
        (quantization.range.min as f32, quantization.range.max as f32)
    }
}

/// `values` quantized and dequantized on `grid` into `out`, and 1 in `inside` where the integer fell in
/// the range.
#[inline(always)]
fn quantize_values(values: &[f32], out: &mut [f32], inside: &mut [u8], grid: Grid) {
    for ((out, inside), &v) in out.iter_mut().zip(inside).zip(values) {
        (*out, *inside) = quantize_value(v, grid);
    }
}

/// A Linear weight's row quantized, each column on its own grid (`[inverse, scale, zero_point]` per
/// column). A function of its own, inlined, so that the compiler knows the slices apart and vectorizes
/// the loop (within the closure it would have had to check six pointers against each other at run time).
#[inline(always)]
fn quantize_row(
    out: &mut [f32],
    inside: &mut [u8],
    values: &[f32],
    [inverses, scales, zero_points]: [&[f32]; 3],
    (qmin, qmax): (f32, f32),
) {
    let n = out.len();
    let (inside, values) = (&mut inside[..n], &values[..n]);
    let (inverses, scales, zero_points) = (&inverses[..n], &scales[..n], &zero_points[..n]);
    for j in 0..n {
        let grid = Grid { factor: 1.0, inverse: inverses[j], scale: scales[j], zero_point: zero_points[j], qmin, qmax };
        (out[j], inside[j]) = quantize_value(values[j], grid);
    }
}

/// `v` quantized and dequantized on `grid`, and 1 where its integer fell in the range (else 0).
#[inline(always)]
fn quantize_value(v: f32, grid: Grid) -> (f32, u8) {
    let integer = round_half_even(v * grid.factor * grid.inverse) + grid.zero_point;
    let inside = u8::from(integer >= grid.qmin && integer <= grid.qmax);
    ((integer.clamp(grid.qmin, grid.qmax) - grid.zero_point) * grid.scale, inside)
}

/// Rows of a Linear's weight a task of [`fake_quantize_columns`] takes.
const ROW_BLOCK: usize = 64;

vectorized! {
/// [`fake_quantize`] of a Linear's weight in Burn's layout, `[inputs, outputs]`, per output: one channel
/// per column, read where it lies (transposing a full-size classifier's 134 MB weight there and back cost
/// more than quantizing it).
pub(super) fn fake_quantize_columns(
    values: &[f32],
    columns: usize,
    observed: Option<(&[f32], &[f32])>,
    quantization: FakeQuantization,
) -> FakeQuantizedValues {
    let empty = || vec![(f32::INFINITY, f32::NEG_INFINITY); columns];
    // Each block of rows' column ranges in parallel, combined in block order; every step keeps the
    // earlier of equal extremes, so that a zero extreme is a column's first zero, as in `scaled_range`.
    let ranges = values
        .par_chunks(ROW_BLOCK * columns.max(1))
        .map(|block| {
            let mut ranges = empty();
            for row in block.chunks(columns.max(1)) {
                for (range, &v) in ranges.iter_mut().zip(row) {
                    *range = earlier_on_ties(*range, (v, v));
                }
            }
            ranges
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(empty(), |mut all, block| {
            for (range, later) in all.iter_mut().zip(block) {
                *range = earlier_on_ties(*range, later);
            }
            all
        });
    let (min, max) = observe(&ranges, observed, quantization);
    let grids: Vec<Grid> = qparams(&min, &max, quantization).into_iter().map(|q| Grid::new(q, 1.0, quantization)).collect();
    // The grids' fields column by column, so that a row's columns are quantized as vectors.
    let field = |of: fn(&Grid) -> f32| grids.iter().map(of).collect::<Vec<f32>>();
    let (inverses, scales, zero_points) = (field(|g| g.inverse), field(|g| g.scale), field(|g| g.zero_point));
    let integers = Grid::integers(quantization);
    let mut output = Fresh::new(values.len());
    let mut mask = Fresh::new(values.len());
    let block = ROW_BLOCK * columns.max(1);
    output.par_chunks_mut(block).zip(mask.par_chunks_mut(block)).zip(values.par_chunks(block)).for_each(
        |((out, inside), values)| {
            for ((out, inside), values) in out.chunks_mut(columns).zip(inside.chunks_mut(columns)).zip(values.chunks(columns)) {
                quantize_row(out, inside, values, [&inverses, &scales, &zero_points], integers);
            }
        },
    );
    FakeQuantizedValues { output: output.into_vec(), mask: mask.into_vec(), min, max }
}
}

/// The observer's range after a batch whose ranges are `ranges`: the moving average, in f32 as the
/// composed version rounds it, or the batch's own for the first.
fn observe(ranges: &[(f32, f32)], observed: Option<(&[f32], &[f32])>, quantization: FakeQuantization) -> (Vec<f32>, Vec<f32>) {
    let c = quantization.averaging_constant;
    ranges
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi))| match observed {
            Some((old_min, old_max)) => (old_min[i] + (lo - old_min[i]) * c, old_max[i] + (hi - old_max[i]) * c),
            None => (lo, hi),
        })
        .unzip()
}

/// fbgemm's parameters of each range.
fn qparams(min: &[f32], max: &[f32], quantization: FakeQuantization) -> Vec<QParams> {
    min.iter().zip(max).map(|(&lo, &hi)| fbgemm_qparams(lo, hi, quantization.range, quantization.symmetric)).collect()
}

/// `x` rounded to the nearest integer, ties to even, the sign of a zero kept (as `nearbyint` and Burn's
/// `round` give it), without a call into libm: below 2^23 in magnitude, adding 2^23 leaves no fraction
/// and rounds as the FPU does, to even; from 2^23 on every float is an integer.
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let magnitude = x.abs();
    if magnitude < TWO_23 {
        ((magnitude + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

vectorized! {
/// The gradient of a fake quantizer's input: `grad` where `mask` is 1, zero elsewhere.
pub(super) fn straight_through(grad: &[f32], mask: &[u8]) -> Vec<f32> {
    let mut dx = Fresh::new(grad.len());
    dx.par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(mask.par_chunks(CHUNK))
        .for_each(|((dx, grad), mask)| masked(dx, grad, mask));
    dx.into_vec()
}
}

/// `grad` where `mask` is 1, zero elsewhere.
#[inline(always)]
fn masked(dx: &mut [f32], grad: &[f32], mask: &[u8]) {
    for ((d, &g), &m) in dx.iter_mut().zip(grad).zip(mask) {
        *d = if m == 1 { g } else { 0.0 };
    }
}

vectorized! {
/// The gradients of a weight fake-quantized after scaling by `factor` per row: the weight's
/// (`grad * mask * factor[row]`) and the factor's (`sum over the row of grad * mask * weight`, f64).
pub(super) fn scaled_weight_grads(grad: &[f32], mask: &[u8], weight: &[f32], factor: &[f32]) -> (Vec<f32>, Vec<f32>) {
    // A row's length (at least 1, as chunks must be).
    let row = (weight.len() / factor.len().max(1)).max(1);
    let mut dweight = Fresh::new(weight.len());
    // Each row's masked gradient first, in the row of `dweight` that then takes it times the factor.
    let dfactor = dweight
        .par_chunks_mut(row)
        .zip(grad.par_chunks(row).zip(mask.par_chunks(row)))
        .zip(weight.par_chunks(row).zip(factor))
        .map(|((out, (grad, mask)), (weight, &factor))| {
            masked(out, grad, mask);
            let dfactor = lane_sum([out, weight], |[g, w]| g * w) as f32;
            out.iter_mut().for_each(|d| *d *= factor);
            dfactor
        })
        .collect();
    (dweight.into_vec(), dfactor)
}
}

vectorized! {
/// ConvBnReLU2d's unscaling of its conv's output, `y / factor[c] + bias[c]` per channel.
pub(super) fn unscale_bias(y: &[f32], shape: Nchw, factor: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut output = Fresh::new(y.len());
    output.par_chunks_mut(shape.plane()).zip(y.par_chunks(shape.plane())).enumerate().for_each(|(p, (out, y))| {
        let c = p % shape.c;
        for (o, &v) in out.iter_mut().zip(y) {
            *o = v / factor[c] + bias[c];
        }
    });
    output.into_vec()
}
}

vectorized! {
/// The gradients of [`unscale_bias`] with respect to `y` (`grad / factor[c]`), the factor
/// (`-sum(grad * y) / factor[c]^2`) and the bias (`sum(grad)`), the sums in f64.
pub(super) fn unscale_bias_grads(grad: &[f32], y: &[f32], shape: Nchw, factor: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let plane = shape.plane();
    let sums = per_channel_sums(shape, |p| {
        let (g, y) = (&grad[p * plane..][..plane], &y[p * plane..][..plane]);
        [lane_sum([g, y], |[g, y]| g * y), lane_sum([g], |[g]| g)]
    });
    let dfactor = sums.iter().zip(factor).map(|(&[gy, _], &f)| (-gy / (f64::from(f) * f64::from(f))) as f32).collect();
    let dbias = sums.iter().map(|&[_, g]| g as f32).collect();
    let mut dy = Fresh::new(y.len());
    dy.par_chunks_mut(plane).zip(grad.par_chunks(plane)).enumerate().for_each(|(p, (out, grad))| {
        let f = factor[p % shape.c];
        for (d, &g) in out.iter_mut().zip(grad) {
            *d = g / f;
        }
    });
    (dy.into_vec(), dfactor, dbias)
}
}

#[cfg(test)]
mod tests {
    use super::super::FakeQuantization;
    use super::{fake_quantize, fake_quantize_columns, round_half_even, scaled_range, CHUNK, ROW_BLOCK};

    /// A zero extreme takes the first zero's sign across the range pass's chunks too.
    #[test]
    fn a_zero_extreme_across_chunks_is_the_first_zeros() {
        for (first, second) in [(-0.0f32, 0.0f32), (0.0, -0.0)] {
            let mut values = vec![1.0f32; 2 * CHUNK];
            (values[5], values[CHUNK + 5]) = (first, second);
            let range = fake_quantize(&values, 1, None, None, FakeQuantization::ACTIVATION);
            assert_eq!(range.min[0].to_bits(), first.to_bits(), "{first} then {second}");
        }
    }

    /// A Linear weight's column whose extreme is zero takes its first zero's sign, within a block of rows
    /// and across blocks; a NaN is left out.
    #[test]
    fn a_zero_extreme_of_a_column_is_its_first_zeros() {
        let columns = 3;
        for (first_row, second_row) in [(1, 3), (ROW_BLOCK - 1, ROW_BLOCK + 2)] {
            for (first, second) in [(-0.0f32, 0.0f32), (0.0, -0.0)] {
                let mut values = vec![1.0f32; 2 * ROW_BLOCK * columns];
                (values[first_row * columns + 1], values[second_row * columns + 1]) = (first, second);
                values[2 * columns + 1] = f32::NAN;
                let range = fake_quantize_columns(&values, columns, None, FakeQuantization::WEIGHT);
                assert_eq!(range.min[1].to_bits(), first.to_bits(), "rows {first_row}, {second_row}: {first} then {second}");
                assert_eq!((range.min[0], range.max[1]), (1.0, 1.0));
            }
        }
    }

    /// Bit for bit its definition, written out: the extremes of the products that are not NaN, a zero
    /// one with the first zero product's sign. Zeros of both signs, NaNs and infinities, at lengths
    /// around the lanes; as compiled here and, inside `fake_quantize`, for the widest instruction set
    /// this CPU has (where the compiler vectorizes it).
    #[test]
    fn the_scaled_range_is_its_definition() {
        let definition = |values: &[f32], f: f32| {
            let products: Vec<f32> = values.iter().map(|&v| v * f).filter(|v| !v.is_nan()).collect();
            let first_zero = products.iter().copied().find(|&v| v == 0.0);
            let signed = |extreme: f32| if extreme == 0.0 { first_zero.expect("a zero product") } else { extreme };
            let min = products.iter().copied().reduce(|a, b| if b < a { b } else { a }).map_or(f32::INFINITY, signed);
            let max = products.iter().copied().reduce(|a, b| if b > a { b } else { a }).map_or(f32::NEG_INFINITY, signed);
            (min, max)
        };
        let specials = [0.0f32, -0.0, 1.5, -2.25, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0e-39];
        let mut state = 12345u32;
        for len in [0usize, 1, 2, 15, 16, 17, 31, 32, 33, 100] {
            for trial in 0..200 {
                let values: Vec<f32> = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let pick = (state >> 8) as usize;
                        // Mostly zeros and one sign, so that a zero is often an extreme.
                        match trial % 4 {
                            0 => specials[pick % specials.len()],
                            1 => [0.0, -0.0, 1.0][pick % 3],
                            2 => [0.0, -0.0, -1.0][pick % 3],
                            _ => [0.0, -0.0][pick % 2],
                        }
                    })
                    .collect();
                for f in [1.0f32, -1.0, 0.5] {
                    let want = definition(&values, f);
                    let fused = fake_quantize(&values, 1, Some(&[f]), None, FakeQuantization::ACTIVATION);
                    for got in [scaled_range(&values, f), (fused.min[0], fused.max[0])] {
                        assert_eq!((got.0.to_bits(), got.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "{values:?} * {f}");
                    }
                }
            }
        }
    }

    /// Against the standard library's, over ties, signs, zeros and the largest floats.
    #[test]
    fn rounding_is_half_to_even() {
        let cases = [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.3, -0.3, 0.0, -0.0, 4194303.5, 8388607.5, 8388608.0, 1e30, -1e30, 127.49, 126.5,
        ];
        for x in cases {
            assert_eq!(round_half_even(x).to_bits(), x.round_ties_even().to_bits(), "{x}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
        for i in 0..100_000 {
            let x = (i as f32 - 50_000.0) * 0.0137;
            assert_eq!(round_half_even(x).to_bits(), x.round_ties_even().to_bits(), "{x}");
        }
    }
}
