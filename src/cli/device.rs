//! `vggq device`: what the CUDA probe finds on this machine, what `--device auto` would choose, and the
//! arithmetic that backend's matmuls and convolutions compute in at the seed's shapes.

use anyhow::Result;
use serde::Serialize;
use vggq::backend::precision::{self, Precision};
use vggq::backend::{self, DeviceRequest, OnBackend, Selection};
use vggq::model::TrainingBackend;
use vggq::model::VggConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// Also measure the chosen backend's arithmetic (FP32 or TF32) at the seed's shapes.
    #[arg(long)]
    precision: bool,
}

#[derive(Serialize)]
struct Findings {
    #[serde(flatten)]
    selection: Selection,
    precision: Option<Precision>,
    /// Where this machine keeps the GPU kernels it compiled.
    kernel_cache: std::path::PathBuf,
}

struct Measure;

impl OnBackend for Measure {
    type Output = Precision;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Precision {
        precision::measure::<B::InnerBackend>(&VggConfig::seed(), 32, device)
    }
}

pub fn run(args: Args) -> Result<()> {
    backend::autotune::use_caches(None)?;
    let selection = backend::select(DeviceRequest::Auto)?;
    let precision = if args.precision { Some(selection.backend.run(Measure)?) } else { None };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Findings { selection, precision, kernel_cache: backend::autotune::kernel_cache() })?
        );
    } else {
        println!("--device auto chooses {}", selection.reason);
        if let Some(precision) = precision {
            println!("arithmetic at the seed's shapes: matmul {:?}, conv {:?}", precision.matmul, precision.conv);
        }
    }
    Ok(())
}
