//! Scoring a model over a set of batches: mean cross-entropy and top-1 accuracy, summed on the device
//! and read by the host once at the end.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::BatchLoader;
use crate::host_reads;
use crate::model::kernels;
use crate::model::{Vgg, VggBackend};
use crate::progress::progress_bar;
use crate::upload::uploaded;

/// Mean loss and top-1 accuracy over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub loss: f64,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    pub images: usize,
}

/// Running sums behind a [`Score`], kept on the device.
pub struct ScoreSum<B: Backend> {
    /// Sum over batches of the batch mean loss times the batch size.
    loss: Option<Tensor<B, 1>>,
    correct: Option<Tensor<B, 1, Int>>,
    images: usize,
}

impl<B: Backend> Default for ScoreSum<B> {
    fn default() -> Self {
        ScoreSum { loss: None, correct: None, images: 0 }
    }
}

impl<B: Backend> ScoreSum<B> {
    /// Adds a batch of `images` images; `mean_loss` is the batch mean, as CrossEntropyLoss returns it.
    /// Nothing is read back.
    pub fn add(&mut self, logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>, mean_loss: Tensor<B, 1>, images: usize) {
        let correct = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum();
        let loss = mean_loss * images as f64;
        self.loss = Some(match self.loss.take() {
            Some(sum) => sum + loss,
            None => loss,
        });
        self.correct = Some(match self.correct.take() {
            Some(sum) => sum + correct,
            None => correct,
        });
        self.images += images;
    }

    /// The mean loss so far: one host read.
    pub fn mean_loss(&self) -> f64 {
        self.loss.clone().map_or(0.0, host_reads::scalar) / self.images.max(1) as f64
    }

    /// The sums so far, for a checkpoint inside an epoch: two host reads.
    pub fn values(&self) -> ScoreSumValues {
        ScoreSumValues {
            // The sum is f32 on the device: through f64 and back, the same bits.
            loss: self.loss.clone().map(|sum| host_reads::scalar(sum) as f32),
            correct: self.correct.clone().map(|sum| host_reads::scalar(sum) as i64),
            images: self.images,
        }
    }

    /// The sums `values` holds, on `device`: a training resumed inside an epoch goes on adding to them.
    pub fn from_values(values: &ScoreSumValues, device: &B::Device) -> Self {
        ScoreSum {
            loss: values.loss.map(|sum| Tensor::from_data(TensorData::new(vec![sum], [1]), device)),
            correct: values.correct.map(|sum| Tensor::from_data(TensorData::new(vec![sum], [1]), device)),
            images: values.images,
        }
    }

    /// The score: two host reads.
    pub fn score(self) -> Score {
        let images = self.images.max(1) as f64;
        Score {
            loss: self.loss.map_or(0.0, host_reads::scalar) / images,
            accuracy: 100.0 * self.correct.map_or(0.0, host_reads::scalar) / images,
            images: self.images,
        }
    }
}

/// A [`ScoreSum`]'s values, as a checkpoint keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreSumValues {
    loss: Option<f32>,
    correct: Option<i64>,
    images: usize,
}

/// Loss and accuracy of the evaluation model (no dropout, running BN statistics) over `batches`.
pub fn score_model<B: VggBackend>(model: &Vgg<B>, batches: &BatchLoader, device: &B::Device, label: &str) -> Score {
    score_model_with(batches, device, label, |images| model.forward(images))
}

/// Loss and accuracy of the logits `forward` gives for `batches` (any model: float or simulated int8).
pub fn score_model_with<B: VggBackend>(
    batches: &BatchLoader,
    device: &B::Device,
    label: &str,
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Score {
    let bar = progress_bar(batches.batch_count(), label.to_string());
    let mut sum = ScoreSum::default();
    // Evaluation batches are neither shuffled nor flipped: every epoch number gives the same ones.
    for batch in uploaded::<B, _>(batches.epoch(0), device) {
        let logits = forward(batch.images);
        let loss = kernels::cross_entropy(logits.clone(), batch.labels.clone());
        sum.add(logits, batch.labels, loss, batch.len);
        bar.inc(1);
    }
    bar.finish_and_clear();
    sum.score()
}
