//! `cargo xtask all`: the main job, end to end, into `artifacts/<profile>/`:
//! ONNX Runtime -> train -> quantize -> export -> eval -> report -> verify -> golden check. Every step
//! but the report skips itself when its outputs are up to date (`--force` redoes them). Needs Rust and
//! `python3 -m pip` (for ONNX Runtime's wheel); the Python venv is the tests' alone.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use vggq_core::places::{has_wgpu_api, VULKAN_LOADER};
use vggq_core::run_folder::default_run_folder;
use vggq_core::{flag_value, DeviceRequest, Init, Limits, ProfileName};
use xshell::{cmd, Shell};

use crate::onnxruntime;

#[derive(clap::Args)]
pub struct Args {
    /// The recipe: `full` (the seed's) or `smoke` (the same pipeline, minutes on 2 CPU cores).
    #[arg(long, value_enum, default_value = "full")]
    pub profile: ProfileName,
    /// Where to train and evaluate: `auto` (CUDA when usable, else a GPU through wgpu, else the CPU, and
    /// says why), `cuda` (any fallback is an error), `wgpu` (training on wgpu's default adapter, lavapipe
    /// included; evaluation on the CPU) or `cpu`. The full profile on a CPU needs `--device cpu`.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceRequest,
    /// Overrides the profile's initialisation.
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// CIFAR-10 on disk: an archive or folder (official binary or ImageFolder layout). Default: download
    /// the official archive into the cache.
    #[arg(long, value_parser = crate::given_path)]
    pub data: Option<PathBuf>,
    /// Output folder (default `artifacts/<profile>` in the workspace).
    #[arg(long, value_parser = crate::given_path)]
    pub out: Option<PathBuf>,
    /// Redo every step even when its outputs are up to date.
    #[arg(long)]
    pub force: bool,
    /// cubecl's autotune cache for a GPU run (default: `<out>/autotune`); give the one a golden table
    /// was recorded with to replay its kernel choices.
    #[arg(long, value_parser = crate::given_path)]
    pub autotune_cache: Option<PathBuf>,
    #[command(flatten)]
    pub limits: Limits,
}

/// Runs the pipeline; returns the package folder.
pub fn run(sh: &Shell, args: Args) -> Result<PathBuf> {
    if args.device == DeviceRequest::Wgpu && !has_wgpu_api() {
        anyhow::bail!(
            "--device wgpu: this machine has no Vulkan loader ({VULKAN_LOADER}), so vggq is built without wgpu: install \
             libvulkan1 and a Vulkan driver (your GPU's, or mesa-vulkan-drivers for lavapipe on the CPU)"
        );
    }
    let (vggq, onnxruntime, _) = crate::run_beside(sh, crate::build_vggq, onnxruntime::ensure)?;
    let _onnxruntime = sh.push_env(onnxruntime::ORT_DYLIB_PATH, &onnxruntime.library);
    let _provenance = provenance_env(sh);
    let out = args.out.clone().unwrap_or_else(|| default_run_folder(args.profile));

    let data: &Vec<String> = &args.data.iter().flat_map(|d| ["--data".to_string(), d.display().to_string()]).collect();
    let force: &Vec<&str> = &if args.force { vec!["--force"] } else { vec![] };
    let init: Vec<String> = args.init.iter().flat_map(|&i| ["--init".to_string(), flag_value(i)]).collect();
    let limits = args.limits.to_args();
    let autotune: &Vec<String> =
        &args.autotune_cache.iter().flat_map(|d| ["--autotune-cache".to_string(), d.display().to_string()]).collect();
    let (profile, device) = (flag_value(args.profile), flag_value(args.device));

    cmd!(
        sh,
        "{vggq} train --profile {profile} --device {device} --out {out} {init...} {limits...} {data...} {autotune...} {force...}"
    )
    .run()?;
    cmd!(sh, "{vggq} quantize --run {out} --device {device} {data...} {autotune...} {force...}").run()?;
    cmd!(sh, "{vggq} export --run {out} {force...}").run()?;
    cmd!(sh, "{vggq} eval --run {out} --device {device} {data...} {force...}").run()?;
    cmd!(sh, "{vggq} report --run {out}").run()?;
    // The package is checked whole before its metrics are: a golden difference never hides a broken one.
    cmd!(sh, "{vggq} verify {out}").run()?;
    let pending = golden_check(sh, &out)?;
    println!("package: {}", out.display());
    if let Some(message) = pending {
        println!("{message}");
    }
    Ok(out)
}

/// Compares the run's metric table with its reviewed golden, `golden/<profile>-<device>.snap`
/// (`tests/golden.rs`): a difference fails here, naming the rows that differ and the machine facts of
/// both runs. A run that is not its profile's recipe (limits, other data) passes, saying so. A run whose
/// profile and device have no reviewed golden yet passes and leaves the table as a pending snapshot
/// (`.snap.new`); the returned message says how to review and accept it. Under CI (`CI=true`) a
/// missing golden fails.
pub fn golden_check(sh: &Shell, run: &Path) -> Result<Option<String>> {
    let _run = sh.push_env("VGGQ_GOLDEN_RUN", sh.current_dir().join(run));
    let flags = crate::vggq_cargo_flags();
    let started = SystemTime::now();
    // Uncaptured: a run that is not its profile's recipe passes for want of a golden table, and the test
    // prints why. insta's assertion passes where the test expects it to fail (a table with no reviewed
    // one, which it leaves pending), so that no panic is printed above a passing check; the test fails
    // by itself where it must.
    let _expected_failure = sh.push_env("INSTA_FORCE_PASS", "1");
    cmd!(sh, "cargo test --release --quiet {flags...} --test golden -- --nocapture").run().map_err(|error| {
        anyhow::anyhow!("{error}\n{}: the golden check failed (what differs is printed above)", run.display())
    })?;
    let pending = pending_snapshots(&sh.current_dir().join("golden"), started)?;
    Ok((!pending.is_empty()).then(|| {
        let names: Vec<String> = pending.iter().map(|p| p.display().to_string()).collect();
        format!(
            "no reviewed golden table for this profile and device yet: the run's table is pending in {}.\n\
             Review it and accept it into golden/ (then commit it):\n  \
             cargo install cargo-insta --locked   # once\n  \
             cargo insta review                   # `a` accepts\n\
             or read it and rename it to drop `.new`.",
            names.join(", ")
        )
    }))
}

/// Pending snapshots (`*.snap.new`) written since `since`.
fn pending_snapshots(golden: &Path, since: SystemTime) -> Result<Vec<PathBuf>> {
    let mut pending = Vec::new();
    for entry in std::fs::read_dir(golden).with_context(|| format!("reading {}", golden.display()))? {
        let path = entry?.path();
        let fresh = std::fs::metadata(&path)?.modified()? >= since;
        if fresh && path.to_string_lossy().ends_with(".snap.new") {
            pending.push(Path::new("golden").join(path.file_name().expect("a file")));
        }
    }
    Ok(pending)
}

/// The git facts for the package's manifest, which the `vggq` binary cannot know itself (it knows its
/// compiler and the ONNX Runtime it ran), as the variables `vggq report` reads: the commit and whether
/// tracked files differ from it. What git cannot tell (outside a checkout, or without git) is left out,
/// and the manifest says it is unknown.
pub fn git_facts(sh: &Shell) -> Vec<(&'static str, String)> {
    let Ok(commit) = cmd!(sh, "git rev-parse HEAD").read() else { return Vec::new() };
    let mut facts = vec![("VGGQ_GIT_COMMIT", commit)];
    if let Ok(status) = cmd!(sh, "git status --porcelain --untracked-files=no").read() {
        facts.push(("VGGQ_GIT_DIRTY", (!status.trim().is_empty()).to_string()));
    }
    facts
}

/// [`git_facts`] in the environment of the steps `all` runs.
fn provenance_env(sh: &Shell) -> Vec<xshell::PushEnv<'_>> {
    git_facts(sh).into_iter().map(|(variable, value)| sh.push_env(variable, value)).collect()
}
