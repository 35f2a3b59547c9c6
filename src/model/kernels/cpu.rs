//! VGG's operations on the CPU: burn-flex's tensors, f32, NCHW, on rayon's pool.
//!
//! Every result is the same bytes on any core count and any CPU (x86-64 with AVX-512, AVX2 or neither,
//! aarch64 with NEON, or no vectors at all): how the work
//! is shared out follows the problem's shape (groups of images, ranges of channels, blocks of columns:
//! never the number of threads or the caches the machine reports), every sum is taken in one fixed
//! order, and the products are our GEMM's ([`super::gemm`]: each entry one chain of fused
//! multiply-adds) and dot products ([`super::dot_products`]: fixed lanes and tree), whatever the vector
//! width. Threads decide who computes a piece, never what the piece is.
//!
//! - 3x3 convolution: tasks take groups of images and multiply the weights by their im2col in one-core
//!   GEMMs, a block of columns at a time that half the L2 holds: several images where planes are small,
//!   bands of one image's rows where they are large; the forward pass writes the im2col straight into
//!   the GEMM's panels. The input gradient is the same forward convolution
//!   of the output gradient with the weights flipped and transposed; the weight gradient multiplies the
//!   output gradient by the im2col's transpose the same way (as dot products of rows where blocks are
//!   wide), each group of images into a partial of its own, the partials added in a fixed tree (burn's
//!   default runs it as a convolution whose kernel is the whole output gradient, the slowest operation
//!   of a training step).
//! - BatchNorm with ReLU: a pass for the mean and one for the variance about it (f64 sums, as PyTorch's
//!   CPU kernel accumulates), one for the output; the backward pass one for both of its sums and one for
//!   the gradient, the ReLU's mask taken from the output.
//! - 2x2 max-pool: the first maximum of each window in row-major order, as PyTorch picks it (NaN wins),
//!   its position kept for the backward pass.
//! - Linear: one GEMM forward and one for the weight's gradient; the input's gradient as dot products of
//!   rows (`dot_products`), the layout it has.
//! - Cross-entropy: each row in f64 with `libm`'s `exp` and `log` (the system's may round otherwise).
//! - Requantization (the int8 simulation's): one pass, each value's arithmetic as Burn's operations'.
//! - SGD's step: one pass over each parameter, its gradient and its velocity, updating the parameter and
//!   the velocity in place where their buffers are their own.

use burn::backend::Flex;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Shape, TensorData, TensorMetadata};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
use std::thread::LocalKey;

use super::dot_products::{dot_products, Rows};
use super::fake_quantize;
use super::fresh::{Fresh, Part};
use super::gemm::{matmul, matmul_packed, BOperand, Cores, Matrix, Operand, PackedA, Panels};
use super::isa::{isa, vectorized};
use super::{BatchNormed, FakeQuantization, FakeQuantized, Observed, SgdStep, VggBackend};
use crate::model::BATCH_NORM_EPS;

/// The shape of an NCHW activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Nchw {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn of(tensor: &FlexTensor) -> Self {
        let [n, c, h, w] = tensor.shape().dims();
        Nchw { n, c, h, w }
    }

    pub fn plane(self) -> usize {
        self.h * self.w
    }

    fn image(self) -> usize {
        self.c * self.plane()
    }

    fn len(self) -> usize {
        self.n * self.image()
    }
}

/// `tensor` laid out contiguously (a copy only where it is not).
pub(super) fn contiguous(tensor: FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

/// The f32 values of a contiguous tensor.
pub(super) fn values(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("contiguous f32 tensors")
}

pub(super) fn new_tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl VggBackend for Flex {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let shape = Nchw::of(&x);
        let out_channels = weight.shape().dims::<4>()[0];
        let output = conv3x3_forward(values(&x), shape, values(&weight), Some(values(&bias)), out_channels);
        new_tensor(output, [shape.n, out_channels, shape.h, shape.w])
    }

    fn batch_norm_relu(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> BatchNormed<Self> {
        let x = contiguous(x);
        let (weight, bias) = (contiguous(weight), contiguous(bias));
        let forward = batch_norm_relu_forward(values(&x), Nchw::of(&x), values(&weight), values(&bias));
        let c = forward.mean.len();
        BatchNormed {
            output: new_tensor(forward.output, x.shape()),
            mean: new_tensor(forward.mean, [c]),
            variance: new_tensor(forward.variance, [c]),
        }
    }

    fn scale_shift_relu(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = contiguous(x);
        let (scale, shift) = (contiguous(scale), contiguous(shift));
        let (scale, shift) = (values(&scale), values(&shift));
        // `v - 0.0` is `v` exactly: the same values as `v * scale + shift`.
        let output = affine_relu(values(&x), Nchw::of(&x), |channel| (0.0, scale[channel], shift[channel]));
        new_tensor(output, x.shape())
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = contiguous(x);
        let shape = Nchw::of(&x);
        new_tensor(max_pool2x2_values(values(&x), shape), [shape.n, shape.c, shape.h / 2, shape.w / 2])
    }

    fn linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let [n, i] = x.shape().dims();
        let o = weight.shape().dims::<2>()[1];
        // Each output's chain starts from its bias.
        let mut output: Vec<f32> = values(&bias).repeat(n);
        let (x, weight) = (Operand::rows(values(&x), i), Operand::rows(values(&weight), o));
        matmul(Matrix::rows(&mut output, o), n, o, i, x, weight, true, Cores::All);
        new_tensor(output, [n, o])
    }

    fn requantize(
        accumulator: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        multiplier: FloatTensor<Self>,
        zero_point: f32,
        low: f32,
    ) -> FloatTensor<Self> {
        let (accumulator, bias, multiplier) = (contiguous(accumulator), contiguous(bias), contiguous(multiplier));
        let shape = accumulator.shape();
        let (bias, multiplier) = (values(&bias), values(&multiplier));
        let plane = shape.num_elements() / (shape[0] * shape[1]);
        let mut output = Fresh::new(shape.num_elements());
        let image = shape[1] * plane;
        output.par_chunks_mut(image).zip(values(&accumulator).par_chunks(image)).for_each(|(out, image)| {
            for (channel, (out, input)) in out.chunks_mut(plane).zip(image.chunks(plane)).enumerate() {
                let (b, m) = (bias[channel], multiplier[channel]);
                // Burn's operations' arithmetic: the same roundings in the same order. (Its `round`
                // gives +0.0 where this gives -0.0, at -0.5; `+ zero_point` makes both +0.0.)
                for (o, &v) in out.iter_mut().zip(input) {
                    *o = (((v + b) * m).round_ties_even() + zero_point).clamp(low, 255.0);
                }
            }
        });
        new_tensor(output.into_vec(), shape)
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let logits = contiguous(logits);
        let [_, classes] = logits.shape().dims();
        let loss = cross_entropy_forward(values(&logits), classes, &class_indices(targets, classes)).loss;
        new_tensor(vec![loss], [1])
    }

    fn fake_quantize_activation(x: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        fake_quantized(x, Channels::Tensor, observed).0
    }

    fn fake_quantize_weight(
        weight: FloatTensor<Self>,
        factor: FloatTensor<Self>,
        observed: Option<Observed<Self>>,
    ) -> FakeQuantized<Self> {
        fake_quantized(weight, Channels::Rows(contiguous(factor)), observed).0
    }

    fn fake_quantize_linear_weight(weight: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        fake_quantized(weight, Channels::Columns, observed).0
    }

    fn unscale_bias(y: FloatTensor<Self>, factor: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (y, factor, bias) = (contiguous(y), contiguous(factor), contiguous(bias));
        new_tensor(fake_quantize::unscale_bias(values(&y), Nchw::of(&y), values(&factor), values(&bias)), y.shape())
    }

    fn sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: Option<FloatTensor<Self>>,
        step: SgdStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (mut param, grad) = (owned(param), contiguous(grad));
        // The first step has no velocity yet: it starts as the decayed gradient itself.
        let first = velocity.is_none();
        let mut velocity = velocity.map_or_else(|| new_tensor(vec![0.0; param.shape().num_elements()], param.shape()), owned);
        sgd_update(param.storage_mut::<f32>(), velocity.storage_mut::<f32>(), values(&grad), first, step);
        (param, velocity)
    }
}

/// What a fake quantizer's channels are.
pub(super) enum Channels {
    /// One: an activation, with [`FakeQuantization::ACTIVATION`].
    Tensor,
    /// The rows of a conv's `[C, K]` weight, each scaled by its factor first (`[C]`).
    Rows(FlexTensor),
    /// The columns of a Linear's `[I, O]` weight.
    Columns,
}

/// [`fake_quantize::fake_quantize`] or [`fake_quantize::fake_quantize_columns`] of `x`, as its channels are:
/// the result as tensors, and the mask its gradient passes through.
pub(super) fn fake_quantized(
    x: FlexTensor,
    channels: Channels,
    observed: Option<Observed<Flex>>,
) -> (FakeQuantized<Flex>, Vec<u8>) {
    let x = contiguous(x);
    let observed = observed.map(|o| (contiguous(o.min), contiguous(o.max)));
    let observed = observed.as_ref().map(|(min, max)| (values(min), values(max)));
    let (result, count) = match channels {
        Channels::Tensor => (fake_quantize::fake_quantize(values(&x), 1, None, observed, FakeQuantization::ACTIVATION), 1),
        Channels::Rows(factor) => {
            let rows = x.shape().dims::<2>()[0];
            let factor = contiguous(factor);
            (fake_quantize::fake_quantize(values(&x), rows, Some(values(&factor)), observed, FakeQuantization::WEIGHT), rows)
        }
        Channels::Columns => {
            let columns = x.shape().dims::<2>()[1];
            (fake_quantize::fake_quantize_columns(values(&x), columns, observed, FakeQuantization::WEIGHT), columns)
        }
    };
    let observed = Observed { min: new_tensor(result.min, [count]), max: new_tensor(result.max, [count]) };
    (FakeQuantized { output: new_tensor(result.output, x.shape()), observed }, result.mask)
}

vectorized! {
/// Burn's `Sgd` in one pass over the parameter `p`, its velocity `v` and gradient `g`: each value's
/// arithmetic as there, rounded at the same places.
fn sgd_update(p: &mut [f32], v: &mut [f32], g: &[f32], first: bool, step: SgdStep) {
    // The closure owns copies of the step: read through references, they were reloaded for every value
    // (the slices might alias them), which kept the update to a value at a time.
    p.par_chunks_mut(SGD_CHUNK).zip(v.par_chunks_mut(SGD_CHUNK)).zip(g.par_chunks(SGD_CHUNK)).for_each(move |((p, v), g)| {
        let SgdStep { learning_rate, momentum, weight_decay } = step;
        for ((p, v), &g) in p.iter_mut().zip(v).zip(g) {
            let decayed = *p * weight_decay + g;
            *v = if first { decayed } else { decayed + *v * momentum };
            *p -= *v * learning_rate;
        }
    });
}
}

/// Values an SGD task updates: enough to amortise a task, few enough for both cores to share a small
/// parameter.
const SGD_CHUNK: usize = 1 << 14;

/// `tensor` contiguous from the start of a buffer of its own, to be updated in place (a copy only where
/// it is a view or shares its buffer).
fn owned(tensor: FlexTensor) -> FlexTensor {
    let len = tensor.shape().num_elements();
    if tensor.layout().contiguous_offsets() == Some((0, len)) && tensor.storage::<f32>().len() == len {
        tensor
    } else {
        FlexTensor::from_data(tensor.into_data())
    }
}

/// The input gradient of a Linear, `dy (n x o) * weight^T` with `weight` `i x o` row-major: `n x i`, each
/// entry the dot product of a row of `dy` and a row of the weights. Tasks take fixed blocks of the
/// weights' rows (their columns of the result), read once from memory while `dy` stays in L2.
pub(super) fn linear_input_grad(dy: &[f32], weight: &[f32], n: usize, i: usize, o: usize) -> Vec<f32> {
    let blocks: Vec<Vec<f32>> = weight
        .par_chunks(LINEAR_WEIGHT_ROWS * o)
        .map(|rows| {
            let count = rows.len() / o;
            let mut block = vec![0.0f32; n * count];
            dot_products(&mut block, count, n, count, o, Rows { data: dy, stride: o }, Rows { data: rows, stride: o }, false);
            block
        })
        .collect();
    let mut dx = vec![0.0f32; n * i];
    for (b, block) in blocks.iter().enumerate() {
        let count = block.len() / n;
        for (row, values) in dx.chunks_mut(i).zip(block.chunks(count)) {
            row[b * LINEAR_WEIGHT_ROWS..][..count].copy_from_slice(values);
        }
    }
    dx
}

/// Rows of a Linear's weights a task takes for the input gradient.
const LINEAR_WEIGHT_ROWS: usize = 256;

/// The weight gradient of a Linear, `x^T * dy` with `x` `n x i` and `dy` `n x o`: `i x o`, Burn's layout.
pub(super) fn linear_weight_grad(x: &[f32], dy: &[f32], n: usize, i: usize, o: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; i * o];
    matmul(Matrix::rows(&mut dw, o), i, o, n, Operand::transposed(x, i), Operand::rows(dy, o), false, Cores::All);
    dw
}

/// The bias gradient of a Linear: `dy` (`n x o`) summed over its rows (f64).
pub(super) fn linear_bias_grad(dy: &[f32], n: usize, o: usize) -> Vec<f32> {
    (0..o).map(|j| (0..n).map(|row| f64::from(dy[row * o + j])).sum::<f64>() as f32).collect()
}

/// The class indices of `targets` (`[N]`), each checked to be below `classes`.
pub(super) fn class_indices(targets: IntTensor<Flex>, classes: usize) -> Vec<usize> {
    let indices: Vec<usize> = targets.into_data().iter::<i64>().map(|t| t as usize).collect();
    assert!(indices.iter().all(|&t| t < classes), "class indices must lie below {classes}: {indices:?}");
    indices
}

/// What the cross-entropy's forward pass computes and its backward pass needs.
pub(super) struct CrossEntropy {
    /// The batch's mean loss.
    pub loss: f32,
    /// Each row's `log(sum(exp(logits)))`.
    pub log_sum_exp: Vec<f64>,
}

/// The mean over the rows of `logits` (`N x classes`) of `log(sum(exp(row))) - row[target]`: each row in
/// f64 about its maximum, in order, with `libm`'s `exp` and `log`, the rows' losses added in order.
pub(super) fn cross_entropy_forward(logits: &[f32], classes: usize, targets: &[usize]) -> CrossEntropy {
    let log_sum_exp: Vec<f64> = logits
        .chunks(classes)
        .map(|row| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            max + libm::log(row.iter().map(|&v| libm::exp(f64::from(v) - max)).sum::<f64>())
        })
        .collect();
    let total: f64 =
        log_sum_exp.iter().zip(logits.chunks(classes)).zip(targets).map(|((lse, row), &t)| lse - f64::from(row[t])).sum();
    CrossEntropy { loss: (total / targets.len().max(1) as f64) as f32, log_sum_exp }
}

/// The gradient of [`cross_entropy_forward`]'s mean loss with respect to `logits`, times `grad`:
/// `(softmax(row) - one_hot(target)) * grad / N`, in f64.
pub(super) fn cross_entropy_backward(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    log_sum_exp: &[f64],
    grad: f32,
) -> Vec<f32> {
    let scale = f64::from(grad) / targets.len().max(1) as f64;
    logits
        .chunks(classes)
        .zip(targets)
        .zip(log_sum_exp)
        .flat_map(|((row, &t), &lse)| {
            row.iter().enumerate().map(move |(j, &v)| {
                let one_hot = if j == t { 1.0 } else { 0.0 };
                ((libm::exp(f64::from(v) - lse) - one_hot) * scale) as f32
            })
        })
        .collect()
}

/// What the training BatchNorm's forward pass computes and its backward pass needs.
pub(super) struct BatchNormForward {
    pub output: Vec<f32>,
    pub mean: Vec<f32>,
    /// Biased.
    pub variance: Vec<f32>,
    /// `1 / sqrt(variance + eps)`.
    pub inverse_std: Vec<f32>,
}

/// Lanes of the f32 partial sums the reductions keep: enough for the compiler to fill a vector register,
/// and short runs, each added into an f64 total, so that long channels lose nothing to f32 rounding.
const LANES: usize = 16;

/// `sum(f(inputs[..][i]))` over the positions `i` of `inputs` (slices of one length): `LANES` f32
/// partial sums over runs of at most `64 * LANES` values, the runs added in f64. The inputs come in blocks
/// of `LANES` fixed-size arrays, which the compiler turns into vector operations; read by index, each
/// value's bounds check kept it to one value at a time.
pub(super) fn lane_sum<const N: usize>(inputs: [&[f32]; N], f: impl Fn([f32; N]) -> f32) -> f64 {
    let len = inputs.first().map_or(0, |input| input.len());
    assert!(inputs.iter().all(|input| input.len() == len), "the inputs of a sum differ in length");
    let mut total = 0.0f64;
    for run in (0..len).step_by(64 * LANES) {
        let end = (run + 64 * LANES).min(len);
        let mut lanes = [0.0f32; LANES];
        let mut i = run;
        while i + LANES <= end {
            let block: [&[f32; LANES]; N] = inputs.map(|input| input[i..i + LANES].try_into().expect("a block is LANES values"));
            for (lane, sum) in lanes.iter_mut().enumerate() {
                *sum += f(block.map(|block| block[lane]));
            }
            i += LANES;
        }
        let rest = (i..end).map(|i| f(inputs.map(|input| input[i]))).fold(0.0f32, |sum, value| sum + value);
        // Lanes that took no block hold zeros, whose sum is 0.0: not added up one by one, which small
        // planes (fewer values than lanes) paid for every plane.
        let lanes = if i > run { lanes.iter().map(|&v| f64::from(v)).sum::<f64>() } else { 0.0 };
        total += lanes + f64::from(rest);
    }
    total
}

/// The sums over the images' planes of `channel` of what `f(plane index)` gives, added image by image.
fn channel_sums<const K: usize>(shape: Nchw, channel: usize, f: impl Fn(usize) -> [f64; K]) -> [f64; K] {
    (0..shape.n).map(|image| f(image * shape.c + channel)).fold([0.0; K], |mut total, sums| {
        total.iter_mut().zip(sums).for_each(|(t, s)| *t += s);
        total
    })
}

/// Per channel: [`channel_sums`].
pub(super) fn per_channel_sums<const K: usize>(shape: Nchw, f: impl Fn(usize) -> [f64; K] + Sync) -> Vec<[f64; K]> {
    (0..shape.c).into_par_iter().map(|channel| channel_sums(shape, channel, &f)).collect()
}

/// `per_channel_sums` of a single value.
fn per_channel_sum(shape: Nchw, f: impl Fn(usize) -> f64 + Sync) -> Vec<f64> {
    per_channel_sums(shape, |p| [f(p)]).into_iter().map(|[v]| v).collect()
}

/// The planes of `values` (`shape`), channel by channel: each channel's planes, image by image. The
/// forward pass makes a channel's statistics and output in one task, so that the output pass finds the
/// channel's planes still in the core's L2 (the smoke shapes' 8 BatchNorm+ReLU forward passes, batch 32,
/// both cores of the Intel Xeon: 2.3-2.8 ms against 2.9-3.4 for passes over all channels; the 32 x 32
/// layer 0.65-0.71 against 0.99-1.17, the 2 x 2 layers slower, 0.18-0.21 against 0.13-0.17).
fn channel_planes_mut(values: &mut Fresh<f32>, shape: Nchw) -> Vec<Vec<Part<'_, f32>>> {
    let mut channels: Vec<Vec<Part<'_, f32>>> = (0..shape.c).map(|_| Vec::with_capacity(shape.n)).collect();
    for (p, plane) in values.parts(shape.plane()).enumerate() {
        channels[p % shape.c].push(plane);
    }
    channels
}

vectorized! {
pub(super) fn batch_norm_relu_forward(x: &[f32], shape: Nchw, gamma: &[f32], beta: &[f32]) -> BatchNormForward {
    let (plane, count) = (shape.plane(), (shape.n * shape.plane()) as f64);
    let slice = |p: usize| &x[p * plane..(p + 1) * plane];
    let mut output = Fresh::new(shape.len());
    // Per channel: `[mean, variance, inverse_std]`, its output written.
    let statistics: Vec<[f32; 3]> = channel_planes_mut(&mut output, shape)
        .into_par_iter()
        .enumerate()
        .map(|(channel, outputs)| {
            let [sum] = channel_sums(shape, channel, |p| [lane_sum([slice(p)], |[v]| v)]);
            let mean = (sum / count) as f32;
            // The variance about the mean, in a second pass: no cancellation.
            let [squares] = channel_sums(shape, channel, |p| [lane_sum([slice(p)], |[v]| (v - mean) * (v - mean))]);
            let variance = (squares / count) as f32;
            let inverse_std = 1.0 / (variance + BATCH_NORM_EPS).sqrt();
            let coefficients = (mean, inverse_std * gamma[channel], beta[channel]);
            for (image, out) in Part::clear_each(outputs).into_iter().enumerate() {
                affine_relu_plane(out, slice(image * shape.c + channel), coefficients);
            }
            [mean, variance, inverse_std]
        })
        .collect();
    let statistic = |k: usize| statistics.iter().map(|s| s[k]).collect();
    BatchNormForward { output: output.into_vec(), mean: statistic(0), variance: statistic(1), inverse_std: statistic(2) }
}
}

vectorized! {
/// `max(0, (v - offset) * scale + shift)` for every value `v` of `x`, with `(offset, scale, shift)` the
/// channel's, as `coefficients` gives them: BatchNorm+ReLU with running statistics.
fn affine_relu(x: &[f32], shape: Nchw, coefficients: impl Fn(usize) -> (f32, f32, f32) + Sync) -> Vec<f32> {
    let mut output = Fresh::new(shape.len());
    output.par_chunks_mut(shape.image()).zip(x.par_chunks(shape.image())).for_each(|(out, image)| {
        for (channel, (out, input)) in out.chunks_mut(shape.plane()).zip(image.chunks(shape.plane())).enumerate() {
            affine_relu_plane(out, input, coefficients(channel));
        }
    });
    output.into_vec()
}
}

/// `out = max(0, (input - offset) * scale + shift)`, value by value.
fn affine_relu_plane(out: &mut [f32], input: &[f32], (offset, scale, shift): (f32, f32, f32)) {
    for (o, &v) in out.iter_mut().zip(input) {
        *o = ((v - offset) * scale + shift).max(0.0);
    }
}

vectorized! {
/// The gradients of BatchNorm-then-ReLU with respect to its input, weight and bias, given the output
/// gradient `grad`, the input `x`, the output (the ReLU passes where it is positive) and the batch's
/// mean and inverse standard deviation: PyTorch's formula,
/// `dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat))` with `dz` the masked gradient.
pub(super) fn batch_norm_relu_backward(
    grad: &[f32],
    x: &[f32],
    output: &[f32],
    shape: Nchw,
    gamma: &[f32],
    mean: &[f32],
    inverse_std: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (plane, count) = (shape.plane(), (shape.n * shape.plane()) as f64);
    let masked = |o: f32, g: f32| if o > 0.0 { g } else { 0.0 };
    let planes =
        |p: usize| (&grad[p * plane..(p + 1) * plane], &x[p * plane..(p + 1) * plane], &output[p * plane..(p + 1) * plane]);
    // `sum(dz)` and `sum(dz * (x - mean))` apart (one pass adding both ran a value at a time: 0.57 ns a
    // value against 0.13 for one); `sum(dz * x_hat)` is `inv_std` times the latter. The input gradient in
    // a pass of its own, image by image: made channel by channel after each channel's sums, as the
    // forward pass makes its output, it wrote planes scattered over the images and ran the smoke
    // training slower (1,075 against 1,179 img/s, medians of 6 runs on the 2-core Intel Xeon).
    let sums = per_channel_sums(shape, |p| {
        let ((g, x, o), m) = (planes(p), mean[p % shape.c]);
        [lane_sum([g, o], |[g, o]| masked(o, g)), lane_sum([g, x, o], |[g, x, o]| masked(o, g) * (x - m))]
    });
    let sum_dz: Vec<f64> = sums.iter().map(|&[dz, _]| dz).collect();
    let sum_dz_xhat: Vec<f64> = sums.iter().zip(inverse_std).map(|(&[_, dz_centred], &s)| dz_centred * f64::from(s)).collect();
    let mut dx = Fresh::new(shape.len());
    dx.par_chunks_mut(shape.image()).enumerate().for_each(|(image, out)| {
        for (channel, out) in out.chunks_mut(plane).enumerate() {
            let (g, x, o) = planes(image * shape.c + channel);
            let (m, s) = (mean[channel], inverse_std[channel]);
            let mean_dz = (sum_dz[channel] / count) as f32;
            let slope = s * (sum_dz_xhat[channel] / count) as f32;
            let k = gamma[channel] * s;
            for (((d, &g), &x), &o) in out.iter_mut().zip(g).zip(x).zip(o) {
                *d = (masked(o, g) - mean_dz - (x - m) * slope) * k;
            }
        }
    });
    let dgamma = sum_dz_xhat.iter().map(|&v| v as f32).collect();
    let dbeta = sum_dz.iter().map(|&v| v as f32).collect();
    (dx.into_vec(), dgamma, dbeta)
}
}

/// 2x2 max-pool of every plane: each window's maximum, for inference, which needs no positions (writing
/// them made a pool 1.45-3.0x as slow at the smoke shapes' five pools, 1.03-1.40x at the full shapes').
/// A loop of its own: the forward pass's loop, made generic over a slot per output that inference left
/// empty, ran the smoke shapes' first three pools only 1.0-1.2x faster than the forward pass.
pub(super) fn max_pool2x2_values(x: &[f32], shape: Nchw) -> Vec<f32> {
    let w = shape.w / 2;
    let mut output = Fresh::new(shape.len() / 4);
    output.par_chunks_mut(shape.plane() / 4).zip(x.par_chunks(shape.plane())).for_each(|(out, input)| {
        for (out, rows) in out.chunks_mut(w).zip(input.chunks(2 * shape.w)) {
            let (top, bottom) = rows.split_at(shape.w);
            for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                *o = window_maximum(t, b).0;
            }
        }
    });
    output.into_vec()
}

/// 2x2 max-pool of every plane, and the window position (0..4, row-major) each maximum came from.
pub(super) fn max_pool2x2_forward(x: &[f32], shape: Nchw) -> (Vec<f32>, Vec<u8>) {
    let w = shape.w / 2;
    let mut output = Fresh::new(shape.len() / 4);
    let mut positions = Fresh::new(shape.len() / 4);
    output
        .par_chunks_mut(shape.plane() / 4)
        .zip(positions.par_chunks_mut(shape.plane() / 4))
        .zip(x.par_chunks(shape.plane()))
        .for_each(|((out, position), input)| {
            for ((out, position), rows) in out.chunks_mut(w).zip(position.chunks_mut(w)).zip(input.chunks(2 * shape.w)) {
                let (top, bottom) = rows.split_at(shape.w);
                for (((o, p), t), b) in
                    out.iter_mut().zip(position.iter_mut()).zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2))
                {
                    (*o, *p) = window_maximum(t, b);
                }
            }
        });
    (output.into_vec(), positions.into_vec())
}

/// A 2x2 window's maximum, its `top` row's pair then its `bottom` row's, and its position (0..4,
/// row-major): the first maximum, or the last NaN, as PyTorch's scan finds it.
#[inline(always)]
fn window_maximum(top: &[f32], bottom: &[f32]) -> (f32, u8) {
    let mut best = (top[0], 0u8);
    for (k, v) in [(1u8, top[1]), (2, bottom[0]), (3, bottom[1])] {
        if v > best.0 || v.is_nan() {
            best = (v, k);
        }
    }
    best
}

/// The input gradient of a 2x2 max-pool: each output gradient goes to the position its maximum came from.
pub(super) fn max_pool2x2_backward(grad: &[f32], positions: &[u8], input: Nchw) -> Vec<f32> {
    let (h, w) = (input.h / 2, input.w / 2);
    let mut dx = Fresh::new(input.len());
    dx.par_chunks_mut(input.plane()).zip(grad.par_chunks(h * w)).zip(positions.par_chunks(h * w)).for_each(
        |((out, grad), positions)| {
            for ((rows, grad), positions) in out.chunks_mut(2 * input.w).zip(grad.chunks(w)).zip(positions.chunks(w)) {
                let (top, bottom) = rows.split_at_mut(input.w);
                // All four written, without a branch: which position held the maximum is data, and
                // mispredicted it cost more than the writes.
                for (((t, b), &g), &k) in top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2)).zip(grad).zip(positions) {
                    let at = |position: u8| if k == position { g } else { 0.0 };
                    (t[0], t[1], b[0], b[1]) = (at(0), at(1), at(2), at(3));
                }
            }
        },
    );
    dx.into_vec()
}

/// The input gradient of a 3x3 convolution (padding 1): the convolution of the output gradient with the
/// weights flipped in both spatial axes and their channel axes swapped, run by burn-flex's forward path.
pub(super) fn conv3x3_input_grad(grad: FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let [out_channels, in_channels, _, _] = weight.shape().dims();
    let w = values(weight);
    // Row `c` of the flipped weights, `[C, O, 3, 3]`: each output channel's taps of input channel `c`,
    // reversed. In parallel, as the forward pass packs them next (flipped on the calling thread, they
    // were 1.5 % of its samples in a smoke step, the other core idle).
    let mut flipped = Fresh::new(w.len());
    flipped.par_chunks_mut(out_channels * 9).enumerate().for_each(|(c, row)| {
        for (o, taps) in row.chunks_mut(9).enumerate() {
            for (k, tap) in taps.iter_mut().enumerate() {
                *tap = w[(o * in_channels + c) * 9 + (8 - k)];
            }
        }
    });
    let shape = Nchw::of(&grad);
    let dx = conv3x3_forward(values(&grad), shape, &flipped.into_vec(), None, in_channels);
    new_tensor(dx, [shape.n, in_channels, shape.h, shape.w])
}

/// A block of im2col columns: `count` whole images from `first`, or rows `rows` of image `first` alone.
#[derive(Debug, Clone)]
struct ColumnBlock {
    first: usize,
    count: usize,
    rows: Range<usize>,
}

impl ColumnBlock {
    /// Columns: positions of the block, image by image.
    fn width(&self, shape: Nchw) -> usize {
        self.count * self.band(shape)
    }

    /// Positions of each image in the block: its rows, `W` each.
    fn band(&self, shape: Nchw) -> usize {
        self.rows.len() * shape.w
    }
}

/// The shift of neighbour `tap` (`kh * 3 + kw`) from its position: `(kh - 1, kw - 1)`.
fn tap_shift(tap: usize) -> (isize, isize) {
    (tap as isize / 3 - 1, tap as isize % 3 - 1)
}

/// Floats of im2col a GEMM takes at most: half of a Zen 4 core's 1 MiB L2, so that the columns the GEMM
/// reads are still there (measured: 4 Mi floats ran the smoke shapes' weight gradients at half the speed).
/// A constant, not the cache the machine reports: the blocks decide how a weight gradient's sums are
/// split, and those must be the same everywhere.
pub(super) const IM2COL_BUDGET: usize = 1 << 17;

/// Block widths from which a weight gradient's dot products beat a GEMM (measured at the smoke
/// shapes against the `gemm` crate, ms: 0.65 vs 1.5 at 4096 columns, 0.95 vs 0.9 at 768, 0.9 vs 0.55 at
/// 448, 2.2 vs 1.2 at 112). Chosen once per convolution, from its shape: a layer that switched between
/// the two for its last, narrower block ran slower than either alone.
const DOT_PRODUCT_WIDTH: usize = 1024;

/// Columns a block of one image's rows has at least: narrower GEMMs lose more to their fixed costs than
/// the cache saves.
const MIN_BAND_WIDTH: usize = 256;

/// The blocks over `images` of an im2col of `channels` input channels: as many whole images as
/// `IM2COL_BUDGET` holds, or, where one image's im2col is larger, bands of its rows.
fn column_blocks(shape: Nchw, channels: usize, images: Range<usize>) -> Vec<ColumnBlock> {
    let k9 = channels * 9;
    if k9 * shape.plane() <= IM2COL_BUDGET {
        let group = IM2COL_BUDGET / (k9 * shape.plane());
        let end = images.end;
        images.step_by(group).map(|first| ColumnBlock { first, count: group.min(end - first), rows: 0..shape.h }).collect()
    } else {
        let band = (IM2COL_BUDGET / (k9 * shape.w)).max(MIN_BAND_WIDTH.div_ceil(shape.w)).clamp(1, shape.h);
        images
            .flat_map(|first| {
                (0..shape.h).step_by(band).map(move |y| ColumnBlock { first, count: 1, rows: y..(y + band).min(shape.h) })
            })
            .collect()
    }
}

/// Bands of an image's rows shorter than this many positions are gathered value by value
/// ([`BlockIm2col`]): a copy per image and tap costs more than it moves there. Measured on one core of an
/// Intel Xeon with AVX-512, forward, batch 32: the smoke shapes' 2 x 2 planes 0.57 ms a convolution
/// gathered against 0.65-0.72 copied; their 4 x 4 planes 0.89-1.14 gathered against 0.83-0.94.
const GATHER_BAND: usize = 16;

/// A block's im2col, made a row at a time: row `(c, tap)` (`tap = kh * 3 + kw`) holds at column
/// `i * band + (y - y0) * W + x` the value `x[first + i, c, y + kh - 1, x + kw - 1]`, zero outside the
/// image; its columns run over several images or a band of one.
struct BlockIm2col<'a> {
    x: &'a [f32],
    shape: Nchw,
    block: &'a ColumnBlock,
    /// Where the band is shorter than `GATHER_BAND`: for each tap, each column's source as an offset
    /// from image `first`'s start (`NO_SOURCE` where the value is zero), the same for every channel.
    gathers: Option<Vec<usize>>,
}

/// A gathered column that reads nothing: the neighbour lies outside the image.
const NO_SOURCE: usize = usize::MAX;

impl<'a> BlockIm2col<'a> {
    fn new(x: &'a [f32], shape: Nchw, block: &'a ColumnBlock) -> Self {
        Self::made(x, shape, block, block.band(shape) < GATHER_BAND)
    }

    /// The block's im2col, its rows gathered where `gather` says, else copied.
    fn made(x: &'a [f32], shape: Nchw, block: &'a ColumnBlock, gather: bool) -> Self {
        let band = block.band(shape);
        let gathers = gather.then(|| {
            let mut sources = Vec::with_capacity(9 * block.width(shape));
            for (dy, dx) in (0..9).map(tap_shift) {
                for i in 0..block.count {
                    for position in 0..band {
                        let y = (block.rows.start + position / shape.w) as isize + dy;
                        let x = (position % shape.w) as isize + dx;
                        let inside = (0..shape.h as isize).contains(&y) && (0..shape.w as isize).contains(&x);
                        sources.push(if inside { i * shape.image() + y as usize * shape.w + x as usize } else { NO_SOURCE });
                    }
                }
            }
            sources
        });
        BlockIm2col { x, shape, block, gathers }
    }

    /// Channel `c`'s 9 rows, in `rows` (9 rows of the block's width).
    fn channel(&self, c: usize, rows: &mut [f32]) {
        for (tap, row) in rows.chunks_mut(self.block.width(self.shape)).enumerate() {
            self.row(c, tap, row);
        }
    }

    /// The rows of `channels` (`channels.len()*9 x width`, channel by channel) as the GEMM's [`Panels`] of
    /// `panel_width`: each row made in this core's [`IM2COL_ROW`], which L1 holds, and spread across the
    /// panels from there (rows made 2 to 16 at a time and written panel by panel ran the smoke shapes'
    /// 13 forward convolutions slower on one Intel core: 13.1-14.5 ms against 12.8).
    fn panels(&self, channels: Range<usize>, panel_width: usize, panels: &mut [f32]) {
        let (k9, width) = (channels.len() * 9, self.block.width(self.shape));
        with_scratch(&IM2COL_ROW, width, |row| {
            for (step, (c, tap)) in channels.flat_map(|c| (0..9).map(move |tap| (c, tap))).enumerate() {
                self.row(c, tap, row);
                Panels::spread_steps(panels, k9, panel_width, step, 1, width, row, width);
            }
        });
    }

    /// Row `(c, tap)`.
    ///
    /// Within an image's band, a shifted neighbour's rows are one contiguous run of the input, so each is
    /// one copy (small planes would otherwise pay a call per row of a few floats), after which the column
    /// the shift brought in from the next or previous row is zeroed; short bands are gathered.
    fn row(&self, c: usize, tap: usize, row: &mut [f32]) {
        let (shape, block) = (self.shape, self.block);
        let (h, w, plane) = (shape.h as isize, shape.w, shape.plane());
        if let Some(gathers) = &self.gathers {
            let input = &self.x[block.first * shape.image() + c * plane..];
            let sources = &gathers[tap * row.len()..][..row.len()];
            for (value, &source) in row.iter_mut().zip(sources) {
                *value = if source == NO_SOURCE { 0.0 } else { input[source] };
            }
            return;
        }
        let (y0, y1) = (block.rows.start as isize, block.rows.end as isize);
        let band = block.band(shape);
        let (dy, dx) = tap_shift(tap);
        // Output rows whose source row `y + dy` lies in the image.
        let (first, last) = (y0.max(-dy), y1.min(h - dy));
        for (i, out) in row.chunks_mut(band).enumerate() {
            let input = &self.x[(block.first + i) * shape.image() + c * plane..][..plane];
            if first >= last {
                out.fill(0.0);
                continue;
            }
            let (start, end) = ((first - y0) as usize * w, (last - y0) as usize * w);
            out[..start].fill(0.0);
            out[end..].fill(0.0);
            // out[j] = input[j + offset]; the one float a shift reads before or past the plane is a
            // border position, zeroed below.
            let offset = ((first + dy) * w as isize + dx) - start as isize;
            let (from, to) = ((start as isize).max(-offset) as usize, (end as isize).min(plane as isize - offset) as usize);
            out[from..to].copy_from_slice(&input[(from as isize + offset) as usize..(to as isize + offset) as usize]);
            let border = match dx {
                -1 => Some(0),
                1 => Some(w - 1),
                _ => None,
            };
            if let Some(column) = border {
                out[start..end].iter_mut().skip(column).step_by(w).for_each(|v| *v = 0.0);
            }
        }
    }
}

thread_local! {
    /// Each core's im2col buffer, and its buffer for a GEMM's operand or product in another layout: kept
    /// from one call to the next, which zero-filled fresh ones every time.
    static IM2COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each core's row of an im2col on its way into panels.
    static IM2COL_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static REORDERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` on this core's `buffer`, at least `len` floats long (its old contents left in it).
fn with_scratch<R>(buffer: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    buffer.with_borrow_mut(|scratch| {
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

/// How a block's im2col is laid out for its product.
#[derive(Debug, Clone, Copy)]
enum Im2colLayout {
    /// Row-major, `channels.len()*9 x width` (channel by channel, [`BlockIm2col::channel`]'s rows).
    Rows,
    /// The GEMM's [`Panels`] of this width.
    Panels(usize),
}

/// Calls `f(block, col)` for each of `column_blocks(shape, channels.len(), images)`, with `col` the
/// block's im2col of `channels` in `layout`. The loop a task runs over its images in the forward pass and
/// the weight gradient.
fn for_each_im2col_block(
    x: &[f32],
    shape: Nchw,
    images: Range<usize>,
    channels: Range<usize>,
    layout: Im2colLayout,
    mut f: impl FnMut(&ColumnBlock, &[f32]),
) {
    let blocks = column_blocks(shape, channels.len(), images);
    let k9 = channels.len() * 9;
    let len = |block: &ColumnBlock| match layout {
        Im2colLayout::Rows => k9 * block.width(shape),
        Im2colLayout::Panels(panel_width) => Panels::len(k9, block.width(shape), panel_width),
    };
    let most = blocks.iter().map(len).max().unwrap_or(0);
    with_scratch(&IM2COL, most, |col| {
        for block in &blocks {
            let col = &mut col[..len(block)];
            let im2col = BlockIm2col::new(x, shape, block);
            match layout {
                Im2colLayout::Rows => {
                    for (c, rows) in channels.clone().zip(col.chunks_mut(9 * block.width(shape))) {
                        im2col.channel(c, rows);
                    }
                }
                Im2colLayout::Panels(panel_width) => im2col.panels(channels.clone(), panel_width, col),
            }
            f(block, col);
        }
    })
}

/// `count` ranges of `len` values in order, of equal size but the last.
fn ranges(len: usize, count: usize) -> Vec<Range<usize>> {
    let size = len.div_ceil(count.clamp(1, len.max(1)));
    (0..len).step_by(size.max(1)).map(|start| start..(start + size).min(len)).collect()
}

/// The largest power of two at most `limit` (1 for 0).
fn power_of_two_at_most(limit: usize) -> usize {
    if limit <= 1 {
        1
    } else {
        1 << limit.ilog2()
    }
}

/// Columns of the forward pass's GEMMs a task has at least: narrower ones lose more to their fixed
/// costs than sharing them out saves.
const MIN_TASK_COLUMNS: usize = 64;

/// `[N, O, H, W]` = the 3x3 convolution (padding 1) of `x` with `weight` (`[O, C, 3, 3]`, row-major), plus
/// `bias` where given. Tasks take groups of images (a power of two of them, as many as leave each
/// `MIN_TASK_COLUMNS` positions) and, a block of columns at a time, multiply the weights (`O x C*9`) by
/// the block's im2col (`C*9 x width`) in one-core GEMMs into a product of contiguous rows, then into the
/// output with the bias. Each output is one chain along `C*9` ([`matmul_packed`]), so the split changes no
/// value.
pub(super) fn conv3x3_forward(x: &[f32], shape: Nchw, weight: &[f32], bias: Option<&[f32]>, out_channels: usize) -> Vec<f32> {
    let (plane, k9) = (shape.plane(), shape.c * 9);
    let out_image = out_channels * plane;
    let groups = ranges(shape.n, power_of_two_at_most((shape.n * plane / MIN_TASK_COLUMNS).min(shape.n)));
    let weights = PackedA::new(isa(), Operand::rows(weight, k9), out_channels, k9, Cores::All);
    let panel_width = Panels::width(isa());
    let mut output = Fresh::new(shape.n * out_image);
    output.par_chunks_mut(groups[0].len().max(1) * out_image).zip(groups).for_each(|(out, images)| {
        let first_image = images.start;
        for_each_im2col_block(x, shape, images, 0..shape.c, Im2colLayout::Panels(panel_width), |block, col| {
            let width = block.width(shape);
            let local = (block.first - first_image) * out_image;
            let bias_of = |o: usize| bias.map_or(0.0, |bias| bias[o]);
            // Into a product of contiguous rows, then to the output: written straight into the output,
            // the tile's rows would lie a plane apart (4 KiB at 32 x 32), all in the same L1 sets.
            let band = block.band(shape);
            with_scratch(&REORDERED, out_channels * width, |product| {
                let col = BOperand::Panels(Panels::new(col, k9, width, panel_width));
                matmul_packed(Matrix::rows(product, width), width, &weights, col, false, Cores::Calling);
                // `O x count*band` to `count x O x HW`, with the bias.
                for (o, row) in product.chunks(width).enumerate() {
                    for (i, values) in row.chunks(band).enumerate() {
                        let dst = &mut out[local + i * out_image + o * plane + block.rows.start * shape.w..][..band];
                        dst.iter_mut().zip(values).for_each(|(d, &v)| *d = v + bias_of(o));
                    }
                }
            });
        });
    });
    output.into_vec()
}

/// Floats the partial sums of a weight gradient may take in all.
const PARTIAL_BUDGET: usize = 1 << 22;
/// Positions (images x plane) a partial sums at least: fewer cost more to write and add than they save.
const MIN_PARTIAL_POSITIONS: usize = 256;
/// Tasks a weight gradient is split into where its partials are few: input channels share them out.
const WEIGHT_GRAD_TASKS: usize = 8;

/// How a weight gradient is shared out, from its shape alone: groups of images, each summed into a
/// partial of its own (a power of two of them, as many as `PARTIAL_BUDGET`, `MIN_PARTIAL_POSITIONS` and
/// the images allow), and, where those are fewer than `WEIGHT_GRAD_TASKS`, ranges of input channels,
/// whose columns of the gradient are computed apart (changing no sum).
fn weight_grad_split(shape: Nchw, out_channels: usize) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let gradient = out_channels * shape.c * 9;
    let partials = (PARTIAL_BUDGET / gradient).min(shape.n * shape.plane() / MIN_PARTIAL_POSITIONS).min(shape.n);
    let groups = ranges(shape.n, power_of_two_at_most(partials));
    let channel_ranges = ranges(shape.c, WEIGHT_GRAD_TASKS.div_ceil(groups.len()));
    (groups, channel_ranges)
}

/// The weight gradient `[O, C, 3, 3]` of a 3x3 convolution (padding 1) of `x` whose output gradient is
/// `grad`. Split by [`weight_grad_split`]: each task takes a group of images and a range of input
/// channels and, a block of columns at a time, multiplies their output gradient (`O x width`) by the
/// transpose of their im2col (`channels*9 x width`) in one-core GEMMs (as dot products of rows where
/// blocks are wide, `dot_products`), into its partial's columns; the groups' partials are then added in
/// one fixed tree. Within one image the output gradient is read in place, rows `HW` apart; across
/// several, gathered.
pub(super) fn conv3x3_weight_grad(x: &[f32], shape: Nchw, grad: &[f32], out_channels: usize) -> Vec<f32> {
    let plane = shape.plane();
    let (groups, channel_ranges) = weight_grad_split(shape, out_channels);
    let first_block = column_blocks(shape, channel_ranges[0].len(), groups[0].clone());
    let dot = first_block.first().is_some_and(|block| block.width(shape) >= DOT_PRODUCT_WIDTH);
    let tasks: Vec<(Range<usize>, Range<usize>)> =
        groups.iter().flat_map(|images| channel_ranges.iter().map(move |channels| (images.clone(), channels.clone()))).collect();
    // Each task's columns of its group's partial: `O x channels*9`.
    let columns: Vec<Vec<f32>> = tasks
        .into_par_iter()
        .map(|(images, channels)| {
            let k9 = channels.len() * 9;
            let mut dw = vec![0.0f32; out_channels * k9];
            for_each_im2col_block(x, shape, images, channels, Im2colLayout::Rows, |block, col| {
                let width = block.width(shape);
                // `dw (O x k9) += lhs (O x width) * col^T`: rows of both along the block's positions.
                let mut multiply = |lhs: &[f32], lhs_row_stride: usize| {
                    if dot {
                        let (lhs, col) = (Rows { data: lhs, stride: lhs_row_stride }, Rows { data: col, stride: width });
                        dot_products(&mut dw, k9, out_channels, k9, width, lhs, col, true);
                    } else {
                        let (lhs, col) = (Operand::rows(lhs, lhs_row_stride), Operand::transposed(col, width));
                        matmul(Matrix::rows(&mut dw, k9), out_channels, k9, width, lhs, col, true, Cores::Calling);
                    }
                };
                let image = &grad[block.first * out_channels * plane..];
                if block.count == 1 {
                    multiply(&image[block.rows.start * shape.w..], plane);
                } else {
                    with_scratch(&REORDERED, out_channels * width, |gathered| {
                        // The output gradient as `O x count*HW`: each output channel's planes side by side.
                        for (o, row) in gathered.chunks_mut(width).enumerate() {
                            for (i, block) in row.chunks_mut(plane).enumerate() {
                                block.copy_from_slice(&image[(i * out_channels + o) * plane..][..plane]);
                            }
                        }
                        multiply(gathered, width);
                    });
                }
            });
            dw
        })
        .collect();
    // Task `g * ranges + r` holds group `g`'s columns for channel range `r`.
    let k9 = shape.c * 9;
    let mut total = Fresh::new(out_channels * k9);
    // A task's scratch for the second halves' sums, one row's worth per level of the tree: allocated
    // for each row and level, they were 1 % of a smoke step's weight gradients.
    let widest = channel_ranges.iter().map(|channels| channels.len() * 9).max().unwrap_or(0);
    let scratch = widest * groups.len().next_power_of_two().ilog2() as usize;
    total.par_chunks_mut(k9).enumerate().for_each_init(
        || (vec![0.0f32; scratch], Vec::with_capacity(groups.len())),
        |(scratch, partials), (o, row)| {
            for (r, channels) in channel_ranges.iter().enumerate() {
                let width = channels.len() * 9;
                partials.clear();
                partials.extend((0..groups.len()).map(|g| &columns[g * channel_ranges.len() + r][o * width..][..width]));
                tree_sum(&mut row[channels.start * 9..][..width], partials, scratch);
            }
        },
    );
    total.into_vec()
}

/// `out = partials[0] + ... + partials[last]`, value by value, added in one fixed tree: the first half's
/// sum plus the second half's. `scratch` holds the second halves' sums, `out.len()` values a level of
/// the tree (`ceil(log2(partials))` levels).
fn tree_sum(out: &mut [f32], partials: &[&[f32]], scratch: &mut [f32]) {
    match partials {
        [] => out.fill(0.0),
        [only] => out.copy_from_slice(only),
        _ => {
            let (first, second) = partials.split_at(partials.len() / 2);
            tree_sum(out, first, scratch);
            let (rest, deeper) = scratch.split_at_mut(out.len());
            tree_sum(rest, second, deeper);
            out.iter_mut().zip(&*rest).for_each(|(o, r)| *o += r);
        }
    }
}

vectorized! {
/// The bias gradient of a convolution: the output gradient summed over images and positions (f64).
pub(super) fn conv_bias_grad(grad: &[f32], shape: Nchw) -> Vec<f32> {
    per_channel_sum(shape, |p| lane_sum([&grad[p * shape.plane()..(p + 1) * shape.plane()]], |[v]| v))
        .into_iter()
        .map(|v| v as f32)
        .collect()
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of several images (small planes, panels that span images) and bands of rows (first,
    /// middle and last).
    fn blocks() -> Vec<(Nchw, ColumnBlock, Range<usize>)> {
        vec![
            (Nchw { n: 5, c: 3, h: 2, w: 3 }, ColumnBlock { first: 1, count: 4, rows: 0..2 }, 0..3),
            (Nchw { n: 3, c: 4, h: 4, w: 4 }, ColumnBlock { first: 0, count: 3, rows: 0..4 }, 1..3),
            (Nchw { n: 2, c: 2, h: 9, w: 7 }, ColumnBlock { first: 1, count: 1, rows: 0..4 }, 0..2),
            (Nchw { n: 2, c: 2, h: 9, w: 7 }, ColumnBlock { first: 1, count: 1, rows: 4..8 }, 0..2),
            (Nchw { n: 2, c: 2, h: 9, w: 7 }, ColumnBlock { first: 0, count: 1, rows: 8..9 }, 1..2),
            (Nchw { n: 1, c: 1, h: 1, w: 1 }, ColumnBlock { first: 0, count: 1, rows: 0..1 }, 0..1),
        ]
    }

    /// Each row, copied or gathered, is its neighbours written out one by one.
    #[test]
    fn im2col_rows_are_the_shifted_images() {
        for (shape, block, channels) in blocks() {
            let x: Vec<f32> = (0..shape.len()).map(|i| i as f32 + 1.0).collect();
            let (band, width) = (block.band(shape), block.width(shape));
            for gather in [false, true] {
                let im2col = BlockIm2col::made(&x, shape, &block, gather);
                for c in channels.clone() {
                    let mut rows = vec![f32::NAN; 9 * width];
                    im2col.channel(c, &mut rows);
                    for (tap, j) in (0..9).flat_map(|tap| (0..width).map(move |j| (tap, j))) {
                        let (i, position) = (j / band, j % band);
                        let y = (block.rows.start + position / shape.w + tap / 3) as isize - 1;
                        let x_at = (position % shape.w + tap % 3) as isize - 1;
                        let inside = (0..shape.h as isize).contains(&y) && (0..shape.w as isize).contains(&x_at);
                        let plane = &x[(block.first + i) * shape.image() + c * shape.plane()..];
                        let want = if inside { plane[y as usize * shape.w + x_at as usize] } else { 0.0 };
                        let got = rows[tap * width + j];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{shape:?} {block:?} gather {gather}: channel {c}, ({tap}, {j})"
                        );
                    }
                }
            }
        }
    }

    /// The im2col as panels holds the rows' entries where the GEMM reads them, and zeros past the last
    /// column, at each path's width: ragged panels, a range of channels.
    #[test]
    fn im2col_panels_hold_the_rows_entries() {
        for (shape, block, channels) in blocks() {
            let x: Vec<f32> = (0..shape.len()).map(|i| i as f32 + 1.0).collect();
            let (k9, width) = (channels.len() * 9, block.width(shape));
            let im2col = BlockIm2col::new(&x, shape, &block);
            let mut rows = vec![f32::NAN; k9 * width];
            for (c, rows) in channels.clone().zip(rows.chunks_mut(9 * width)) {
                im2col.channel(c, rows);
            }
            for panel_width in [8, 12, 16, 32] {
                let mut panels = vec![f32::NAN; Panels::len(k9, width, panel_width)];
                im2col.panels(channels.clone(), panel_width, &mut panels);
                for k in 0..k9 {
                    for j in 0..width.next_multiple_of(panel_width) {
                        let want = if j < width { rows[k * width + j] } else { 0.0 };
                        let got = panels[(j / panel_width * k9 + k) * panel_width + j % panel_width];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{shape:?} {block:?} {channels:?} width {panel_width}: ({k}, {j})"
                        );
                    }
                }
            }
        }
    }

    /// Bit for bit the sum its doc defines, written out: runs of `64 * LANES` values, `LANES` f32 partial
    /// sums (value `i` of a run's full blocks into lane `i % LANES`), the rest in one f32 sum, each run
    /// added in f64; over lengths with no block, a partial block, whole runs and a last short run.
    #[test]
    fn lane_sum_adds_in_its_defined_order() {
        for len in [0, 1, 5, 16, 17, 1024, 1040, 1041, 3000] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 104_729) % 997) as f32 * 1e-3).collect();
            let term = |x: f32, y: f32| x * y - 0.5;
            let mut want = 0.0f64;
            for run in (0..len).step_by(64 * LANES) {
                let end = (run + 64 * LANES).min(len);
                let blocks_end = run + (end - run) / LANES * LANES;
                let mut lanes = [0.0f32; LANES];
                for i in run..blocks_end {
                    lanes[(i - run) % LANES] += term(a[i], b[i]);
                }
                let mut rest = 0.0f32;
                for i in blocks_end..end {
                    rest += term(a[i], b[i]);
                }
                let mut lanes_total = -0.0f64;
                for lane in lanes {
                    lanes_total += f64::from(lane);
                }
                want += lanes_total + f64::from(rest);
            }
            let got = lane_sum([&a, &b], |[x, y]| term(x, y));
            assert_eq!(got.to_bits(), want.to_bits(), "length {len}: {got} against {want}");
        }
    }

    #[test]
    fn max_pool_takes_the_first_maximum_and_routes_its_gradient_back() {
        let shape = Nchw { n: 1, c: 1, h: 2, w: 4 };
        let x = [1.0, 3.0, 7.0, 7.0, 3.0, 2.0, 0.0, 7.0];
        let (output, positions) = max_pool2x2_forward(&x, shape);
        assert_eq!((output, positions.clone()), (vec![3.0, 7.0], vec![1, 0]));
        assert_eq!(max_pool2x2_backward(&[10.0, 20.0], &positions, shape), [0.0, 10.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Inference's pool, which keeps no positions, gives the forward pass's values bit for bit: ties of
    /// zeros of both signs, NaNs of two payloads (the last wins), planes of several widths.
    #[test]
    fn the_pool_without_positions_gives_the_forward_passs_values() {
        let specials = [0.0f32, -0.0, 1.0, -1.0, f32::NAN, f32::from_bits(0x7fc0_0001), 1.0, -0.0];
        let mut seen = Vec::new();
        for (c, side) in [(3, 2), (2, 4), (1, 8), (2, 16)] {
            let shape = Nchw { n: 2, c, h: side, w: side };
            let x: Vec<f32> = (0..shape.len() as u32)
                .map(|i| specials[(i.wrapping_mul(2_654_435_761) >> 29) as usize % specials.len()])
                .collect();
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let (forward, positions) = max_pool2x2_forward(&x, shape);
            assert_eq!(bits(&max_pool2x2_values(&x, shape)), bits(&forward), "{c} planes of {side} x {side}");
            seen.extend(positions);
        }
        assert!([0, 1, 2, 3].iter().all(|k| seen.contains(k)), "maxima from every window position");
    }
}
