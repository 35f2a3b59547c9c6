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

/// Which images of CIFAR-10 a run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Share of the 50,000 training images held out for validation (the seed: 0.2, i.e. 40,000 / 10,000).
    pub val_fraction: f64,
    /// Seed of the train/val split and of the subset below.
    pub split_seed: u64,
    /// Use only this many training images (`None`: the whole training split).
    pub train_images: Option<usize>,
    /// Use only this many validation images (`None`: the whole validation split).
    pub val_images: Option<usize>,
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
            data: DataConfig { val_fraction: 0.2, split_seed: 0, train_images: None, val_images: None },
            model: VggConfig::seed(),
            train: TrainConfig::seed(),
        }
    }

    pub fn smoke() -> Self {
        Self {
            name: "smoke".into(),
            init: Init::Random,
            data: DataConfig { train_images: Some(8_000), val_images: Some(2_000), ..Self::full().data },
            model: VggConfig::for_input(4, 32, 512, 10),
            train: TrainConfig { epochs: 2, ..TrainConfig::seed() },
        }
    }

    /// The profile as pretty JSON, the form printed at the start of a run and recorded with its outputs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile is plain data")
    }
}
