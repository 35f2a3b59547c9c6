//! `cargo xtask all`: the main job, end to end, into `artifacts/<profile>/`:
//! setup -> train -> quantize -> export -> eval -> report -> golden check. Every step but the report
//! skips itself when its outputs are up to date (`--force` redoes them).

use std::path::{Path, PathBuf};

use anyhow::Result;
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// `full` (the seed's recipe) or `smoke` (the same pipeline, minutes on 2 CPU cores).
    #[arg(long, default_value = "full")]
    pub profile: String,
    /// `auto`, `cuda` or `cpu`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// `pretrained` or `random`; defaults to the profile's.
    #[arg(long)]
    pub init: Option<String>,
    /// CIFAR-10 on disk: an archive or folder (official binary or ImageFolder layout). Default: download
    /// the official archive into the cache.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder (default `artifacts/<profile>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Redo every step even when its outputs are up to date.
    #[arg(long)]
    pub force: bool,
}

/// The four ONNX files `vggq export` writes, in the report's order.
const ONNX_FILES: [&str; 4] = [
    "mission16_vgg11bn_fp32.onnx",
    "mission16_vgg11bn_int8_dynamic.onnx",
    "mission16_vgg11bn_int8_static.onnx",
    "mission_16_vgg11bn_qat_int8_fp32match.onnx",
];

/// Runs the pipeline; returns the package folder.
pub fn run(sh: &Shell, args: Args) -> Result<PathBuf> {
    let setup = crate::setup(sh)?;
    let _onnxruntime = sh.push_env(crate::onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime);
    let _provenance = provenance_env(sh)?;
    let features = crate::cuda_feature_flags();
    cmd!(sh, "cargo build --release {features...} --bin vggq").run()?;
    let vggq = crate::target_dir(sh).join("release/vggq");
    let out = args.out.clone().unwrap_or_else(|| Path::new("artifacts").join(&args.profile));

    let data: &Vec<String> = &args.data.iter().flat_map(|d| ["--data".to_string(), d.display().to_string()]).collect();
    let force: &Vec<&str> = &if args.force { vec!["--force"] } else { vec![] };
    let init: Vec<String> = args.init.iter().flat_map(|i| ["--init".to_string(), i.clone()]).collect();
    let (profile, device) = (&args.profile, &args.device);

    cmd!(sh, "{vggq} train --profile {profile} --device {device} --out {out} {init...} {data...} {force...}").run()?;
    cmd!(sh, "{vggq} quantize --run {out} --device {device} {data...} {force...}").run()?;
    cmd!(sh, "{vggq} export --run {out}").run()?;
    let onnx: Vec<PathBuf> = ONNX_FILES.iter().map(|file| out.join(file)).collect();
    let metrics = out.join("metrics.json");
    cmd!(sh, "{vggq} eval {onnx...} --providers cuda,cpu --report {metrics} {data...} {force...}").run()?;
    cmd!(sh, "{vggq} report --run {out}").run()?;
    golden_check(sh, &out)?;
    cmd!(sh, "{vggq} verify {out}").run()?;
    Ok(out)
}

/// Compares the run's metric table with `golden/<profile>.snap` (insta): a changed metric fails here with
/// the diff; `cargo insta review` accepts a reviewed change.
pub fn golden_check(sh: &Shell, run: &Path) -> Result<()> {
    let _run = sh.push_env("VGGQ_GOLDEN_RUN", sh.current_dir().join(run));
    cmd!(sh, "cargo test --release --quiet --test golden").run().map_err(|error| {
        anyhow::anyhow!("{error}\nthe metrics differ from the reviewed golden table: if the change is intended, run `cargo insta review`")
    })
}

/// Git and toolchain facts for the package's manifest, which the `vggq` binary cannot know itself.
fn provenance_env(sh: &Shell) -> Result<Vec<xshell::PushEnv<'_>>> {
    let commit = cmd!(sh, "git rev-parse HEAD").read().unwrap_or_else(|_| "unknown".into());
    let dirty = cmd!(sh, "git status --porcelain --untracked-files=no").read().map(|s| !s.trim().is_empty()).unwrap_or(true);
    let rustc = cmd!(sh, "rustc --version").read().unwrap_or_else(|_| "unknown".into());
    Ok(vec![
        sh.push_env("VGGQ_GIT_COMMIT", commit),
        sh.push_env("VGGQ_GIT_DIRTY", dirty.to_string()),
        sh.push_env("VGGQ_RUSTC", rustc),
        sh.push_env("VGGQ_ONNXRUNTIME", crate::onnxruntime::VERSION),
    ])
}
