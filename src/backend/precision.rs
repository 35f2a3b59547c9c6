//! The precision the backend's matmuls and convolutions compute in, measured rather than assumed: on
//! NVIDIA's tensor cores burn-cuda may multiply f32 tensors as TF32 (10 mantissa bits), and its
//! autotuner picks kernels per shape. Each probe runs at a shape of the run (the first conv, the first
//! Linear), through the operations the model calls, on inputs whose exact result needs more than TF32's
//! mantissa: `1 + 2^-11` against `-1`, so that every partial sum stays small and exact in FP32 while
//! TF32 rounds the `2^-11` away.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::kernels::{self, VggBackend};
use crate::model::VggConfig;

/// `1 + 2^-11`: exact in FP32, `1` in TF32.
const BEYOND_TF32: f32 = 1.0 + 1.0 / 2048.0;

/// What one kind of operation computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arithmetic {
    Fp32,
    Tf32,
    /// Neither result: something else rounds (a value is recorded in the message of whoever asks).
    Other,
}

/// The arithmetic of the run's matmuls and convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precision {
    pub matmul: Arithmetic,
    pub conv: Arithmetic,
}

/// Measures the arithmetic of `B` at `config`'s first conv and first Linear with `batch` images.
pub fn measure<B: VggBackend>(config: &VggConfig, batch: usize, device: &B::Device) -> Precision {
    Precision { matmul: matmul::<B>(config, batch, device), conv: conv::<B>(config, batch, device) }
}

fn classify(value: f32, fp32: f32, tf32: f32) -> Arithmetic {
    if value == fp32 {
        Arithmetic::Fp32
    } else if value == tf32 {
        Arithmetic::Tf32
    } else {
        Arithmetic::Other
    }
}

/// `[batch, K] x [K, hidden]` with a row alternating `1 + 2^-11` and `-1` against ones: FP32 gives
/// `K/2 * 2^-11`, TF32 0.
fn matmul<B: Backend>(config: &VggConfig, batch: usize, device: &B::Device) -> Arithmetic {
    let k = config.classifier_inputs();
    let row: Vec<f32> = (0..k).map(|i| if i % 2 == 0 { BEYOND_TF32 } else { -1.0 }).collect();
    let lhs = Tensor::<B, 1>::from_floats(row.as_slice(), device).reshape([1, k]).repeat_dim(0, batch);
    let rhs = Tensor::<B, 2>::ones([k, config.hidden], device);
    let value = crate::host_reads::values(lhs.matmul(rhs).slice([0..1, 0..1]).reshape([1]))[0];
    classify(value, (k / 2) as f32 / 2048.0, 0.0)
}

/// The first conv (3 -> width channels, 3x3, padding 1) on images whose channels are `1 + 2^-11`, `-1`,
/// `1 + 2^-11` against all-one weights: an inner pixel is `9 * (1 + 2^-10)` in FP32, 9 in TF32.
fn conv<B: VggBackend>(config: &VggConfig, batch: usize, device: &B::Device) -> Arithmetic {
    let side = config.input_size;
    let channels = [BEYOND_TF32, -1.0, BEYOND_TF32];
    let image: Vec<f32> = channels.iter().flat_map(|&c| std::iter::repeat_n(c, side * side)).collect();
    let images = Tensor::<B, 1>::from_floats(image.as_slice(), device).reshape([1, 3, side, side]).repeat_dim(0, batch);
    let out_channels = match config.features().first() {
        Some(crate::model::FeatureLayer::Conv(width)) => *width,
        _ => 64 / config.width_divisor,
    };
    let weights = Tensor::<B, 4>::ones([out_channels, 3, 3, 3], device);
    let output = kernels::conv3x3(images, weights, Tensor::zeros([out_channels], device));
    let inner = side / 2;
    let value = crate::host_reads::values(output.slice([0..1, 0..1, inner..inner + 1, inner..inner + 1]).reshape([1]))[0];
    classify(value, 9.0 * (1.0 + 1.0 / 1024.0), 9.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// burn-flex computes in FP32, and the probes say so (at the smoke profile's shapes).
    #[test]
    fn the_cpu_computes_in_fp32() {
        let precision = measure::<burn::backend::Flex>(&crate::profile::Profile::smoke().model, 4, &Default::default());
        assert_eq!(precision, Precision { matmul: Arithmetic::Fp32, conv: Arithmetic::Fp32 });
    }

    #[test]
    fn results_are_told_apart() {
        assert_eq!(classify(2.0, 2.0, 0.0), Arithmetic::Fp32);
        assert_eq!(classify(0.0, 2.0, 0.0), Arithmetic::Tf32);
        assert_eq!(classify(1.5, 2.0, 0.0), Arithmetic::Other);
    }
}
