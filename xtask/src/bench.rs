//! `cargo xtask bench`: throughput of vggq beside its baseline, same machine, same shapes, one run, the
//! two sides alternating round by round (`vggq_core::rounds`). Every figure is measured by the
//! invocation that prints it: benchmarks never read or write a run's step records.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use vggq_core::places::{shared_cifar10_jpeg, shared_torch_bench};
use vggq_core::rounds::{Comparison, DEFAULT_ROUNDS};
use vggq_core::{flag_value, DeviceRequest, ProfileName, Variant, DEFAULT_BATCH_SIZE};

use crate::python;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Training steps and eval forward passes per second, vggq (Burn) vs `torch_train_bench.py`.
    Train(TrainShapes),
    /// Images per second the data loader prepares at 128 px from the JPEG copy in ../shared.
    Loader,
    /// ONNX on ONNX Runtime's CPU EP: `vggq eval` vs ORT's Python API (`scripts/ort_bench.py`) on the
    /// same files, and static INT8 vs FP32 on each side, in alternating rounds.
    Onnx(OnnxBench),
}

/// The ONNX files to measure: a `vggq train` folder holding the exported variants (full-size models can
/// come from `vggq train --epochs 0`: untrained, which their metadata says; calibration is still real).
#[derive(clap::Args)]
struct OnnxBench {
    /// The run folder whose `.onnx` files are measured (those of FP32, static and dynamic INT8 it holds).
    #[arg(long, value_parser = crate::given_path)]
    run: PathBuf,
    /// Timed batches of 32 images per file, both sides, after 3 warm-up batches (`vggq eval` reads as
    /// many test images: 736 by default).
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    batches: usize,
    /// Intra-op threads, both sides (0: ORT's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// CIFAR-10 for `vggq eval` (see `vggq train --help`).
    #[arg(long, value_parser = crate::given_path)]
    data: Option<PathBuf>,
    /// Rounds, each `vggq eval` then the Python baseline on every file.
    #[arg(long, default_value_t = DEFAULT_ROUNDS)]
    rounds: usize,
}

/// Batches `bench onnx` runs on each side before it times any (they also settle ORT's thread pool).
const ONNX_WARMUP_BATCHES: usize = 3;

/// The variants `bench onnx` compares, in order.
const ONNX_BENCH_VARIANTS: [Variant; 3] = [Variant::Fp32, Variant::StaticInt8, Variant::DynamicInt8];

/// The shapes `bench train` measures, each beside PyTorch at the same shapes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shapes {
    /// The smoke profile's: 32 px, width/4, hidden 512.
    Smoke,
    /// The seed's: 128 px, full width, hidden 4096.
    Full,
    /// Both, smoke first.
    Both,
}

impl Shapes {
    /// The profiles whose shapes are measured, in order.
    fn profiles(self) -> Vec<ProfileName> {
        match self {
            Shapes::Smoke => vec![ProfileName::Smoke],
            Shapes::Full => vec![ProfileName::Full],
            Shapes::Both => vec![ProfileName::Smoke, ProfileName::Full],
        }
    }
}

/// What `bench train` measures and where.
#[derive(clap::Args)]
struct TrainShapes {
    /// Which profile's model and image shapes both sides train and evaluate.
    #[arg(long, value_enum, default_value = "both")]
    shapes: Shapes,
    /// Images per training step and per evaluation batch, both sides.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch: usize,
    /// Seconds of measurement per figure and round, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Rounds, each vggq's figures then PyTorch's.
    #[arg(long, default_value_t = DEFAULT_ROUNDS)]
    rounds: usize,
    /// Where both run: `cpu` or `cuda` (`auto` and `wgpu` measure vggq where they choose and PyTorch on
    /// the CPU).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceRequest,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let vggq = crate::build_vggq(sh)?;
    match args.what {
        Bench::Train(shapes) => train(sh, &vggq, shapes),
        Bench::Loader => {
            let data = shared_cifar10_jpeg();
            cmd!(sh, "{vggq} bench-loader --data {data}").run()?;
            Ok(())
        }
        Bench::Onnx(bench) => onnx(sh, &vggq, bench),
    }
}

fn onnx(sh: &Shell, vggq: &PathBuf, bench: OnnxBench) -> Result<()> {
    if bench.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    // The CPU build even where setup takes the GPU one: the baseline is the venv's, of the same release.
    let onnxruntime = crate::onnxruntime::ensure_cpu(sh)?;
    let python = crate::python::ensure_venv(sh)?;
    let _onnxruntime = sh.push_env(crate::onnxruntime::ORT_DYLIB_PATH, &onnxruntime.library);
    let variants: Vec<Variant> =
        ONNX_BENCH_VARIANTS.into_iter().filter(|v| sh.current_dir().join(&bench.run).join(v.onnx_file()).is_file()).collect();
    if variants.is_empty() {
        bail!("no exported ONNX files in {} (run `vggq export` first)", bench.run.display());
    }
    let files: Vec<PathBuf> = variants.iter().map(|v| bench.run.join(v.onnx_file())).collect();
    // The same batches on both sides: `vggq eval` times all but the warm-up of the images it reads.
    let images = (DEFAULT_BATCH_SIZE * (ONNX_WARMUP_BATCHES + bench.batches)).to_string();
    let (batch, warmup) = (DEFAULT_BATCH_SIZE.to_string(), ONNX_WARMUP_BATCHES.to_string());
    let (batches, threads) = (bench.batches.to_string(), bench.threads.to_string());
    let mut eval_args = vec!["--device".to_string(), flag_value(DeviceRequest::Cpu), "--images".into(), images];
    eval_args.extend(["--batch".into(), batch.clone(), "--warmup".into(), warmup.clone()]);
    if bench.threads > 0 {
        eval_args.extend(["--threads".into(), threads.clone()]);
    }
    if let Some(data) = bench.data {
        eval_args.extend(["--data".into(), data.display().to_string()]);
    }
    // Each round's report goes to a scratch folder of this invocation: never the run's metrics.
    let scratch = tempfile::tempdir_in(crate::target_dir()).context("a scratch folder under target/")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=bench.rounds {
        println!("== round {round}/{}", bench.rounds);
        let report = scratch.path().join(format!("round-{round}.json"));
        let (files, eval_args) = (&files, &eval_args);
        cmd!(sh, "{vggq} eval {files...} {eval_args...} --report {report}").run()?;
        ours.push(images_per_second(&sh.read_file(&report)?, &variants, "rows")?);
        let output = cmd!(
            sh,
            "{python} scripts/ort_bench.py {files...} --batch {batch} --warmup {warmup} --batches {batches} --threads {threads}"
        )
        .read()?;
        println!("{output}");
        let lines: Vec<&str> = output.lines().filter(|line| line.starts_with('{')).collect();
        theirs.push(images_per_second(&format!(r#"{{"rows": [{}]}}"#, lines.join(",")), &variants, "rows")?);
    }
    for (i, variant) in variants.iter().enumerate() {
        let comparison = Comparison {
            figure: format!("{} img/s", variant.label()),
            ours: ours.iter().map(|round| round[i]).collect(),
            theirs: theirs.iter().map(|round| Some(round[i])).collect(),
        };
        println!("{}", comparison.summary("vggq", "python ort"));
    }
    // Static INT8 against FP32 on each side: the two files ran one after the other in every round.
    if let (Some(fp32), Some(int8)) = (position(&variants, Variant::Fp32), position(&variants, Variant::StaticInt8)) {
        let speedup = Comparison {
            figure: "static int8 / fp32".into(),
            ours: ours.iter().map(|round| round[int8] / round[fp32]).collect(),
            theirs: theirs.iter().map(|round| Some(round[int8] / round[fp32])).collect(),
        };
        println!("{}", speedup.summary("vggq", "python ort"));
    }
    Ok(())
}

fn position(variants: &[Variant], variant: Variant) -> Option<usize> {
    variants.iter().position(|&v| v == variant)
}

/// Images/s of each of `variants` (CPU rows) in a JSON document whose `key` holds rows with `file` and
/// `images_per_s` (flat, as `ort_bench.py` prints them, or under `inference`, as `vggq eval` reports).
fn images_per_second(json: &str, variants: &[Variant], key: &str) -> Result<Vec<f64>> {
    let document: serde_json::Value = serde_json::from_str(json).context("reading a benchmark's JSON")?;
    let rows = document[key].as_array().context("a benchmark report without rows")?;
    variants
        .iter()
        .map(|variant| {
            let row = rows
                .iter()
                .find(|row| row["file"] == variant.onnx_file() && row["requested"].as_str().is_none_or(|p| p == "cpu"))
                .with_context(|| format!("no figure for {}", variant.onnx_file()))?;
            let rate = row["inference"]["images_per_s"].as_f64().or_else(|| row["images_per_s"].as_f64());
            rate.with_context(|| format!("no images/s for {}", variant.onnx_file()))
        })
        .collect()
}

fn train(sh: &Shell, vggq: &Path, bench: TrainShapes) -> Result<()> {
    let python = python::ensure_venv(sh)?;
    let script = shared_torch_bench();
    let (batch, seconds, device) = (bench.batch.to_string(), bench.seconds.to_string(), flag_value(bench.device));
    let rounds = bench.rounds.to_string();
    // PyTorch has CUDA and the CPU: a wgpu run (or an `auto` one) is compared with its CPU.
    let torch_device = if bench.device == DeviceRequest::Cuda { device.clone() } else { "cpu".to_string() };
    // PyTorch's matmuls and convolutions each compute at the arithmetic vggq's backend was measured to
    // use for them (on a GPU, TF32 on tensor cores or FP32; on the CPU, FP32), so the two figures compare.
    let precision: &Vec<String> = &match bench.device {
        DeviceRequest::Cpu => vec!["fp32".into(), "fp32".into()],
        _ => {
            let probe: serde_json::Value = serde_json::from_str(&cmd!(sh, "{vggq} device --json --precision").read()?)
                .context("reading `vggq device --json --precision`")?;
            ["matmul", "conv"]
                .iter()
                .map(|part| {
                    probe["precision"][part]
                        .as_str()
                        .map(str::to_owned)
                        .with_context(|| format!("no {part} precision in the probe"))
                })
                .collect::<Result<_>>()?
        }
    };
    let wrapper = sh.current_dir().join("scripts/torch_bench_precision.py");
    for profile in bench.shapes.profiles() {
        let profile = flag_value(profile);
        println!("== {profile} shapes");
        // vggq and PyTorch (its QAT too) alternate, round by round, at the profile's shapes.
        cmd!(
            sh,
            "{vggq} bench-train --device {device} --profile {profile} --batch {batch} --seconds {seconds} --rounds {rounds}
                --baseline-name torch -- {python} {wrapper} {precision...} {script} --device {torch_device} --qat"
        )
        .run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two report forms the benchmark reads: `vggq eval`'s and `ort_bench.py`'s.
    #[test]
    fn images_per_second_reads_both_reports() {
        let variants = [Variant::Fp32, Variant::StaticInt8];
        let vggq = format!(
            r#"{{"rows": [{{"file": "{}", "requested": "cpu", "inference": {{"images_per_s": 60.5}}}},
                         {{"file": "{}", "requested": "cuda", "inference": {{"images_per_s": 900.0}}}},
                         {{"file": "{}", "requested": "cpu", "inference": {{"images_per_s": 180.0}}}}]}}"#,
            Variant::Fp32.onnx_file(),
            Variant::StaticInt8.onnx_file(),
            Variant::StaticInt8.onnx_file()
        );
        assert_eq!(images_per_second(&vggq, &variants, "rows").unwrap(), vec![60.5, 180.0]);
        let python = format!(
            r#"{{"rows": [{{"file": "{}", "images_per_s": 51.6}}, {{"file": "{}", "images_per_s": 182.3}}]}}"#,
            Variant::StaticInt8.onnx_file(),
            Variant::Fp32.onnx_file()
        );
        assert_eq!(images_per_second(&python, &variants, "rows").unwrap(), vec![182.3, 51.6]);
        assert!(images_per_second(r#"{"rows": []}"#, &variants, "rows").is_err());
    }
}
