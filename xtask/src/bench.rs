//! `cargo xtask bench`: throughput of vggq beside its PyTorch baseline, same machine, same shapes, one run.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::{python, shared_dir};

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
}

/// The model and batch shapes to measure; the defaults are the smoke profile's.
#[derive(clap::Args)]
struct TrainShapes {
    #[arg(long, default_value_t = 32)]
    size: usize,
    #[arg(long, default_value_t = 4)]
    width_div: usize,
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seconds of measurement per figure, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// `cpu`, `cuda` or `auto`; PyTorch runs on the same.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let features = crate::cuda_feature_flags();
    cmd!(sh, "cargo build --release {features...} --bin vggq").run()?;
    match args.what {
        Bench::Train(shapes) => train(sh, shapes),
        Bench::Loader => {
            let data = shared_dir().join("data/cifar10-jpeg.tar.gz");
            cmd!(sh, "target/release/vggq bench-loader --data {data}").run()?;
            Ok(())
        }
    }
}

fn train(sh: &Shell, shapes: TrainShapes) -> Result<()> {
    let TrainShapes { size, width_div, hidden, batch, seconds, device } = shapes;
    let (size, width_div, hidden, batch, seconds) =
        (size.to_string(), width_div.to_string(), hidden.to_string(), batch.to_string(), seconds.to_string());
    cmd!(sh, "target/release/vggq bench-train --device {device} --size {size} --width-div {width_div} --hidden {hidden} --batch {batch} --seconds {seconds}")
        .run()?;
    let python = python::ensure_venv(sh)?;
    let torch_device = if device == "auto" { "cpu".to_string() } else { device };
    let script = shared_dir().join("bench/torch_train_bench.py");
    cmd!(sh, "{python} {script} --device {torch_device} --size {size} --width-div {width_div} --hidden {hidden} --batch {batch} --seconds {seconds}")
        .run()?;
    Ok(())
}
