//! The network: VGG11-BN shaped like torchvision's, and its pretrained initialisation.

mod batch_norm;
pub mod kernels;
mod pretrained;
mod vgg;

use std::path::PathBuf;

pub use batch_norm::{BatchNorm2d, BATCH_NORM_EPS};
pub use kernels::{CpuFacts, TrainingBackend, VggBackend};
pub use pretrained::{check_features, load_features, PretrainedWeights, WeightsFile, VGG11_BN_IMAGENET1K_V1};
pub use vgg::{linear_bias, Classifier, ConvBlock, FeatureLayer, Vgg, VggConfig, FEATURE_STRIDE, VGG11_FEATURES};

/// What can go wrong building or initialising the model. The messages say "ImageNet weights" for
/// torchvision's checkpoint: a run's own checkpoints are the training's state (`vggq::train`).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint file does not exist.
    #[error("ImageNet weights `{0}` not found")]
    MissingCheckpoint(PathBuf),
    /// The checkpoint file holds no bytes.
    #[error("the ImageNet weights `{0}` are empty (0 bytes): a copy or download of them that never began?")]
    EmptyCheckpoint(PathBuf),
    /// The checkpoint file is not in a format `torch.save` writes.
    #[error(
        "the ImageNet weights `{0}` are not a PyTorch checkpoint: `torch.save` writes a zip archive (or, before \
         PyTorch 1.6, a pickle stream), and this file begins as neither"
    )]
    NotACheckpoint(PathBuf),
    /// The checkpoint could not be read, or one of its tensors does not fit the model.
    #[error("reading the ImageNet weights `{path}` (a PyTorch state dict, torchvision's VGG11-BN): {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("the ImageNet weights `{path}` lack tensor `{key}`")]
    MissingTensor { path: PathBuf, key: String },
    /// The checkpoint holds a feature tensor the model has no place for.
    #[error("the ImageNet weights `{path}` hold tensor `{key}`, which this model has no place for")]
    UnexpectedTensor { path: PathBuf, key: String },
}
