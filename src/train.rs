//! Fine-tuning: cross-entropy, SGD with momentum and weight decay, a progress bar per epoch, validation
//! after each.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{decay::WeightDecayConfig, GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, BatchLoader};
use crate::model::Vgg;

/// The optimisation recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Seeds the initialisation, dropout, shuffling and flips.
    pub seed: u64,
}

impl TrainConfig {
    /// The seed's recipe: SGD lr 0.005, momentum 0.9, weight decay 5e-4, batch 32, 5 epochs.
    pub fn seed() -> Self {
        Self { epochs: 5, batch_size: 32, learning_rate: 0.005, momentum: 0.9, weight_decay: 5e-4, seed: 0 }
    }

    /// PyTorch's `torch.optim.SGD(momentum=m, weight_decay=wd)`: Burn's default dampening is 0.1, PyTorch's 0.
    pub(crate) fn optimizer(&self) -> SgdConfig {
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig { momentum: self.momentum, dampening: 0.0, nesterov: false }))
            .with_weight_decay(Some(WeightDecayConfig { penalty: self.weight_decay as f32 }))
    }
}

/// Mean loss and top-1 accuracy over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub loss: f64,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    pub images: usize,
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train: Score,
    pub val: Score,
    /// Training images per second, data loading included, validation excluded.
    pub train_images_per_sec: f64,
}

impl std::fmt::Display for EpochReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {}: train loss {:.4} acc {:.2} % | val loss {:.4} acc {:.2} % | {:.1} img/s",
            self.epoch, self.train.loss, self.train.accuracy, self.val.loss, self.val.accuracy, self.train_images_per_sec
        )
    }
}

/// Running sums behind a [`Score`].
#[derive(Default)]
struct ScoreSum {
    loss: f64,
    correct: usize,
    images: usize,
}

impl ScoreSum {
    /// Adds a batch; `loss` is the batch mean, as CrossEntropyLoss returns it.
    fn add<B: Backend>(&mut self, logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>, loss: f64) {
        let images = labels.dims()[0];
        let correct: i64 = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum().into_scalar().elem();
        self.loss += loss * images as f64;
        self.correct += correct as usize;
        self.images += images;
    }

    fn score(&self) -> Score {
        let images = self.images.max(1) as f64;
        Score { loss: self.loss / images, accuracy: 100.0 * self.correct as f64 / images, images: self.images }
    }
}

/// A batch as tensors on `device`.
pub fn batch_tensors<B: Backend>(batch: &Batch, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let images = Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape()), device);
    let labels = Tensor::from_data(TensorData::new(batch.labels.clone(), [batch.labels.len()]), device);
    (images, labels)
}

/// The bar every long loop shows: batches done, rate, ETA.
pub fn progress_bar(len: usize, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} batches {per_sec} ETA {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// Loss and accuracy of the evaluation model (no dropout, running BN statistics) over `batches`.
pub fn evaluate<B: Backend>(
    model: &Vgg<B>,
    batches: &BatchLoader,
    device: &B::Device,
    label: &str,
) -> Score {
    evaluate_with(batches, device, label, |images| model.forward(images))
}

/// Loss and accuracy of the logits `forward` gives for `batches` (any model: float or simulated int8).
pub fn evaluate_with<B: Backend>(
    batches: &BatchLoader,
    device: &B::Device,
    label: &str,
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Score {
    let loss_fn = CrossEntropyLoss::new(None, device);
    let bar = progress_bar(batches.batch_count(), label.to_string());
    let mut sum = ScoreSum::default();
    // Evaluation batches are neither shuffled nor flipped: every epoch number gives the same ones.
    for batch in batches.epoch(0) {
        let (images, labels) = batch_tensors::<B>(&batch, device);
        let logits = forward(images);
        let loss: f64 = loss_fn.forward(logits.clone(), labels.clone()).into_scalar().elem();
        sum.add(logits, labels, loss);
        bar.inc(1);
    }
    bar.finish_and_clear();
    sum.score()
}

/// Trains `model` for `config.epochs`, printing a bar per epoch and a summary line after each.
pub fn train<B: AutodiffBackend>(
    model: Vgg<B>,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    config: &TrainConfig,
    device: &B::Device,
) -> (Vgg<B>, Vec<EpochReport>) {
    train_with(model, train_batches, val_batches, config, device, |model, images| model.forward(images))
}

/// [`train`] with another training forward pass (quantization-aware training inserts fake quantization);
/// validation still runs the plain float model.
pub fn train_with<B: AutodiffBackend>(
    mut model: Vgg<B>,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    config: &TrainConfig,
    device: &B::Device,
    mut forward: impl FnMut(&Vgg<B>, Tensor<B, 4>) -> Tensor<B, 2>,
) -> (Vgg<B>, Vec<EpochReport>) {
    let mut optimizer = config.optimizer().init::<B, Vgg<B>>();
    let loss_fn = CrossEntropyLoss::new(None, device);
    let mut reports = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let bar = progress_bar(train_batches.batch_count(), format!("epoch {epoch}/{}", config.epochs));
        let started = Instant::now();
        let mut sum = ScoreSum::default();
        for batch in train_batches.epoch(epoch as u64) {
            let (images, labels) = batch_tensors::<B>(&batch, device);
            let logits = forward(&model, images);
            let loss = loss_fn.forward(logits.clone(), labels.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate, model, grads);
            let batch_loss: f64 = loss.into_scalar().elem();
            sum.add(logits.inner(), labels.inner(), batch_loss);
            bar.set_message(format!("loss {batch_loss:.3}"));
            bar.inc(1);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let train = sum.score();
        let val = evaluate(&model.valid(), val_batches, device, "validation");
        let report = EpochReport { epoch, train, val, train_images_per_sec: train.images as f64 / train_seconds };
        println!("{report}");
        reports.push(report);
    }
    (model, reports)
}
