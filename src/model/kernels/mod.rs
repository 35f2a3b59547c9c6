//! The operations VGG11-BN is made of, as one backend extension (Burn's way of adding kernels of one's
//! own): a 3x3 convolution (padding 1) with bias, BatchNorm with ReLU (batch statistics, and running ones
//! folded into a scale and a shift), a 2x2 max-pool and the classifier's Linears, the cross-entropy loss
//! and the step of SGD that trains them, quantization-aware training's fake quantizers, and the
//! requantization of the int8 models' simulation. The model and the optimizer call them through [`VggBackend`]:
//! - on the CPU (`Flex`, [`cpu`]) they are our kernels, and `Autodiff<Flex>` ([`cpu_autodiff`]) gives
//!   them backward passes of our own;
//! - on the GPU backends (`Cuda`, `Wgpu` and their `Autodiff`) they are Burn's own operations composed
//!   ([`composed`]), so cubecl keeps its kernels and autodiff its backward passes, but for the
//!   convolution, computed as each backend's [`composed::Conv3x3Algorithm`] says, forward and backward
//!   ([`cubecl_autodiff`]).

pub mod composed;
mod cpu;
mod cpu_autodiff;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cubecl_autodiff;
mod dot_products;
mod fake_quantize;
mod fresh;
mod gemm;
pub mod isa;
mod machine;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{TensorMetadata, TensorPrimitive};

use crate::quant::observer::DEFAULT_AVERAGING_CONSTANT;
use crate::quant::qparams::QuantRange;
pub use machine::CpuFacts;

/// A backend with VGG's operations.
pub trait VggBackend: Backend {
    /// `[N, C, H, W]` convolved with `[O, C, 3, 3]` (stride 1, padding 1), plus `bias` `[O]`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// BatchNorm over `[N, C, H, W]` with the batch's statistics (as PyTorch's in training), scaled by
    /// `weight` and shifted by `bias` (`[C]`), then ReLU. Also returns the batch mean and the biased
    /// variance, for the running statistics; those carry no gradient.
    fn batch_norm_relu(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> BatchNormed<Self>;

    /// `max(0, x * scale + shift)` per channel: BatchNorm with running statistics, then ReLU.
    fn scale_shift_relu(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self>;

    /// 2x2 max-pool, stride 2, of `[N, C, H, W]` with even `H` and `W`.
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x` `[N, I]` times `weight` `[I, O]` (Burn's `Linear` layout), plus `bias` `[O]`.
    fn linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `torch.nn.CrossEntropyLoss` of `logits` `[N, K]` against class indices `targets` `[N]`: the mean
    /// over the batch of `log(sum(exp(logits))) - logits[target]`, `[1]`. Burn's operations by default,
    /// summed along the batch axis (a whole-tensor sum on a GPU adds with atomics, in no fixed order);
    /// the CPU computes each row in f64 with `libm`'s functions, the same bits on every machine.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        composed::cross_entropy::<Self>(logits, targets)
    }

    /// `FusedMovingAvgObsFakeQuantize` as `prepare_qat_fx` sets it up for fbgemm, on any tensor: the
    /// observer's range `observed` (`[1]` each; `None` before the first batch) folds in `x`'s minimum and
    /// maximum, [`FakeQuantization::ACTIVATION`]'s parameters follow from it, and `x` is quantized and
    /// dequantized with them. The gradient passes straight through where the integer fell inside the
    /// range, zero elsewhere (`fake_quantize_per_tensor_affine_cachemask`).
    fn fake_quantize_activation(x: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        composed::fake_quantize(x, 1, None, observed, FakeQuantization::ACTIVATION)
    }

    /// The same per output channel for a conv's weight `[C, K]` multiplied by `factor` `[C]` first
    /// (ConvBnReLU2d's `gamma / sqrt(running_var + eps)`), with [`FakeQuantization::WEIGHT`]: `observed`
    /// is `[C]` each. Gradients flow to the weight and the factor.
    fn fake_quantize_weight(
        weight: FloatTensor<Self>,
        factor: FloatTensor<Self>,
        observed: Option<Observed<Self>>,
    ) -> FakeQuantized<Self> {
        let channels = weight.shape().dims::<2>()[0];
        composed::fake_quantize(weight, channels, Some(factor), observed, FakeQuantization::WEIGHT)
    }

    /// The same for a Linear's weight in Burn's layout `[I, O]`, per output (a column), unscaled.
    fn fake_quantize_linear_weight(weight: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        composed::fake_quantize_columns::<Self>(weight, observed)
    }

    /// ConvBnReLU2d's output before its BatchNorm: the conv's output `y` `[N, C, H, W]` (computed with the
    /// scaled weight) divided by `factor` `[C]` again, plus the conv's own `bias` `[C]`.
    fn unscale_bias(y: FloatTensor<Self>, factor: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::unscale_bias::<Self>(y, factor, bias)
    }

    /// fbgemm's requantization of an int8 layer's accumulator (`ReQuantizeOutput` with a float bias) in
    /// integers held as floats: `clamp(round((accumulator + bias[c]) * multiplier[c]) + zero_point, low,
    /// 255)` for channel `c` (axis 1) of `accumulator` `[N, C, ...]`, `round` to the nearest even. Burn's
    /// operations by default; the CPU does it in one pass.
    fn requantize(
        accumulator: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        multiplier: FloatTensor<Self>,
        zero_point: f32,
        low: f32,
    ) -> FloatTensor<Self> {
        composed::requantize::<Self>(accumulator, bias, multiplier, zero_point, low)
    }

    /// One step of PyTorch's SGD with momentum and weight decay on a parameter (see [`SgdStep`]):
    /// the new parameter and velocity. `velocity` is `None` on the first step. Burn's operations by
    /// default; the CPU fuses it into one pass in place.
    fn sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: Option<FloatTensor<Self>>,
        step: SgdStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::sgd_step::<Self>(param, grad, velocity, step)
    }
}

/// `torch.optim.SGD(lr, momentum, weight_decay)`'s update (dampening 0, not Nesterov), in the f32
/// arithmetic and order of Burn's `Sgd` with the same settings: `d = p * weight_decay + g`;
/// `v = d` on the first step, else `v = d + v * momentum`; `p = p - v * learning_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub learning_rate: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// A fake quantizer's grid: fbgemm's defaults for quantization-aware training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeQuantization {
    pub range: QuantRange,
    /// Symmetric about zero (`preserve_sparsity`), as fbgemm's weights are.
    pub symmetric: bool,
    /// The moving-average observer's constant.
    pub averaging_constant: f32,
}

impl FakeQuantization {
    /// Activations: quint8 per tensor, affine, `[0, 127]` (reduced range).
    pub const ACTIVATION: FakeQuantization =
        FakeQuantization { range: QuantRange::QUINT8_REDUCED, symmetric: false, averaging_constant: DEFAULT_AVERAGING_CONSTANT };
    /// Weights: qint8 per output channel, symmetric.
    pub const WEIGHT: FakeQuantization =
        FakeQuantization { range: QuantRange::QINT8, symmetric: true, averaging_constant: DEFAULT_AVERAGING_CONSTANT };
}

/// A fake quantizer's observer: its running minimum and maximum (`[1]` per tensor, `[C]` per channel),
/// constants to autodiff.
#[derive(Debug, Clone)]
pub struct Observed<B: Backend> {
    pub min: FloatTensor<B>,
    pub max: FloatTensor<B>,
}

/// What a fake quantizer gives: the dequantized tensor and its observer's updated range.
pub struct FakeQuantized<B: Backend> {
    pub output: FloatTensor<B>,
    pub observed: Observed<B>,
}

/// What [`VggBackend::batch_norm_relu`] gives.
pub struct BatchNormed<B: Backend> {
    pub output: FloatTensor<B>,
    /// `[C]`.
    pub mean: FloatTensor<B>,
    /// `[C]`, biased (divided by N x H x W).
    pub variance: FloatTensor<B>,
}

/// A backend VGG trains on: autodiff over a backend that has VGG's operations, with them too.
pub trait TrainingBackend: AutodiffBackend<InnerBackend: VggBackend> + VggBackend {}

impl<B> TrainingBackend for B where B: AutodiffBackend<InnerBackend: VggBackend> + VggBackend {}

fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// [`VggBackend::conv3x3`] on tensors.
pub fn conv3x3<B: VggBackend>(x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    tensor(B::conv3x3(primitive(x), primitive(weight), primitive(bias)))
}

/// [`VggBackend::batch_norm_relu`] on tensors: `(output, mean, biased variance)`.
pub fn batch_norm_relu<B: VggBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
    let normed = B::batch_norm_relu(primitive(x), primitive(weight), primitive(bias));
    (tensor(normed.output), tensor(normed.mean), tensor(normed.variance))
}

/// [`VggBackend::scale_shift_relu`] on tensors.
pub fn scale_shift_relu<B: VggBackend>(x: Tensor<B, 4>, scale: Tensor<B, 1>, shift: Tensor<B, 1>) -> Tensor<B, 4> {
    tensor(B::scale_shift_relu(primitive(x), primitive(scale), primitive(shift)))
}

/// [`VggBackend::max_pool2x2`] on tensors.
pub fn max_pool2x2<B: VggBackend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    tensor(B::max_pool2x2(primitive(x)))
}

/// [`VggBackend::requantize`] on tensors: a conv's `[N, C, H, W]` or a Linear's `[N, C]`.
pub fn requantize<B: VggBackend, const D: usize>(
    accumulator: Tensor<B, D>,
    bias: Tensor<B, 1>,
    multiplier: Tensor<B, 1>,
    zero_point: f32,
    low: f32,
) -> Tensor<B, D> {
    tensor(B::requantize(primitive(accumulator), primitive(bias), primitive(multiplier), zero_point, low))
}

/// [`VggBackend::linear`] on tensors.
pub fn linear<B: VggBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    tensor(<B as VggBackend>::linear(primitive(x), primitive(weight), primitive(bias)))
}

/// [`VggBackend::cross_entropy`] on tensors: the batch's mean loss, `[1]`.
pub fn cross_entropy<B: VggBackend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    tensor(B::cross_entropy(primitive(logits), targets.into_primitive()))
}

/// [`VggBackend::fake_quantize_activation`] on tensors, its observer's range updated in place.
pub fn fake_quantize_activation<B: VggBackend, const D: usize>(
    x: Tensor<B, D>,
    observed: &mut Option<Observed<B>>,
) -> Tensor<B, D> {
    let quantized = B::fake_quantize_activation(primitive(x), observed.take());
    *observed = Some(quantized.observed);
    tensor(quantized.output)
}

/// [`VggBackend::fake_quantize_weight`] on tensors, its observer's range updated in place.
pub fn fake_quantize_weight<B: VggBackend>(
    weight: Tensor<B, 2>,
    factor: Tensor<B, 1>,
    observed: &mut Option<Observed<B>>,
) -> Tensor<B, 2> {
    let quantized = B::fake_quantize_weight(primitive(weight), primitive(factor), observed.take());
    *observed = Some(quantized.observed);
    tensor(quantized.output)
}

/// [`VggBackend::fake_quantize_linear_weight`] on tensors, its observer's range updated in place.
pub fn fake_quantize_linear_weight<B: VggBackend>(weight: Tensor<B, 2>, observed: &mut Option<Observed<B>>) -> Tensor<B, 2> {
    let quantized = B::fake_quantize_linear_weight(primitive(weight), observed.take());
    *observed = Some(quantized.observed);
    tensor(quantized.output)
}

/// [`VggBackend::unscale_bias`] on tensors.
pub fn unscale_bias<B: VggBackend>(y: Tensor<B, 4>, factor: Tensor<B, 1>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    tensor(B::unscale_bias(primitive(y), primitive(factor), primitive(bias)))
}

/// [`VggBackend::sgd_step`] on tensors: the new parameter and velocity.
pub fn sgd_step<B: VggBackend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    velocity: Option<Tensor<B, D>>,
    step: SgdStep,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let (param, velocity) = B::sgd_step(primitive(param), primitive(grad), velocity.map(primitive), step);
    (tensor(param), tensor(velocity))
}

/// The CubeCL backends (CUDA, wgpu) run [`VggBackend`]'s operations as Burn's own, composed: one arm
/// for both, their kernels compiled by cubecl for the device.
///
/// The impls are generic over a marker, [`cubecl_backends::ComposedBackend`], that only the concrete
/// backends implement: the library then compiles none of their operations, whose cubecl kernel builders
/// are most of what a GPU build compiles, and the binary, which instantiates the training for them
/// anyway, compiles them once. Compiled in the library too, they made its release build 398 s of a cold
/// build on 2 cores (98 s without them), and its unit tests' build compiled them a third time.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cubecl_backends {
    use burn::backend::Autodiff;

    use super::composed::Conv3x3Algorithm;
    use super::{composed, cubecl_autodiff, BatchNormed, FloatTensor, VggBackend};

    /// A backend whose VGG operations are Burn's composed ones, its autodiff convolution
    /// [`cubecl_autodiff`]'s: burn-cuda and burn-wgpu.
    pub trait ComposedBackend: burn::tensor::backend::Backend {
        /// How its 3x3 convolutions are computed: one choice per backend and build, never timed, so that
        /// every run on a GPU computes them alike.
        const CONV3X3: Conv3x3Algorithm;
    }

    /// CUDA: an im2col GEMM on cubecl's default matmul, which multiplies on tensor cores (TF32 for f32,
    /// as PyTorch's cuDNN convolutions do by default), where burn-cubecl's direct kernel computes each
    /// output value in one thread, in FP32 and without reuse; the convolutions are 4.9 of the 5.0 GFLOP
    /// of a 128 px image's forward pass. Chosen by that, not yet timed on a GPU (the device check's
    /// benchmarks will). With autotune, Burn's `conv2d` times its own kernels (direct, im2col, implicit
    /// GEMM) instead.
    #[cfg(feature = "cuda")]
    impl ComposedBackend for burn::backend::Cuda {
        const CONV3X3: Conv3x3Algorithm =
            if cfg!(feature = "autotune") { Conv3x3Algorithm::BurnConv2d } else { Conv3x3Algorithm::Im2colGemm };
    }

    /// wgpu: Burn's `conv2d`. On lavapipe (no tensor cores; cubecl's matmul then runs its per-thread
    /// kernel) the direct kernel trains the smoke shapes at 35.6 img/s, the im2col GEMM at 17.4
    /// (`vggq bench-train --device wgpu --profile smoke --seconds 10 --rounds 1`, 2-core EPYC).
    #[cfg(feature = "wgpu")]
    impl ComposedBackend for burn::backend::Wgpu {
        const CONV3X3: Conv3x3Algorithm = Conv3x3Algorithm::BurnConv2d;
    }

    /// `$conv3x3` is the convolution: the backend's algorithm, on autodiff with our backward pass.
    macro_rules! composed_ops {
        ($conv3x3:expr) => {
            fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
                $conv3x3(x, weight, bias)
            }

            fn batch_norm_relu(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> BatchNormed<Self> {
                composed::batch_norm_relu::<Self>(x, weight, bias)
            }

            fn scale_shift_relu(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
                composed::scale_shift_relu::<Self>(x, scale, shift)
            }

            fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
                composed::max_pool2x2::<Self>(x)
            }

            fn linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
                composed::linear::<Self>(x, weight, bias)
            }
        };
    }

    impl<B: ComposedBackend> VggBackend for B {
        composed_ops!(|x, weight, bias| composed::conv3x3_by::<Self>(B::CONV3X3, x, weight, Some(bias)));
    }

    impl<B: ComposedBackend> VggBackend for Autodiff<B> {
        composed_ops!(|x, weight, bias| cubecl_autodiff::conv3x3::<B>(B::CONV3X3, x, weight, bias));
    }
}
