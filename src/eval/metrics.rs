//! Accuracy and speed of one session over a set of batches: top-1, ms per image and images/s in steady
//! state (warm-up batches excluded), with and without the preprocessing, and batch latency percentiles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::session::{OnnxSession, Provider};
use super::EvalError;
use crate::data::BatchLoader;

/// Throughput over the measured (post-warm-up) batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub ms_per_image: f64,
    pub images_per_s: f64,
}

impl Timing {
    fn new(elapsed: Duration, images: usize) -> Self {
        let seconds = elapsed.as_secs_f64();
        Timing { ms_per_image: seconds * 1e3 / images as f64, images_per_s: images as f64 / seconds }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub requested: Provider,
    /// `CUDA`, `CPU` or `CUDA (k nodes on CPU: ...)`, from ORT's profile.
    pub placement: String,
    /// Operator counts of the graph ORT ran (after its optimizations).
    pub op_counts: BTreeMap<String, usize>,
    pub images: usize,
    /// Percent.
    pub top1: f64,
    pub batch_size: usize,
    pub warmup_batches: usize,
    /// Batches behind `inference` and the percentiles.
    pub timed_batches: usize,
    /// `session.run` alone, on preprocessed batches, the loader idle.
    pub inference: Timing,
    /// The whole pass after warm-up: inference while the loader preprocesses (decode, resize, normalise)
    /// on its worker threads, waits for it included.
    pub with_preprocessing: Timing,
    pub p50_batch_ms: f64,
    pub p95_batch_ms: f64,
    /// The predicted class of every image, in order: agreement between models and per-class accuracy
    /// come from these.
    pub predictions: Vec<u8>,
    /// The true class of every image, in order.
    pub labels: Vec<u8>,
}

/// One row of `metrics.json`: an ONNX file evaluated on one execution provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub file: String,
    pub size_bytes: u64,
    /// `size_bytes / 2^20`, as the seed's table reports sizes.
    pub size_mib: f64,
    #[serde(flatten)]
    pub eval: EvalReport,
}

/// Bytes per MiB.
pub const MIB: f64 = (1 << 20) as f64;

/// Batches kept for the inference-only timing: enough for stable percentiles, few enough to hold in
/// memory at 128 px (6 MiB per batch of 32).
const TIMED_BATCHES: usize = 20;

/// The warm-up batches `evaluate` runs of `asked`, in a set of `full_batches` full batches: a set of few
/// batches (a capped run) keeps its last full one to time.
pub fn warmup_within(asked: usize, full_batches: usize) -> usize {
    asked.min(full_batches.saturating_sub(1))
}

/// Runs every batch once, in order, for accuracy and the end-to-end throughput (the loader preprocesses
/// on its worker threads meanwhile; the first `warmup_batches` are not timed, and at least one full
/// batch is). Then runs up to `TIMED_BATCHES` of those preprocessed batches again with the loader idle,
/// timing `session.run` alone: on a machine with few cores the loader's threads would otherwise slow the
/// inference they overlap.
pub fn evaluate(
    session: &mut OnnxSession,
    batches: &BatchLoader,
    classes: usize,
    warmup_batches: usize,
) -> Result<EvalReport, EvalError> {
    let batch_size = batches.config().batch_size;
    if batches.len() < batch_size {
        return Err(EvalError::NoFullBatch { images: batches.len(), batch: batch_size });
    }
    let warmup_batches = warmup_within(warmup_batches, batches.len() / batch_size);
    let (mut predictions, mut labels) = (Vec::new(), Vec::new());
    let mut kept = Vec::new();
    let mut measured_images = 0_usize;
    // From the end of the last warm-up batch (or the start), so that every timed batch's wait for the
    // loader lies inside the window.
    let mut loop_start = Instant::now();
    let mut loop_end = loop_start;
    for (index, batch) in batches.epoch(0).enumerate() {
        let logits = session.run(&batch.images, batch.len())?;
        if logits.len() != batch.len() * classes {
            return Err(EvalError::ClassCount { found: logits.len() / batch.len(), classes });
        }
        if let Some(at) = logits.iter().position(|logit| !logit.is_finite()) {
            return Err(EvalError::NonFiniteLogits { image: predictions.len() + at / classes, value: logits[at] });
        }
        // Classes fit in a u8: CIFAR-10 has 10, and the data readers refuse more than 256.
        predictions.extend(logits.chunks(classes).map(|row| argmax(row) as u8));
        labels.extend(batch.labels.iter().map(|&label| label as u8));
        if index + 1 == warmup_batches {
            loop_start = Instant::now();
        } else if index >= warmup_batches && batch.len() == batch_size {
            measured_images += batch.len();
            loop_end = Instant::now();
            if kept.len() < TIMED_BATCHES {
                kept.push(batch);
            }
        }
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(kept.len());
    for batch in &kept {
        let started = Instant::now();
        session.run(&batch.images, batch.len())?;
        latencies.push(started.elapsed());
    }
    let inference: Duration = latencies.iter().sum();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    let images = predictions.len();
    Ok(EvalReport {
        requested: session.requested,
        placement: session.placement.to_string(),
        op_counts: session.placement.op_counts(),
        images,
        top1: accuracy(&predictions, &labels),
        batch_size,
        warmup_batches,
        timed_batches: kept.len(),
        inference: Timing::new(inference, kept.len() * batch_size),
        with_preprocessing: Timing::new(loop_end - loop_start, measured_images),
        p50_batch_ms: percentile(0.5),
        p95_batch_ms: percentile(0.95),
        predictions,
        labels,
    })
}

/// Top-1 accuracy in percent of `predictions` against `labels` (equally long).
pub fn accuracy(predictions: &[u8], labels: &[u8]) -> f64 {
    assert_eq!(predictions.len(), labels.len(), "one prediction per label");
    let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}

/// Index of the largest value (the first on ties, as torch.argmax), of finite values.
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}
