//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    vggq::backend::join_cpu_pool()?;
    cli::Cli::parse().run()
}
