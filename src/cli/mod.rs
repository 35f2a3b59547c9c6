//! Subcommands of the `vggq` binary. Errors meet `anyhow` here, at the edge.

mod bench_loader;
mod bench_train;
mod device;
mod eval;
mod export;
mod quantize;
mod report;
mod run_dir;
mod train;
mod verify;

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use vggq::data::{self, Cifar10, DataSource};

#[derive(Parser)]
#[command(
    name = "vggq",
    version,
    about = "VGG11-BN on CIFAR-10 with Burn: train, quantize, export, evaluate and package it, a command per step",
    after_help = "`train` to `verify` are a run's steps, in order: `cargo xtask all` runs them all, then the golden check. \
                  The rest measure and inspect this machine."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune VGG11-BN on CIFAR-10 and save the FP32 model and a training report under `--out`.
    Train(train::Args),
    /// Quantize the trained FP32 model three ways (dynamic PTQ, static PTQ, QAT) with PyTorch's fbgemm
    /// semantics, evaluate each, and write the four `.pth` files and `quant_report.json` into the run.
    Quantize(quantize::Args),
    /// Write the ONNX files (opset 17, `input` -> `logits`) of a quantized run from its `.pth` files.
    Export(export::Args),
    /// Accuracy, speed and execution-provider placement of ONNX files with ONNX Runtime.
    Eval(eval::Args),
    /// `report.md` and charts from `metrics.json`, then the package's `manifest.json` and `SHA256SUMS`.
    Report(report::Args),
    /// Re-hash an artifact package against its `manifest.json`; fails on any missing, extra or changed file
    /// (beside the run's own folders, `.steps` and `autotune`), and while another vggq writes it.
    Verify(verify::Args),
    /// Training and evaluation images/s on random data, measured as `torch_train_bench.py` measures PyTorch.
    BenchTrain(bench_train::Args),
    /// Training images/s the data loader delivers (decode, resize, flip, normalise, batch).
    BenchLoader(bench_loader::Args),
    /// What the CUDA and wgpu probes find here (driver, GPU, NVRTC, toolkit; every wgpu adapter) and what
    /// a `--device` request chooses.
    Device(device::Args),
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Train(args) => train::run(args),
            Command::Quantize(args) => quantize::run(args),
            Command::Export(args) => export::run(args),
            Command::Eval(args) => eval::run(args),
            Command::Report(args) => report::run(args),
            Command::Verify(args) => verify::run(args),
            Command::BenchTrain(args) => bench_train::run(args),
            Command::BenchLoader(args) => bench_loader::run(args),
            Command::Device(args) => device::run(args),
        }
    }
}

/// The variable `--data` defaults to.
const DATA_VARIABLE: &str = "VGGQ_DATA";
/// The variable `--weights` defaults to.
const WEIGHTS_VARIABLE: &str = "VGGQ_WEIGHTS";

/// The path flags that may come from the environment, by their ids, with their variables.
const PATH_VARIABLES: [(&str, &str); 2] = [("data", DATA_VARIABLE), ("weights", WEIGHTS_VARIABLE)];

/// The variables of [`PATH_VARIABLES`] that gave this command a value (where no flag did), as clap saw.
static GIVEN_BY_ENVIRONMENT: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

impl Cli {
    /// The command line, parsed, noting which path variables gave it values ([`naming_variable`]).
    pub fn parse_noting_environment() -> Self {
        use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        if let Some((_, command)) = matches.subcommand() {
            let from_environment = PATH_VARIABLES
                .into_iter()
                .filter(|(id, _)| {
                    command.ids().any(|known| known == id) && command.value_source(id) == Some(ValueSource::EnvVariable)
                })
                .map(|(_, variable)| variable)
                .collect();
            GIVEN_BY_ENVIRONMENT.set(from_environment).expect("the command line is parsed once");
        }
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// `result`, with its error said to be about the path `variable` gave where it gave `path`: a path set
/// in the environment long ago is hard to recognise in a message (a stale folder, a blank).
fn naming_variable<T>(result: Result<T>, variable: &str, path: &std::path::Path) -> Result<T> {
    match GIVEN_BY_ENVIRONMENT.get().is_some_and(|given| given.contains(&variable)) {
        true => result.with_context(|| format!("`{}` comes from the environment (${variable})", path.display())),
        false => result,
    }
}

/// `result` of reading the data at `source`, named as [`naming_variable`] names it.
fn reading_data<T>(result: Result<T, data::DataError>, source: &DataSource) -> Result<T> {
    match source {
        DataSource::Local { path } => naming_variable(result.map_err(Into::into), DATA_VARIABLE, path),
        DataSource::Download { .. } => Ok(result?),
    }
}

/// The digest of the data at `source` ([`data::source_digest`]), the first read of a given path.
fn data_digest(source: &DataSource) -> Result<String> {
    reading_data(data::source_digest(source), source)
}

/// A path flag that may also come from the environment (`--data`, `$VGGQ_DATA`), as the OS gives it (a
/// path need not be UTF-8): an empty one is refused saying that a variable set to nothing counts as
/// given, where clap's own "a value is required for '--data'" would blame a flag that was never typed.
fn non_empty_path() -> impl TypedValueParser<Value = std::path::PathBuf> {
    clap::builder::OsStringValueParser::new().try_map(|path| match path.is_empty() {
        true => Err("an empty path names no file (an environment variable set to nothing counts as given)"),
        false => Ok(std::path::PathBuf::from(path)),
    })
}

/// Fails where `written` (a run folder, a report file; there yet or not), given as `flag`, lies inside
/// the data folder `data`: a folder's data is every file in it, so what is written there would be read
/// as data, and change the data's fingerprint from one step to the next.
fn refuse_writing_into_data(flag: &str, written: &Path, data: &Path) -> Result<()> {
    // Where it would be, as far as it is there yet.
    let mut there = written.ancestors().map(|path| if path.as_os_str().is_empty() { Path::new(".") } else { path });
    let Some(there) = there.find(|path| path.exists()) else { return Ok(()) };
    let (Ok(there), Ok(data_real)) = (there.canonicalize(), data.canonicalize()) else { return Ok(()) };
    if data_real.is_dir() && there.starts_with(&data_real) {
        bail!(
            "{flag} {} is inside the --data folder {}: what is written there would be read as data; write it elsewhere",
            written.display(),
            data.display()
        );
    }
    Ok(())
}

/// CIFAR-10 from `source`; where it was to be downloaded, a failure says how to give it on disk instead.
fn load_data(source: &DataSource) -> Result<Cifar10> {
    let cifar = data::load(source);
    match source {
        DataSource::Download { .. } => cifar.context(
            "fetching CIFAR-10 (or give it on disk with --data: `cifar-10-binary.tar.gz`, its folder, or an ImageFolder tree)",
        ),
        DataSource::Local { .. } => reading_data(cifar, source),
    }
}

/// The error as `main` prints it: its message, then the causes below it, as anyhow does, less each
/// cause whose text the message just above already holds. Our errors name their cause in their own
/// message, so that one read alone is whole, and still return it as their source: printed as anyhow
/// prints, "No such file or directory" would come twice.
pub fn error_report(error: &anyhow::Error) -> String {
    let messages: Vec<String> = error.chain().map(ToString::to_string).collect();
    let causes: Vec<&str> = messages.windows(2).filter(|pair| !pair[0].contains(&pair[1])).map(|pair| pair[1].as_str()).collect();
    let mut report = format!("Error: {}", messages[0]);
    if !causes.is_empty() {
        report.push_str("\n\nCaused by:");
    }
    for (index, cause) in causes.iter().enumerate() {
        match causes.len() {
            1 => report.push_str(&format!("\n    {cause}")),
            _ => report.push_str(&format!("\n    {index}: {cause}")),
        }
    }
    report
}
