//! How closely a backend's two ways of computing VGG's 3x3 convolution ([`Conv3x3Algorithm`]) agree on
//! it, and how long each takes: Burn's `conv2d` and the im2col GEMM, forward and for the weights'
//! gradient, at each convolution of a profile's model. A backend trains with one of them; this runs
//! both, so that the one CI cannot train with (the GEMM, CUDA's) still runs through cubecl on lavapipe,
//! and a GPU shows what its tensor cores change, in figures and in time. `vggq device --check-step`
//! prints the agreement (tests/wgpu.rs holds lavapipe to it), `vggq device --conv-speed` the times.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::ExecutionError;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use vggq_core::rounds::{Spread, DEFAULT_ROUNDS};

use super::step_agreement::{largest, relative};
use crate::data::DEFAULT_BATCH_SIZE;
use crate::model::kernels::composed::{conv3x3_by, conv3x3_weight_gradient_by, Conv3x3Algorithm};
use crate::model::FeatureLayer;
use crate::profile::{Profile, ProfileName};

/// The seed of the inputs: any fixed one.
const SEED: u64 = 7;

/// One convolution's operands, random in [-1, 1): the input, the weights and the output's gradient,
/// each as Burn's float primitive.
struct Operands<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    /// Input channels.
    channels: usize,
    /// Output channels.
    width: usize,
    /// The input's side in pixels.
    side: usize,
}

impl<B: Backend> Operands<B> {
    /// Those of every convolution of `profile`'s model, with a batch of the seed's size.
    fn of(profile: ProfileName, device: &B::Device) -> Vec<Self> {
        let config = Profile::named(profile).model;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
        let mut random = |shape: [usize; 4]| {
            let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
            Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape(shape).into_primitive().tensor()
        };
        let (batch, mut channels, mut side, mut operands) = (DEFAULT_BATCH_SIZE, 3, config.input_size, Vec::new());
        for layer in config.features() {
            let FeatureLayer::Conv(width) = layer else {
                side /= 2;
                continue;
            };
            operands.push(Operands {
                x: random([batch, channels, side, side]),
                weight: random([width, channels, 3, 3]),
                grad: random([batch, width, side, side]),
                channels,
                width,
                side,
            });
            channels = width;
        }
        operands
    }

    /// The forward convolution by `algorithm` (no bias: zeros).
    fn forward(&self, algorithm: Conv3x3Algorithm, device: &B::Device) -> FloatTensor<B> {
        let bias = Tensor::<B, 1>::zeros([self.width], device).into_primitive().tensor();
        conv3x3_by::<B>(algorithm, self.x.clone(), self.weight.clone(), Some(bias))
    }

    /// The weights' gradient by `algorithm`.
    fn weight_gradient(&self, algorithm: Conv3x3Algorithm) -> FloatTensor<B> {
        conv3x3_weight_gradient_by::<B>(algorithm, self.x.clone(), self.weight.clone(), self.grad.clone())
    }
}

/// The largest difference of the GEMM's output or weight gradient from Burn's `conv2d`'s, relative to
/// the largest magnitude of Burn's, over the smoke model's convolutions with a batch of the seed's size;
/// NaN where either computes one.
pub fn measure<B: Backend>(device: &B::Device) -> f64 {
    let mut differences = Vec::new();
    for layer in Operands::<B>::of(ProfileName::Smoke, device) {
        let forward = |algorithm| values::<B>(layer.forward(algorithm, device));
        let weight_gradient = |algorithm| values::<B>(layer.weight_gradient(algorithm));
        differences.push(relative(&forward(Conv3x3Algorithm::Im2colGemm), &forward(Conv3x3Algorithm::BurnConv2d)));
        differences
            .push(relative(&weight_gradient(Conv3x3Algorithm::Im2colGemm), &weight_gradient(Conv3x3Algorithm::BurnConv2d)));
    }
    largest(differences.into_iter())
}

/// How long each algorithm takes for every convolution of a profile's model, forward and weights'
/// gradient, on a batch of the seed's size: each convolution's median of [`DEFAULT_ROUNDS`] timed passes
/// (each ended by the backend's sync, its queued work done) after one untimed that compiles its
/// kernels, and their sums.
#[derive(Debug, Serialize)]
pub struct ConvSpeed {
    pub profile: ProfileName,
    pub gemm_ms: f64,
    pub conv2d_ms: f64,
    /// Each convolution's, in the model's order: which algorithm suits which shape.
    pub layers: Vec<LayerSpeed>,
}

/// One convolution's times ([`ConvSpeed`]).
#[derive(Debug, Serialize)]
pub struct LayerSpeed {
    pub channels: usize,
    pub width: usize,
    pub side: usize,
    pub gemm_ms: f64,
    pub conv2d_ms: f64,
}

/// [`ConvSpeed`] on `device`, the algorithms alternating convolution by convolution so that the
/// machine's drift falls on both.
pub fn speed<B: Backend>(profile: ProfileName, device: &B::Device) -> Result<ConvSpeed, ExecutionError> {
    let time = |layer: &Operands<B>, algorithm| -> Result<f64, ExecutionError> {
        let started = Instant::now();
        // Held until the sync: a lazy backend need not compute what is dropped unread.
        let results = [layer.forward(algorithm, device), layer.weight_gradient(algorithm)];
        B::sync(device)?;
        let took = started.elapsed();
        drop(results);
        Ok(took.as_secs_f64() * 1e3)
    };
    let median = |times: &[f64]| Spread::of(times).expect("timed passes").median;
    B::sync(device)?;
    let mut layers = Vec::new();
    for layer in Operands::<B>::of(profile, device) {
        let (mut gemm, mut conv2d) = (Vec::new(), Vec::new());
        // The first pass compiles the kernels, untimed.
        for pass in 0..=DEFAULT_ROUNDS {
            let times = (time(&layer, Conv3x3Algorithm::Im2colGemm)?, time(&layer, Conv3x3Algorithm::BurnConv2d)?);
            if pass > 0 {
                gemm.push(times.0);
                conv2d.push(times.1);
            }
        }
        let Operands { channels, width, side, .. } = layer;
        layers.push(LayerSpeed { channels, width, side, gemm_ms: median(&gemm), conv2d_ms: median(&conv2d) });
    }
    Ok(ConvSpeed {
        profile,
        gemm_ms: layers.iter().map(|layer| layer.gemm_ms).sum(),
        conv2d_ms: layers.iter().map(|layer| layer.conv2d_ms).sum(),
        layers,
    })
}

/// A result's values on the host, where [`relative`] compares them as the step's are compared.
fn values<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    crate::host_reads::values(Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t)))
}
