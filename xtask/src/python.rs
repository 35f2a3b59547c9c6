//! The pinned Python venv (PyTorch, torchvision, onnx, onnxruntime) the tests and benchmarks use as
//! their independent reference; the main job never runs Python. It is large (CUDA wheels included:
//! PyPI's torch has no CPU-only build), so it lives in the user cache outside the repo and is reused
//! until its lock's pins change. `scripts/requirements-interop.txt` names what the tests use;
//! `xtask/locks/interop.txt` pins that and everything it depends on, with hashes (`cargo xtask lock`),
//! so that a new release of a dependency never changes the references under CI.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vggq_core::places::cache_dir;
use xshell::{cmd, Shell};

use crate::locks::requirement_lines;

/// The packages the tests use, pinned: the roots of [`INTEROP_LOCK`].
pub const REQUIREMENTS: &str = "scripts/requirements-interop.txt";
/// [`REQUIREMENTS`] and everything they depend on, with hashes: what the venv installs.
pub const INTEROP_LOCK: &str = "xtask/locks/interop.txt";
/// The CPython versions (`major.minor`) [`INTEROP_LOCK`] installs on, on each of [`INTEROP_MACHINES`]:
/// `cargo xtask lock` checks each (`Lock::resolve`), and the venv is made with no other.
pub const INTEROP_PYTHONS: [&str; 4] = ["3.11", "3.12", "3.13", "3.14"];
/// The Linux machines (`platform_machine`) [`INTEROP_LOCK`] installs on, with glibc 2.[`GLIBC_MINOR`] or
/// newer: `cargo xtask lock` checks each with each of [`INTEROP_PYTHONS`].
pub const INTEROP_MACHINES: [&str; 2] = ["x86_64", "aarch64"];
/// The newest glibc a wheel of [`INTEROP_LOCK`] may need, as its minor version (`manylinux_2_28`: RHEL 8,
/// Debian 10, Ubuntu 20.04 and later have it).
pub const GLIBC_MINOR: u32 = 28;

/// The environment variable naming the system's Python.
const SYSTEM_PYTHON_VARIABLE: &str = "VGGQ_SYSTEM_PYTHON";

/// The system's Python, which makes the venv and runs pip for the ONNX Runtime wheels:
/// `$VGGQ_SYSTEM_PYTHON`, else `python3`.
pub fn system_python() -> String {
    std::env::var(SYSTEM_PYTHON_VARIABLE).unwrap_or_else(|_| "python3".into())
}

/// Creates the venv if its lock changed or it is incomplete; returns its python.
pub fn ensure_venv(sh: &Shell) -> Result<PathBuf> {
    let lock = sh.read_file(INTEROP_LOCK).with_context(|| format!("reading {INTEROP_LOCK}"))?;
    let installs = installs(&lock);
    let venv = cache_dir().join(format!("venv-{}", short_hash(&installs)));
    let python = venv.join("bin/python");
    // Written last, so an interrupted install is redone rather than trusted; it records the interpreter
    // too: after an upgrade of the system's Python, the venv's `python` (a link to it) is another version,
    // which sees none of the venv's packages.
    let complete = venv.join(".vggq-complete");
    let interpreter = || cmd!(sh, "{python} -c 'import sys; print(sys.version)'").quiet().ignore_stderr().read().ok();
    let record = |version: &str| format!("{installs}\n# made with Python {version}\n");
    if let (Ok(recorded), Some(version)) = (sh.read_file(&complete), interpreter()) {
        if recorded == record(&version) {
            return Ok(python);
        }
    }
    let system_python = system_python();
    let found = cmd!(sh, "{system_python} -c 'import sys; print(sys.implementation.name, \"%d.%d\" % sys.version_info[:2])'")
        .quiet()
        .read()
        .with_context(|| format!("running {system_python}, which makes the venv (is python3 installed?)"))?;
    if !INTEROP_PYTHONS.iter().any(|version| found == format!("cpython {version}")) {
        bail!(
            "{system_python} is {found}, and {INTEROP_LOCK} installs on CPython {} only: name one of them in \
             {SYSTEM_PYTHON_VARIABLE} (`cargo xtask lock` checks the lock for each of them)",
            INTEROP_PYTHONS.join(", ")
        );
    }
    eprintln!("setting up the pinned Python venv in {} (PyTorch with its CUDA wheels: a few GB, once)", venv.display());
    cmd!(sh, "{system_python} -m venv --clear {venv}").run().context("creating the venv (is python3 with venv installed?)")?;
    cmd!(
        sh,
        "{python} -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r {INTEROP_LOCK}"
    )
    .run()
    .with_context(|| {
        format!(
            "installing the locked Python packages (needs PyPI, and Linux on {} with glibc 2.{GLIBC_MINOR} or \
             newer, which {INTEROP_LOCK} was checked for)",
            INTEROP_MACHINES.join(" or ")
        )
    })?;
    cmd!(sh, "{python} -c 'import torch, torchvision, onnx, onnxruntime'").run().context("checking the venv")?;
    let version = interpreter().context("the venv's python does not run")?;
    sh.write_file(&complete, record(&version))?;
    Ok(python)
}

/// What a venv installs from a lock: its requirement lines. The venv is named and recorded by them, not
/// by the whole text, so that rewording the lock's comments does not download PyTorch again.
fn installs(lock: &str) -> String {
    requirement_lines(lock).join("\n")
}

/// FNV-1a of what the venv installs: names the venv after what is in it.
fn short_hash(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:012x}", hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_is_named_by_what_it_installs() {
        let lock = "# Written on 2026-12-04.\na==1.0 \\\n    --hash=sha256:00\n";
        let name = |lock: &str| short_hash(&installs(lock));
        assert_eq!(name(lock), name(&lock.replace("2026-12-04", "2026-12-05, reworded")));
        assert_ne!(name(lock), name(&lock.replace("a==1.0", "a==1.1")));
        assert_ne!(name(lock), name(&lock.replace(":00", ":01")));
    }
}
