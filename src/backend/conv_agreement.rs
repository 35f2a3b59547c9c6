//! How closely a backend's two ways of computing VGG's 3x3 convolution ([`Conv3x3Algorithm`]) agree on
//! it: Burn's `conv2d` and the im2col GEMM, forward and for the weights' gradient, at each convolution
//! of the smoke model. A backend trains with one of them; this runs both, so that the one CI cannot
//! train with (the GEMM, CUDA's) still runs through cubecl on lavapipe, and a GPU shows what its
//! tensor cores change. `vggq device --check-step` prints it; tests/wgpu.rs holds lavapipe to it.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;
use rand::{Rng, SeedableRng};

use super::step_agreement::{largest, relative};
use crate::model::kernels::composed::{conv3x3_by, conv3x3_weight_gradient_by, Conv3x3Algorithm};
use crate::model::FeatureLayer;
use crate::profile::Profile;

/// The seed of the inputs: any fixed one.
const SEED: u64 = 7;

/// The largest difference of the GEMM's output or weight gradient from Burn's `conv2d`'s, relative to
/// the largest magnitude of Burn's, over the smoke model's convolutions with a batch of the seed's size;
/// NaN where either computes one.
pub fn measure<B: Backend>(device: &B::Device) -> f64 {
    let config = Profile::smoke().model;
    let batch = crate::data::DEFAULT_BATCH_SIZE;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let mut random = |shape: [usize; 4]| {
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape(shape)
    };
    let (mut channels, mut side, mut differences) = (3, config.input_size, Vec::new());
    for layer in config.features() {
        let FeatureLayer::Conv(width) = layer else {
            side /= 2;
            continue;
        };
        let (x, weight, grad) =
            (random([batch, channels, side, side]), random([width, channels, 3, 3]), random([batch, width, side, side]));
        let float = |t: &Tensor<B, 4>| t.clone().into_primitive().tensor();
        let bias = || Some(Tensor::<B, 1>::zeros([width], device).into_primitive().tensor());
        let forward = |algorithm| values::<B>(conv3x3_by::<B>(algorithm, float(&x), float(&weight), bias()));
        let weight_gradient =
            |algorithm| values::<B>(conv3x3_weight_gradient_by::<B>(algorithm, float(&x), float(&weight), float(&grad)));
        differences.push(relative(&forward(Conv3x3Algorithm::Im2colGemm), &forward(Conv3x3Algorithm::BurnConv2d)));
        differences
            .push(relative(&weight_gradient(Conv3x3Algorithm::Im2colGemm), &weight_gradient(Conv3x3Algorithm::BurnConv2d)));
        channels = width;
    }
    largest(differences.into_iter())
}

/// A result's values on the host, where [`relative`] compares them as the step's are compared.
fn values<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    crate::host_reads::values(Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t)))
}
