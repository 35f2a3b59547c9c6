//! `cargo xtask`: every workflow step of vggq, as Rust instead of shell scripts.
//!
//! Each command is a module with one `run` function; `main` parses the flags, moves to the workspace
//! root and dispatches. Commands shell out to cargo, the `vggq` binary and the pinned Python venv with
//! `xshell`, where arguments are values, never shell text.

mod all;
mod bench;
mod inspect;
mod onnxruntime;
mod python;
mod test;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test, benchmark and package vggq")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: train VGG11-BN on CIFAR-10 and write everything under `artifacts/<profile>/`.
    All(all::Args),
    /// The whole test suite, as CI runs it (sets up the pinned PyTorch venv first).
    Test(test::Args),
    /// Install what the pipeline and its tests need beside Rust (the pinned Python venv, ONNX Runtime), idempotently.
    Setup,
    /// Benchmarks, each beside its baseline on the same machine.
    Bench(bench::Args),
    /// Re-hash an artifact package against its manifest; fails on any missing, extra or changed file.
    Verify(verify::Args),
    /// List what a `.pth` file holds, as PyTorch sees it, without executing anything in it.
    Inspect(inspect::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(workspace_root());
    match cli.command {
        Command::All(args) => all::run(&sh, args).map(|out| println!("package: {}", out.display())),
        Command::Test(args) => test::run(&sh, args),
        Command::Setup => setup(&sh).map(|_| ()),
        Command::Bench(args) => bench::run(&sh, args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(&sh, args),
    }
}

/// The pinned Python venv and ONNX Runtime; says where they are. `all` and `test` run it first.
fn setup(sh: &xshell::Shell) -> Result<Setup> {
    let python = python::ensure_venv(sh)?;
    println!("python venv: {}", python.display());
    let onnxruntime = onnxruntime::ensure(sh)?;
    println!("ONNX Runtime: {} (the vggq binary finds it through {})", onnxruntime.display(), onnxruntime::ORT_DYLIB_PATH);
    Ok(Setup { python, onnxruntime })
}

/// Where `setup` put things.
struct Setup {
    python: PathBuf,
    onnxruntime: PathBuf,
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits inside the workspace").to_path_buf()
}

/// Cargo's target folder: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir(sh: &xshell::Shell) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    sh.current_dir().join(target)
}

/// `../shared` beside the checkout, or `$VGGQ_SHARED`: the team's fixtures, data and baselines.
fn shared_dir() -> PathBuf {
    std::env::var_os("VGGQ_SHARED").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared"))
}

/// `--features cuda` when this machine has a CUDA toolkit to build burn-cuda against, else nothing:
/// a CPU-only machine never compiles (or fails to compile) the CUDA backend.
fn cuda_feature_flags() -> Vec<String> {
    let toolkit = std::env::var_os("CUDA_PATH").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    if toolkit.join("include/cuda.h").is_file() {
        vec!["--features".into(), "cuda".into()]
    } else {
        Vec::new()
    }
}
