//! A run interrupted as a reboot or a job's time limit would interrupt it: the resume checks (the CLI
//! test, `cargo xtask test`'s lavapipe check) kill vggq once its checkpoint is written, then run it again.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `command` until `file` exists, then kills it (SIGKILL: nothing of vggq's own runs on the way
/// out). Fails where the command ends before it writes `file`; it is killed whatever the wait found.
pub fn kill_once_written(command: &mut Command, file: &Path) -> io::Result<()> {
    let mut child = command.spawn()?;
    let written = loop {
        if file.exists() {
            break Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                break Err(io::Error::other(format!("{command:?} ended ({status}) before it wrote {}", file.display())))
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => break Err(error),
        }
    };
    // Already ended where the wait failed: then kill finds nothing to do.
    let _ = child.kill();
    child.wait()?;
    written
}
