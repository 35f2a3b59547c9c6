//! `cargo xtask test`: the whole suite, as CI runs it.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::{onnxruntime, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let setup = crate::setup(sh)?;
    let _python = sh.push_env("VGGQ_PYTHON", &setup.python);
    let _onnxruntime = sh.push_env(onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime);
    let _shared = sh.push_env("VGGQ_SHARED", shared_dir());
    // --release: the tests train a small VGG on real images, and release shares its build with `all`.
    let cargo_args = args.cargo_args;
    cmd!(sh, "cargo test --release --workspace {cargo_args...}").run()?;
    Ok(())
}
