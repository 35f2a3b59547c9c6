//! Training and evaluation throughput of the real loops: [`train_epoch`] (what `vggq train` and QAT
//! run, host reads and uploads included) and [`score_model`] over the real loader, fed random images of
//! CIFAR-10's size that the loader resizes to the model's input as in a run. Warm-up batches are not
//! timed, as `torch_train_bench.py` does not time them; the figures compare with its.

use burn::module::AutodiffModule;
use indicatif::ProgressBar;

use crate::data::{BatchLoader, ImageSet, LoaderConfig};
use crate::host_reads;
use crate::model::{TrainingBackend, Vgg, VggBackend, VggConfig};
use crate::quant::qat::QatForward;
use crate::score::score_model;
use crate::train::{train_epoch, FloatForward, TrainConfig, TrainingForward};

/// Batches run before the clock starts, as the PyTorch script does.
const WARMUP_BATCHES: usize = 5;
/// Random images the loader cycles through.
const IMAGES: usize = 512;

/// Images per second of the training loop (float and QAT) and of evaluation, with the host reads a
/// training step makes.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub train_images_per_sec: f64,
    pub qat_images_per_sec: f64,
    pub eval_images_per_sec: f64,
    /// Host reads per training step, float and QAT (end-of-epoch reads spread over the steps).
    pub train_reads_per_step: f64,
    pub qat_reads_per_step: f64,
}

pub fn measure<B: TrainingBackend>(model_config: &VggConfig, batch_size: usize, seconds: f64, device: &B::Device) -> Throughput {
    let config = TrainConfig { batch_size, ..TrainConfig::seed() };
    B::seed(device, config.seed);
    let loader = |images: usize, config: LoaderConfig| {
        let images = ImageSet::random(images, model_config.classes as u8, 0);
        BatchLoader::new(images, LoaderConfig { batch_size, ..config }).expect("a non-empty random set")
    };
    let side = model_config.input_size;
    let train_loader = loader(IMAGES, LoaderConfig::train(side, config.seed));
    let (train, train_reads) = train_rate::<B>(model_config, &config, &train_loader, seconds, &mut FloatForward, device);
    let (qat, qat_reads) =
        train_rate::<B>(model_config, &config, &train_loader, seconds, &mut QatForward::new(model_config), device);
    let eval_model = model_config.init::<B>(device).valid();
    let eval = eval_rate(&eval_model, |batches| loader(batches * batch_size, LoaderConfig::eval(side)), seconds, device);
    Throughput {
        train_images_per_sec: train,
        qat_images_per_sec: qat,
        eval_images_per_sec: eval,
        train_reads_per_step: train_reads,
        qat_reads_per_step: qat_reads,
    }
}

/// Images/s of [`train_epoch`] for about `seconds`, and its host reads per step.
fn train_rate<B: TrainingBackend>(
    model_config: &VggConfig,
    config: &TrainConfig,
    loader: &BatchLoader,
    seconds: f64,
    forward: &mut impl TrainingForward<B>,
    device: &B::Device,
) -> (f64, f64) {
    let mut model = model_config.init::<B>(device);
    let mut optimizer = config.optimizer::<B>();
    let bar = ProgressBar::hidden();
    let batches = |count: usize| (0..).flat_map(|epoch| loader.epoch(epoch)).take(count);
    let (warm, _, warmup_seconds) =
        train_epoch(model, &mut optimizer, config.learning_rate, batches(WARMUP_BATCHES), forward, device, &bar);
    model = warm;
    let steps = steps_for(seconds, warmup_seconds);
    let reads = host_reads::count();
    let (_, score, elapsed) = train_epoch(model, &mut optimizer, config.learning_rate, batches(steps), forward, device, &bar);
    ((score.images) as f64 / elapsed, (host_reads::count() - reads) as f64 / steps as f64)
}

/// Images/s of [`score_model`] for about `seconds`, over loaders of as many batches as asked.
fn eval_rate<B: VggBackend>(model: &Vgg<B>, eval_loader: impl Fn(usize) -> BatchLoader, seconds: f64, device: &B::Device) -> f64 {
    let timed = |loader: &BatchLoader| {
        let started = std::time::Instant::now();
        let score = score_model(model, loader, device, "eval");
        (score.images, started.elapsed().as_secs_f64())
    };
    let (_, warmup_seconds) = timed(&eval_loader(WARMUP_BATCHES));
    let (images, elapsed) = timed(&eval_loader(steps_for(seconds, warmup_seconds)));
    images as f64 / elapsed
}

/// Steps that take about `seconds`, from the time `WARMUP_BATCHES` took (at least as many).
fn steps_for(seconds: f64, warmup_seconds: f64) -> usize {
    let per_step = warmup_seconds / WARMUP_BATCHES as f64;
    ((seconds / per_step.max(1e-6)).round() as usize).max(WARMUP_BATCHES)
}

/// Seconds one training step of `batch_size` images takes here, from two steps after one of warm-up:
/// what an estimate of a whole run's duration starts from.
pub fn seconds_per_training_step<B: TrainingBackend>(model_config: &VggConfig, batch_size: usize, device: &B::Device) -> f64 {
    const TIMED: usize = 2;
    let config = TrainConfig { batch_size, ..TrainConfig::seed() };
    let images = ImageSet::random(batch_size * (TIMED + 1), model_config.classes as u8, 0);
    let loader =
        BatchLoader::new(images, LoaderConfig { batch_size, ..LoaderConfig::train(model_config.input_size, config.seed) })
            .expect("a non-empty random set");
    let mut optimizer = config.optimizer::<B>();
    let bar = ProgressBar::hidden();
    let mut batches = loader.epoch(0);
    let warm_up = batches.next();
    let (model, _, _) = train_epoch(
        model_config.init::<B>(device),
        &mut optimizer,
        config.learning_rate,
        warm_up.into_iter(),
        &mut FloatForward,
        device,
        &bar,
    );
    let (_, _, seconds) = train_epoch(model, &mut optimizer, config.learning_rate, batches, &mut FloatForward, device, &bar);
    seconds / TIMED as f64
}
