//! A stop asked for by a signal: SIGINT (Ctrl-C) or SIGTERM (a job's time limit, `docker stop`, a
//! shutdown). While a training that keeps checkpoints runs, the first such signal asks it to save its
//! state at its next progress read and end there, where the signal's own action would lose every step
//! since its last checkpoint (up to [`DEFAULT_INTERVAL`](super::DEFAULT_INTERVAL) of them); the command
//! then says where it stopped and ends as the signal would have ended it, so that a shell or a job
//! runner sees the signal. A second signal, or one while no such training runs, ends vggq at once.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What a training that listens says as it starts.
pub const HOW_TO_STOP: &str =
    "Ctrl-C (SIGINT) or SIGTERM stops the training at its next progress read, its state saved for the same command to resume from";

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
        // The default action of SIGINT and SIGTERM ends the process; the exit is for a signal that its
        // table would not know.
        let _ = signal_hook::low_level::emulate_default_handler(self.0);
        std::process::exit(128 + self.0)
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(signal_hook::low_level::signal_name(self.0).unwrap_or("a signal"))
    }
}

/// Receives SIGINT and SIGTERM on a thread of its own from now on, for the life of the process.
pub fn watch_signals() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("vggq-signals".into()).spawn(move || {
        for signal in signals.forever() {
            let first = REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            if !first || LISTENERS.load(Ordering::SeqCst) == 0 {
                StopSignal(signal).end_process();
            }
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
