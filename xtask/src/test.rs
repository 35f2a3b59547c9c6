//! `cargo xtask test`: the whole suite, as CI runs it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::{all, onnxruntime, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// Where the second smoke run goes, to compare checksums with the first.
const RERUN_DIR: &str = "target/reproducibility/smoke";

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    // The smoke pipeline end to end on the JPEG copy, golden check included; then again from scratch
    // into another folder: same machine, code, seed and data must give the same SHA256SUMS.
    let smoke = |out: Option<PathBuf>, force: bool| all::Args {
        profile: "smoke".into(),
        device: "cpu".into(),
        init: None,
        data: Some(shared_dir().join("data/cifar10-jpeg.tar.gz")),
        out,
        force,
    };
    let first = all::run(sh, smoke(None, false))?;
    let second = all::run(sh, smoke(Some(PathBuf::from(RERUN_DIR)), true))?;
    let (a, b) = (sh.read_file(first.join("SHA256SUMS"))?, sh.read_file(second.join("SHA256SUMS"))?);
    if a != b {
        bail!("two smoke runs gave different SHA256SUMS:\n{}:\n{a}\n{}:\n{b}", first.display(), second.display());
    }
    println!("reproducible: {} and {} have identical SHA256SUMS", first.display(), second.display());

    let setup = crate::setup(sh)?;
    let _python = sh.push_env("VGGQ_PYTHON", &setup.python);
    let _onnxruntime = sh.push_env(onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime);
    let _shared = sh.push_env("VGGQ_SHARED", shared_dir());
    let _golden = sh.push_env("VGGQ_GOLDEN_RUN", sh.current_dir().join(first));
    // --release: the tests train a small VGG on real images, and release shares its build with `all`.
    let cargo_args = args.cargo_args;
    cmd!(sh, "cargo test --release --workspace {cargo_args...}").run()?;
    // The CUDA backend is compiled only where a toolkit is present; type-check it here so a GPU
    // machine never meets code that does not build.
    cmd!(sh, "cargo check --features cuda --bin vggq").run()?;
    Ok(())
}
