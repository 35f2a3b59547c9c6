//! `vggq bench-train`: images/s of the real training loop (float and QAT, host reads and uploads
//! included) and of evaluation, on random images, at a profile's shapes or any others; in rounds, each
//! followed by a round of a baseline command (PyTorch's `torch_train_bench.py`) at the same shapes, so
//! that the two alternate and every ratio is the median of per-round ratios. The summaries are printed
//! after every round; the last block is the whole run's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use vggq::backend::{self, DeviceRequest, OnBackend};
use vggq::data::DEFAULT_BATCH_SIZE;
use vggq::model::FEATURE_STRIDE;
use vggq::model::{TrainingBackend, VggConfig};
use vggq::throughput::{measure, Throughput};
use vggq_core::limits::positive;
use vggq_core::rounds::{Comparison, DEFAULT_ROUNDS};
use vggq_core::{flag_value, ModelShape, ProfileName};

#[derive(clap::Args)]
pub struct Args {
    /// Where vggq's side runs, as for `vggq train`; by default the CPU, so that a benchmark names the
    /// device it measures rather than one a probe picks.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceRequest,
    /// The network shapes of a profile (`--size`, `--width-div` and `--hidden` override them).
    #[arg(long, value_enum, default_value = "full")]
    profile: ProfileName,
    /// Input side in pixels: a multiple of 32 (the five max-pools halve it five times) up to 1024.
    #[arg(long, value_parser = input_side)]
    size: Option<usize>,
    /// Conv widths are VGG11's divided by this (1 to 64: the narrowest layer keeps a channel).
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    width_div: Option<usize>,
    /// Width of the hidden classifier layers, 1 to 16384 (four times VGG's 4096: at the full shapes the
    /// classifier's weights, gradients and momenta then take 4.5 GiB).
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=16384))]
    hidden: Option<usize>,
    /// Images per step, 1 to 4096.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    batch: usize,
    /// Seconds of measurement per figure and round, after warm-up (more than 0).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    seconds: f64,
    /// Rounds of vggq's figures, each followed by one of the baseline's.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = positive)]
    rounds: usize,
    /// cubecl's autotune cache for a GPU (see `vggq train --help`); default: cubecl's own, under `target/`.
    #[arg(long)]
    autotune_cache: Option<PathBuf>,
    /// What the baseline is called in the output.
    #[arg(long, default_value = "baseline")]
    baseline_name: String,
    /// The baseline: a command that prints `... train: N img/s`, `... eval: N img/s` and optionally
    /// `... qat train: N img/s` lines, run after each round with `--size S --width-div D --hidden H
    /// --batch B --seconds T` appended (`torch_train_bench.py` takes exactly these).
    #[arg(last = true)]
    baseline: Vec<String>,
}

impl Args {
    fn shape(&self) -> ModelShape {
        let profile = self.profile.model_shape();
        ModelShape {
            input_size: self.size.unwrap_or(profile.input_size),
            width_divisor: self.width_div.unwrap_or(profile.width_divisor),
            hidden: self.hidden.unwrap_or(profile.hidden),
        }
    }
}

/// The figures a round measures, in the order they are printed: vggq's name and the baseline's.
const FIGURES: [&str; 3] = ["train", "qat train", "eval"];

/// One round of both sides.
struct Round {
    ours: Throughput,
    /// The baseline's figures by [`FIGURES`], where it printed them.
    theirs: [Option<f64>; 3],
}

/// vggq's rounds on one backend, each followed by the baseline's.
struct Rounds<'a>(&'a Args, VggConfig);

impl OnBackend for Rounds<'_> {
    type Output = Result<()>;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Result<()> {
        let Rounds(args, config) = self;
        let mut rounds = Vec::with_capacity(args.rounds);
        for round in 1..=args.rounds {
            let ours = measure::<B>(&config, args.batch, args.seconds, device);
            println!(
                "round {round}/{}: vggq train {:.1}, qat train {:.1}, eval {:.1} img/s; host reads/step: train {:.2}, qat {:.2}",
                args.rounds,
                ours.train_images_per_sec,
                ours.qat_images_per_sec,
                ours.eval_images_per_sec,
                ours.train_reads_per_step,
                ours.qat_reads_per_step
            );
            let theirs = if args.baseline.is_empty() { [None; 3] } else { baseline_round(args, round)? };
            rounds.push(Round { ours, theirs });
            // After every round, not only the last: a bench stopped at a time limit (the GPU check caps
            // each stage) still leaves the ratios of the rounds it finished. The last block is the run's.
            print_summaries(args, &rounds);
        }
        Ok(())
    }
}

/// The summary lines of the rounds so far: each figure, then QAT's cost against the float step.
fn print_summaries(args: &Args, rounds: &[Round]) {
    let ours = |round: &Round| {
        let t = &round.ours;
        [t.train_images_per_sec, t.qat_images_per_sec, t.eval_images_per_sec]
    };
    for (i, figure) in FIGURES.iter().enumerate() {
        let comparison = Comparison {
            figure: figure.to_string(),
            ours: rounds.iter().map(|r| ours(r)[i]).collect(),
            theirs: rounds.iter().map(|r| r.theirs[i]).collect(),
        };
        println!("{}", comparison.summary("vggq", &args.baseline_name));
    }
    // What QAT costs against the float step, on each side.
    let qat_over_fp32 = Comparison {
        figure: "qat/fp32 train".into(),
        ours: rounds.iter().map(|r| ours(r)[1] / ours(r)[0]).collect(),
        theirs: rounds.iter().map(|r| r.theirs[1].zip(r.theirs[0]).map(|(qat, fp32)| qat / fp32)).collect(),
    };
    println!("{}", qat_over_fp32.summary("vggq", &args.baseline_name));
}

/// Runs the baseline once at the run's shapes and reads its figures.
fn baseline_round(args: &Args, round: usize) -> Result<[Option<f64>; 3]> {
    let shape = args.shape();
    let (program, rest) = args.baseline.split_first().context("no baseline command")?;
    let output = Command::new(program)
        .args(rest)
        .args(["--size", &shape.input_size.to_string(), "--width-div", &shape.width_divisor.to_string()])
        .args(["--hidden", &shape.hidden.to_string(), "--batch", &args.batch.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the baseline `{}`", args.baseline.join(" ")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        println!("round {round}/{}: {}: {line}", args.rounds, args.baseline_name);
    }
    if !output.status.success() {
        bail!("the baseline `{}` failed ({})", args.baseline.join(" "), output.status);
    }
    let figures = FIGURES.map(|figure| figure_in(&stdout, figure));
    if figures[0].is_none() || figures[2].is_none() {
        bail!("the baseline printed no `train: N img/s` and `eval: N img/s` lines with N a positive number");
    }
    Ok(figures)
}

/// `N` of the first line reading `... <figure>: N img/s` (`train` is not `qat train`), a positive number
/// (a ratio to `nan` or `-3` would be no figure).
fn figure_in(output: &str, figure: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let (label, rest) = line.split_once(": ")?;
        let named = label == figure || label.ends_with(&format!(" {figure}"));
        let qat_as_train = figure == "train" && label.ends_with(" qat train");
        let value = rest.split(" img/s").next()?;
        let value = (named && !qat_as_train).then(|| value.trim().parse::<f64>().ok()).flatten();
        value.filter(|value| value.is_finite() && *value > 0.0)
    })
}

/// Fails unless the baseline's program is there to run (a path to a file, or a name on `$PATH`): said
/// before vggq's first round, not after it.
fn require_program(baseline: &[String]) -> Result<()> {
    let Some(program) = baseline.first() else { return Ok(()) };
    let program = Path::new(program);
    let found = if program.components().count() > 1 {
        program.is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|folder| folder.join(program).is_file()))
    };
    if !found {
        bail!("the baseline's program `{}` is not there to run (a path to a file, or a name on $PATH)", program.display());
    }
    Ok(())
}

/// `--size`: a positive multiple of [`FEATURE_STRIDE`], at most 1024.
fn input_side(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(side) if side > 0 && side <= 1024 && side % FEATURE_STRIDE == 0 => Ok(side),
        _ => Err(format!("must be a multiple of {FEATURE_STRIDE} from {FEATURE_STRIDE} to 1024")),
    }
}

/// `--seconds`: a finite number above zero.
fn seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err("must be a number of seconds above 0".into()),
    }
}

pub fn run(args: Args) -> Result<()> {
    require_program(&args.baseline)?;
    let _cache_folders = backend::autotune::use_caches(args.autotune_cache.as_deref())?;
    let selection = backend::select(args.device)?;
    eprintln!("{}", selection.announcement());
    let shape = args.shape();
    let config = VggConfig::for_input(shape.width_divisor, shape.input_size, shape.hidden, 10);
    println!(
        "shapes: {} px, width/{}, hidden {}, batch {}, {} ({} threads); {} rounds of {} s per figure{}",
        shape.input_size,
        shape.width_divisor,
        shape.hidden,
        args.batch,
        selection.backend.name(),
        rayon::current_num_threads(),
        args.rounds,
        args.seconds,
        if args.baseline.is_empty() { String::new() } else { format!(", each followed by {}'s", args.baseline_name) },
    );
    selection.backend.run(Rounds(&args, config))??;
    println!("(profile {}, device {})", flag_value(args.profile), flag_value(args.device));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::figure_in;

    /// The lines `torch_train_bench.py` and this command print.
    #[test]
    fn figures_are_read_by_name() {
        let torch = "torch 2.15.0 train: 752.1 img/s  (42.55 ms/batch of 32, 32px)\n\
                     torch 2.15.0 eval: 2874.5 img/s  (11.13 ms/batch)\n\
                     torch 2.15.0 qat train: 469.6 img/s  (68.14 ms/batch)";
        assert_eq!(figure_in(torch, "train"), Some(752.1));
        assert_eq!(figure_in(torch, "qat train"), Some(469.6));
        assert_eq!(figure_in(torch, "eval"), Some(2874.5));
        assert_eq!(figure_in("torch 2.15.0 qat train: 469.6 img/s", "train"), None);
        for not_a_figure in ["nan", "inf", "-3.0", "0"] {
            assert_eq!(figure_in(&format!("torch train: {not_a_figure} img/s"), "train"), None, "{not_a_figure}");
        }
        assert_eq!(figure_in("vggq (burn 0.21.0) train: 1133.0 img/s, 0.03 host reads/step", "train"), Some(1133.0));
    }
}
