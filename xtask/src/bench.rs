//! `cargo xtask bench`: throughput of vggq beside its PyTorch baseline, same machine, same shapes, one run.

use std::path::PathBuf;

use anyhow::Result;
use xshell::{cmd, Shell};

use vggq_core::places::shared_dir;
use vggq_core::{flag_value, DeviceRequest, ProfileName, Variant};

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
    /// ONNX on ONNX Runtime's CPU EP: static INT8 vs FP32 with `vggq eval`, and `vggq eval` vs ORT's
    /// Python API (`scripts/ort_bench.py`) on the same files.
    Onnx(OnnxBench),
}

/// The ONNX files to measure: a `vggq train` folder holding the exported variants (full-size models can
/// come from `vggq train --epochs 0`: untrained, which their metadata says; calibration is still real).
#[derive(clap::Args)]
struct OnnxBench {
    #[arg(long)]
    run: PathBuf,
    /// Test images per file for `vggq eval` (batches of 32; the first 3 batches are warm-up).
    #[arg(long, default_value_t = 736)]
    images: usize,
    /// Timed batches for the Python baseline (after 3 warm-up batches): the same count as `vggq eval`'s.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Intra-op threads, both sides (0: ORT's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// CIFAR-10 for `vggq eval` (see `vggq train --help`).
    #[arg(long)]
    data: Option<String>,
}

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
    #[arg(long, value_enum, default_value = "both")]
    shapes: Shapes,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seconds of measurement per figure, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Where both run: `cpu` or `cuda` (`auto` measures vggq where it would train and PyTorch on the CPU).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceRequest,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let vggq = crate::build_vggq(sh)?;
    match args.what {
        Bench::Train(shapes) => train(sh, &vggq, shapes),
        Bench::Loader => {
            let data = shared_dir().join("data/cifar10-jpeg.tar.gz");
            cmd!(sh, "{vggq} bench-loader --data {data}").run()?;
            Ok(())
        }
        Bench::Onnx(bench) => onnx(sh, &vggq, bench),
    }
}

fn onnx(sh: &Shell, vggq: &PathBuf, bench: OnnxBench) -> Result<()> {
    let setup = crate::setup(sh)?;
    let _onnxruntime = sh.push_env(crate::onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime.library);
    let files: Vec<PathBuf> = ONNX_BENCH_VARIANTS.iter().map(|v| bench.run.join(v.onnx_file())).filter(|p| p.is_file()).collect();
    if files.is_empty() {
        anyhow::bail!("no exported ONNX files in {} (run `vggq export` first)", bench.run.display());
    }
    let (images, batches, threads) = (bench.images.to_string(), bench.batches.to_string(), bench.threads.to_string());
    let mut eval_args = vec!["--device".to_string(), flag_value(DeviceRequest::Cpu), "--images".into(), images];
    if bench.threads > 0 {
        eval_args.extend(["--threads".into(), threads.clone()]);
    }
    if let Some(data) = bench.data {
        eval_args.extend(["--data".into(), data]);
    }
    let report = bench.run.join("bench_onnx.json");
    let files_for_eval = &files;
    cmd!(sh, "{vggq} eval {files_for_eval...} {eval_args...} --report {report}").run()?;
    let python = setup.python;
    let files = &files;
    cmd!(sh, "{python} scripts/ort_bench.py {files...} --batches {batches} --threads {threads}").run()?;
    Ok(())
}

fn train(sh: &Shell, vggq: &PathBuf, bench: TrainShapes) -> Result<()> {
    let python = python::ensure_venv(sh)?;
    let script = shared_dir().join("bench/torch_train_bench.py");
    let (batch, seconds, device) = (bench.batch.to_string(), bench.seconds.to_string(), flag_value(bench.device));
    let torch_device = if device == "auto" { "cpu".to_string() } else { device.clone() };
    // PyTorch computes at the arithmetic vggq's backend was measured to use (on a GPU, TF32 on tensor
    // cores or FP32; on the CPU, FP32), so the two figures compare.
    let precision = match bench.device {
        DeviceRequest::Cpu => "fp32",
        _ if cmd!(sh, "{vggq} device --json --precision").read()?.contains(r#""tf32""#) => "tf32",
        _ => "fp32",
    };
    let wrapper = sh.current_dir().join("scripts/torch_bench_precision.py");
    for profile in bench.shapes.profiles() {
        println!("== {} shapes", flag_value(profile));
        let shape = profile.model_shape();
        let (size, width_div, hidden) = (shape.input_size.to_string(), shape.width_divisor.to_string(), shape.hidden.to_string());
        let shapes = ["--size", &size, "--width-div", &width_div, "--hidden", &hidden, "--batch", &batch, "--seconds", &seconds];
        cmd!(sh, "{vggq} bench-train --device {device} {shapes...}").run()?;
        cmd!(sh, "{python} {wrapper} {precision} {script} --device {torch_device} {shapes...}").run()?;
    }
    Ok(())
}
