//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};

/// Large blocks are kept for reuse when freed (see [`vggq::backend::BlockReuse`]).
#[global_allocator]
static ALLOCATOR: vggq::backend::BlockReuse = vggq::backend::BlockReuse::new();

fn main() -> ExitCode {
    // An unknown `VGGQ_ISA` is a usage error (exit 2, as clap's), before any kernel runs with the
    // detected set instead.
    if let Err(error) = vggq::model::kernels::isa::Isa::configured() {
        eprintln!("error: {error}");
        std::process::exit(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            vggq::train::stop::say(format_args!("{}", cli::error_report(&error)));
            // A training stopped on a signal ends as the signal would have ended it (a shell's script, a
            // job runner, see the signal, not an exit status of our own).
            if let Some(signal) = vggq::train::stop::requested() {
                signal.end_process();
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    vggq::backend::export_cuda_path();
    vggq::backend::disable_device_select_without_display();
    vggq::backend::join_cpu_pool()?;
    vggq::train::stop::watch_signals().context("watching for SIGINT and SIGTERM")?;
    cli::Cli::parse_noting_environment().run()
}
