//! `vggq quantize`: the FP32 model `vggq train` saved -> dynamic PTQ, static PTQ (FX) and QAT (FX)
//! int8 variants, each evaluated with the simulated int8 forward, written as PyTorch `.pth` files
//! beside it with `quant_report.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use vggq::backend::{self, Backend as BackendKind, DeviceRequest};
use vggq::data::{self, DataSource};
use vggq::model::load_features;
use vggq::profile::{Init, Profile};
use vggq::steps::Step;
use vggq::quant::qat::{train_qat, QatMode};
use vggq::quant::state_dict::{fp32_state_dict, quantized_state_dict};
use vggq::quant::static_ptq::CalibrationTiming;
use vggq::quant::{quantize_dynamic, quantize_static, Calibration, FloatVgg, QuantizedVgg, SimulatedVgg};
use vggq::train::{evaluate, evaluate_with, progress_bar, EpochReport, Score};

use vggq::pipeline::RunData;

use super::run_dir::{pth_name, TrainedRun, MODEL_FILE, QUANT_REPORT_FILE};
use super::train::pretrained_weights;

#[derive(clap::Args)]
pub struct Args {
    /// The folder `vggq train` wrote: its `train_report.json` gives the profile, its `model_fp32.mpk` the
    /// model; the `.pth` files and `quant_report.json` are written beside them.
    #[arg(long)]
    run: PathBuf,
    /// `auto` picks CUDA when available, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
    /// CIFAR-10 on disk, as for `vggq train` (also `$VGGQ_DATA`); downloaded into the cache without it.
    #[arg(long, env = "VGGQ_DATA")]
    data: Option<PathBuf>,
    /// torchvision's `vgg11_bn-6002323d.pth`, for QAT `fp32match` of a pretrained profile (also `$VGGQ_WEIGHTS`).
    #[arg(long, env = "VGGQ_WEIGHTS")]
    weights: Option<PathBuf>,
    /// Batches of the (unaugmented) training split observed by static calibration.
    #[arg(long, default_value_t = 20)]
    calibration_batches: usize,
    /// Activation observer of static quantization.
    #[arg(long, value_enum, default_value = "histogram")]
    calibration: Calibration,
    /// QAT from the FP32 recipe, or a short fine-tune of the trained FP32 model.
    #[arg(long, value_enum, default_value = "fp32match")]
    qat_mode: QatMode,
    /// Quantize even when the outputs of an identical earlier run are in place.
    #[arg(long)]
    force: bool,
}

/// One variant's scores.
#[derive(Serialize)]
struct VariantReport {
    file: String,
    val: Score,
    test: Score,
}

#[derive(Serialize)]
struct QuantReport<'a> {
    profile: &'a Profile,
    backend: BackendKind,
    dataset: String,
    calibration: Calibration,
    calibration_batches: usize,
    calibration_timing: CalibrationTiming,
    qat_mode: QatMode,
    qat_epochs: Vec<EpochReport>,
    qat_seconds: f64,
    fp32: VariantReport,
    dynamic_int8: VariantReport,
    static_int8_fx: VariantReport,
    qat_int8: VariantReport,
}

pub fn run(args: Args) -> Result<()> {
    let profile = TrainedRun::open(&args.run)?.profile;
    println!("profile:\n{}", profile.to_json());
    let selection = backend::select(args.device)?;
    println!("{}", selection.reason);
    let qat_variant = qat_variant(args.qat_mode);
    let outputs = ["fp32", "dynamic_int8", "static_int8_fx", qat_variant.as_str()]
        .iter()
        .map(|variant| args.run.join(pth_name(variant)))
        .chain([args.run.join(QUANT_REPORT_FILE)])
        .collect();
    let model = args.run.join(MODEL_FILE);
    let inputs: Vec<&Path> = [Some(model.as_path()), args.data.as_deref()].into_iter().flatten().filter(|p| p.is_file()).collect();
    let settings = (&profile, selection.backend, args.calibration_batches, args.calibration, args.qat_mode);
    let step = Step::new("quantize", &args.run, &settings, &inputs, outputs)?;
    if !args.force && step.is_up_to_date()? {
        println!("quantize: up to date in {} (--force to redo)", args.run.display());
        return Ok(());
    }
    match selection.backend {
        BackendKind::Cpu => execute::<backend::CpuBackend>(&profile, args, selection.backend, &Default::default())?,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => execute::<backend::CudaBackend>(&profile, args, selection.backend, &Default::default())?,
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => unreachable!("backend::select never picks CUDA without the cuda feature"),
    }
    step.record()?;
    Ok(())
}



/// The QAT variant's name: `qat_int8_fp32match` or `qat_int8_finetune`.
fn qat_variant(mode: QatMode) -> String {
    match mode {
        QatMode::Fp32match => "qat_int8_fp32match",
        QatMode::Finetune => "qat_int8_finetune",
    }
    .to_string()
}


fn execute<B: AutodiffBackend>(profile: &Profile, args: Args, backend: BackendKind, device: &B::Device) -> Result<()> {
    let out = args.run.clone();
    let data_source = DataSource::local_or_download(args.data);
    let cifar = data::load(&data_source)?;
    let dataset = cifar.fingerprint.to_string();
    let loaders = RunData::new(cifar, profile)?;

    let model_path = out.join(MODEL_FILE);
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let trained = profile
        .model
        .init::<B>(device)
        .load_file(out.join("model_fp32"), &recorder, device)
        .with_context(|| format!("loading the FP32 model {} (run `vggq train` first)", model_path.display()))?;
    let float = FloatVgg::from_model(&trained.valid(), &profile.model);
    let inner = device;
    let score = |label: &str, model: &QuantizedVgg| {
        let simulated = SimulatedVgg::<B::InnerBackend>::new(model, inner);
        (
            evaluate_with::<B::InnerBackend>(&loaders.val, inner, &format!("{label} val"), |x| simulated.forward(x)),
            evaluate_with::<B::InnerBackend>(&loaders.test, inner, &format!("{label} test"), |x| simulated.forward(x)),
        )
    };
    let report_line = |label: &str, (val, test): &(Score, Score)| {
        println!("{label}: val acc {:.2} % | test acc {:.2} %", val.accuracy, test.accuracy)
    };

    let fp32 = (
        evaluate(&trained.valid(), &loaders.val, inner, "fp32 val"),
        evaluate(&trained.valid(), &loaders.test, inner, "fp32 test"),
    );
    report_line("fp32", &fp32);

    let dynamic = quantize_dynamic(&float);
    let dynamic_scores = score("dynamic", &dynamic);
    report_line("dynamic int8", &dynamic_scores);

    let bar = progress_bar(args.calibration_batches, "calibration".into());
    let calibration_set = loaders.train.unaugmented().epoch(0).take(args.calibration_batches);
    let (static_model, calibration_timing) =
        quantize_static::<B::InnerBackend>(&float, calibration_set, args.calibration, inner, &bar)?;
    bar.finish_and_clear();
    println!(
        "calibration: {} batches, forward {:.2} s, observers {:.2} s",
        calibration_timing.batches, calibration_timing.forward_seconds, calibration_timing.observer_seconds
    );
    let static_scores = score("static", &static_model);
    report_line("static int8", &static_scores);

    let recipe = args.qat_mode.recipe(&profile.train);
    // Seeded in both modes: dropout draws from the backend's generator.
    B::seed(device, profile.train.seed);
    let start = match args.qat_mode {
        QatMode::Finetune => trained,
        QatMode::Fp32match => {
            let model = profile.model.init::<B>(device);
            match profile.init {
                Init::Pretrained => load_features(model, &profile.model, &pretrained_weights(args.weights)?)?,
                Init::Random => model,
            }
        }
    };
    let started = Instant::now();
    let (qat_model, qat_epochs) = train_qat(start, &profile.model, &loaders.train, &loaders.val, &recipe, device);
    let qat_seconds = started.elapsed().as_secs_f64();
    let qat_scores = score("qat", &qat_model);
    report_line("qat int8", &qat_scores);

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let qat_variant = qat_variant(args.qat_mode);
    let files = [
        ("fp32".to_string(), fp32_state_dict(&float)?),
        ("dynamic_int8".to_string(), quantized_state_dict(&dynamic)?),
        ("static_int8_fx".to_string(), quantized_state_dict(&static_model)?),
        (qat_variant.clone(), quantized_state_dict(&qat_model)?),
    ];
    for (variant, state_dict) in &files {
        let path = out.join(pth_name(variant));
        vggq_pth::write_file(&path, state_dict).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let variant = |name: &str, (val, test): (Score, Score)| VariantReport { file: pth_name(name), val, test };
    let report = QuantReport {
        profile,
        backend,
        dataset,
        calibration: args.calibration,
        calibration_batches: args.calibration_batches,
        calibration_timing,
        qat_mode: args.qat_mode,
        qat_epochs,
        qat_seconds,
        fp32: variant("fp32", fp32),
        dynamic_int8: variant("dynamic_int8", dynamic_scores),
        static_int8_fx: variant("static_int8_fx", static_scores),
        qat_int8: variant(&qat_variant, qat_scores),
    };
    let report_path = out.join(QUANT_REPORT_FILE);
    vggq::atomic::write(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("wrote {}", report_path.display());
    Ok(())
}
