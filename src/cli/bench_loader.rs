//! `vggq bench-loader`: how many training images per second decoding, resizing, flipping and normalising
//! deliver, to compare with what the model consumes (`bench-train`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::builder::RangedU64ValueParser;
use vggq::data::{BatchLoader, DataSource, LoaderConfig};
use vggq_core::limits::positive;

#[derive(clap::Args)]
pub struct Args {
    /// CIFAR-10 on disk (see `vggq train --help`).
    #[arg(long, env = super::DATA_VARIABLE, value_parser = super::non_empty_path())]
    data: PathBuf,
    /// Output side in pixels, 1 to 1024 (128 for the seed).
    #[arg(long, default_value_t = 128, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    size: usize,
    /// Training images to prepare (the first N of the training set).
    #[arg(long, default_value_t = 20_000, value_parser = positive)]
    images: usize,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let cifar = super::load_data(&DataSource::Local { path: args.data })?;
    println!("read and decoded {} images in {:.2} s", cifar.train.len() + cifar.test.len(), started.elapsed().as_secs_f64());
    let indices: Vec<usize> = (0..args.images.min(cifar.train.len())).collect();
    let loader = BatchLoader::new(cifar.train.select(&indices), LoaderConfig::train(args.size, 0))?;
    let started = Instant::now();
    let images: usize = loader.epoch(1).map(|batch| batch.len()).sum();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "loader: {:.0} img/s ({images} images, {}px, batch {}, {} workers, train transforms)",
        images as f64 / seconds,
        args.size,
        loader.config().batch_size,
        loader.config().workers
    );
    Ok(())
}
