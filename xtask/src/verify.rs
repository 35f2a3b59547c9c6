//! `cargo xtask verify [DIR]`: re-hash an artifact package against its manifest (exit code != 0 on any
//! missing, extra or changed file).

use anyhow::Result;
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// The package folder.
    #[arg(default_value = "artifacts/full")]
    dir: String,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let vggq = crate::build_vggq(sh)?;
    let dir = args.dir;
    cmd!(sh, "{vggq} verify {dir}").run()?;
    Ok(())
}
