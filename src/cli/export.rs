//! `vggq export`: the ONNX files of a run, each built from the `.pth` `vggq quantize` wrote for its
//! variant, so that the ONNX and PyTorch files of a variant hold the same parameters.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vggq::data::{bytes_digest, DigestAlgorithm};
use vggq::export::onnx::{self, Provenance};
use vggq::steps::{self, RunFolderLock, Step};

use super::run_dir::{is_skipped, require_from_step, start, QuantizedRun, TrainedRun};

#[derive(clap::Args)]
pub struct Args {
    /// The folder `vggq train` and `vggq quantize` wrote (`train_report.json`, `quant_report.json`, the
    /// `.pth` files); the ONNX files are written beside them (`mission16_vgg11bn_fp32.onnx` ...).
    #[arg(long)]
    run: PathBuf,
    /// Export even when the ONNX files of an identical earlier export are in place.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedRun::open(&args.run)?;
    let quantized = QuantizedRun::open(&args.run)?;
    let variants = quantized.variants();
    let pths = variants.iter().map(|&variant| Ok(args.run.join(quantized.pth_file(variant)?))).collect::<Result<Vec<_>>>()?;
    for pth in &pths {
        require_from_step(pth, "quantize")?;
    }
    let _writing = RunFolderLock::take(&args.run)?;
    // The .pth files as quantize wrote them, from the model training wrote.
    steps::require_current(&args.run, &["train", "quantize"])?;
    let inputs: Vec<&Path> = pths.iter().map(PathBuf::as_path).collect();
    let outputs = variants.iter().map(|variant| args.run.join(variant.onnx_file())).collect();
    // What the files hold beside the .pth files' tensors: the network's shapes and each variant's
    // provenance (from the reports, which a quantize run again may change with the same .pth bytes).
    let written_beside: Vec<_> =
        variants.iter().map(|&variant| (quantized.training(variant, &trained), quantized.calibration(variant))).collect();
    let step = Step::new("export", &args.run, &(&trained.profile.model, written_beside), &inputs, outputs)?;
    if is_skipped(&step, args.force, &args.run)? {
        return Ok(());
    }
    start(&step, &args.run)?;
    for (&variant, pth) in variants.iter().zip(&pths) {
        let bytes = std::fs::read(pth).with_context(|| format!("reading {}", pth.display()))?;
        let state_dict = vggq_pth::read_state_dict(&bytes).with_context(|| format!("reading {}", pth.display()))?;
        let provenance = Provenance {
            variant,
            source_pth_sha256: Some(bytes_digest(&bytes, DigestAlgorithm::Sha256).hex),
            training: quantized.training(variant, &trained),
            calibration: quantized.calibration(variant),
        };
        let proto = onnx::model_from_state_dict(&state_dict, &trained.profile.model, &provenance)
            .with_context(|| format!("exporting {}", pth.display()))?;
        let out = args.run.join(variant.onnx_file());
        onnx::write(&out, &proto)?;
        let size = std::fs::metadata(&out)?.len();
        println!("wrote {} ({:.2} MiB) from {}", out.display(), size as f64 / vggq::eval::MIB, pth.display());
    }
    step.record()?;
    Ok(())
}
