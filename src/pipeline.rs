//! The pipeline's steps as library calls, shared by the `vggq` binary and the tests.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::data::{BatchLoader, Cifar10, DataError, LoaderConfig, Split};
use crate::model::{load_features, ModelError, Vgg};
use crate::profile::Profile;
use crate::train::{evaluate, train, EpochReport, Score};

/// The three image sets of a run, batched as the profile says.
pub struct RunData {
    /// Shuffled and flipped per epoch.
    pub train: BatchLoader,
    pub val: BatchLoader,
    pub test: BatchLoader,
}

impl RunData {
    /// Splits CIFAR-10's training images 8:2 (seeded), keeps the profile's subset, and batches everything.
    pub fn new(cifar: Cifar10, profile: &Profile) -> Result<Self, DataError> {
        let seed = profile.data.split_seed;
        let mut split = Split::new(cifar.train.len(), seed);
        if let Some(total) = profile.data.subset {
            split = split.subset(total, seed)?;
        }
        let side = profile.model.input_size;
        let batch_size = profile.train.batch_size;
        let batches = |images, config: LoaderConfig| BatchLoader::new(images, LoaderConfig { batch_size, ..config });
        Ok(Self {
            train: batches(cifar.train.select(&split.train), LoaderConfig::train(side, profile.train.seed))?,
            val: batches(cifar.train.select(&split.val), LoaderConfig::eval(side))?,
            test: batches(cifar.test, LoaderConfig::eval(side))?,
        })
    }
}

/// What fine-tuning produced.
pub struct TrainedFp32<B: AutodiffBackend> {
    pub model: Vgg<B>,
    pub epochs: Vec<EpochReport>,
    pub test: Score,
}

/// Builds the profile's model (seeded; features from `pretrained` when given), fine-tunes it, and scores
/// the result on the test set.
pub fn train_fp32<B: AutodiffBackend>(
    profile: &Profile,
    data: &RunData,
    pretrained: Option<&Path>,
    device: &B::Device,
) -> Result<TrainedFp32<B>, ModelError> {
    B::seed(device, profile.train.seed);
    let mut model = profile.model.init::<B>(device);
    if let Some(weights) = pretrained {
        model = load_features(model, &profile.model, weights)?;
    }
    let (model, epochs) = train(model, &data.train, &data.val, &profile.train, device);
    let test = evaluate(&model.valid(), &data.test, device, "test");
    Ok(TrainedFp32 { model, epochs, test })
}
