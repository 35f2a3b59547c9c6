//! 2-D batch normalisation with PyTorch's semantics and tensor names.
//!
//! The arithmetic is [`kernels`]' (one fused operation with ReLU, as every BatchNorm of VGG is followed
//! by one); this module holds the parameters and running statistics, named like torchvision's
//! state_dict, and updates them as PyTorch does.

use burn::module::{Module, Param, ParamId, RunningState};
use burn::prelude::*;

use super::kernels::{self, VggBackend};

/// torch.nn.BatchNorm2d's `eps`: the one value every BatchNorm computation here uses (this module, BN
/// folding, the quantized simulations).
pub const BATCH_NORM_EPS: f32 = 1e-5;
/// torch.nn.BatchNorm2d's default momentum.
const MOMENTUM: f64 = 0.1;

#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Per-channel scale (Burn calls it gamma).
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift (Burn calls it beta).
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Unbiased, as PyTorch keeps it.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Training batches seen, as PyTorch counts them (one value; a float, exact far beyond any run's
    /// count, because Burn keeps running state in float tensors).
    pub num_batches_tracked: RunningState<Tensor<B, 1>>,
}

impl<B: Backend> BatchNorm2d<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            num_batches_tracked: RunningState::new(Tensor::zeros([1], device)),
        }
    }

    /// The same BatchNorm with the ids `next` gives (see [`super::Vgg::with_numbered_ids`]).
    pub fn with_ids(self, next: &mut impl FnMut() -> ParamId) -> Self {
        let state = |state: RunningState<Tensor<B, 1>>, id| RunningState::with_id(id, state.value_sync());
        Self {
            weight: renumbered(self.weight, next()),
            bias: renumbered(self.bias, next()),
            running_mean: state(self.running_mean, next()),
            running_var: state(self.running_var, next()),
            num_batches_tracked: state(self.num_batches_tracked, next()),
        }
    }
}

impl<B: Backend> BatchNorm2d<B> {
    /// Folds the running statistics' last update in (Burn's `RunningState` keeps it pending until the
    /// next read): where a training does so is where its device queue holds the fold.
    pub fn fold_running_statistics(&self) {
        for state in [&self.running_mean, &self.running_var, &self.num_batches_tracked] {
            let _ = state.value_sync();
        }
    }
}

/// `param` under the id `id`.
pub fn renumbered<B: Backend, const D: usize>(param: Param<Tensor<B, D>>, id: ParamId) -> Param<Tensor<B, D>> {
    Param::initialized(id, param.val())
}

impl<B: VggBackend> BatchNorm2d<B> {
    /// BatchNorm, then ReLU: [N, C, H, W] -> [N, C, H, W]. On autodiff backends with the batch's
    /// statistics, updating the running ones (the variance unbiased, as PyTorch keeps it) and counting the
    /// batch; otherwise with the running statistics.
    pub fn forward_relu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if B::ad_enabled(&x.device()) {
            let [n, _, h, w] = x.dims();
            let (output, mean, variance) = kernels::batch_norm_relu(x, self.weight.val(), self.bias.val());
            let count = (n * h * w) as f64;
            let unbiased = variance * (count / (count - 1.0).max(1.0));
            self.running_mean.update(self.running_mean.value_sync() * (1.0 - MOMENTUM) + mean * MOMENTUM);
            self.running_var.update(self.running_var.value_sync() * (1.0 - MOMENTUM) + unbiased * MOMENTUM);
            self.num_batches_tracked.update(self.num_batches_tracked.value_sync() + 1.0);
            output
        } else {
            let scale = self.weight.val() / (self.running_var.value() + f64::from(BATCH_NORM_EPS)).sqrt();
            let shift = self.bias.val() - self.running_mean.value() * scale.clone();
            kernels::scale_shift_relu(x, scale, shift)
        }
    }
}
