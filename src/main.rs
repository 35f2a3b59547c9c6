//! The `vggq` command line: the pipeline's steps as subcommands. `cargo xtask all` drives it.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};

/// Large blocks are kept for reuse when freed (see [`vggq::backend::BlockReuse`]), and smaller ones'
/// pages stay mapped (`keep_heap_mapped`, first thing in `main`).
#[global_allocator]
static ALLOCATOR: vggq::backend::BlockReuse = vggq::backend::BlockReuse::new();

fn main() -> ExitCode {
    vggq::backend::keep_heap_mapped();
    vggq_core::signals::end_on_closed_pipe();
    // An unknown `VGGQ_ISA` is a usage error (exit 2, as clap's), before any kernel runs with the
    // detected set instead.
    if let Err(error) = vggq::model::kernels::isa::Isa::configured() {
        eprintln!("error: {error}");
        std::process::exit(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A stop the user asked for is said as what it is, not as an error.
            let report = stop_message(&error).unwrap_or_else(|| cli::error_report(&error));
            vggq::train::stop::say(format_args!("{report}"));
            // A training stopped on a signal ends as the signal would have ended it (a shell's script, a
            // job runner, see the signal, not an exit status of our own).
            if let Some(signal) = vggq::train::stop::requested() {
                signal.end_process();
            }
            ExitCode::FAILURE
        }
    }
}

/// What a training stopped on a signal says, where `error` is that stop (a pipeline's step holds the
/// checkpoint's error transparently: the chain then shows the pipeline's error in its place).
fn stop_message(error: &anyhow::Error) -> Option<String> {
    use vggq::{pipeline::PipelineError, train::CheckpointError};
    error.chain().find_map(|cause| {
        let checkpoint = match cause.downcast_ref::<PipelineError>() {
            Some(PipelineError::Checkpoint(checkpoint)) => Some(checkpoint),
            _ => cause.downcast_ref::<CheckpointError>(),
        };
        checkpoint.filter(|checkpoint| matches!(checkpoint, CheckpointError::Stopped { .. })).map(ToString::to_string)
    })
}

fn run() -> Result<()> {
    vggq::backend::export_cuda_path();
    vggq::backend::disable_device_select_without_display();
    vggq::backend::join_cpu_pool()?;
    vggq::train::stop::watch_signals().context("watching for SIGINT, SIGHUP and SIGTERM")?;
    cli::Cli::parse_noting_environment().run()
}
