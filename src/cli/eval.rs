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
use vggq::export::onnx::graph::{INPUT_NAME, OUTPUT_NAME};
use vggq::export::onnx::proto::{tensor_shape_proto, tensor_shape_proto::dimension, type_proto, ModelProto};
use vggq::steps::{self, FoldersMade, RunFolderLock, Step};
use vggq_core::limits::positive;

use super::run_dir::{is_skipped, require_from_step, start, QuantizedRun, TrainedRun, METRICS_FILE};

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
    /// Also write the results as JSON here (with `--run`, by default its `metrics.json`; another place is
    /// a report outside the run, evaluated every time); a file already there must be a report `vggq eval`
    /// wrote, and no run folder takes one but as its own `metrics.json`.
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
    // The run's own metrics, however spelt (not a report written elsewhere, whose folder is not the run's
    // package): the step's output, which the step replaces as it sees fit.
    let runs_metrics =
        args.run.as_deref().filter(|run| args.report.as_deref().is_some_and(|report| is_runs_metrics(run, report)));
    if let Some(report) = args.report.as_ref().filter(|_| runs_metrics.is_none()) {
        refuse_writing_into_a_run(report)?;
        refuse_replacing_other_files(report)?;
    }
    if let Some((report, data)) = args.report.as_ref().zip(args.data.as_ref()) {
        super::refuse_writing_into_data("--report", report, data)?;
    }
    let plan = ProviderPlan::for_request(args.device);
    println!("execution providers: {}", plan.reason);
    // A run's evaluation into its metrics is a step of its pipeline, skipped when up to date; files named
    // on the command line (a benchmark's, say), or a run's evaluated into a report outside it, are always
    // evaluated, and leave no step's record outside a run.
    let (step, _writing) = match runs_metrics.zip(data_digest) {
        Some((run, data_digest)) => {
            // The models, the data, and the ONNX Runtime library that runs them (its version is in its bytes).
            let library = std::env::var_os(ORT_DYLIB_PATH).map(PathBuf::from);
            let inputs: Vec<&Path> = args.models.iter().map(PathBuf::as_path).chain(library.as_deref()).collect();
            // The request, not only the providers it gives: `--device cuda` must run (or fail) where an
            // `auto` evaluation found CUDA unusable and ran on the CPU, and metrics.json records it.
            let settings = (plan.request, &plan.providers, args.images, args.batch, args.warmup, args.threads, data_digest);
            let writing = RunFolderLock::take(run)?;
            // Spelt as the run is, so that the step records the run's files it read and wrote by their
            // names in the run.
            let step = Step::new("eval", run, &settings, &inputs, vec![run.join(METRICS_FILE)])?;
            (Some(step), Some(writing))
        }
        None => (None, None),
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
    // Made before the models run, so a report path that cannot be written fails now, not after them; and
    // gone again if the evaluation fails, as a failed command leaves no folder it made.
    let mut _made = FoldersMade::default();
    if let Some(report) = &args.report {
        if let Some(folder) = report.parent() {
            // The OS says "File exists" where a file stands in the path: the file is named instead.
            if let Some(file) = folder.ancestors().find(|ancestor| ancestor.is_file()) {
                bail!("--report {}: {} is a file, not a folder", report.display(), file.display());
            }
            _made = FoldersMade::make(folder).with_context(|| format!("creating the report's folder {}", folder.display()))?;
        }
    }
    // Every model's input is read (and checked), the runtime loaded and the data read before the run
    // is changed.
    let interfaces: Vec<Interface> = args.models.iter().map(|path| interface(path)).collect::<Result<_>>()?;
    require_batch(&args.models, &interfaces, args.batch)?;
    eval::load_runtime(plan.cuda_required)?;
    let cifar = super::load_data(&source)?;
    require_classes(&args.models, &interfaces, &cifar.classes)?;
    if let Some((step, run)) = step.as_ref().zip(args.run.as_ref()) {
        start(step, run)?;
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
    // Printed with the table's first line: a first model that cannot be opened leaves its error under no
    // header without rows.
    let mut header = Some(format!(
        "{:<44} {:>8} {:>5} {:<28} {:>7} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "file", "MiB", "EP", "placement", "top-1 %", "ms/img", "img/s", "ms/img+p", "img/s+p", "p50 ms", "p95 ms"
    ));
    let mut print_line = |line: String| {
        if let Some(header) = header.take() {
            println!("{header}");
        }
        println!("{line}");
    };
    for (path, &Interface { side, .. }) in args.models.iter().zip(&interfaces) {
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
                    print_line(format!(
                        "{:<44} {:>8.2} {:>5} not available: {reason}",
                        file_name(path),
                        size_bytes as f64 / MIB,
                        "CUDA"
                    ));
                    unavailable.push(Unavailable { provider, reason });
                    continue;
                }
            };
            let report = eval::evaluate(&mut session, &batches, cifar.classes.len(), args.warmup)
                .with_context(|| format!("evaluating {} on the {provider} provider", path.display()))?;
            print_line(format!(
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
            ));
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

/// Refuses a report that would go into a run folder (or one of its folders) other than as the run's own
/// `metrics.json` (`--run`): the run's steps write there, and its package would gain a file that
/// `verify` calls extra, or lose the metrics its report was made from.
fn refuse_writing_into_a_run(report: &Path) -> Result<()> {
    if let Some(run) = steps::run_folder_holding(report) {
        bail!(
            "--report {} would go into the run folder {}, whose steps write its files: name a place outside it (the \
             run's own figures are `vggq eval --run {}`)",
            report.display(),
            run.display(),
            run.display()
        );
    }
    Ok(())
}

/// Refuses a `--report` path that is a folder, a pipe or a device, or a file other than a report `vggq
/// eval` wrote: the report would replace it. `--report` takes the path after it, so one written before
/// the models takes the first of them; a run's model or report named there would be lost as well.
fn refuse_replacing_other_files(report: &Path) -> Result<()> {
    let reading = || format!("reading --report {}, which the report would replace", report.display());
    let kind = match std::fs::metadata(report) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        found => found.with_context(reading)?.file_type(),
    };
    if kind.is_dir() {
        bail!("--report {} is a folder: name the JSON file to write", report.display());
    }
    // A pipe or a device (`/dev/stdout`) is not opened: reading one can wait forever, and the report is
    // written beside its place and renamed onto it, which a device is not.
    if !kind.is_file() {
        bail!("--report {} is not a file (a pipe or a device): name the JSON file to write", report.display());
    }
    // What `EvalRun` writes, in any of its versions: an object with the plan and the rows. Its first byte
    // past white space tells a JSON object from anything else before the rest is read: a model given by
    // mistake (hundreds of MB) is refused on its first bytes.
    let mut file = std::io::BufReader::new(std::fs::File::open(report).with_context(reading)?);
    let written_by_eval = starts_json_object(&mut file).with_context(reading)?
        && serde_json::from_reader::<_, serde_json::Map<String, serde_json::Value>>(file)
            .is_ok_and(|report| report.contains_key("plan") && report.contains_key("rows"));
    if !written_by_eval {
        bail!(
            "--report {} is a file `vggq eval` did not write, which the report would replace: name a new file (`--report` \
             takes the path right after it, so models go before it)",
            report.display()
        );
    }
    Ok(())
}

/// Whether the first byte of `reader` past JSON's white space opens an object. Only the white space is
/// consumed, and no more is read than the first read that holds that byte.
fn starts_json_object(reader: &mut impl std::io::BufRead) -> std::io::Result<bool> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(false);
        }
        match buffer.iter().position(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r')) {
            Some(at) => {
                let opens = buffer[at] == b'{';
                reader.consume(at);
                return Ok(opens);
            }
            None => {
                let blank = buffer.len();
                reader.consume(blank);
            }
        }
    }
}

/// Whether `report` is the run's own `metrics.json`, however either is spelt (relative or absolute,
/// through a link): its place, not its spelling, says whether the run's package changes. A report whose
/// folder does not exist is not (the run's, once opened, does).
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

/// What a model takes and gives, from its file: the side of its input `[N, 3, side, side]`, and where
/// the file fixes them, its batch `N` and the classes of its output `[N, classes]`.
struct Interface {
    side: usize,
    batch: Option<usize>,
    classes: Option<usize>,
}

/// `path`'s [`Interface`].
fn interface(path: &Path) -> Result<Interface> {
    if path.is_dir() {
        bail!("{} is a folder, not an ONNX model (a run's folder is evaluated with `--run {0}`)", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.is_empty() {
        bail!("{} is empty (0 bytes), not an ONNX model", path.display());
    }
    let model = ModelProto::decode(bytes.as_slice()).with_context(|| {
        // torch.save's files are zip archives; `vggq export` writes a run's ONNX files from them.
        let pytorch = bytes
            .starts_with(b"PK\x03\x04")
            .then_some(" (a zip archive, as a PyTorch .pth is: `vggq export` writes a run's ONNX files)");
        format!("{} is not an ONNX model{}", path.display(), pytorch.unwrap_or(""))
    })?;
    let graph = model.graph.as_ref();
    // By the name the session feeds, as the output is looked for: a graph may list other inputs first.
    let inputs = graph.map_or(&[][..], |g| g.input.as_slice());
    let Some(input) = inputs.iter().find(|input| input.name.as_deref() == Some(INPUT_NAME)) else {
        let found: Vec<String> = inputs.iter().map(|input| format!("`{}`", input.name.as_deref().unwrap_or(""))).collect();
        let missing = EvalError::Interface { role: "input", expected: INPUT_NAME, found: found.join(", ") };
        bail!("{}: {missing}", path.display());
    };
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("{}: input is not a tensor", path.display());
    };
    let fixed = |dim: Option<&tensor_shape_proto::Dimension>| match dim?.value.as_ref()? {
        &dimension::Value::DimValue(size) => usize::try_from(size).ok(),
        dimension::Value::DimParam(_) => None,
    };
    let batch = fixed(tensor.shape.as_ref().and_then(|s| s.dim.first()));
    // The file is the user's: its dimension is checked before anything is allocated from it.
    let side = match tensor.shape.as_ref().and_then(|s| s.dim.last()).and_then(|d| d.value.as_ref()) {
        Some(&dimension::Value::DimValue(side)) if (1..=MAX_INPUT_SIDE).contains(&side) => side as usize,
        Some(dimension::Value::DimValue(side)) => {
            bail!("{}: input width {side} is not an image side (1 to {MAX_INPUT_SIDE} pixels)", path.display())
        }
        _ => bail!("{}: input width is not fixed", path.display()),
    };
    // The output is looked for by name when the session opens, which says what a file without it has.
    let output = graph.and_then(|g| g.output.iter().find(|output| output.name.as_deref() == Some(OUTPUT_NAME)));
    let classes = output.and_then(|output| match output.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tensor) => fixed(tensor.shape.as_ref()?.dim.last()),
        _ => None,
    });
    Ok(Interface { side, batch, classes })
}

/// Refuses a model that cannot take batches of `batch` images, before anything runs. Each model also
/// runs once on a single image as its session opens (to see where each node runs).
fn require_batch(models: &[PathBuf], interfaces: &[Interface], batch: usize) -> Result<()> {
    for (path, interface) in models.iter().zip(interfaces) {
        match interface.batch {
            Some(1) if batch != 1 => bail!("{} takes one image at a time: give --batch 1", path.display()),
            Some(fixed) if fixed != 1 => bail!(
                "{} takes batches of exactly {fixed} images, and vggq eval also runs it on one image: give a model whose \
                 batch dimension is free",
                path.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a model whose logits are not one per class of the data: its top-1 would score another task's
/// labels.
fn require_classes(models: &[PathBuf], interfaces: &[Interface], classes: &[String]) -> Result<()> {
    for (path, interface) in models.iter().zip(interfaces) {
        if let Some(count) = interface.classes.filter(|&count| count != classes.len()) {
            bail!(
                "{} gives logits for {count} classes, and the data has {} ({}): it is not a model of these classes",
                path.display(),
                classes.len(),
                classes.join(", ")
            );
        }
    }
    Ok(())
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
