//! `cargo xtask inspect FILE.pth`: what a PyTorch state_dict file holds (keys, dtypes, shapes, qschemes,
//! `_metadata`, zip entries), read with the restricted reader: nothing in the file is executed.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A `.pth` written by `torch.save(state_dict)` or by vggq.
    file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let listing = vggq_pth::inspect::render(&name, &bytes).with_context(|| format!("inspecting {}", args.file.display()))?;
    print!("{listing}");
    Ok(())
}
