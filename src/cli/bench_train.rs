use anyhow::Result;
use vggq::backend::{self, Backend, DeviceRequest};
use vggq::model::VggConfig;
use vggq::throughput::{measure, Throughput};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceRequest,
    /// Input side in pixels.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Conv widths are VGG11's divided by this.
    #[arg(long, default_value_t = 1)]
    width_div: usize,
    /// Width of the hidden classifier layers.
    #[arg(long, default_value_t = 4096)]
    hidden: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seconds of measurement per figure, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

pub fn run(args: Args) -> Result<()> {
    let selection = backend::select(args.device)?;
    eprintln!("{}", selection.reason);
    let config = VggConfig::for_input(args.width_div, args.size, args.hidden, 10);
    let throughput = match selection.backend {
        Backend::Cpu => measure::<backend::CpuBackend>(&config, args.batch, args.seconds, &Default::default()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => measure::<backend::CudaBackend>(&config, args.batch, args.seconds, &Default::default()),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => unreachable!("backend::select never picks CUDA without the cuda feature"),
    };
    let Throughput { train_images_per_sec, eval_images_per_sec } = throughput;
    let shapes = format!(
        "{}px, width/{}, hidden {}, batch {}, {:?}, {} threads",
        args.size,
        args.width_div,
        args.hidden,
        args.batch,
        selection.backend,
        rayon::current_num_threads()
    );
    println!("vggq (burn {}) train: {train_images_per_sec:.1} img/s ({shapes})", vggq::BURN_VERSION);
    println!("vggq (burn {}) eval: {eval_images_per_sec:.1} img/s ({shapes})", vggq::BURN_VERSION);
    Ok(())
}
