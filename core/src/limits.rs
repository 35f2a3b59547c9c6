//! Caps on a run, for any profile: the same shapes and code paths on fewer images, fewer batches or
//! fewer epochs. A capped run is not its profile's recipe, so no golden table applies to it.

use clap::builder::RangedU64ValueParser;
use serde::{Deserialize, Serialize};

use crate::names::DEFAULT_BATCH_SIZE;

/// The most epochs a run may ask for: far beyond any recipe (the seed's is 5), far short of what a typo
/// would make of the reports' allocations.
pub const MAX_EPOCHS: u64 = 1000;

/// A count of at least one, or an error naming the flag (clap's usage error, exit 2) and saying so
/// (clap's own range check would print the range's end, `usize::MAX`).
pub fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(error) => Err(format!("{error}: a whole number of at least 1 is expected")),
    }
}

/// A count of test images for a run: at least one batch, as `vggq eval --run` (and `cargo xtask all`)
/// times full batches of [`DEFAULT_BATCH_SIZE`] (fewer would pass train, quantize and export, and fail
/// there), and as many as CIFAR-10's classes.
fn at_least_a_batch(value: &str) -> Result<usize, String> {
    match positive(value)? {
        count if count < DEFAULT_BATCH_SIZE => Err(format!(
            "must be at least {DEFAULT_BATCH_SIZE}: the run's evaluation times full batches of {DEFAULT_BATCH_SIZE} images"
        )),
        count => Ok(count),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Limits {
    /// Train on at most N images of the training split (a seeded random N: the split is shuffled).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub train_images: Option<usize>,
    /// Validate and test on at most N images each, evenly spread over each set (so every class is in), at
    /// least 32 (a batch: the evaluation times full ones).
    #[arg(long, value_name = "N", value_parser = at_least_a_batch)]
    pub eval_images: Option<usize>,
    /// Static quantization calibrates on N batches instead of the profile's.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub calibration_batches: Option<usize>,
    /// Train for N epochs instead of the profile's (FP32, and QAT in `fp32match` mode), at most 1000; 0
    /// leaves the model untrained (benchmark models).
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_EPOCHS))]
    pub epochs: Option<usize>,
}

impl Limits {
    /// The same caps as command-line arguments, to pass them on.
    pub fn to_args(self) -> Vec<String> {
        [
            ("--train-images", self.train_images),
            ("--eval-images", self.eval_images),
            ("--calibration-batches", self.calibration_batches),
            ("--epochs", self.epochs),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.map(|n| [flag.to_string(), n.to_string()]))
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        limits: Limits,
    }

    #[test]
    fn limits_survive_being_passed_on() {
        let limits = Limits { train_images: Some(256), eval_images: None, calibration_batches: Some(2), epochs: Some(1) };
        let args = limits.to_args();
        assert_eq!(args, ["--train-images", "256", "--calibration-batches", "2", "--epochs", "1"]);
        let parsed = Command::parse_from(std::iter::once("command".to_string()).chain(args));
        assert_eq!(parsed.limits, limits);
    }

    /// Nothing, and more epochs than allocations hold, are refused where parsed, naming the flag.
    #[test]
    fn empty_and_huge_limits_are_usage_errors() {
        for args in
            [["--train-images", "0"], ["--eval-images", "31"], ["--calibration-batches", "0"], ["--epochs", "100000000000"]]
        {
            let error = Command::try_parse_from(["command", args[0], args[1]]).err().expect("refused");
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}");
            assert!(error.to_string().contains(args[0]), "{error}");
        }
        assert_eq!(Command::parse_from(["command", "--epochs", "0"]).limits.epochs, Some(0));
        assert_eq!(Command::parse_from(["command", "--eval-images", "32"]).limits.eval_images, Some(32));
    }
}
