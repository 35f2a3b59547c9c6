//! `vggq eval`: ONNX files on the CIFAR-10 test images with ONNX Runtime, per execution provider.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;
use vggq::data::{self, BatchLoader, DataSource, LoaderConfig, DEFAULT_BATCH_SIZE};
use vggq::steps::Step;
use vggq::eval::{self, ModelMetrics, OnnxSession, Provider, MIB};
use vggq::export::onnx::proto::{tensor_shape_proto::dimension, type_proto, ModelProto};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX files to evaluate.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Execution providers to run each file on, in order. CUDA falls back to the CPU node by node (the
    /// placement column shows it); CPU rows are always worth having beside it.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cuda,cpu")]
    providers: Vec<Provider>,
    /// CIFAR-10 (see `vggq train --help`); also `$VGGQ_DATA`.
    #[arg(long, env = "VGGQ_DATA")]
    data: Option<PathBuf>,
    /// Evaluate the first N test images only (default: all 10,000).
    #[arg(long)]
    images: Option<usize>,
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch: usize,
    /// Batches run before timing starts (they count for accuracy).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// ONNX Runtime's intra-op threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the rows as JSON here (`metrics.json` in a run folder).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Evaluate even when `--report` holds the results of an identical earlier evaluation.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let step = match &args.report {
        Some(report) => {
            let inputs: Vec<&Path> =
                args.models.iter().map(PathBuf::as_path).chain(args.data.as_deref()).filter(|p| p.is_file()).collect();
            let settings = (&args.providers, args.images, args.batch, args.warmup, args.threads);
            let folder = report.parent().unwrap_or(Path::new("."));
            Some(Step::new("eval", folder, &settings, &inputs, vec![report.clone()])?)
        }
        None => None,
    };
    if let Some(step) = step.as_ref().filter(|_| !args.force) {
        if step.is_up_to_date()? {
            println!("eval: up to date in {} (--force to redo)", args.report.as_ref().map_or(String::new(), |r| r.display().to_string()));
            return Ok(());
        }
    }
    let source = DataSource::local_or_download(args.data.clone());
    let cifar = data::load(&source)?;
    let count = args.images.unwrap_or(cifar.test.len()).min(cifar.test.len());
    let indices: Vec<usize> = (0..count).collect();
    let test = cifar.test.select(&indices);
    let mut rows = Vec::new();
    println!(
        "{:<44} {:>8} {:>5} {:<28} {:>7} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "file", "MiB", "EP", "placement", "top-1 %", "ms/img", "img/s", "ms/img+p", "img/s+p", "p50 ms", "p95 ms"
    );
    for path in &args.models {
        let side = input_side(path)?;
        let batches = BatchLoader::new(test.clone(), LoaderConfig { batch_size: args.batch, ..LoaderConfig::eval(side) })?;
        let size_bytes = std::fs::metadata(path)?.len();
        for &provider in &args.providers {
            let mut session = match OnnxSession::open(path, side, provider, args.threads) {
                Ok(session) => session,
                Err(error) if provider == Provider::Cuda => {
                    println!("{:<44} {:>8.2} {:>5} not available: {error}", file_name(path), size_bytes as f64 / MIB, "CUDA");
                    continue;
                }
                Err(error) => return Err(error).with_context(|| format!("opening {}", path.display())),
            };
            let report = eval::evaluate(&mut session, &batches, args.warmup)?;
            println!(
                "{:<44} {:>8.2} {:>5} {:<28} {:>7.2} {:>8.2} {:>8.1} {:>9.2} {:>9.1} {:>8.1} {:>8.1}",
                file_name(path),
                size_bytes as f64 / MIB,
                format!("{provider:?}").to_uppercase(),
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
    if let Some(report) = &args.report {
        vggq::atomic::write(report, serde_json::to_string_pretty(&rows)?.as_bytes())
            .with_context(|| format!("writing {}", report.display()))?;
    }
    if let Some(step) = step {
        step.record()?;
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// The image side the model expects, from its input's shape `[N, 3, side, side]`.
fn input_side(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = ModelProto::decode(bytes.as_slice()).with_context(|| format!("parsing {}", path.display()))?;
    let input = model.graph.as_ref().and_then(|g| g.input.first()).context("model has no input")?;
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        anyhow::bail!("{}: input is not a tensor", path.display());
    };
    match tensor.shape.as_ref().and_then(|s| s.dim.last()).and_then(|d| d.value.as_ref()) {
        Some(dimension::Value::DimValue(side)) => Ok(*side as usize),
        _ => anyhow::bail!("{}: input width is not fixed", path.display()),
    }
}
