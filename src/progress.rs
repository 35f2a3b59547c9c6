//! The progress bar every long loop shows (training epochs, evaluation, calibration).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` batches: done, rate, ETA, and a message the loop may set.
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
