//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    cli::Cli::parse().run()
}
