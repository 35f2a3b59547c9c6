//! `vggq device`: what the CUDA and wgpu probes find on this machine (every adapter wgpu sees), what a
//! `--device` request chooses, and the arithmetic that backend's matmuls and convolutions compute in at
//! the seed's shapes.

use anyhow::Result;
use serde::Serialize;
use vggq::backend::precision::{self, Precision};
use vggq::backend::{self, DeviceRequest, OnBackend, Selection, WgpuProbe};
use vggq::data::DEFAULT_BATCH_SIZE;
use vggq::model::TrainingBackend;
use vggq::model::VggConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The request to decide, as `train` would.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
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
        precision::measure::<B::InnerBackend>(&VggConfig::seed(), DEFAULT_BATCH_SIZE, device)
    }
}

pub fn run(args: Args) -> Result<()> {
    backend::autotune::use_caches(None)?;
    let mut selection = backend::select(args.device)?;
    // The adapters are listed whatever was chosen.
    let wgpu = selection.wgpu.get_or_insert_with(WgpuProbe::run).clone();
    let precision = if args.precision { Some(selection.backend.run(Measure)?) } else { None };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Findings { selection, precision, kernel_cache: backend::autotune::kernel_cache() })?
        );
    } else {
        println!("--device {} chooses {}", vggq_core::flag_value(args.device), selection.reason);
        match wgpu.adapters.as_slice() {
            [] => println!("wgpu adapters: none ({})", wgpu.summary()),
            adapters => {
                println!("wgpu adapters:");
                for adapter in adapters {
                    println!("  {adapter}");
                }
            }
        }
        if let Some(precision) = precision {
            println!("arithmetic at the seed's shapes: matmul {:?}, conv {:?}", precision.matmul, precision.conv);
        }
    }
    Ok(())
}
