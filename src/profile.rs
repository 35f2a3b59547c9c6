//! Profiles: the whole recipe of a run as plain data, printed at its start and hashed into its outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
pub use vggq_core::{Init, Limits, ProfileName};

use crate::data::{ImageCounts, Split};
use crate::model::VggConfig;
use crate::train::TrainConfig;

/// Which images of CIFAR-10 a run uses. The 50,000 training images are always split 8:2 into train and
/// validation (40,000 / 10,000), as the seed does; the 10,000 test images are for evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Seed of the train/val split and of the subset below.
    pub split_seed: u64,
    /// Use only this many of the split's images, train and val in the split's 8:2 proportions, or all
    /// the data has where it holds fewer (`None`: all 50,000).
    pub subset: Option<usize>,
    /// Train on at most this many images of the training part (`--train-images`).
    pub train_images: Option<usize>,
    /// Validate and test on at most this many images each, evenly spread (`--eval-images`).
    pub eval_images: Option<usize>,
}

impl DataConfig {
    /// The images a run of this configuration trains on, per epoch, on CIFAR-10.
    pub fn train_count(&self) -> usize {
        let (train, _) = Split::sizes(self.subset.unwrap_or(ImageCounts::CIFAR10.train));
        self.train_images.map_or(train, |cap| cap.min(train))
    }

    /// The images it validates on, and tests on, on CIFAR-10.
    pub fn eval_counts(&self) -> (usize, usize) {
        let (_, val) = Split::sizes(self.subset.unwrap_or(ImageCounts::CIFAR10.train));
        let cap = |count: usize| self.eval_images.map_or(count, |cap| cap.min(count));
        (cap(val), cap(ImageCounts::CIFAR10.test))
    }
}

/// How the quantized variants are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Batches of the unaugmented training split that static quantization calibrates on.
    pub calibration_batches: usize,
}

/// A named, complete recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: ProfileName,
    pub init: Init,
    pub data: DataConfig,
    pub model: VggConfig,
    pub train: TrainConfig,
    pub quant: QuantConfig,
}

impl Profile {
    pub fn named(name: ProfileName) -> Self {
        match name {
            ProfileName::Full => Self::full(),
            ProfileName::Smoke => Self::smoke(),
        }
    }

    /// The seed's recipe.
    pub fn full() -> Self {
        Self {
            name: ProfileName::Full,
            init: Init::Pretrained,
            data: DataConfig { split_seed: 0, subset: None, train_images: None, eval_images: None },
            model: VggConfig::seed(),
            train: TrainConfig::seed(),
            // The seed calibrates on 20 batches.
            quant: QuantConfig { calibration_batches: 20 },
        }
    }

    pub fn smoke() -> Self {
        Self {
            name: ProfileName::Smoke,
            init: Init::Random,
            data: DataConfig { subset: Some(10_000), ..Self::full().data },
            model: VggConfig::of_shape(ProfileName::Smoke.model_shape(), 10),
            train: TrainConfig { epochs: 2, ..TrainConfig::seed() },
            ..Self::full()
        }
    }

    /// This recipe with `limits` applied.
    pub fn limited(mut self, limits: &Limits) -> Self {
        self.data.train_images = limits.train_images.or(self.data.train_images);
        self.data.eval_images = limits.eval_images.or(self.data.eval_images);
        self.quant.calibration_batches = limits.calibration_batches.unwrap_or(self.quant.calibration_batches);
        self.train.epochs = limits.epochs.unwrap_or(self.train.epochs);
        self
    }

    /// Where this recipe departs from its profile's, a line each (`train.epochs 1 where the recipe has 5`):
    /// the limits and overrides a run was given, said wherever its figures are shown, so that they are
    /// never read as the profile's.
    pub fn departures(&self) -> Vec<String> {
        let leaves = |profile: &Profile| {
            let mut leaves = BTreeMap::new();
            collect_leaves("", &serde_json::to_value(profile).expect("a profile is plain data"), &mut leaves);
            leaves
        };
        let (mine, recipe) = (leaves(self), leaves(&Profile::named(self.name)));
        let keys: BTreeSet<&String> = mine.keys().chain(recipe.keys()).collect();
        keys.into_iter()
            .filter(|key| mine.get(*key) != recipe.get(*key))
            .map(|key| {
                // A profile's only optional fields are the data limits, where nothing means all.
                let shown = |value: Option<&serde_json::Value>| match value {
                    None | Some(serde_json::Value::Null) => "no limit".to_string(),
                    Some(value) => value.to_string(),
                };
                format!("{key} {} where the recipe has {}", shown(mine.get(key)), shown(recipe.get(key)))
            })
            .collect()
    }

    /// `full` or `smoke`.
    pub fn name(&self) -> String {
        vggq_core::flag_value(self.name)
    }

    /// The profile as pretty JSON, the form printed at the start of a run and recorded with its outputs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile is plain data")
    }
}

/// The scalar values of `value` by their dotted paths (`train.epochs`), into `leaves`.
fn collect_leaves(path: &str, value: &serde_json::Value, leaves: &mut BTreeMap<String, serde_json::Value>) {
    let child = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        serde_json::Value::Object(fields) => fields.iter().for_each(|(key, field)| collect_leaves(&child(key), field, leaves)),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().for_each(|(index, item)| collect_leaves(&child(&index.to_string()), item, leaves))
        }
        scalar => {
            leaves.insert(path.to_string(), scalar.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_make_another_recipe() {
        let full = Profile::full();
        assert!(full.departures().is_empty());
        assert!(full.clone().limited(&Limits::default()).departures().is_empty());
        let capped = full.limited(&Limits {
            train_images: Some(192),
            eval_images: Some(96),
            calibration_batches: Some(2),
            epochs: Some(1),
        });
        assert_eq!((capped.data.train_images, capped.data.eval_images), (Some(192), Some(96)));
        assert_eq!((capped.quant.calibration_batches, capped.train.epochs), (2, 1));
        assert_eq!(capped.model, VggConfig::seed(), "limits never change the shapes");
        assert_eq!(
            capped.departures(),
            [
                "data.eval_images 96 where the recipe has no limit",
                "data.train_images 192 where the recipe has no limit",
                "quant.calibration_batches 2 where the recipe has 20",
                "train.epochs 1 where the recipe has 5",
            ]
        );
        assert!(Profile::smoke().departures().is_empty());
    }
}
