//! VGG's operations and SGD's step composed of Burn's own (convolution, reductions, element-wise
//! arithmetic, max-pool): what the CubeCL backends (burn-cuda, burn-wgpu) run, and the reference the CPU
//! kernels are tested against.
//! Autodiff differentiates them as it differentiates any composition.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{ConvOptions, FloatTensor, IntTensor, PadMode};
use burn::tensor::{Scalar, Shape, TensorMetadata};

use super::{primitive, tensor, BatchNormed, FakeQuantization, FakeQuantized, Observed, SgdStep};
use crate::model::BATCH_NORM_EPS;
use crate::quant::qparams::device_qparams;

/// Burn's convolution: the reference the CPU kernels are tested against.
pub fn conv3x3<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    conv3x3_by::<B>(Conv3x3Algorithm::BurnConv2d, x, weight, Some(bias))
}

/// How a CubeCL backend computes VGG's 3x3 convolutions, forward and backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv3x3Algorithm {
    /// Burn's `conv2d` and its weight gradient: in a build without autotune, burn-cubecl's direct
    /// kernels (a thread per output value, FP32); with autotune, the fastest of its kernels.
    BurnConv2d,
    /// The input's im2col ([`im2col3x3`]) times the weights, Burn's matmul batched over groups of images,
    /// for the convolution and each gradient: cubecl's default matmul, on tensor cores where the GPU has
    /// them.
    Im2colGemm,
}

/// [`conv3x3`] computed by `algorithm`, the bias optional (an input's gradient has none).
pub fn conv3x3_by<B: Backend>(
    algorithm: Conv3x3Algorithm,
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    match algorithm {
        Conv3x3Algorithm::BurnConv2d => B::conv2d(x, weight, bias, conv3x3_options()),
        Conv3x3Algorithm::Im2colGemm => {
            let x = tensor::<B, 4>(x);
            let [n, _, h, w] = x.dims();
            let weight = tensor::<B, 4>(weight);
            let [o, c, _, _] = weight.dims();
            let images = images_per_product(n, h * w);
            let product = weight.reshape([1, o, c * 9]).matmul(grouped(im2col3x3(x), images));
            let product = match bias {
                Some(bias) => product + tensor::<B, 1>(bias).reshape([1, o, 1]),
                None => product,
            };
            primitive(ungrouped(product, images).reshape([n, o, h, w]))
        }
    }
}

/// The gradient of [`conv3x3`]'s weights `[O, C, 3, 3]` for its input `x` and output gradient `grad`,
/// computed by `algorithm`: as an im2col GEMM, one matrix product per group of images
/// ([`images_per_product`]), the groups' products summed along their axis, in a fixed order. One
/// product over the whole batch would be one reduction of `N * H * W` for the first convolutions' few
/// outputs (64 x 27 at 128 px), which leaves most of a GPU idle. The im2col is taken from `x` again:
/// kept from the forward pass, every layer's would stay in memory until its backward pass.
pub fn conv3x3_weight_gradient_by<B: Backend>(
    algorithm: Conv3x3Algorithm,
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    match algorithm {
        Conv3x3Algorithm::BurnConv2d => B::conv2d_weight_backward(x, weight, grad, conv3x3_options()),
        Conv3x3Algorithm::Im2colGemm => {
            let [o, c, _, _] = weight.shape().dims();
            let grad = tensor::<B, 4>(grad);
            let [n, _, h, w] = grad.dims();
            let images = images_per_product(n, h * w);
            let grad = grouped(grad.reshape([n, o, h * w]), images);
            let per_group = grad.matmul(grouped(im2col3x3(tensor(x)), images).swap_dims(1, 2));
            primitive(per_group.sum_dim(0).reshape([o, c, 3, 3]))
        }
    }
}

/// Positions (images times their pixels) an im2col GEMM's product takes at most, unless one image alone
/// has more: few enough that the first convolutions' weight gradients split into products across a
/// GPU's cores, enough that the last ones' products (8 x 8 pixels an image at 128 px, 2 x 2 in the smoke
/// profile) fill its matmul tiles.
const POSITIONS_PER_PRODUCT: usize = 8192;

/// The images each of an im2col GEMM's products takes for `n` images of `plane` pixels: the most that
/// divides `n` without passing [`POSITIONS_PER_PRODUCT`] (one where an image alone passes it). It follows
/// the shapes alone, so every machine sums alike.
fn images_per_product(n: usize, plane: usize) -> usize {
    let most = (POSITIONS_PER_PRODUCT / plane).clamp(1, n);
    (1..=most).rev().find(|images| n.is_multiple_of(*images)).unwrap_or(1)
}

/// `[N, R, P]` as `[N / images, R, images * P]`: each group's images side by side along the positions.
fn grouped<B: Backend>(t: Tensor<B, 3>, images: usize) -> Tensor<B, 3> {
    let [n, rows, positions] = t.dims();
    if images == 1 {
        return t;
    }
    t.reshape([n / images, images, rows, positions]).swap_dims(1, 2).reshape([n / images, rows, images * positions])
}

/// [`grouped`] undone.
fn ungrouped<B: Backend>(t: Tensor<B, 3>, images: usize) -> Tensor<B, 3> {
    let [groups, rows, positions] = t.dims();
    if images == 1 {
        return t;
    }
    let positions = positions / images;
    t.reshape([groups, rows, images, positions]).swap_dims(1, 2).reshape([groups * images, rows, positions])
}

/// im2col of a 3x3 convolution's input `[N, C, H, W]` (stride 1, padding 1) as `[N, C * 9, H * W]`: row
/// `9 * c + 3 * ky + kx` of an image holds its channel `c` shifted by `(ky - 1, kx - 1)`, zero outside
/// the image, the order of the weights `[O, C, 3, 3]` flattened to `[O, C * 9]`. Burn's `unfold4d` would
/// be a convolution with one-hot weights; nine slices of the padded input are copies.
fn im2col3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, c, h, w] = x.dims();
    let padded = x.pad([(0, 0), (0, 0), (1, 1), (1, 1)], PadMode::Constant(0.0));
    let taps = (0..9).map(|tap| padded.clone().slice([0..n, 0..c, tap / 3..tap / 3 + h, tap % 3..tap % 3 + w])).collect();
    Tensor::stack::<5>(taps, 2).reshape([n, c * 9, h * w])
}

/// VGG's convolution: stride 1, padding 1, no dilation, one group.
pub fn conv3x3_options() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

pub fn batch_norm_relu<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> BatchNormed<B> {
    let x = tensor::<B, 4>(x);
    let [n, c, _, _] = x.dims();
    let mean = channel_mean(x.clone());
    let centered = x - per_sample(mean.clone(), n);
    let variance = channel_mean(centered.clone().square());
    let per_channel = |t: Tensor<B, 1>| t.reshape([1, c, 1, 1]);
    let scale = per_channel(tensor(weight)) / (variance.clone() + f64::from(BATCH_NORM_EPS)).sqrt();
    let output = (centered * per_sample(scale, n) + per_sample(per_channel(tensor(bias)), n)).clamp_min(0.0);
    BatchNormed {
        output: primitive(output),
        mean: primitive(mean.detach().reshape([c])),
        variance: primitive(variance.detach().reshape([c])),
    }
}

pub fn scale_shift_relu<B: Backend>(x: FloatTensor<B>, scale: FloatTensor<B>, shift: FloatTensor<B>) -> FloatTensor<B> {
    let x = tensor::<B, 4>(x);
    let [n, c, _, _] = x.dims();
    let per_channel = |t: FloatTensor<B>| per_sample(tensor::<B, 1>(t).reshape([1, c, 1, 1]), n);
    primitive((x * per_channel(scale) + per_channel(shift)).clamp_min(0.0))
}

/// [`VggBackend::requantize`](super::VggBackend::requantize), with `accumulator` as `[N, C, rest]`.
pub fn requantize<B: Backend>(
    accumulator: FloatTensor<B>,
    bias: FloatTensor<B>,
    multiplier: FloatTensor<B>,
    zero_point: f32,
    low: f32,
) -> FloatTensor<B> {
    let shape = accumulator.shape();
    let (n, c) = (shape[0], shape[1]);
    let accumulator = tensor::<B, 3>(B::float_reshape(accumulator, Shape::new([n, c, shape.num_elements() / (n * c)])));
    let per_channel = |t: FloatTensor<B>| tensor::<B, 1>(t).reshape([1, c, 1]);
    let output = (((accumulator + per_channel(bias)) * per_channel(multiplier)).round() + zero_point).clamp(low, 255.0);
    B::float_reshape(primitive(output), shape)
}

pub fn max_pool2x2<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    primitive(max_pool2d(tensor::<B, 4>(x), [2, 2], [2, 2], [0, 0], [1, 1], false))
}

pub fn cross_entropy<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    let logits = tensor::<B, 2>(logits);
    let [n, _] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
    let picked = log_softmax(logits, 1).gather(1, targets);
    // Along the batch axis, not over the whole tensor: cubecl reduces an axis without atomics.
    primitive((picked.sum_dim(0) / -(n as f64)).reshape([1]))
}

/// [`VggBackend::fake_quantize_activation`] (`rows` 1) and [`VggBackend::fake_quantize_weight`] (`rows`
/// the output channels of a `[C, K]` weight, scaled by `factor` first) of Burn's operations: the
/// observer and the parameters on the device (`device_qparams`), the straight-through gradient as
/// `x * mask` plus the difference to the dequantized value as a constant.
///
/// [`VggBackend::fake_quantize_activation`]: super::VggBackend::fake_quantize_activation
/// [`VggBackend::fake_quantize_weight`]: super::VggBackend::fake_quantize_weight
pub fn fake_quantize<B: Backend>(
    x: FloatTensor<B>,
    rows: usize,
    factor: Option<FloatTensor<B>>,
    observed: Option<Observed<B>>,
    quantization: FakeQuantization,
) -> FakeQuantized<B> {
    let shape = x.shape();
    let x = tensor::<B, 2>(x).reshape([rows as i32, -1]);
    let x = match factor {
        Some(factor) => x * tensor::<B, 1>(factor).reshape([rows, 1]),
        None => x,
    };
    let values = x.clone().detach();
    let (min, max) = if rows == 1 {
        (values.clone().min().reshape([1]), values.clone().max().reshape([1]))
    } else {
        (values.clone().min_dim(1).reshape([rows]), values.clone().max_dim(1).reshape([rows]))
    };
    let c = f64::from(quantization.averaging_constant);
    let (min, max) = match observed {
        None => (min, max),
        Some(old) => {
            let (old_min, old_max) = (tensor::<B, 1>(old.min), tensor::<B, 1>(old.max));
            (old_min.clone() + (min - old_min) * c, old_max.clone() + (max - old_max) * c)
        }
    };
    let (scale, zero_point) = device_qparams(min.clone(), max.clone(), quantization.range, quantization.symmetric);
    let (scale, zero_point) = (scale.reshape([rows, 1]), zero_point.reshape([rows, 1]));
    let (qmin, qmax) = (quantization.range.min as f32, quantization.range.max as f32);
    let integer = (values * scale.clone().recip()).round() + zero_point.clone();
    let inside = integer.clone().greater_equal_elem(qmin).bool_and(integer.clone().lower_equal_elem(qmax)).float();
    let dequantized = (integer.clamp(qmin, qmax) - zero_point) * scale;
    let passed = x * inside;
    let output = passed.clone() + (dequantized - passed.detach());
    FakeQuantized {
        output: B::float_reshape(primitive(output), shape),
        observed: Observed { min: primitive(min), max: primitive(max) },
    }
}

/// [`super::VggBackend::fake_quantize_linear_weight`] of Burn's operations: per row of the transpose.
pub fn fake_quantize_columns<B: Backend>(weight: FloatTensor<B>, observed: Option<Observed<B>>) -> FakeQuantized<B> {
    let transposed = tensor::<B, 2>(weight).transpose();
    let outputs = transposed.dims()[0];
    let quantized = fake_quantize(primitive(transposed), outputs, None, observed, FakeQuantization::WEIGHT);
    FakeQuantized { output: primitive(tensor::<B, 2>(quantized.output).transpose()), observed: quantized.observed }
}

/// [`super::VggBackend::unscale_bias`] of Burn's operations.
pub fn unscale_bias<B: Backend>(y: FloatTensor<B>, factor: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let y = tensor::<B, 4>(y);
    let c = y.dims()[1];
    let per_channel = |t: FloatTensor<B>| tensor::<B, 1>(t).reshape([1, c, 1, 1]);
    primitive(y / per_channel(factor) + per_channel(bias))
}

pub fn linear<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    primitive(tensor::<B, 2>(x).matmul(tensor(weight)) + tensor::<B, 1>(bias).unsqueeze())
}

/// [1, C, 1, 1] -> [N, C, 1, 1]. A per-channel value broadcast over N, H and W makes burn-flex walk the
/// activation with a scalar strided iterator; repeated over N first, it is one scalar per contiguous
/// H x W row, which its SIMD broadcast path handles (3x faster, measured).
pub fn sgd_step<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    velocity: Option<FloatTensor<B>>,
    step: SgdStep,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let decayed = B::float_add(B::float_mul_scalar(param.clone(), Scalar::Float(step.weight_decay.into())), grad);
    let velocity = match velocity {
        Some(velocity) => B::float_add(decayed, B::float_mul_scalar(velocity, Scalar::Float(step.momentum.into()))),
        None => decayed,
    };
    let param = B::float_sub(param, B::float_mul_scalar(velocity.clone(), Scalar::Float(step.learning_rate.into())));
    (param, velocity)
}

fn per_sample<B: Backend>(per_channel: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    per_channel.repeat_dim(0, n)
}

/// Per-channel mean over N, H and W as [1, C, 1, 1], reducing contiguous axes only.
fn channel_mean<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, c, h, w] = x.dims();
    x.mean_dim(0).reshape([c, h * w]).mean_dim(1).reshape([1, c, 1, 1])
}

#[cfg(test)]
mod tests {
    /// The products' images at the full profile's planes for a batch of 32 (128 x 128 down to 8 x 8),
    /// the smoke profile's smallest, and batches that 8 does not divide.
    #[test]
    fn images_per_product_follows_the_shapes() {
        let cases =
            [((32, 16384), 1), ((32, 4096), 2), ((32, 1024), 8), ((32, 64), 32), ((32, 4), 32), ((30, 1024), 6), ((7, 2048), 1)];
        for ((n, plane), images) in cases {
            assert_eq!(super::images_per_product(n, plane), images, "{n} images of {plane} pixels");
        }
    }
}
