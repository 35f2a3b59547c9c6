//! The operations VGG11-BN is made of, as one backend extension (Burn's way of adding kernels of one's
//! own): a 3x3 convolution (padding 1) with bias, BatchNorm with ReLU (batch statistics, and running ones
//! folded into a scale and a shift), a 2x2 max-pool and the classifier's Linears, and the step of SGD
//! that trains them. The model and the optimizer call them through [`VggBackend`]:
//! - on the CPU (`Flex`, [`cpu`]) they are our kernels, and `Autodiff<Flex>` ([`cpu_autodiff`]) gives
//!   them backward passes of our own;
//! - on CUDA (`Cuda`, `Autodiff<Cuda>`) they are Burn's own operations composed ([`composed`]), so
//!   burn-cuda keeps its kernels and autodiff its backward passes.

pub mod composed;
mod cpu;
mod cpu_autodiff;
mod dot_products;
mod gemm;
pub mod isa;
#[cfg(test)]
mod tests;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorPrimitive;

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

/// [`VggBackend::linear`] on tensors.
pub fn linear<B: VggBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    tensor(<B as VggBackend>::linear(primitive(x), primitive(weight), primitive(bias)))
}

/// [`VggBackend::cross_entropy`] on tensors: the batch's mean loss, `[1]`.
pub fn cross_entropy<B: VggBackend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    tensor(B::cross_entropy(primitive(logits), targets.into_primitive()))
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

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::{Autodiff, Cuda};

    use super::{composed, BatchNormed, FloatTensor, VggBackend};

    macro_rules! composed_backend {
        ($backend:ty) => {
            impl VggBackend for $backend {
                fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
                    composed::conv3x3::<Self>(x, weight, bias)
                }

                fn batch_norm_relu(
                    x: FloatTensor<Self>,
                    weight: FloatTensor<Self>,
                    bias: FloatTensor<Self>,
                ) -> BatchNormed<Self> {
                    composed::batch_norm_relu::<Self>(x, weight, bias)
                }

                fn scale_shift_relu(
                    x: FloatTensor<Self>,
                    scale: FloatTensor<Self>,
                    shift: FloatTensor<Self>,
                ) -> FloatTensor<Self> {
                    composed::scale_shift_relu::<Self>(x, scale, shift)
                }

                fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
                    composed::max_pool2x2::<Self>(x)
                }

                fn linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
                    composed::linear::<Self>(x, weight, bias)
                }
            }
        };
    }

    composed_backend!(Cuda);
    composed_backend!(Autodiff<Cuda>);
}
