//! Batches for training and evaluation: a seeded per-epoch order and flips, preprocessing on a pool of worker
//! threads, and a bounded number of batches prepared ahead so the trainer rarely waits.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::data::error::DataError;
use crate::data::image_set::{ImageSet, CHANNELS};
use crate::data::seed::{rng, Purpose};
use crate::data::transform::Preprocess;

/// The seed's batch size, from the one home every part reads it from.
pub use vggq_core::DEFAULT_BATCH_SIZE;
/// Probability of `RandomHorizontalFlip`.
const FLIP_PROBABILITY: f64 = 0.5;
/// Batches prepared ahead per worker thread: enough to absorb jitter, few enough to bound memory
/// (a 32-image batch at 128 px is 6 MiB).
const PREFETCH_PER_WORKER: usize = 2;
/// Most bytes of batches prepared ahead, whatever the cores: big images or batches (a 32-image batch at
/// 1024 px is 384 MiB) are prepared fewer at a time, down to one.
const PREFETCH_BYTES: usize = 1 << 30;

/// How a `BatchLoader` turns an `ImageSet` into batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Side the images are resized to.
    pub side: usize,
    /// Reorder the images every epoch (training) or keep the set's order (evaluation).
    pub shuffle: bool,
    /// `RandomHorizontalFlip(0.5)`: training only.
    pub random_flip: bool,
    pub seed: u64,
    /// Preprocessing threads.
    pub workers: usize,
    /// Batches prepared ahead of the consumer, at least 1; fewer where they would pass
    /// [`PREFETCH_BYTES`] ([`LoaderConfig::batches_ahead`]).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Shuffled and flipped batches of `DEFAULT_BATCH_SIZE`, on every core.
    pub fn train(side: usize, seed: u64) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        LoaderConfig {
            batch_size: DEFAULT_BATCH_SIZE,
            side,
            shuffle: true,
            random_flip: true,
            seed,
            workers,
            prefetch: workers * PREFETCH_PER_WORKER,
        }
    }

    /// Batches in the set's order, never flipped.
    pub fn eval(side: usize) -> Self {
        LoaderConfig { shuffle: false, random_flip: false, ..Self::train(side, 0) }
    }

    /// How many batches are prepared ahead: `prefetch`, or as many as [`PREFETCH_BYTES`] holds, at least one.
    fn batches_ahead(&self) -> usize {
        let batch_bytes = self.batch_size * CHANNELS * self.side * self.side * std::mem::size_of::<f32>();
        self.prefetch.min(PREFETCH_BYTES / batch_bytes).max(1)
    }
}

/// Preprocessed images and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `len() * 3 * side * side` floats: CHW images back to back, normalised.
    pub images: Vec<f32>,
    /// Class indices, as i64 for the cross-entropy loss.
    pub labels: Vec<i64>,
    pub side: usize,
}

impl Batch {
    /// Images in the batch (the last batch of an epoch may hold fewer than the batch size).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[N, 3, side, side]`, the shape of `images` as an NCHW tensor.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), CHANNELS, self.side, self.side]
    }
}

/// Turns an `ImageSet` into epochs of batches.
pub struct BatchLoader {
    images: Arc<ImageSet>,
    preprocess: Arc<Preprocess>,
    pool: Arc<rayon::ThreadPool>,
    config: LoaderConfig,
}

impl BatchLoader {
    pub fn new(images: ImageSet, config: LoaderConfig) -> Result<Self, DataError> {
        let invalid = |reason: &str| Err(DataError::LoaderConfig { reason: reason.to_owned() });
        if config.batch_size == 0 {
            return invalid("batch size must be at least 1");
        }
        if config.side == 0 {
            return invalid("image side must be at least 1");
        }
        if config.workers == 0 || config.prefetch == 0 {
            return invalid("workers and prefetch must be at least 1");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|index| format!("vggq-data-{index}"))
            .build()
            .map_err(|error| DataError::LoaderConfig { reason: format!("cannot start worker threads: {error}") })?;
        Ok(BatchLoader {
            images: Arc::new(images),
            preprocess: Arc::new(Preprocess::new(config.side)),
            pool: Arc::new(pool),
            config,
        })
    }

    /// The same images, preprocessing and worker threads in their set's order and never flipped: the
    /// training split as calibration reads it.
    pub fn unaugmented(&self) -> Self {
        BatchLoader {
            images: Arc::clone(&self.images),
            preprocess: Arc::clone(&self.preprocess),
            pool: Arc::clone(&self.pool),
            config: LoaderConfig { shuffle: false, random_flip: false, ..self.config.clone() },
        }
    }

    /// Images per epoch.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Batches per epoch, the last partial one included.
    pub fn batch_count(&self) -> usize {
        self.len().div_ceil(self.config.batch_size)
    }

    /// The images of each batch of an epoch, in order: full batches, then the partial one.
    pub fn batch_lengths(&self) -> impl Iterator<Item = usize> {
        let (count, size) = (self.len(), self.config.batch_size);
        (0..self.batch_count()).map(move |batch| size.min(count - batch * size))
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The batches of epoch `epoch`: the same epoch number and seed always give the same batches.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` from its batch `first` on (a training resumed inside the epoch): the
    /// same batches as [`epoch`](Self::epoch) gives from there.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochBatches {
        let count = self.images.len();
        let mut order: Vec<usize> = (0..count).collect();
        if self.config.shuffle {
            order.shuffle(&mut rng(self.config.seed, Purpose::EpochOrder, epoch));
        }
        // Drawn here, in image order, so the flips do not depend on which worker runs first.
        let flips: Vec<bool> = if self.config.random_flip {
            let mut random = rng(self.config.seed, Purpose::Flip, epoch);
            (0..count).map(|_| random.random_bool(FLIP_PROBABILITY)).collect()
        } else {
            vec![false; count]
        };
        let ahead = self.config.batches_ahead();
        let mut batches = EpochBatches {
            plan: Arc::new(EpochPlan { order, flips }),
            images: Arc::clone(&self.images),
            preprocess: Arc::clone(&self.preprocess),
            pool: Arc::clone(&self.pool),
            batch_size: self.config.batch_size,
            next_to_submit: first.min(self.batch_count()),
            batch_count: self.batch_count(),
            in_flight: VecDeque::with_capacity(ahead),
        };
        for _ in 0..ahead {
            batches.submit_next();
        }
        batches
    }
}

/// The image order and flips of one epoch.
struct EpochPlan {
    order: Vec<usize>,
    flips: Vec<bool>,
}

/// The batches of one epoch, in order; up to `prefetch` are being prepared at any time.
pub struct EpochBatches {
    plan: Arc<EpochPlan>,
    images: Arc<ImageSet>,
    preprocess: Arc<Preprocess>,
    pool: Arc<rayon::ThreadPool>,
    batch_size: usize,
    next_to_submit: usize,
    batch_count: usize,
    /// One single-use channel per submitted batch, oldest first: results arrive in order however the
    /// workers interleave.
    in_flight: VecDeque<Receiver<Batch>>,
}

impl EpochBatches {
    fn submit_next(&mut self) {
        if self.next_to_submit == self.batch_count {
            return;
        }
        let start = self.next_to_submit * self.batch_size;
        let end = (start + self.batch_size).min(self.plan.order.len());
        self.next_to_submit += 1;
        let (sender, receiver) = mpsc::sync_channel(1);
        self.in_flight.push_back(receiver);
        let (plan, images, preprocess) = (Arc::clone(&self.plan), Arc::clone(&self.images), Arc::clone(&self.preprocess));
        self.pool.spawn(move || {
            let batch = build_batch(&images, &preprocess, &plan.order[start..end], &plan.flips[start..end]);
            // Fails only when the consumer dropped the epoch early, and then nobody wants this batch.
            let _ = sender.send(batch);
        });
    }
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let receiver = self.in_flight.pop_front()?;
        let batch = receiver.recv().expect("a batch worker panicked");
        self.submit_next();
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.in_flight.len() + (self.batch_count - self.next_to_submit);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

fn build_batch(images: &ImageSet, preprocess: &Preprocess, indices: &[usize], flips: &[bool]) -> Batch {
    let image_len = preprocess.output_len();
    let mut pixels = vec![0f32; indices.len() * image_len];
    for ((out, &index), &flip) in pixels.chunks_exact_mut(image_len).zip(indices).zip(flips) {
        preprocess.apply(images.image(index), flip, out);
    }
    Batch {
        images: pixels,
        labels: indices.iter().map(|&index| i64::from(images.label(index))).collect(),
        side: preprocess.side(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches prepared ahead stay within [`PREFETCH_BYTES`] however many cores prepare them.
    #[test]
    fn batches_ahead_are_bounded_in_bytes() {
        let config = |batch_size, side| LoaderConfig { batch_size, side, prefetch: 128, ..LoaderConfig::eval(side) };
        assert_eq!(config(32, 128).batches_ahead(), 128, "6 MiB batches: all 128");
        assert_eq!(config(32, 1024).batches_ahead(), 2, "384 MiB batches: two");
        assert_eq!(config(1024, 1024).batches_ahead(), 1, "one 12 GiB batch: at least one");
        assert_eq!(LoaderConfig { prefetch: 3, ..config(32, 128) }.batches_ahead(), 3);
    }
}
