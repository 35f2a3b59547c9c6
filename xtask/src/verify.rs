//! `cargo xtask verify [DIR]`: re-hash an artifact package against its manifest (exit code != 0 on any
//! missing, extra or changed file).

use std::path::PathBuf;

use anyhow::Result;
use vggq_core::run_folder::default_run_folder;
use vggq_core::ProfileName;
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// The package folder (default: `artifacts/full` in the workspace).
    #[arg(value_parser = crate::given_path)]
    dir: Option<PathBuf>,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let vggq = crate::build_vggq(sh)?;
    let dir = args.dir.unwrap_or_else(|| default_run_folder(ProfileName::Full));
    cmd!(sh, "{vggq} verify {dir}").run()?;
    Ok(())
}
