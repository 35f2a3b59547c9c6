//! Profiles: the whole recipe of a run as plain data, printed at its start and hashed into its outputs.

use serde::{Deserialize, Serialize};

use crate::model::VggConfig;
use crate::train::TrainConfig;

/// How the network starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// torchvision's ImageNet-1k weights for the features, a new classifier.
    Pretrained,
    /// Burn's default initialisation everywhere.
    Random,
}

/// Which images of CIFAR-10 a run uses. The 50,000 training images are always split 8:2 into train and
/// validation (40,000 / 10,000), as the seed does; the 10,000 test images are for evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Seed of the train/val split and of the subset below.
    pub split_seed: u64,
    /// Use only this many of the split's images, train and val in the split's 8:2 proportions
    /// (`None`: all 50,000).
    pub subset: Option<usize>,
}

/// A named, complete recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub init: Init,
    pub data: DataConfig,
    pub model: VggConfig,
    pub train: TrainConfig,
}

/// The profiles `--profile` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileName {
    /// The seed's recipe exactly: 128 px, full VGG11-BN, pretrained, 40,000 / 10,000 images, 5 epochs.
    Full,
    /// The same pipeline, small enough for 2 CPU cores in minutes: 32 px, width/4, hidden 512, random
    /// init, 8,000 / 2,000 images, 2 epochs.
    Smoke,
}

impl Profile {
    pub fn named(name: ProfileName) -> Self {
        match name {
            ProfileName::Full => Self::full(),
            ProfileName::Smoke => Self::smoke(),
        }
    }

    pub fn full() -> Self {
        Self {
            name: "full".into(),
            init: Init::Pretrained,
            data: DataConfig { split_seed: 0, subset: None },
            model: VggConfig::seed(),
            train: TrainConfig::seed(),
        }
    }

    pub fn smoke() -> Self {
        Self {
            name: "smoke".into(),
            init: Init::Random,
            data: DataConfig { subset: Some(10_000), ..Self::full().data },
            model: VggConfig::for_input(4, 32, 512, 10),
            train: TrainConfig { epochs: 2, ..TrainConfig::seed() },
        }
    }

    /// The profile as pretty JSON, the form printed at the start of a run and recorded with its outputs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile is plain data")
    }
}
