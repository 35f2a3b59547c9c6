//! `vggq quantize`: the FP32 model `vggq train` saved -> dynamic PTQ, static PTQ (FX) and QAT (FX)
//! INT8 variants, each evaluated with the simulated INT8 forward, written as PyTorch `.pth` files
//! beside it with `quant_report.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use serde::Serialize;
use vggq::backend::{self, DeviceRequest, OnBackend, Selection};
use vggq::data::DataSource;
use vggq::model::{TrainingBackend, WeightsFile};
use vggq::pipeline::{quantize, QuantizeSettings, VariantScores};
use vggq::profile::{Init, Profile};
use vggq::quant::static_ptq::CalibrationTiming;
use vggq::quant::Calibration;
use vggq::steps::{self, RunFolderLock, Step};
use vggq::train::{Checkpoints, EpochReport};
use vggq_core::{QatMode, Variant};

use super::run_dir::{is_skipped, require_from_step, start, TrainedRun, AUTOTUNE_FOLDER, MODEL_FILE, QUANT_REPORT_FILE};
use super::train::{note_unread_weights, CheckpointInterval, PretrainedWeightsSource, TrainingInputs};

#[derive(clap::Args)]
pub struct Args {
    /// The folder `vggq train` wrote: its `train_report.json` gives the profile (calibration batches
    /// included), its `model_fp32.mpk` the model; the `.pth` files and `quant_report.json` are written
    /// beside them.
    #[arg(long)]
    run: PathBuf,
    /// `auto` picks CUDA when usable, else a GPU wgpu offers, else the CPU (as `vggq train`); `cuda` never
    /// falls back.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
    /// CIFAR-10 on disk, as for `vggq train` (also `$VGGQ_DATA`); downloaded into the cache without it.
    #[arg(long, env = super::DATA_VARIABLE, value_parser = super::non_empty_path())]
    data: Option<PathBuf>,
    /// The ImageNet weights QAT `fp32match` of a pretrained run starts from, which must be those its
    /// training started from (default: the file training was given, else torchvision's
    /// `vgg11_bn-6002323d.pth`); also `$VGGQ_WEIGHTS`.
    #[arg(long, env = super::WEIGHTS_VARIABLE, value_parser = super::non_empty_path())]
    weights: Option<PathBuf>,
    /// Activation observer of static quantization. Another than the recipe's is said in the report, and
    /// no golden table holds it.
    #[arg(long, value_enum, default_value_t = QuantizeSettings::RECIPE.calibration)]
    calibration: Calibration,
    /// QAT from the FP32 recipe, or a short fine-tune of the trained FP32 model (its files are named
    /// `..._qat_int8_finetune.pth` / `.onnx`; not the recipe, as the report says).
    #[arg(long, value_enum, default_value_t = QuantizeSettings::RECIPE.qat_mode)]
    qat_mode: QatMode,
    /// cubecl's autotune cache for a GPU run (see `vggq train --help`). Default: the one training used.
    #[arg(long)]
    autotune_cache: Option<PathBuf>,
    /// Quantize from the start even when the outputs of an identical earlier run are in place, or QAT's
    /// checkpoint of one that stopped mid-way (without it, such a run resumes where QAT's last checkpoint
    /// was taken, and ends with the bytes it would have written).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    checkpoint_interval: CheckpointInterval,
}

/// One variant's file and scores.
#[derive(Serialize)]
struct VariantReport {
    variant: Variant,
    file: String,
    #[serde(flatten)]
    scores: VariantScores,
}

#[derive(Serialize)]
struct QuantReport<'a> {
    profile: &'a Profile,
    device: &'a Selection,
    dataset: String,
    /// `calibration` and `qat_mode`, as `QuantizedRun` reads them back.
    #[serde(flatten)]
    settings: QuantizeSettings,
    /// The batches calibrated on: the profile's, or all of a training split with fewer.
    calibration_batches: usize,
    calibration_timing: CalibrationTiming,
    /// The ImageNet weights QAT (`fp32match`, pretrained) started from.
    qat_imagenet_weights: Option<&'a WeightsFile>,
    qat_epochs: Vec<EpochReport>,
    qat_seconds: f64,
    /// In the report's order.
    variants: Vec<VariantReport>,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedRun::open(&args.run)?;
    // The data by its content, whatever its form (archive, folder, download): the run's.
    let source = DataSource::local_or_download(args.data.clone());
    let data_digest = trained.data_digest(&args.run, &source)?;
    let model = args.run.join(MODEL_FILE);
    require_from_step(&model, "train")?;
    // After the checks that only read, so that a refused command leaves the folder as it was.
    let _writing = RunFolderLock::take(&args.run)?;
    // Before anything touches a GPU: cubecl reads where its cache is once.
    let autotune = args.autotune_cache.clone().or_else(|| trained.autotune.map(|cache| cache.folder_in(&args.run)));
    let autotune = autotune.unwrap_or_else(|| args.run.join(AUTOTUNE_FOLDER));
    let _cache_folders = backend::autotune::use_caches(Some(&autotune))?;
    let selection = backend::select(args.device)?;
    println!("{}", selection.announcement());
    let profile = trained.profile;
    println!("profile:\n{}", profile.to_json());
    let settings = QuantizeSettings { calibration: args.calibration, qat_mode: args.qat_mode };
    let outputs = Variant::all(args.qat_mode)
        .iter()
        .map(|v| args.run.join(v.pth_file()))
        .chain([args.run.join(QUANT_REPORT_FILE)])
        .collect();
    steps::require_current(&args.run, &["train"])?;
    // The autotune cache by its place in the run where it is read, so that a moved run is the same step.
    let autotune_in_run = backend::autotune::in_step_key(&args.run, &autotune, selection.backend);
    // QAT (fp32match) starts again from the ImageNet weights training started from: they are part of the
    // step's key too.
    let weights = match profile.init {
        Init::Pretrained if args.qat_mode == QatMode::Fp32match => {
            Some(PretrainedWeightsSource::for_qat_of(&args.run, trained.imagenet_weights.as_ref(), args.weights.clone())?)
        }
        _ => {
            note_unread_weights(
                args.weights.as_deref(),
                "QAT starts from ImageNet weights in a `pretrained` run's fp32match mode only",
            );
            None
        }
    };
    let published = weights.as_ref().and_then(PretrainedWeightsSource::published);
    let config = (&profile, selection.backend, selection.adapter(), settings, autotune_in_run, data_digest, published);
    let inputs: Vec<&Path> =
        std::iter::once(model.as_path()).chain(weights.iter().filter_map(PretrainedWeightsSource::input)).collect();
    let step = Step::new("quantize", &args.run, &config, &inputs, outputs)?;
    let skipped = is_skipped(&step, args.force, &args.run)?;
    let checkpoints = Checkpoints::of(&step, args.force || skipped)?.every(args.checkpoint_interval.duration());
    if skipped {
        return Ok(());
    }
    let inputs = TrainingInputs::read(&profile, &source, weights)?;
    start(&step, &args.run)?;
    selection.backend.run(Quantization {
        profile: &profile,
        args: &args,
        inputs,
        settings,
        selection: &selection,
        checkpoints: &checkpoints,
    })??;
    remove_other_qat_mode(&args.run, args.qat_mode)?;
    step.record()?;
    Ok(())
}

/// Removes the QAT files a run in the other `--qat-mode` left in `run` (its `.pth` and ONNX): the
/// folder then holds one QAT variant, the one its `quant_report.json` names.
fn remove_other_qat_mode(run: &Path, mode: QatMode) -> Result<()> {
    let other = match mode {
        QatMode::Fp32match => QatMode::Finetune,
        QatMode::Finetune => QatMode::Fp32match,
    };
    let [.., stale] = Variant::all(other);
    for file in [stale.pth_file(), stale.onnx_file().to_string()] {
        let path = run.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            println!("removed {} (the other --qat-mode's)", path.display());
        }
    }
    Ok(())
}

/// The quantization a run does, generic over the backend it chose.
struct Quantization<'a> {
    profile: &'a Profile,
    args: &'a Args,
    inputs: TrainingInputs,
    settings: QuantizeSettings,
    selection: &'a Selection,
    checkpoints: &'a Checkpoints,
}

impl OnBackend for Quantization<'_> {
    type Output = Result<()>;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Result<()> {
        let (profile, out) = (self.profile, &self.args.run);
        let model_path = out.join(MODEL_FILE);
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let trained = profile
            .model
            .init::<B>(device)
            .load_file(model_path.with_extension(""), &recorder, device)
            .with_context(|| format!("loading the FP32 model {}", model_path.display()))?;
        let quantized = quantize(
            trained,
            profile,
            &self.inputs.data,
            self.settings,
            self.inputs.weights_path(),
            device,
            Some(self.checkpoints),
        )?;
        for path in quantized.write_pth_files(out)? {
            println!("wrote {}", path.display());
        }
        let report = QuantReport {
            profile,
            device: self.selection,
            dataset: self.inputs.dataset,
            settings: self.settings,
            calibration_batches: quantized.calibration_timing.batches,
            calibration_timing: quantized.calibration_timing,
            qat_imagenet_weights: self.inputs.weights.as_ref(),
            qat_epochs: quantized.qat_epochs,
            qat_seconds: quantized.qat_seconds,
            variants: quantized
                .scores
                .iter()
                .map(|&(variant, scores)| VariantReport { variant, file: variant.pth_file(), scores })
                .collect(),
        };
        let report_path = out.join(QUANT_REPORT_FILE);
        vggq::atomic::write(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", report_path.display()))?;
        println!("wrote {}", report_path.display());
        Ok(())
    }
}
