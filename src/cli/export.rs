//! `vggq export`: one variant of a trained run as ONNX.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::prelude::*;
use vggq::data::{self, BatchLoader, DataSource, LoaderConfig};
use vggq::export::onnx::{self, minmax, FoldedVgg, Provenance, Variant};

use super::run_dir::TrainedRun;

#[derive(clap::Args)]
pub struct Args {
    /// The folder `vggq train` wrote (`train_report.json`, `model_fp32.mpk`).
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_enum)]
    variant: Variant,
    /// The `.pth` holding the same variant; its SHA-256 goes into the file's metadata (`none` without it).
    #[arg(long)]
    pth: Option<PathBuf>,
    /// Output file; default `<run>/<the variant's file name>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// CIFAR-10 for static calibration (see `vggq train --help`); also `$VGGQ_DATA`.
    #[arg(long, env = "VGGQ_DATA")]
    data: Option<PathBuf>,
    /// Training images (the first of the training set, eval preprocessing) used to calibrate the static variant.
    #[arg(long, default_value_t = 512)]
    calibration_images: usize,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedRun::open(&args.run)?;
    let device = Default::default();
    let model = trained.model::<Flex>(&device)?;
    let config = &trained.profile.model;
    let folded = FoldedVgg::from_model(&model, config);
    let source_pth_sha256 = match &args.pth {
        Some(pth) => Some(
            data::file_digest(pth, data::DigestAlgorithm::Sha256).with_context(|| format!("hashing {}", pth.display()))?.hex,
        ),
        None => None,
    };
    let mut provenance = Provenance { variant: args.variant, source_pth_sha256, training: trained.training(), calibration: None };
    let proto = match args.variant {
        Variant::Fp32 => onnx::fp32::model(&folded, &provenance)?,
        Variant::Int8Dynamic => onnx::dynamic::model(&folded, &provenance)?,
        Variant::Int8Static => {
            let source = match args.data {
                Some(path) => DataSource::Local { path },
                None => DataSource::Download { cache_dir: vggq::cache_dir() },
            };
            let cifar = data::load(&source)?;
            let count = args.calibration_images.min(cifar.train.len());
            let indices: Vec<usize> = (0..count).collect();
            let batches = BatchLoader::new(cifar.train.select(&indices), LoaderConfig::eval(config.input_size))?;
            let mut ranges = minmax::Ranges::default();
            for batch in batches.epoch(0) {
                let images = Tensor::<Flex, 1>::from_floats(batch.images.as_slice(), &device)
                    .reshape([batch.len(), 3, batch.side, batch.side]);
                ranges.observe(&model, images);
            }
            let calibration = format!("min/max over the first {count} CIFAR-10 training images ({})", cifar.fingerprint);
            println!("calibrated: {calibration}");
            provenance.calibration = Some(calibration);
            onnx::qdq::model(&ranges.quantize(&folded), &provenance)?
        }
        Variant::QatInt8 => bail!("the QAT variant comes from the quantization stage (src/quant), not yet on this branch"),
    };
    let out = args.out.unwrap_or_else(|| args.run.join(args.variant.file_name()));
    onnx::write(&out, &proto)?;
    let bytes = std::fs::metadata(&out)?.len();
    println!("wrote {} ({:.2} MiB)", out.display(), bytes as f64 / f64::from(1 << 20));
    Ok(())
}
