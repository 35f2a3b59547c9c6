//! A stop asked for by a signal ([`vggq_core::signals`]: Ctrl-C, a closed terminal, SIGTERM). While a training that keeps
//! checkpoints runs, the first such signal asks it to save its state at its next progress read (or its
//! epoch's end) and end there, where the signal's own action would lose every step since its last
//! checkpoint (up to [`DEFAULT_INTERVAL`](super::DEFAULT_INTERVAL), 10 minutes, of them); the command then says where
//! it stopped and ends as the signal would have ended it. A second signal, or one while no such training
//! runs, ends vggq at once. What the training writes once asked to stop ignores a closed output: Ctrl-C
//! also ends a `| tee` that vggq writes to, and a failed write would otherwise panic before the save.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use vggq_core::signals::{self, Signals};

/// What a training that listens says as it starts.
pub const HOW_TO_STOP: &str = "Ctrl-C (SIGINT), SIGTERM or a closed terminal (SIGHUP) stops the training at its next \
                               progress read, its state saved for the same command (without --force) to resume from";

/// The signal that asked for a stop, 0 for none.
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// Whether a training has said that it saw the request.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);
/// Trainings that stop at their next progress read when asked.
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

/// A signal that asked for a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal(i32);

impl StopSignal {
    /// Ends the process as the signal's own action would have.
    pub fn end_process(self) -> ! {
        signals::end_as(self.0)
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(signals::name(self.0))
    }
}

/// Receives the stop signals on a thread of its own from now on, for the life of the process.
pub fn watch_signals() -> std::io::Result<()> {
    let mut watched = Signals::new(signals::stop_signals())?;
    std::thread::Builder::new().name("vggq-signals".into()).spawn(move || {
        for signal in watched.forever() {
            let first = REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            let listened = LISTENERS.load(Ordering::SeqCst) > 0;
            if first && listened {
                continue;
            }
            if listened {
                say(format_args!(
                    "{}: a second stop signal ends vggq at once; the training's steps since its last checkpoint are lost",
                    signals::name(signal)
                ));
            }
            crate::steps::remove_unwritten_folders();
            signals::end_as(signal);
        }
    })?;
    Ok(())
}

/// While held, a signal asks the training to stop at its next progress read instead of ending vggq.
#[must_use = "a stop is asked of the training only while this is held"]
pub struct Listening(());

impl Listening {
    pub fn start() -> Self {
        LISTENERS.fetch_add(1, Ordering::SeqCst);
        Listening(())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        LISTENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The signal that asked for a stop, if one has.
pub fn requested() -> Option<StopSignal> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(StopSignal(signal)),
    }
}

/// The signal that asked for a stop, the first time this is called after it did: the training says
/// once that it goes on to its next progress read.
pub(super) fn newly_requested() -> Option<StopSignal> {
    requested().filter(|_| !ANNOUNCED.swap(true, Ordering::SeqCst))
}

/// Writes `line` to standard error, where a failed write (its reader gone) is no reason to stop.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
