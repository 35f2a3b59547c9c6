//! `vggq verify DIR`: re-hash an artifact package against its manifest.

use std::path::PathBuf;

use anyhow::{bail, Result};
use vggq::package::MANIFEST_FILE;

use super::run_dir::require_from_step;

#[derive(clap::Args)]
pub struct Args {
    /// The package folder (with `manifest.json` and `SHA256SUMS`).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    require_from_step(&args.dir.join(MANIFEST_FILE), "report")?;
    let found = vggq::package::verify(&args.dir)?;
    if !found.is_empty() {
        bail!("{} does not match its manifest:\n{found}", args.dir.display());
    }
    println!("{}: every file matches its manifest", args.dir.display());
    Ok(())
}
