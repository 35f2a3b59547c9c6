//! What `vggq train` and `vggq quantize` left in a run folder: the model configuration, how it was
//! trained, the weights, and the quantized variants' `.pth` files and provenance.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use vggq::backend::autotune::AutotuneCache;
use vggq::backend::precision::Precision;
use vggq::backend::Selection;
use vggq::data::{self, DataSource, ImageCounts, CIFAR10_BINARY_URL};
use vggq::model::{CpuFacts, WeightsFile};
use vggq::pipeline::QuantizeSettings;
use vggq::profile::Profile;
use vggq::steps::{RunFolderLock, Step};
use vggq_core::{flag_value, QatMode, Variant};

pub use vggq_core::run_folder::{
    default_run_folder, AUTOTUNE_FOLDER, GOLDEN_TABLE_FILE, METRICS_FILE, MODEL_FILE, QUANT_REPORT_FILE, REPORT_FILE,
    TRAIN_REPORT_FILE,
};

/// Fails unless `path`, a file the run's step `step` writes, is in place: the operating system's "no
/// such file" would not say which step to run, nor that the run folder itself is what is missing, nor
/// that another vggq is writing the run (its step not finished yet). Read before the command takes the
/// run's lock.
pub fn require_from_step(path: &Path, step: &str) -> Result<()> {
    let folder = path.parent().filter(|folder| !folder.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        let what = if folder.exists() { "is not a folder" } else { "does not exist" };
        bail!("{} {what}", folder.display());
    }
    if path.exists() && !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    if !path.is_file() {
        if let Some(writer) = RunFolderLock::writer(folder) {
            bail!(
                "{} is missing: {} is being written by another vggq ({writer}); let it finish",
                path.display(),
                folder.display()
            );
        }
        bail!("{} is missing (run `vggq {step}` first)", path.display());
    }
    Ok(())
}

/// [`Step::starting`], saying which of the package's files it removed: a finished package changed by a
/// step (an evaluation with other settings, say) is no package until `vggq report` runs again.
pub fn start(step: &Step, run: &Path) -> Result<()> {
    let removed = step.starting()?;
    if !removed.is_empty() {
        println!(
            "{}: removed {} from {} (they describe the run as it was: `vggq report` writes them again)",
            step.name(),
            removed.join(", "),
            run.display()
        );
    }
    Ok(())
}

/// Whether `step` is skipped: up to date, and not `forced` to run; says so, naming `place` (the run, or
/// the report an evaluation writes).
pub fn is_skipped(step: &Step, forced: bool, place: &Path) -> Result<bool> {
    let skipped = !forced && step.is_up_to_date()?;
    if skipped {
        println!("{}: up to date in {} (--force to redo)", step.name(), place.display());
    }
    Ok(skipped)
}

/// The parts of `train_report.json` the later steps need.
#[derive(Deserialize)]
pub struct TrainedRun {
    pub profile: Profile,
    /// Where the model was trained, and why there.
    pub device: Selection,
    /// The arithmetic of its matmuls and convolutions.
    pub precision: Precision,
    /// What its CPU kernels ran with (absent from runs of builds before it was recorded).
    #[serde(default)]
    pub cpu: Option<CpuFacts>,
    /// Its autotune cache (likewise).
    #[serde(default)]
    pub autotune: Option<AutotuneCache>,
    /// The ImageNet weights a `pretrained` run started from (likewise).
    #[serde(default)]
    pub imagenet_weights: Option<WeightsFile>,
    /// The dataset's fingerprint (`sha256:<hex> (<origin>)`).
    pub dataset: String,
    /// The images it holds (likewise).
    #[serde(default)]
    pub data_images: Option<ImageCounts>,
    /// Class names in label order.
    pub classes: Vec<String>,
    epochs: Vec<serde_json::Value>,
}

impl TrainedRun {
    pub fn open(folder: &Path) -> Result<Self> {
        read_report(&folder.join(TRAIN_REPORT_FILE), "train")
    }

    /// The digest of the data at `source` ([`data::source_digest`], a later step's key), refused unless
    /// it is the data the run was trained on, before any is loaded or downloaded: the variants'
    /// calibration, fine-tuning and scores, and the ONNX files' accuracy, compare with the FP32 model's
    /// only on the splits it was trained and scored on.
    pub fn data_digest(&self, folder: &Path, source: &DataSource) -> Result<String> {
        let digest = super::data_digest(source)?;
        if data::is_recorded_as(source, &digest, &self.dataset) {
            // The run's name for it, so that the later steps' keys do not change with the data's file name.
            return Ok(self.dataset.clone());
        }
        let given = match source {
            DataSource::Local { path } => format!("--data {} is {digest}", path.display()),
            DataSource::Download { .. } => format!("without --data it is the official archive ({CIFAR10_BINARY_URL})"),
        };
        bail!(
            "{} was trained on {}, but {given}: give it the data it was trained on (--data or $VGGQ_DATA)",
            folder.display(),
            self.dataset
        )
    }

    /// How the weights were obtained, for the files' metadata. `--epochs 0` gives models that are only
    /// fit for benchmarks, and the files say so.
    pub fn training(&self) -> String {
        match self.epochs.len() {
            0 => format!("untrained (vggq train --epochs 0, init {}): for benchmarks only", flag_value(self.profile.init)),
            n => format!("trained: {n} epochs ({} profile)", self.profile.name()),
        }
    }
}

/// The report `vggq <step>` wrote at `path`. One it cannot have written (damaged since, or an older
/// vggq's) is its step's to write again, as a missing one is.
fn read_report<T: serde::de::DeserializeOwned>(path: &Path, step: &str) -> Result<T> {
    require_from_step(path, step)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{} is not a report `vggq {step}` writes (damaged, or an older vggq's): run `vggq {step}` again", path.display())
    })
}

/// The parts of `quant_report.json` (`vggq quantize`) the later steps need: which `.pth` holds each
/// variant, and how the quantized ones were calibrated or trained.
#[derive(Deserialize)]
pub struct QuantizedRun {
    dataset: String,
    #[serde(flatten)]
    pub settings: QuantizeSettings,
    calibration_batches: usize,
    calibration_timing: CalibratedImages,
    qat_epochs: Vec<serde_json::Value>,
    variants: Vec<VariantFile>,
}

#[derive(Deserialize)]
struct CalibratedImages {
    images: usize,
}

#[derive(Deserialize)]
struct VariantFile {
    variant: Variant,
    file: String,
}

impl QuantizedRun {
    pub fn open(folder: &Path) -> Result<Self> {
        read_report(&folder.join(QUANT_REPORT_FILE), "quantize")
    }

    /// The four variants, in the report's order.
    pub fn variants(&self) -> Vec<Variant> {
        self.variants.iter().map(|v| v.variant).collect()
    }

    /// The `.pth` holding `variant`, relative to the run folder.
    pub fn pth_file(&self, variant: Variant) -> Result<&str> {
        self.variants
            .iter()
            .find(|v| v.variant == variant)
            .map(|v| v.file.as_str())
            .with_context(|| format!("{QUANT_REPORT_FILE} has no {} variant", variant.key()))
    }

    /// How `variant`'s weights were obtained. PTQ keeps the FP32 model's training; QAT trains anew
    /// (`fp32match`) or fine-tunes the FP32 model (`finetune`).
    pub fn training(&self, variant: Variant, fp32: &TrainedRun) -> String {
        let Variant::Qat(mode) = variant else { return fp32.training() };
        let epochs = self.qat_epochs.len();
        match mode {
            mode if epochs == 0 => format!("untrained (QAT {}, 0 epochs): for benchmarks only", flag_value(mode)),
            QatMode::Fp32match => format!("QAT fp32match: {epochs} epochs ({} profile)", fp32.profile.name()),
            QatMode::Finetune => format!("QAT finetune: {epochs} epochs from the FP32 model, {}", fp32.training()),
        }
    }

    /// How the static variant's activations were calibrated; `None` for the others (QAT learns its
    /// ranges while training).
    pub fn calibration(&self, variant: Variant) -> Option<String> {
        (variant == Variant::StaticInt8).then(|| {
            format!(
                "{} observers over {} batches ({} images) of the unaugmented CIFAR-10 training split ({})",
                flag_value(self.settings.calibration),
                self.calibration_batches,
                self.calibration_timing.images,
                self.dataset
            )
        })
    }
}
