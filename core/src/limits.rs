//! Caps on a run, for any profile: the same shapes and code paths on fewer images, fewer batches or
//! fewer epochs. A capped run is not its profile's recipe, so no golden table applies to it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Limits {
    /// Train on at most N images of the training split (a seeded random N: the split is shuffled).
    #[arg(long, value_name = "N")]
    pub train_images: Option<usize>,
    /// Validate and test on at most N images each, evenly spread over each set (so every class is in).
    #[arg(long, value_name = "N")]
    pub eval_images: Option<usize>,
    /// Static quantization calibrates on N batches instead of the profile's.
    #[arg(long, value_name = "N")]
    pub calibration_batches: Option<usize>,
    /// Train for N epochs instead of the profile's (FP32, and QAT in `fp32match` mode).
    #[arg(long, value_name = "N")]
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
}
