//! `vggq eval`: ONNX files on the CIFAR-10 test images with ONNX Runtime, on the execution providers
//! `--device` asks for.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use prost::Message;
use vggq::backend::DeviceRequest;
use vggq::data::{BatchLoader, DataSource, LoaderConfig, DEFAULT_BATCH_SIZE};
use vggq::eval::{
    self, EvalError, EvalRun, ModelMetrics, OnnxSession, Provider, ProviderPlan, SessionSettings, Unavailable, MIB,
    ORT_DYLIB_PATH,
};
use vggq::export::onnx::proto::{tensor_shape_proto::dimension, type_proto, ModelProto};
use vggq::steps::{self, RunFolderLock, Step};
use vggq_core::limits::positive;

use super::run_dir::{is_skipped, require_from_step, QuantizedRun, TrainedRun, METRICS_FILE};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["run", "models"])))]
pub struct Args {
    /// A run folder: evaluates the ONNX files `vggq export` wrote there, on as many test images as its
    /// profile says (`--eval-images`), into its `metrics.json`.
    #[arg(long)]
    run: Option<PathBuf>,
    /// ONNX files to evaluate, instead of a run's.
    models: Vec<PathBuf>,
    /// `cpu`: the CPU execution provider. `cuda`: CUDA's (it must run) and the CPU's beside it. `auto`:
    /// CUDA's too where training could use CUDA here; one that cannot run is recorded with its reason.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
    /// CIFAR-10 (see `vggq train --help`); also `$VGGQ_DATA`.
    #[arg(long, env = super::DATA_VARIABLE, value_parser = super::non_empty_path())]
    data: Option<PathBuf>,
    /// Evaluate N test images, evenly spread over the set (default: all 10,000, or the run profile's
    /// `--eval-images`).
    #[arg(long, value_parser = positive)]
    images: Option<usize>,
    /// Images per batch, 1 to 4096: the models run, and are timed, on batches of this size.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    batch: usize,
    /// Batches run before timing starts (they count for accuracy); at most all but the last full one.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// ONNX Runtime's intra-op threads, 1 to 1024 (default: one per core).
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: Option<usize>,
    /// Also write the results as JSON here (with `--run`: its `metrics.json`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// With `--run`: evaluate even when its `metrics.json` holds the results of an identical earlier
    /// evaluation.
    #[arg(long)]
    force: bool,
}

pub fn run(mut args: Args) -> Result<()> {
    let source = DataSource::local_or_download(args.data.clone());
    // The data by its content, whatever its form (archive, folder, download): a run's, for its step.
    let mut data_digest = None;
    if let Some(run) = &args.run {
        let trained = TrainedRun::open(run)?;
        data_digest = Some(trained.data_digest(run, &source)?);
        let profile = trained.profile;
        args.models = QuantizedRun::open(run)?.variants().iter().map(|v| run.join(v.onnx_file())).collect();
        for model in &args.models {
            require_from_step(model, "export")?;
        }
        args.images = args.images.or(profile.data.eval_images);
        args.report = args.report.take().or_else(|| Some(run.join(METRICS_FILE)));
    }
    if let Some(report) = args.report.as_ref().filter(|report| report.is_dir()) {
        bail!("--report {} is a folder: name the JSON file to write", report.display());
    }
    let plan = ProviderPlan::for_request(args.device);
    println!("execution providers: {}", plan.reason);
    // A run's evaluation is a step of its pipeline, skipped when up to date; files named on the command
    // line (a benchmark's, say) are always evaluated.
    let (step, _writing, into_run) = match args.report.as_ref().zip(data_digest) {
        Some((report, data_digest)) => {
            // The models, the data, and the ONNX Runtime library that runs them (its version is in its bytes).
            let library = std::env::var_os(ORT_DYLIB_PATH).map(PathBuf::from);
            let inputs: Vec<&Path> = args.models.iter().map(PathBuf::as_path).chain(library.as_deref()).collect();
            let settings = (&plan.providers, args.images, args.batch, args.warmup, args.threads, data_digest);
            let folder = report.parent().unwrap_or(Path::new("."));
            let writing = RunFolderLock::take(folder)?;
            // The run's own metrics, however spelt (not a report written elsewhere, whose folder is not
            // the run's package): the step is the run's, spelt as the run is, so that it records the
            // run's files it read and wrote by their names in the run.
            let run = args.run.as_deref().filter(|run| is_runs_metrics(run, report));
            let (folder, report) = run.map_or((folder, report.clone()), |run| (run, run.join(METRICS_FILE)));
            let step = Step::new("eval", folder, &settings, &inputs, vec![report])?;
            (Some(step), Some(writing), run.is_some())
        }
        None => (None, None, false),
    };
    if let Some(run) = &args.run {
        // The ONNX files as export wrote them, from the run's current .pth files and model.
        steps::require_current(run, &["train", "quantize", "export"])?;
    }
    if let Some((step, report)) = step.as_ref().zip(args.report.as_ref()) {
        if is_skipped(step, args.force, report)? {
            return Ok(());
        }
    }
    // Made before the models run, so a report path that cannot be written fails now, not after them.
    if let Some(report) = &args.report {
        if let Some(folder) = report.parent() {
            // The OS says "File exists" where a file stands in the path: the file is named instead.
            if let Some(file) = folder.ancestors().find(|ancestor| ancestor.is_file()) {
                bail!("--report {}: {} is a file, not a folder", report.display(), file.display());
            }
            std::fs::create_dir_all(folder).with_context(|| format!("creating the report's folder {}", folder.display()))?;
        }
    }
    // Every model's input is read (and checked), the runtime loaded and the data read before the run
    // is changed.
    let sides: Vec<usize> = args.models.iter().map(|path| input_side(path)).collect::<Result<_>>()?;
    eval::load_runtime(plan.cuda_required)?;
    let cifar = super::load_data(&source)?;
    if let Some(step) = step.as_ref().filter(|_| into_run) {
        step.starting()?;
    }
    let available = cifar.test.len();
    let test = match args.images {
        Some(count) => cifar.test.spread(count),
        None => cifar.test,
    };
    match args.images {
        Some(asked) if asked > available => println!("test images: all {available} (--images asked for {asked})"),
        _ => println!("test images: {} of {available}", test.len()),
    }
    if test.len() < args.batch {
        bail!(
            "{} test images are fewer than one batch (--batch {}), and the timing needs a full one: evaluate at least {} \
             images, or give a smaller --batch",
            test.len(),
            args.batch,
            args.batch
        );
    }
    let warmup = eval::warmup_within(args.warmup, test.len() / args.batch);
    if warmup < args.warmup {
        println!("warm-up batches: {warmup} (--warmup asked for {}; the last full batch is timed)", args.warmup);
    }
    let mut rows = Vec::new();
    let mut unavailable: Vec<Unavailable> = Vec::new();
    println!(
        "{:<44} {:>8} {:>5} {:<28} {:>7} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "file", "MiB", "EP", "placement", "top-1 %", "ms/img", "img/s", "ms/img+p", "img/s+p", "p50 ms", "p95 ms"
    );
    for (path, &side) in args.models.iter().zip(&sides) {
        let batches = BatchLoader::new(test.clone(), LoaderConfig { batch_size: args.batch, ..LoaderConfig::eval(side) })?;
        let size_bytes = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        for &provider in &plan.providers {
            if unavailable.iter().any(|u| u.provider == provider) {
                continue;
            }
            let session = match OnnxSession::open(path, side, provider, args.threads) {
                Ok(session) if provider == Provider::Cuda && !session.placement.ran_on_cuda() => {
                    Err(EvalError::CudaUnavailable("the CUDA provider registered but ran none of the model's nodes".into()))
                }
                other => other,
            };
            let mut session = match session {
                Ok(session) => session,
                Err(error) => {
                    let cuda_has_run = rows.iter().any(|row: &ModelMetrics| row.eval.requested == Provider::Cuda);
                    let unavailability = (provider == Provider::Cuda)
                        .then(|| cuda_unavailability(&error, plan.cuda_required, cuda_has_run))
                        .flatten();
                    let Some(reason) = unavailability else {
                        return Err(error).with_context(|| format!("opening {} on the {provider} provider", path.display()));
                    };
                    println!("{:<44} {:>8.2} {:>5} not available: {reason}", file_name(path), size_bytes as f64 / MIB, "CUDA");
                    unavailable.push(Unavailable { provider, reason });
                    continue;
                }
            };
            let report = eval::evaluate(&mut session, &batches, args.warmup)?;
            println!(
                "{:<44} {:>8.2} {:>5} {:<28} {:>7.2} {:>8.2} {:>8.1} {:>9.2} {:>9.1} {:>8.1} {:>8.1}",
                file_name(path),
                size_bytes as f64 / MIB,
                provider.to_string(),
                report.placement,
                report.top1,
                report.inference.ms_per_image,
                report.inference.images_per_s,
                report.with_preprocessing.ms_per_image,
                report.with_preprocessing.images_per_s,
                report.p50_batch_ms,
                report.p95_batch_ms
            );
            println!("    ops run: {:?}", report.op_counts);
            rows.push(ModelMetrics { file: file_name(path), size_bytes, size_mib: size_bytes as f64 / MIB, eval: report });
        }
    }
    if rows.is_empty() {
        bail!("no model ran on any execution provider");
    }
    if let Some(report) = &args.report {
        let run = EvalRun { plan, session: SessionSettings::new(args.threads), unavailable, rows };
        vggq::atomic::write(report, serde_json::to_string_pretty(&run)?.as_bytes())
            .with_context(|| format!("writing {}", report.display()))?;
    }
    if let Some(step) = step {
        step.record()?;
    }
    Ok(())
}

/// Why the CUDA provider counts as unavailable after `error` opening a session on it, or `None` where the
/// error stands: asked for by name (`--device cuda`), CUDA must run; under `--device auto`, whatever stops
/// its first session (its libraries, or cuDNN's loaded lazily at the first inference) makes it
/// unavailable and the CPU's still runs, but once it has run a model, a later model's failure there is
/// that model's (out of memory, an operator it cannot take), not the provider's.
fn cuda_unavailability(error: &EvalError, cuda_required: bool, cuda_has_run: bool) -> Option<String> {
    match error {
        _ if cuda_required => None,
        EvalError::CudaUnavailable(reason) => Some(reason.clone()),
        _ if cuda_has_run => None,
        other => Some(format!("its session could not be opened: {other}")),
    }
}

/// Whether `report` is the run's own `metrics.json`, however either is spelt (relative or absolute,
/// through a link): its place, not its spelling, says whether the run's package changes. Both folders
/// exist by now (the report's was made when its lock was taken).
fn is_runs_metrics(run: &Path, report: &Path) -> bool {
    let folder = report.parent().filter(|folder| !folder.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let same_folder = matches!((folder.canonicalize(), run.canonicalize()), (Ok(a), Ok(b)) if a == b);
    same_folder && report.file_name() == Some(std::ffi::OsStr::new(METRICS_FILE))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// The widest input an ONNX file may declare: far beyond the seed's 128 px, far short of what a
/// hostile dimension would make of a batch's allocation.
const MAX_INPUT_SIDE: i64 = 1024;

/// The image side the model expects, from its input's shape `[N, 3, side, side]`.
fn input_side(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = ModelProto::decode(bytes.as_slice()).with_context(|| {
        // torch.save's files are zip archives; `vggq export` writes a run's ONNX files from them.
        let pytorch = bytes
            .starts_with(b"PK\x03\x04")
            .then_some(" (a zip archive, as a PyTorch .pth is: `vggq export` writes a run's ONNX files)");
        format!("{} is not an ONNX model{}", path.display(), pytorch.unwrap_or(""))
    })?;
    let input = model.graph.as_ref().and_then(|g| g.input.first()).context("model has no input")?;
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        anyhow::bail!("{}: input is not a tensor", path.display());
    };
    // The file is the user's: its dimension is checked before anything is allocated from it.
    match tensor.shape.as_ref().and_then(|s| s.dim.last()).and_then(|d| d.value.as_ref()) {
        Some(&dimension::Value::DimValue(side)) if (1..=MAX_INPUT_SIDE).contains(&side) => Ok(side as usize),
        Some(dimension::Value::DimValue(side)) => {
            anyhow::bail!("{}: input width {side} is not an image side (1 to {MAX_INPUT_SIDE} pixels)", path.display())
        }
        _ => anyhow::bail!("{}: input width is not fixed", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_is_unavailable_until_it_has_run_a_model_and_only_under_auto() {
        let missing = EvalError::CudaUnavailable("no cuDNN".into());
        let failed = EvalError::Ort("CUDNN_STATUS_NOT_SUPPORTED".into());
        assert_eq!(cuda_unavailability(&missing, false, false).as_deref(), Some("no cuDNN"));
        assert_eq!(cuda_unavailability(&missing, false, true).as_deref(), Some("no cuDNN"));
        let first = cuda_unavailability(&failed, false, false).unwrap();
        assert!(first.contains("CUDNN_STATUS_NOT_SUPPORTED"), "{first}");
        assert_eq!(cuda_unavailability(&failed, false, true), None, "a later model's own failure");
        assert_eq!(cuda_unavailability(&missing, true, false), None, "--device cuda");
        assert_eq!(cuda_unavailability(&failed, true, false), None, "--device cuda");
    }
}
