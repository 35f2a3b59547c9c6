//! Benchmarks in rounds: two sides measured alternately (A B A B ...), each figure summarised by its
//! median and spread over the rounds, and each ratio by the median of the per-round ratios, so that a
//! machine drifting between rounds moves both sides of a ratio together instead of one.
//! `vggq bench-train` and `cargo xtask bench onnx` print their summaries through [`Comparison`].

use std::fmt;

/// Rounds a benchmark runs unless told otherwise: the fewest whose median ignores one outlier.
pub const DEFAULT_ROUNDS: usize = 3;

/// The median and the range of some measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (NaNs last); `None` for none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let len = sorted.len();
        let median = match len {
            0 => return None,
            _ if len % 2 == 1 => sorted[len / 2],
            _ => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
        };
        Some(Spread { median, min: sorted[0], max: sorted[len - 1] })
    }
}

impl fmt::Display for Spread {
    /// `1114.0 [1050.2-1180.1]`, to one decimal (two below 10, as ratios are).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = if self.median.abs() < 10.0 { 2 } else { 1 };
        write!(f, "{:.digits$} [{:.digits$}-{:.digits$}]", self.median, self.min, self.max)
    }
}

/// One figure (images/s, say) measured on two sides in the same rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What was measured: `train`, `eval`, `FP32 img/s` ...
    pub figure: String,
    pub ours: Vec<f64>,
    /// The other side's figure in the same rounds, where it has one.
    pub theirs: Vec<Option<f64>>,
}

impl Comparison {
    /// The per-round ratios ours / theirs, of the rounds where both sides have a figure.
    pub fn ratios(&self) -> Vec<f64> {
        self.ours.iter().zip(&self.theirs).filter_map(|(&ours, theirs)| theirs.map(|theirs| ours / theirs)).collect()
    }

    /// One line a script can read: `summary <figure>: <us> <median> [<min>-<max>] | <them> ... | ratio
    /// <median>x [<min>-<max>] (median of N rounds)`, the other side and the ratio where measured.
    pub fn summary(&self, us: &str, them: &str) -> String {
        let mut line = format!("summary {}: {us} {}", self.figure, show(Spread::of(&self.ours)));
        let theirs: Vec<f64> = self.theirs.iter().flatten().copied().collect();
        if let Some(spread) = Spread::of(&theirs) {
            line += &format!(" | {them} {spread}");
        }
        if let Some(ratio) = Spread::of(&self.ratios()) {
            line += &format!(" | ratio {:.2}x [{:.2}-{:.2}]", ratio.median, ratio.min, ratio.max);
        }
        line + &format!(" (median of {} rounds)", self.ours.len())
    }
}

fn show(spread: Option<Spread>) -> String {
    spread.map_or_else(|| "-".into(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Spread::of(&[]), None);
    }

    /// The ratio is the median of the rounds' own ratios, not the ratio of the medians: a round where
    /// the machine slowed both sides counts as one round.
    #[test]
    fn the_ratio_is_the_median_of_the_rounds_ratios() {
        let comparison = Comparison {
            figure: "train".into(),
            ours: vec![100.0, 50.0, 120.0],
            theirs: vec![Some(100.0), Some(40.0), Some(100.0)],
        };
        assert_eq!(comparison.ratios(), vec![1.0, 1.25, 1.2]);
        assert_eq!(
            comparison.summary("vggq", "torch"),
            "summary train: vggq 100.0 [50.0-120.0] | torch 100.0 [40.0-100.0] | ratio 1.20x [1.00-1.25] (median of 3 rounds)"
        );
    }
}
