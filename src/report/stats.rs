//! Comparing two models' predictions on the same images.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Resamples behind each confidence interval.
const BOOTSTRAP_RESAMPLES: usize = 2_000;
/// Fixed, so a report is a function of its predictions alone.
const BOOTSTRAP_SEED: u64 = 0x5eed;

pub use crate::eval::metrics::accuracy;

/// Share of images (percent) on which two models predict the same class.
pub fn agreement(a: &[u8], b: &[u8]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    100.0 * same as f64 / a.len().max(1) as f64
}

/// Accuracy per class, in percent, for classes `0..classes`.
pub fn per_class_accuracy(predictions: &[u8], labels: &[u8], classes: usize) -> Vec<f64> {
    let mut correct = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    for (&p, &l) in predictions.iter().zip(labels) {
        let l = l as usize;
        if l < classes {
            total[l] += 1;
            correct[l] += usize::from(p as usize == l);
        }
    }
    correct.iter().zip(&total).map(|(&c, &t)| 100.0 * c as f64 / t.max(1) as f64).collect()
}

/// The difference of accuracy `b - a` (percentage points) with a 95 % paired-bootstrap confidence
/// interval: images are resampled with replacement, both models scored on the same resample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Difference {
    pub points: f64,
    pub low: f64,
    pub high: f64,
}

pub fn paired_bootstrap(a: &[u8], b: &[u8], labels: &[u8]) -> Difference {
    let n = labels.len();
    // Per image: +1 when only b is right, -1 when only a is, 0 otherwise.
    let delta: Vec<i32> = (0..n).map(|i| i32::from(b[i] == labels[i]) - i32::from(a[i] == labels[i])).collect();
    let points = 100.0 * delta.iter().sum::<i32>() as f64 / n.max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut resampled: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let sum: i64 = (0..n).map(|_| i64::from(delta[rng.random_range(0..n)])).sum();
            100.0 * sum as f64 / n as f64
        })
        .collect();
    resampled.sort_by(f64::total_cmp);
    let at = |q: f64| resampled[((BOOTSTRAP_RESAMPLES - 1) as f64 * q).round() as usize];
    Difference { points, low: at(0.025), high: at(0.975) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_models_differ_by_exactly_zero() {
        let labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let predictions = [0, 1, 2, 3, 4, 0, 0, 0, 0, 0];
        let d = paired_bootstrap(&predictions, &predictions, &labels);
        assert_eq!((d.points, d.low, d.high), (0.0, 0.0, 0.0));
        assert_eq!(agreement(&predictions, &predictions), 100.0);
        assert_eq!(accuracy(&predictions, &labels), 50.0);
    }

    #[test]
    fn a_better_model_has_an_interval_above_zero() {
        // b right on every image, a on half: +50 points, and no resample can make it negative.
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let a: Vec<u8> = labels.iter().enumerate().map(|(i, &l)| if i % 2 == 0 { l } else { (l + 1) % 10 }).collect();
        let d = paired_bootstrap(&a, &labels, &labels);
        assert_eq!(d.points, 50.0);
        assert!(d.low > 40.0 && d.high < 60.0 && d.low < 50.0 && d.high > 50.0, "{d:?}");
        assert_eq!(per_class_accuracy(&a, &labels, 10)[0], 100.0);
    }
}
