//! What `vggq train` left in its output folder: the model configuration, how it was trained, the weights.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::prelude::Backend;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use serde::Deserialize;
use vggq::model::Vgg;
use vggq::profile::Profile;

/// The parts of `train_report.json` the later steps need.
#[derive(Deserialize)]
pub struct TrainedRun {
    pub profile: Profile,
    /// The dataset's fingerprint (`sha256:<hex> (<origin>)`).
    pub dataset: String,
    /// Class names in label order.
    pub classes: Vec<String>,
    epochs: Vec<serde_json::Value>,
    #[serde(skip)]
    pub folder: PathBuf,
}

impl TrainedRun {
    pub fn open(folder: &Path) -> Result<Self> {
        let path = folder.join("train_report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {} (run `vggq train` first)", path.display()))?;
        let mut run: TrainedRun = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        run.folder = folder.to_path_buf();
        Ok(run)
    }

    /// The eval model from `model_fp32.mpk`.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<Vgg<B>> {
        let path = self.folder.join("model_fp32.mpk");
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        self.profile
            .model
            .init::<B>(device)
            .load_file(path.clone(), &recorder, device)
            .with_context(|| format!("loading {}", path.display()))
    }

    /// How the weights were obtained, for the files' metadata. `--epochs 0` gives models that are only
    /// fit for benchmarks, and the files say so.
    pub fn training(&self) -> String {
        match self.epochs.len() {
            0 => format!("untrained (vggq train --epochs 0, init {:?}): for benchmarks only", self.profile.init).to_lowercase(),
            n => format!("trained: {n} epochs ({} profile)", self.profile.name),
        }
    }
}
