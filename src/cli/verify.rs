//! `vggq verify DIR` (or `--run DIR`): re-hash an artifact package against its manifest.

use std::path::PathBuf;

use anyhow::{bail, Result};
use vggq::package::MANIFEST_FILE;
use vggq::steps::RunFolderLock;

use super::run_dir::require_from_step;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("package").required(true).args(["dir", "run"])))]
pub struct Args {
    /// The package folder (with `manifest.json` and `SHA256SUMS`).
    dir: Option<PathBuf>,
    /// The same, named as the run's other steps take it (`vggq report --run DIR`).
    #[arg(long)]
    run: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let dir = args.dir.or(args.run).expect("clap requires one of DIR and --run");
    require_from_step(&dir.join(MANIFEST_FILE), "report")?;
    // A package being rewritten may match its manifest a moment before a step removes it: refused
    // before the files are hashed, and where a writer began while they were.
    let refuse_while_written = || match RunFolderLock::writer(&dir) {
        Some(writer) => {
            bail!("{} is being written by another vggq ({writer}): verify it once that has finished", dir.display())
        }
        None => Ok(()),
    };
    refuse_while_written()?;
    let found = vggq::package::verify(&dir)?;
    refuse_while_written()?;
    if !found.is_empty() {
        bail!("{} does not match its manifest:\n{found}", dir.display());
    }
    println!("{}: every file matches its manifest", dir.display());
    Ok(())
}
