//! `vggq device`: what the CUDA and wgpu probes find on this machine (every adapter wgpu sees), what a
//! `--device` request chooses, the arithmetic that backend's matmuls and convolutions compute in at
//! the seed's shapes, how closely its training step follows the CPU's, and how closely its two ways of
//! computing a convolution agree and how long each takes.

use anyhow::Result;
use burn::tensor::backend::ExecutionError;
use serde::Serialize;
use vggq::backend::conv_agreement::{self, ConvSpeed};
use vggq::backend::precision::{self, Precision};
use vggq::backend::step_agreement::{self, StepAgreement};
use vggq::backend::{self, DeviceRequest, OnBackend, Selection, WgpuProbe};
use vggq::data::DEFAULT_BATCH_SIZE;
use vggq::model::TrainingBackend;
use vggq::model::VggConfig;
use vggq::profile::ProfileName;

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
    /// Also train one step of the smoke model on the chosen backend and on the CPU, from the same
    /// weights on the same batch (dropout off), and print how far the logits, the loss and the
    /// parameters' updates differ, relative to the CPU's (on lavapipe, which computes in FP32: 2.8e-6,
    /// 0 and 2.4e-4; more where a GPU multiplies in TF32), and how far the backend's im2col GEMM
    /// convolution is from Burn's `conv2d`, forward and for the weights' gradient (the one CUDA trains
    /// with against the one wgpu does; on lavapipe 6.7e-6).
    #[arg(long)]
    check_step: bool,
    /// Also time the backend's two convolutions (the im2col GEMM and Burn's `conv2d`), forward and the
    /// weights' gradient of every 3x3 convolution of that profile's model on a batch of 32: each
    /// convolution's median of 3 passes after one that compiles the kernels (in the JSON), and their
    /// sums, in milliseconds.
    #[arg(long, value_enum, value_name = "PROFILE")]
    conv_speed: Option<ProfileName>,
}

#[derive(Serialize)]
struct Findings {
    #[serde(flatten)]
    selection: Selection,
    precision: Option<Precision>,
    step_agreement: Option<StepAgreement>,
    /// `conv_agreement::measure`'s relative difference, with the step.
    conv_agreement: Option<f64>,
    conv_speed: Option<ConvSpeed>,
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

struct CheckStep;

impl OnBackend for CheckStep {
    type Output = (StepAgreement, f64);

    fn run<B: TrainingBackend>(self, device: &B::Device) -> (StepAgreement, f64) {
        (step_agreement::measure::<B>(device), conv_agreement::measure::<B::InnerBackend>(device))
    }
}

struct TimeConvolutions(ProfileName);

impl OnBackend for TimeConvolutions {
    type Output = Result<ConvSpeed, ExecutionError>;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Self::Output {
        conv_agreement::speed::<B::InnerBackend>(self.0, device)
    }
}

pub fn run(args: Args) -> Result<()> {
    backend::autotune::use_caches(None)?;
    let mut selection = backend::select(args.device)?;
    // The adapters are listed whatever was chosen.
    let wgpu = selection.wgpu.get_or_insert_with(WgpuProbe::run).clone();
    let precision = if args.precision { Some(selection.backend.run(Measure)?) } else { None };
    let (step_agreement, conv_agreement) = match args.check_step {
        true => {
            let (step, conv) = selection.backend.run(CheckStep)?;
            (Some(step), Some(conv))
        }
        false => (None, None),
    };
    let conv_speed = match args.conv_speed {
        Some(profile) => Some(
            selection
                .backend
                .run(TimeConvolutions(profile))?
                .map_err(|error| anyhow::anyhow!("timing the convolutions: {error}"))?,
        ),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Findings {
                selection,
                precision,
                step_agreement,
                conv_agreement,
                conv_speed,
                kernel_cache: backend::autotune::kernel_cache()
            })?
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
        if let Some(step) = step_agreement {
            let at = step.update_parameter.as_ref().map_or(String::new(), |name| format!(", at {name}"));
            println!(
                "one training step against the CPU's, relative: logits {:.1e}, loss {:.1e}, updates {:.1e} (at most{at}), conv biases moved {:.1e} (rounding alone)",
                step.logits, step.loss, step.update, step.conv_bias_update
            );
        }
        if let Some(difference) = conv_agreement {
            println!("convolution as im2col GEMM against Burn's conv2d, relative: {difference:.1e} (at most, forward and weight gradient)");
        }
        if let Some(speed) = conv_speed {
            println!(
                "convolutions of the {} model, forward and weight gradient, batch {DEFAULT_BATCH_SIZE}: im2col GEMM {:.1} ms, Burn's conv2d {:.1} ms",
                vggq_core::flag_value(speed.profile),
                speed.gemm_ms,
                speed.conv2d_ms
            );
        }
    }
    Ok(())
}
