//! `cargo xtask all`: the main job, end to end, into `artifacts/<profile>/`.

use anyhow::Result;
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// `full` (the seed's recipe) or `smoke` (the same pipeline, minutes on 2 CPU cores).
    #[arg(long, default_value = "full")]
    profile: String,
    /// `auto`, `cuda` or `cpu`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// `pretrained` or `random`; defaults to the profile's.
    #[arg(long)]
    init: Option<String>,
    /// CIFAR-10 on disk: an archive or folder (official binary or ImageFolder layout). Default: download
    /// the official archive into the cache.
    #[arg(long)]
    data: Option<String>,
    /// Output folder (default `artifacts/<profile>`).
    #[arg(long)]
    out: Option<String>,
    /// Redo every step even when its outputs are up to date.
    #[arg(long)]
    force: bool,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let setup = crate::setup(sh)?;
    let _onnxruntime = sh.push_env(crate::onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime);
    let features = crate::cuda_feature_flags();
    let mut train_args = vec!["--profile".to_string(), args.profile, "--device".into(), args.device];
    for (flag, value) in [("--init", args.init), ("--data", args.data), ("--out", args.out)] {
        if let Some(value) = value {
            train_args.extend([flag.to_string(), value]);
        }
    }
    if args.force {
        train_args.push("--force".into());
    }
    cmd!(sh, "cargo run --release {features...} --bin vggq -- train {train_args...}").run()?;
    Ok(())
}
