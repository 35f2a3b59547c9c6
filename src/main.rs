//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    // An unknown `VGGQ_ISA` is an error here, before any kernel runs with the detected set instead.
    vggq::model::kernels::isa::Isa::configured()?;
    vggq::backend::join_cpu_pool()?;
    cli::Cli::parse().run()
}
