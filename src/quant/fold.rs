//! Folding an eval-mode BatchNorm into the convolution before it, as `torch.nn.utils.fuse_conv_bn_weights`
//! does when FX fuses Conv+BN (and when QAT's ConvBn modules are converted).

use super::float_model::BatchNormParams;
use crate::model::BATCH_NORM_EPS;

/// `w' = w * (gamma * rsqrt(var + eps))` per output channel, `b' = (b - mean) * rsqrt(var + eps) * gamma + beta`,
/// in f32 in PyTorch's order of operations. `weight` is `[out, ...]` row-major.
pub fn fold_batch_norm(weight: &[f32], bias: &[f32], norm: &BatchNormParams) -> (Vec<f32>, Vec<f32>) {
    let channels = bias.len();
    let per_channel = weight.len() / channels;
    let rsqrt: Vec<f32> = norm.running_var.iter().map(|&v| 1.0 / (v + BATCH_NORM_EPS).sqrt()).collect();
    let folded_weight = weight
        .chunks(per_channel)
        .enumerate()
        .flat_map(|(c, row)| {
            let factor = norm.weight[c] * rsqrt[c];
            row.iter().map(move |&w| w * factor)
        })
        .collect();
    let folded_bias =
        (0..channels).map(|c| (bias[c] - norm.running_mean[c]) * rsqrt[c] * norm.weight[c] + norm.bias[c]).collect();
    (folded_weight, folded_bias)
}
