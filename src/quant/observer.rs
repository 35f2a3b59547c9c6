//! Observers: what PyTorch's `torch.ao.quantization.observer` records about a tensor and the
//! quantization parameters it derives from that record.
//!
//! - [`MinMax`]: `MinMaxObserver` (and one channel of `PerChannelMinMaxObserver`).
//! - [`MovingAverageMinMax`]: `MovingAverageMinMaxObserver` and its per-channel twin, as QAT uses them.
//! - [`Histogram`]: `HistogramObserver`, ported operation by operation in f32 where PyTorch computes in
//!   f32, so that calibration picks the same clipping range as PyTorch.
//! - [`ActivationObserver`]: the calibration method chosen on the command line.

use serde::{Deserialize, Serialize};

use super::qparams::{affine_qparams, QParams, QuantRange};

/// Running minimum and maximum (`MinMaxObserver`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    pub min: f32,
    pub max: f32,
}

impl Default for MinMax {
    /// PyTorch's uninitialised state: `min = +inf`, `max = -inf`.
    fn default() -> Self {
        MinMax { min: f32::INFINITY, max: f32::NEG_INFINITY }
    }
}

impl MinMax {
    /// Minimum and maximum of `values` (`torch.aminmax`).
    pub fn of(values: &[f32]) -> Self {
        values.iter().fold(MinMax::default(), |m, &v| MinMax { min: m.min.min(v), max: m.max.max(v) })
    }

    pub fn observe(&mut self, values: &[f32]) {
        let batch = MinMax::of(values);
        self.min = self.min.min(batch.min);
        self.max = self.max.max(batch.max);
    }

    pub fn is_initialised(&self) -> bool {
        self.min != f32::INFINITY || self.max != f32::NEG_INFINITY
    }

    /// Minimum and maximum of each of `channels` equal, contiguous slices of `values`: a
    /// `PerChannelMinMaxObserver` on axis 0 of a contiguous weight.
    pub fn per_channel(values: &[f32], channels: usize) -> Vec<MinMax> {
        values.chunks(values.len() / channels).map(MinMax::of).collect()
    }
}

/// Exponential moving average of minimum and maximum (`MovingAverageMinMaxObserver`): the first
/// observation is taken as is, later ones move the record by `averaging_constant` of the difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovingAverageMinMax {
    pub range: MinMax,
    pub averaging_constant: f32,
}

/// PyTorch's default `averaging_constant`.
pub const DEFAULT_AVERAGING_CONSTANT: f32 = 0.01;

impl Default for MovingAverageMinMax {
    fn default() -> Self {
        MovingAverageMinMax { range: MinMax::default(), averaging_constant: DEFAULT_AVERAGING_CONSTANT }
    }
}

impl MovingAverageMinMax {
    /// Folds in a batch whose minimum and maximum are `batch`.
    pub fn observe(&mut self, batch: MinMax) {
        if !self.range.is_initialised() {
            self.range = batch;
        } else {
            let c = self.averaging_constant;
            self.range.min += c * (batch.min - self.range.min);
            self.range.max += c * (batch.max - self.range.max);
        }
    }
}

/// `HistogramObserver`'s default number of bins.
pub const HISTOGRAM_BINS: usize = 2048;
/// `HistogramObserver.upsample_rate`: each old bin is split this many times when the range grows.
const UPSAMPLE_RATE: usize = 16;
/// `2 ** bits` of quint8: the destination bins of the error search.
const DESTINATION_BINS: usize = 256;

/// `HistogramObserver`: a 2048-bin histogram over a range that grows with every batch (old counts are
/// re-binned into the new range), and an L2-error search for the clipping range.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub counts: Vec<f32>,
    pub min: f32,
    pub max: f32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0.0; HISTOGRAM_BINS], min: f32::INFINITY, max: f32::NEG_INFINITY }
    }
}

impl Histogram {
    fn bins(&self) -> usize {
        self.counts.len()
    }

    fn is_initialised(&self) -> bool {
        self.min != f32::INFINITY || self.max != f32::NEG_INFINITY
    }

    /// `HistogramObserver.forward`: infinities are ignored, as PyTorch ignores them.
    pub fn observe(&mut self, values: &[f32]) {
        let finite: Vec<f32>;
        let mut batch = MinMax::of(values);
        let values = if batch.min.is_infinite() || batch.max.is_infinite() {
            finite = values.iter().copied().filter(|v| v.is_finite()).collect();
            batch = MinMax::of(&finite);
            &finite[..]
        } else {
            values
        };
        if values.is_empty() || batch.min.is_nan() {
            return;
        }
        if !self.is_initialised() {
            self.counts = histc(values, self.bins(), batch.min, batch.max);
            self.min = batch.min;
            self.max = batch.max;
            return;
        }
        let (new_min, new_max) = (self.min.min(batch.min), self.max.max(batch.max));
        let update = histc(values, self.bins(), new_min, new_max);
        let old = if new_min == self.min && new_max == self.max {
            std::mem::take(&mut self.counts)
        } else if self.min == self.max {
            let total: f32 = self.counts.iter().sum();
            histc(&[self.min], self.bins(), new_min, new_max).into_iter().map(|c| c * total).collect()
        } else {
            self.upscale(new_min, new_max)
        };
        self.counts = update.iter().zip(&old).map(|(u, o)| u + o).collect();
        self.min = new_min;
        self.max = new_max;
    }

    /// `_upscale_histogram`: splits every bin into `UPSAMPLE_RATE` equal parts and drops each part's
    /// mass into the bin of the new range that holds its midpoint.
    fn upscale(&self, new_min: f32, new_max: f32) -> Vec<f32> {
        let bins = self.bins();
        let fine = bins * UPSAMPLE_RATE;
        let fine_width = (self.max - self.min) / fine as f32;
        let fine_edges = linspace(self.min, self.max, fine + 1);
        let boundaries = linspace(new_min, new_max, bins + 1);
        let mut upscaled = vec![0.0f32; bins];
        for (j, edge) in fine_edges[..fine].iter().enumerate() {
            let midpoint = edge + 0.5 * fine_width;
            // torch.bucketize(right=True) - 1: the last boundary not above the midpoint.
            let bucket = boundaries.partition_point(|&b| b <= midpoint) as isize - 1;
            let bucket = bucket.clamp(0, bins as isize - 1) as usize;
            upscaled[bucket] += self.counts[j / UPSAMPLE_RATE] / UPSAMPLE_RATE as f32;
        }
        upscaled
    }

    /// `_non_linear_param_search`: shrinks the range from whichever end holds less mass, step by step
    /// (quantiles 1e-5 apart), while the L2 quantization error keeps falling.
    pub fn search_range(&self) -> MinMax {
        let bins = self.bins();
        let bin_width = (self.max - self.min) / bins as f32;
        let total = f64::from(self.counts.iter().map(|&c| c as f64).sum::<f64>() as f32);
        // torch.cumsum accumulates f32 in f64 on the CPU and stores f32.
        let mut running = 0.0f64;
        let cumulative: Vec<f32> = self
            .counts
            .iter()
            .map(|&c| {
                running += c as f64;
                running as f32
            })
            .collect();
        const STEP: f64 = 1e-5;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start_bin, mut end_bin) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let (next_alpha, next_beta) = (alpha + STEP, beta - STEP);
            // PyTorch compares the f32 cumulative sum with the bound cast to f32.
            let (lower, upper) = ((next_alpha * total) as f32, (next_beta * total) as f32);
            let mut l = start_bin;
            while l < end_bin && cumulative[l] < lower {
                l += 1;
            }
            let mut r = end_bin;
            while r > start_bin && cumulative[r] > upper {
                r -= 1;
            }
            let (mut next_start, mut next_end) = (start_bin, end_bin);
            if l - start_bin > end_bin - r {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if next_start == start_bin && next_end == end_bin {
                continue;
            }
            let norm = self.quantization_error(next_start, next_end);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start;
            end_bin = next_end;
        }
        MinMax { min: self.min + bin_width * start_bin as f32, max: self.min + bin_width * (end_bin + 1) as f32 }
    }

    /// `_compute_quantization_error`: the L2 error of quantizing the histogram's mass (taken as uniform
    /// within each bin) to 256 levels spanning bins `start..=end`. f32 element-wise as in PyTorch; the
    /// final sum in f64.
    fn quantization_error(&self, start: usize, end: usize) -> f64 {
        let bins = self.bins();
        let bin_width = (self.max as f64 - self.min as f64) / bins as f64;
        let dst_width = bin_width * (end - start + 1) as f64 / DESTINATION_BINS as f64;
        if dst_width == 0.0 {
            return 0.0;
        }
        let (width, dst) = (bin_width as f32, dst_width as f32);
        let half_dst = (dst_width / 2.0) as f32;
        let norm = |begin: f32, end: f32| (end * end * end - begin * begin * begin) / 3.0;
        let whole_bin_norm = norm(-half_dst, half_dst);
        let last_dst = (DESTINATION_BINS - 1) as f32;
        let mut sum = 0.0f64;
        for (i, &count) in self.counts.iter().enumerate() {
            let density = count / width;
            let begin = (i as i64 - start as i64) as f32 * width;
            let end_ = begin + width;
            let dst_of_begin = div_floor(begin, dst).clamp(0.0, last_dst);
            let dst_of_end = div_floor(end_, dst).clamp(0.0, last_dst);
            let begin_center = (dst_of_begin + 0.5) * dst;
            let end_center = dst_of_end * dst + half_dst;
            let mut element = density * norm(begin - begin_center, half_dst);
            element += (dst_of_end - dst_of_begin - 1.0) * (density * whole_bin_norm);
            element += density * norm(-half_dst, end_ - end_center);
            sum += element as f64;
        }
        sum
    }

    /// The range between the `fraction` and `1 - fraction` quantiles of the recorded mass, to bin
    /// resolution: percentile calibration.
    pub fn percentile_range(&self, fraction: f64) -> MinMax {
        let bins = self.bins();
        let bin_width = (self.max - self.min) / bins as f32;
        let total: f64 = self.counts.iter().map(|&c| c as f64).sum();
        let mut running = 0.0;
        let mut start = 0;
        let mut end = bins - 1;
        let mut found_start = false;
        for (i, &c) in self.counts.iter().enumerate() {
            running += c as f64;
            if !found_start && running > fraction * total {
                start = i;
                found_start = true;
            }
            if running >= (1.0 - fraction) * total {
                end = i;
                break;
            }
        }
        MinMax { min: self.min + bin_width * start as f32, max: self.min + bin_width * (end + 1) as f32 }
    }
}

/// `torch.histc(values, bins, min, max)` on the CPU: bin `(int)((v - min) * bins / (max - min))` in f32,
/// the maximum in the last bin, values outside the range dropped; an empty range is widened by 1 on
/// each side, as histc widens it.
fn histc(values: &[f32], bins: usize, min: f32, max: f32) -> Vec<f32> {
    let (min, max) = if min == max { (min - 1.0, max + 1.0) } else { (min, max) };
    let mut counts = vec![0.0f32; bins];
    for &v in values {
        if !(v >= min && v <= max) {
            continue;
        }
        let position = ((v - min) * bins as f32 / (max - min)) as usize;
        counts[position.min(bins - 1)] += 1.0;
    }
    counts
}

/// `torch.linspace` for f32 on the CPU: `start + step * i` for the first half, `end - step * (n - 1 - i)`
/// for the second, with the step in f32.
fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps).map(|i| if i < halfway { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 }).collect()
}

/// `torch.div(a, b, rounding_mode="floor")` for floats (`c10::div_floor_floating`).
fn div_floor(a: f32, b: f32) -> f32 {
    let remainder = a % b;
    let mut quotient = (a - remainder) / b;
    if remainder != 0.0 && (b < 0.0) != (remainder < 0.0) {
        quotient -= 1.0;
    }
    if quotient == 0.0 {
        return 0.0f32.copysign(a / b);
    }
    let floor = quotient.floor();
    if quotient - floor > 0.5 {
        floor + 1.0
    } else {
        floor
    }
}

/// How activation ranges are calibrated for static quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// `HistogramObserver` (PyTorch's fbgemm default): L2-optimal clipping.
    Histogram,
    /// `MinMaxObserver`: the whole observed range.
    Minmax,
    /// The 0.01 % and 99.99 % quantiles of the observed values (from the same histogram).
    Percentile,
}

/// Mass cut off at each end by [`Calibration::Percentile`].
pub const PERCENTILE_TAIL: f64 = 1e-4;

/// One activation observer of the method chosen.
#[derive(Debug, Clone)]
pub enum ActivationObserver {
    Histogram(Histogram),
    MinMax(MinMax),
    Percentile(Histogram),
}

impl ActivationObserver {
    pub fn new(method: Calibration) -> Self {
        match method {
            Calibration::Histogram => ActivationObserver::Histogram(Histogram::default()),
            Calibration::Minmax => ActivationObserver::MinMax(MinMax::default()),
            Calibration::Percentile => ActivationObserver::Percentile(Histogram::default()),
        }
    }

    pub fn observe(&mut self, values: &[f32]) {
        match self {
            ActivationObserver::Histogram(h) | ActivationObserver::Percentile(h) => h.observe(values),
            ActivationObserver::MinMax(m) => m.observe(values),
        }
    }

    /// The range to quantize to; `None` before any observation.
    pub fn range(&self) -> Option<MinMax> {
        match self {
            ActivationObserver::Histogram(h) => h.is_initialised().then(|| h.search_range()),
            ActivationObserver::MinMax(m) => m.is_initialised().then_some(*m),
            ActivationObserver::Percentile(h) => h.is_initialised().then(|| h.percentile_range(PERCENTILE_TAIL)),
        }
    }

    /// quint8 per-tensor affine parameters with fbgemm's reduced range (0..127).
    pub fn qparams(&self) -> Option<QParams> {
        self.range().map(|r| affine_qparams(r.min, r.max, QuantRange::QUINT8_REDUCED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histc_puts_the_maximum_in_the_last_bin() {
        assert_eq!(histc(&[0.0, 0.5, 1.0, 2.0], 2, 0.0, 1.0), vec![1.0, 2.0]);
        assert_eq!(histc(&[3.0], 2, 3.0, 3.0), vec![0.0, 1.0]);
    }

    #[test]
    fn div_floor_rounds_down() {
        assert_eq!(div_floor(-0.5, 1.0), -1.0);
        assert_eq!(div_floor(2.5, 0.5), 5.0);
    }

    #[test]
    fn histogram_keeps_its_mass_when_the_range_grows() {
        let mut h = Histogram::default();
        h.observe(&[0.0, 1.0, 2.0]);
        h.observe(&[-4.0, 8.0]);
        assert_eq!((h.min, h.max), (-4.0, 8.0));
        assert!((h.counts.iter().sum::<f32>() - 5.0).abs() < 1e-4);
    }

    #[test]
    fn moving_average_starts_from_the_first_batch() {
        let mut m = MovingAverageMinMax::default();
        m.observe(MinMax { min: -1.0, max: 1.0 });
        m.observe(MinMax { min: -2.0, max: 3.0 });
        assert_eq!(m.range, MinMax { min: -1.01, max: 1.02 });
    }
}
