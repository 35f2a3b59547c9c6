//! The signals that end a run early, as `vggq` and `cargo xtask` both watch them: SIGINT (Ctrl-C, sent to
//! the terminal's whole process group), SIGHUP (the terminal closed: an SSH session that dropped, sent to
//! that group too) and SIGTERM (a job's time limit, `docker stop`, a shutdown). Each
//! acts on them (a training saves its state, xtask waits for the commands it runs) and then ends as the
//! signal's own action would have ended it, so that a shell's script or a job runner sees the signal.
//! And SIGPIPE (a reader of vggq's output that stopped reading), which ends vggq as it ends any Unix tool.

pub use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
pub use signal_hook::iterator::Signals;

/// SIGINT, SIGHUP and SIGTERM, less any that this process started with ignored: a background job of a
/// shell without job control ignores SIGINT, and a handler would make it answer the terminal's Ctrl-C;
/// `nohup` ignores SIGHUP, and a handler would make a run started with it end with its terminal.
pub fn stop_signals() -> Vec<i32> {
    [SIGINT, SIGHUP, SIGTERM].into_iter().filter(|&signal| !started_ignored(signal)).collect()
}

/// Whether `signal` reaches the terminal's whole process group (Ctrl-C's SIGINT, a hang-up's SIGHUP),
/// and so the commands a process runs in it as well as the process.
pub fn reaches_the_group(signal: i32) -> bool {
    [SIGINT, SIGHUP].contains(&signal)
}

/// Whether `signal`'s action is to be ignored, as this process was started with it.
fn started_ignored(signal: i32) -> bool {
    // SAFETY: with no new action given, sigaction only writes the current one into `current`, a plain C
    // struct for which all zeros is a valid value.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_IGN
    }
}

/// Gives SIGPIPE back its default action, which Rust's runtime sets to ignore: `vggq ... | head` then ends
/// vggq quietly once `head` has read its fill, as any Unix tool ends, where the next print would panic on
/// the closed pipe (exit 101).
pub fn end_on_closed_pipe() {
    // SAFETY: SIG_DFL is a plain disposition, set first thing in `main`, before any other thread starts.
    unsafe { libc::signal(SIGPIPE, libc::SIG_DFL) };
}

/// Ends the process as `signal`'s own action would.
pub fn end_as(signal: i32) -> ! {
    // Each stop signal's default action ends the process; the exit is the shell's code for one that the
    // table would not know.
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal)
}

/// Sends `signal` to the process `pid`; one that has ended since is no error.
pub fn send(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other(format!("no process can have the id {pid}")))?;
    // SAFETY: kill only asks the kernel to deliver a signal; it touches no memory of this process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error() {
        error if error.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        error => Err(error),
    }
}

/// `SIGINT`, `SIGHUP`, `SIGTERM`.
pub fn name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a signal")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal ignored at the start is left ignored; one with its default action is watched.
    #[test]
    fn an_ignored_signal_is_not_watched() {
        // SAFETY: SIG_IGN and SIG_DFL are plain dispositions; the test binary does not use SIGTERM.
        unsafe { libc::signal(SIGTERM, libc::SIG_IGN) };
        assert!(!stop_signals().contains(&SIGTERM));
        unsafe { libc::signal(SIGTERM, libc::SIG_DFL) };
        assert!(stop_signals().contains(&SIGTERM));
        assert_eq!((name(SIGINT), name(SIGHUP), name(SIGTERM)), ("SIGINT", "SIGHUP", "SIGTERM"));
    }

    /// A signal sent reaches its process; one sent to a process that has ended is no error.
    #[test]
    fn a_sent_signal_ends_its_process() {
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        send(child.id(), SIGTERM).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(SIGTERM));
        // Above Linux's largest process id (2^22): no such process, as for one that has ended.
        send((1 << 22) + 1, SIGTERM).unwrap();
        assert!(send(u32::MAX, SIGTERM).is_err());
    }
}
