//! `cargo xtask device-golden DIR`: the golden check of the GPU check's smoke run. The GPU machine has no
//! cargo, so `scripts/device-check.sh` brings the run's files home instead (into DIR, the `device` tool's
//! `files_at`): `metrics.json`, and the training and quantization reports and manifest inside
//! `results.tar.gz`. Laid out as a run folder, they are what the golden check reads: a profile and device
//! without a reviewed table (`golden/smoke-cuda.snap`, the first GPU run) get the run's table pending as
//! `.snap.new`, with the header insta writes (the machine's facts), for `cargo insta review`, and the
//! check fails where that table is beyond the recipe's spread of the profile's reviewed tables on other
//! devices; one with a reviewed table is compared with it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vggq_core::run_folder::{MANIFEST_FILE, METRICS_FILE, QUANT_REPORT_FILE, TRAIN_REPORT_FILE};
use xshell::{cmd, Shell};

/// The archive the check packs what does not come home as a file of its own into (the bundle's
/// `vggq.env` tells the script).
pub const RESULTS_ARCHIVE: &str = "results.tar.gz";
/// How the check names the smoke run's files in that archive: `smoke-<file>` (likewise).
pub const SMOKE_RUN_PREFIX: &str = "smoke-";

#[derive(clap::Args)]
pub struct Args {
    /// The folder of the files the GPU check brought home (`metrics.json`, `results.tar.gz`, ...).
    #[arg(value_parser = crate::given_path)]
    check: PathBuf,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let run = smoke_run(sh, &args.check)?;
    println!("the GPU check's smoke run, as a run folder: {}", run.display());
    if let Some(pending) = crate::all::golden_check(sh, &run)? {
        println!("{pending}");
    }
    Ok(())
}

/// The smoke run's files from the check's files in `check`, in a fresh run folder under the target folder.
pub fn smoke_run(sh: &Shell, check: &Path) -> Result<PathBuf> {
    // Relative to the workspace root, where the shell runs, not to this process's folder.
    let check = sh.current_dir().join(check);
    let folder = crate::target_dir().join("device-golden");
    if folder.exists() {
        std::fs::remove_dir_all(&folder).with_context(|| format!("clearing {}", folder.display()))?;
    }
    let (unpacked, run) = (folder.join("results"), folder.join("smoke"));
    for made in [&unpacked, &run] {
        std::fs::create_dir_all(made).with_context(|| format!("making {}", made.display()))?;
    }
    let archive = check.join(RESULTS_ARCHIVE);
    if !archive.is_file() {
        bail!("{} holds no {RESULTS_ARCHIVE}: give the folder the GPU check's files came home to", check.display());
    }
    cmd!(sh, "tar -xzf {archive} -C {unpacked}").run()?;
    let in_archive = |name: &str| unpacked.join(format!("{SMOKE_RUN_PREFIX}{name}"));
    let files = [
        (in_archive(TRAIN_REPORT_FILE), TRAIN_REPORT_FILE),
        (in_archive(QUANT_REPORT_FILE), QUANT_REPORT_FILE),
        (in_archive(MANIFEST_FILE), MANIFEST_FILE),
        (check.join(METRICS_FILE), METRICS_FILE),
    ];
    for (from, name) in files {
        std::fs::copy(&from, run.join(name))
            .with_context(|| format!("{} is not there: the check's smoke run did not get that far", from.display()))?;
    }
    Ok(run)
}
