//! `vggq bench-train`: images/s of the real training loop (float and QAT, host reads and uploads
//! included) and of evaluation, on random images, at any shapes.

use anyhow::Result;
use vggq::backend::{self, DeviceRequest, OnBackend};
use vggq::model::TrainingBackend;
use vggq::model::VggConfig;
use vggq::throughput::{measure, Throughput};
use vggq_core::ProfileName;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceRequest,
    /// Input side in pixels (default: the full profile's).
    #[arg(long, default_value_t = ProfileName::Full.model_shape().input_size)]
    size: usize,
    /// Conv widths are VGG11's divided by this.
    #[arg(long, default_value_t = ProfileName::Full.model_shape().width_divisor)]
    width_div: usize,
    /// Width of the hidden classifier layers.
    #[arg(long, default_value_t = ProfileName::Full.model_shape().hidden)]
    hidden: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seconds of measurement per figure, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

struct Measure<'a>(&'a Args, VggConfig);

impl OnBackend for Measure<'_> {
    type Output = Throughput;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Throughput {
        measure::<B>(&self.1, self.0.batch, self.0.seconds, device)
    }
}

pub fn run(args: Args) -> Result<()> {
    let selection = backend::select(args.device)?;
    eprintln!("device: {}", selection.reason);
    let config = VggConfig::for_input(args.width_div, args.size, args.hidden, 10);
    let throughput = selection.backend.run(Measure(&args, config))?;
    let shapes = format!(
        "{}px, width/{}, hidden {}, batch {}, {}, {} threads",
        args.size,
        args.width_div,
        args.hidden,
        args.batch,
        selection.backend.name(),
        rayon::current_num_threads()
    );
    let burn = vggq::BURN_VERSION;
    println!(
        "vggq (burn {burn}) train: {:.1} img/s, {:.2} host reads/step ({shapes})",
        throughput.train_images_per_sec, throughput.train_reads_per_step
    );
    println!(
        "vggq (burn {burn}) qat train: {:.1} img/s, {:.2} host reads/step ({shapes})",
        throughput.qat_images_per_sec, throughput.qat_reads_per_step
    );
    println!("vggq (burn {burn}) eval: {:.1} img/s ({shapes})", throughput.eval_images_per_sec);
    Ok(())
}
