//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    // This thread joins the global pool as one of its workers: each of a step's parallel operations then
    // starts and finishes on it, where a thread outside the pool hands it over and sleeps until woken.
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global()?;
    cli::Cli::parse().run()
}
