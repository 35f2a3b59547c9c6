//! The files of a run folder, each written by one step and read by the next (and by the tests, xtask and
//! the GPU check): one name each, here.

use std::path::{Path, PathBuf};

use crate::{flag_value, ProfileName};

/// Where a run of `profile` goes when no `--out` names a folder (`vggq train`, `cargo xtask all`, and what
/// `cargo xtask verify` checks): `artifacts/<profile>`, from the working folder.
pub fn default_run_folder(profile: ProfileName) -> PathBuf {
    Path::new("artifacts").join(flag_value(profile))
}

/// The trained FP32 model, as a Burn record (`vggq train`).
pub const MODEL_FILE: &str = "model_fp32.mpk";
/// How the model was trained: profile, device, CPU facts, dataset, epochs (`vggq train`).
pub const TRAIN_REPORT_FILE: &str = "train_report.json";
/// How the variants were quantized and scored, and which `.pth` holds each (`vggq quantize`).
pub const QUANT_REPORT_FILE: &str = "quant_report.json";
/// ONNX Runtime's accuracy, speed and placement per model and provider (`vggq eval`).
pub const METRICS_FILE: &str = "metrics.json";
/// The human report (`vggq report`).
pub const REPORT_FILE: &str = "report.md";
/// The run's golden table, what `golden/<profile>-<device>.snap` reviews: a run made where cargo is
/// absent (the GPU check) brings it back to be reviewed (`vggq report`).
pub const GOLDEN_TABLE_FILE: &str = "golden_table.md";
/// Every file's role, bytes and SHA-256, and the run's provenance (`vggq report`).
pub const MANIFEST_FILE: &str = "manifest.json";
/// `sha256sum -c` over the reproducible files (`vggq report`).
pub const CHECKSUMS_FILE: &str = "SHA256SUMS";
/// The report's bar charts of size, accuracy and speed per model and provider (`vggq report`).
pub const SIZE_CHART_FILE: &str = "size.svg";
pub const ACCURACY_CHART_FILE: &str = "accuracy.svg";
pub const SPEED_CHART_FILE: &str = "speed.svg";
/// Everything `vggq report` writes: a step that runs again removes them first, so that a run being
/// changed neither looks finished (no manifest) nor shows a report of what it held before. The manifest
/// first: a removal cut short leaves a run that looks unfinished, never one that looks finished.
pub const REPORT_OUTPUTS: [&str; 7] =
    [MANIFEST_FILE, CHECKSUMS_FILE, REPORT_FILE, GOLDEN_TABLE_FILE, SIZE_CHART_FILE, ACCURACY_CHART_FILE, SPEED_CHART_FILE];
/// cubecl's autotune cache of a GPU run (a folder), unless told to use another.
pub const AUTOTUNE_FOLDER: &str = "autotune";
/// The steps' up-to-date stamps and the run folder's lock (a folder).
pub const STEPS_FOLDER: &str = ".steps";
/// What names a step's checkpoint after the step ([`checkpoint_in_run`]).
const CHECKPOINT_SUFFIX: &str = ".checkpoint.mpk";
/// Where `step` keeps its checkpoint while it runs (a training's state where it was last saved),
/// relative to the run folder: in [`STEPS_FOLDER`], beside its record.
pub fn checkpoint_in_run(step: &str) -> PathBuf {
    PathBuf::from(STEPS_FOLDER).join(format!("{step}{CHECKPOINT_SUFFIX}"))
}

/// The folders a run folder may hold beside its files: the package check lists any other.
pub const RUN_FOLDERS: [&str; 2] = [STEPS_FOLDER, AUTOTUNE_FOLDER];

/// Every file a step of any run writes into its folder: each variant's `.pth` and ONNX file, the
/// model, the steps' reports and what `vggq report` writes.
pub fn every_run_file() -> Vec<String> {
    let variants = crate::Variant::every();
    let models = variants.iter().flat_map(|variant| [variant.pth_file(), variant.onnx_file().to_owned()]);
    let reports = [MODEL_FILE, TRAIN_REPORT_FILE, QUANT_REPORT_FILE, METRICS_FILE].into_iter().chain(REPORT_OUTPUTS);
    models.chain(reports.map(str::to_owned)).collect()
}
