//! `cargo xtask test`: the whole suite, as CI runs it.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::{python, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let python = python::ensure_venv(sh)?;
    let _python = sh.push_env("VGGQ_PYTHON", &python);
    let _shared = sh.push_env("VGGQ_SHARED", shared_dir());
    // --release: the tests train a small VGG on real images, and release shares its build with `all`.
    let cargo_args = args.cargo_args;
    cmd!(sh, "cargo test --release --workspace {cargo_args...}").run()?;
    Ok(())
}
