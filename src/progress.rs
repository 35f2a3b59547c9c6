//! The progress bar every long loop shows (training epochs, evaluation, calibration). On a terminal it
//! redraws in place; elsewhere (a log file, CI, the GPU check's log) it writes its line every
//! [`LOG_INTERVAL`], so that a long first step or a stalled run shows in the log where it is.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

/// How often a bar writes its line where stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A bar over `len` batches: done, rate, ETA, and a message the loop may set.
pub fn progress_bar(len: usize, prefix: String) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like(Box::new(LogLines::new(Box::new(std::io::stderr()), LOG_INTERVAL)))
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} batches, {rate}, {time} {msg}")
            .expect("static template")
            .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&rate(state.per_sec()));
            })
            // By the count, not `is_finished`: the loops clear their bars when done, and the line a log
            // keeps is the last one drawn before that.
            .with_key("time", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = match state.len().is_some_and(|len| state.pos() >= len) {
                    true => write!(out, "took {}", HumanDuration(state.elapsed())),
                    // Before the first batch there is no rate to tell it from.
                    false if state.pos() == 0 => write!(out, "ETA -"),
                    false => write!(out, "ETA {}", HumanDuration(state.eta())),
                };
            })
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// Batches per second, to the digits that matter at that speed (indicatif's own shows four decimals),
/// or seconds per batch where a batch takes longer than a second.
fn rate(batches_per_second: f64) -> String {
    match batches_per_second {
        rate if rate >= 10.0 => format!("{rate:.0} batches/s"),
        rate if rate >= 1.0 => format!("{rate:.1} batches/s"),
        rate if rate > 0.0 => format!("{:.1} s/batch", 1.0 / rate),
        _ => "- batches/s".into(),
    }
}

/// A "terminal" that writes a bar's latest state as one line to `out`, at most once per `interval`
/// (the first after one interval: short loops stay silent).
struct LogLines {
    interval: Duration,
    state: Mutex<LogState>,
}

struct LogState {
    out: Box<dyn Write + Send>,
    pending: String,
    last_written: Instant,
}

impl LogLines {
    fn new(out: Box<dyn Write + Send>, interval: Duration) -> Self {
        LogLines { interval, state: Mutex::new(LogState { out, pending: String::new(), last_written: Instant::now() }) }
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        120
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        self.write_str(line)
    }

    fn write_str(&self, text: &str) -> std::io::Result<()> {
        // indicatif also writes "\r" and blank fillers around a line: only text counts.
        let text = text.trim();
        if !text.is_empty() {
            self.state.lock().expect("the bar's state").pending = text.to_string();
        }
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("the bar's state");
        if !state.pending.is_empty() && state.last_written.elapsed() >= self.interval {
            let line = std::mem::take(&mut state.pending);
            writeln!(state.out, "{line}")?;
            state.last_written = Instant::now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_bar_off_a_terminal_writes_its_line_once_per_interval() {
        let out = Shared::default();
        let interval = Duration::from_millis(200);
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like(Box::new(LogLines::new(Box::new(out.clone()), interval))),
        );
        bar.set_style(ProgressStyle::with_template("{prefix} {pos}/{len} batches").unwrap());
        bar.set_prefix("epoch 1/2");
        let text = || String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        bar.inc(1);
        assert_eq!(text(), "", "nothing before the first interval");
        std::thread::sleep(interval);
        bar.inc(1);
        bar.inc(1);
        assert_eq!(text(), "epoch 1/2 2/10 batches\n", "one line, then silence until the next interval");
        std::thread::sleep(interval);
        bar.inc(1);
        assert_eq!(text(), "epoch 1/2 2/10 batches\nepoch 1/2 4/10 batches\n");
    }

    #[test]
    fn a_rate_shows_the_digits_that_matter_at_its_speed() {
        assert_eq!(rate(123.456), "123 batches/s");
        assert_eq!(rate(2.345), "2.3 batches/s");
        assert_eq!(rate(0.25), "4.0 s/batch");
        assert_eq!(rate(0.0), "- batches/s", "before the first batch");
    }
}
