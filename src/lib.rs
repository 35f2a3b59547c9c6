//! vggq: VGG11-BN on CIFAR-10 with Burn, from data to trained model (and, in later stages, quantized
//! variants written as PyTorch `.pth` and ONNX).
//!
//! The modules follow the pipeline: [`data`] -> [`model`] -> [`train`]; [`backend`] picks the device and
//! [`profile`] holds the recipe.

pub mod backend;
pub mod model;
pub mod profile;
pub mod train;
pub mod throughput;

// TEMP stub until the data module lands.
pub mod data {
    pub struct Batch { pub images: Vec<f32>, pub labels: Vec<i64>, pub side: usize }
    impl Batch { pub fn shape(&self) -> [usize; 4] { [self.labels.len(), 3, self.side, self.side] } }
}

/// The Burn release this build uses, for reports and provenance.
pub const BURN_VERSION: &str = "0.21.0";
