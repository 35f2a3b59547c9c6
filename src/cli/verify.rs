//! `vggq verify DIR`: re-hash an artifact package against its manifest.

use std::path::PathBuf;

use anyhow::{bail, Result};
use vggq::package::MANIFEST_FILE;
use vggq::steps::RunFolderLock;

use super::run_dir::require_from_step;

#[derive(clap::Args)]
pub struct Args {
    /// The package folder (with `manifest.json` and `SHA256SUMS`).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    require_from_step(&args.dir.join(MANIFEST_FILE), "report")?;
    // A package being rewritten may match its manifest a moment before a step removes it: refused
    // before the files are hashed, and where a writer began while they were.
    let refuse_while_written = || match RunFolderLock::writer(&args.dir) {
        Some(writer) => {
            bail!("{} is being written by another vggq ({writer}): verify it once that has finished", args.dir.display())
        }
        None => Ok(()),
    };
    refuse_while_written()?;
    let found = vggq::package::verify(&args.dir)?;
    refuse_while_written()?;
    if !found.is_empty() {
        bail!("{} does not match its manifest:\n{found}", args.dir.display());
    }
    println!("{}: every file matches its manifest", args.dir.display());
    Ok(())
}
