//! Debian's packages for what the checks need beside Rust (qemu-user, lavapipe, a cross toolchain),
//! installed where xtask runs as root with apt-get, as in CI.

use anyhow::Result;
use xshell::{cmd, Shell};

/// Installs `packages` where this runs as root on a machine with apt-get, saying why; returns whether it
/// could try (elsewhere the caller says what to install).
pub fn install(sh: &Shell, packages: &[&str], why: &str) -> Result<bool> {
    let as_root = cmd!(sh, "id -u").read().is_ok_and(|uid| uid.trim() == "0");
    if !as_root || cmd!(sh, "apt-get --version").quiet().ignore_stdout().run().is_err() {
        return Ok(false);
    }
    println!("installing {} (Debian's packages) {why}", packages.join(" "));
    let _quiet = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    // A fresh machine's package lists may be empty: update them once if the install cannot find a package.
    if cmd!(sh, "apt-get install -y --no-install-recommends {packages...}").run().is_err() {
        cmd!(sh, "apt-get update").run()?;
        cmd!(sh, "apt-get install -y --no-install-recommends {packages...}").run()?;
    }
    Ok(true)
}

/// Where `program` is on the `PATH`, if it is.
pub fn found(sh: &Shell, program: &str) -> Option<String> {
    cmd!(sh, "sh -c 'command -v $0' {program}").quiet().ignore_status().read().ok().filter(|path| !path.is_empty())
}
