//! `cargo xtask test`: the whole suite, as CI runs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vggq_core::places::{shared_cifar10_jpeg, shared_dir, workspace_root, PYTHON_VARIABLE, SHARED_VARIABLE};
use vggq_core::run_folder::{CHECKSUMS_FILE, MODEL_FILE};
use vggq_core::{DeviceRequest, Init, Limits, ProfileName};
use xshell::{cmd, Shell};

use crate::{all, device_bundle, device_golden, lavapipe, onnxruntime, reproducibility};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// Where the second smoke run goes (in the target folder, as the next two), to compare checksums with the
/// first, and the thread count it runs on.
const RERUN_DIR: &str = "reproducibility/smoke";
const RERUN_THREADS: usize = 3;
/// Where the full-shape run goes.
const FULL_SHAPE_DIR: &str = "full-shape";
/// The full profile's shapes on a few batches and one epoch, from random weights: minutes on 2 cores,
/// and everything only full size shows (file sizes, ORT's fused INT8 operators at 128 px, the `.pth`
/// files PyTorch loads into the seed's modules).
const FULL_SHAPE_LIMITS: Limits =
    Limits { train_images: Some(128), eval_images: Some(64), calibration_batches: Some(2), epochs: Some(1) };
/// Where the GPU code path's run on lavapipe goes.
const WGPU_DIR: &str = "wgpu/smoke";
/// The smoke shapes on a few hundred images: every step of the pipeline on burn-wgpu in minutes. Each
/// evaluation (every variant's validation and test, on lavapipe and on ONNX Runtime) reads 80 images: two
/// full batches and a last one of 16, as a full run's evaluations of 10,000 end. On 2 cores without
/// AVX-512, where lavapipe trains about 5 images/s and evaluates about 16, the steps took 190 s so, and
/// 329 s with 320 images (2026-12-06).
const WGPU_LIMITS: Limits =
    Limits { train_images: Some(320), eval_images: Some(80), calibration_batches: Some(2), epochs: Some(1) };

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let mut clock = StageClock::default();
    clock.time("format", || Ok(cmd!(sh, "cargo fmt --all --check").run()?))?;
    // Before the features are chosen: lavapipe gives this machine the Vulkan loader that adds `wgpu`.
    clock.time("lavapipe", || lavapipe::ensure(sh))?;
    let flags = &crate::vggq_cargo_flags();
    let (vggq, setup, setup_took) = clock.time("build vggq", || crate::run_beside(sh, crate::build_vggq, crate::setup))?;
    clock.beside("onnxruntime and python", setup_took);
    // The tests are built before the pipelines, so that xtask's own start now and run beside them
    // ([`TestsBeside`]); with a filter or cargo's options (`cargo_args`), every test runs after them.
    let messages = clock.time("build tests", || build_tests(sh))?;
    let beside = if args.cargo_args.is_empty() { Some(TestsBeside::start(BESIDE_PACKAGE, &messages)?) } else { None };
    let data = shared_cifar10_jpeg();
    let pipeline = |profile, init, limits, out: Option<PathBuf>, force| all::Args {
        profile,
        device: DeviceRequest::Cpu,
        init,
        data: Some(data.clone()),
        out,
        force,
        limits,
        autotune_cache: None,
    };
    // The smoke pipeline end to end on the JPEG copy, golden check included; then again from scratch
    // into another folder on another core count: the same code, seed and data must give the same
    // SHA256SUMS, and the same golden table, on any machine.
    let first =
        clock.time("smoke pipeline", || all::run(sh, pipeline(ProfileName::Smoke, None, Limits::default(), None, false)))?;
    let second = clock.time("smoke pipeline again", || {
        let _threads = sh.push_env("RAYON_NUM_THREADS", RERUN_THREADS.to_string());
        all::run(sh, pipeline(ProfileName::Smoke, None, Limits::default(), Some(crate::target_dir().join(RERUN_DIR)), true))
    })?;
    let (a, b) = (sh.read_file(first.join(CHECKSUMS_FILE))?, sh.read_file(second.join(CHECKSUMS_FILE))?);
    if a != b {
        bail!("two smoke runs gave different SHA256SUMS:\n{}:\n{a}\n{}:\n{b}", first.display(), second.display());
    }
    println!("reproducible: {} and {} ({RERUN_THREADS} threads) have identical SHA256SUMS", first.display(), second.display());
    clock.time("cpu reproducibility", || reproducibility::run(sh, &vggq))?;
    // The GPU code path on lavapipe: the pipeline with `--device wgpu` (train, quantize, export, eval,
    // report, verify, golden check).
    clock.time("wgpu pipeline", || {
        all::run(
            sh,
            all::Args {
                device: DeviceRequest::Wgpu,
                ..pipeline(ProfileName::Smoke, None, WGPU_LIMITS, Some(crate::target_dir().join(WGPU_DIR)), false)
            },
        )
    })?;
    clock.time("wgpu reproducibility", || reproducibility::lavapipe(sh, &vggq))?;
    let full_shape = clock.time("full-shape pipeline", || {
        all::run(
            sh,
            pipeline(
                ProfileName::Full,
                Some(Init::Random),
                FULL_SHAPE_LIMITS,
                Some(crate::target_dir().join(FULL_SHAPE_DIR)),
                false,
            ),
        )
    })?;

    let _python = sh.push_env(PYTHON_VARIABLE, &setup.python);
    let _onnxruntime = sh.push_env(onnxruntime::ORT_DYLIB_PATH, &setup.onnxruntime.library);
    let _shared = sh.push_env(SHARED_VARIABLE, shared_dir());
    let _golden = sh.push_env("VGGQ_GOLDEN_RUN", sh.current_dir().join(first));
    let _full_shape = sh.push_env("VGGQ_FULL_SHAPE_RUN", sh.current_dir().join(full_shape));
    // --release: the tests train a small VGG on real images, and release shares its build with `all`.
    clock.time("tests", || match beside {
        Some(beside) => {
            let others = cmd!(sh, "cargo test --release {flags...} --exclude {BESIDE_PACKAGE}").run();
            // Waited for, and their output printed, whether or not the others passed.
            let own = beside.finish();
            others?;
            own
        }
        None => {
            let cargo_args = &args.cargo_args;
            Ok(cmd!(sh, "cargo test --release {flags...} {cargo_args...}").run()?)
        }
    })?;
    // Lints, with the CUDA backend and autotune compiled in: CPU machines never build them otherwise, and
    // a GPU machine must never meet code that does not build. --release: the proc macros and build
    // scripts (burn-import's whole stack among them, for onnx-import's build script) are then the ones
    // the builds above compiled, where the dev profile compiled all of them again.
    clock.time("clippy", || {
        Ok(cmd!(sh, "cargo clippy --release --workspace --all-targets --features {LINTED_FEATURES} -- -D warnings").run()?)
    })?;
    // The docs as src/lib.rs says they are read, with the private items, the features and profile clippy
    // checked (cargo reuses the dependencies it checked): a broken link or a stray HTML tag fails.
    clock.time("docs", || {
        let _deny = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        Ok(cmd!(sh, "cargo doc --release --workspace --no-deps --document-private-items --features {LINTED_FEATURES}").run()?)
    })?;
    // The GPU check, rehearsed on the CPU build and the CPU ONNX Runtime: the bundle, its reassembly and
    // every step of the script.
    clock.time("device check rehearsal", || {
        device_bundle::run(sh, device_bundle::Args { dry_run: true })?;
        rehearse_device_check(sh)
    })
}

/// The features the lints and the docs build: every backend and autotune, which CPU builds leave out.
const LINTED_FEATURES: &str = "vggq/cuda,vggq/wgpu,vggq/autotune";

/// Builds every package's tests as the suite runs them (`--release`, [`crate::vggq_cargo_flags`]); returns
/// cargo's JSON build messages, which name each test executable ([`test_executable`]).
pub fn build_tests(sh: &Shell) -> Result<String> {
    let flags = crate::vggq_cargo_flags();
    Ok(cmd!(sh, "cargo test --release {flags...} --no-run --message-format=json-render-diagnostics").read()?)
}

/// The package whose tests run beside the pipelines: xtask's check its locks against PyPI's index and
/// mostly wait on the network (four to seven minutes on CI's 2 cores), while the pipelines keep both cores
/// busy.
const BESIDE_PACKAGE: &str = "xtask";

/// A package's unit tests run in the background, their output kept in a file and printed once they have
/// ended, so that the suite's log reads in order; killed where the suite ends before them (a stage that
/// failed), as xtask passes a stop signal on to them.
struct TestsBeside {
    package: &'static str,
    child: std::process::Child,
    output: tempfile::NamedTempFile,
}

impl TestsBeside {
    /// Starts `package`'s unit tests from the executable cargo's build `messages` (JSON, one a line) name,
    /// in the package's folder, as `cargo test` runs them.
    fn start(package: &'static str, messages: &str) -> Result<Self> {
        let executable =
            test_executable(messages, package).with_context(|| format!("cargo built no unit test executable of `{package}`"))?;
        let output = tempfile::NamedTempFile::new()?;
        println!("{package}'s tests run beside the pipelines ({}): their output follows the other tests'", executable.display());
        let child = std::process::Command::new(&executable)
            .current_dir(vggq_core::places::workspace_root().join(package))
            .stdout(output.reopen()?)
            .stderr(output.reopen()?)
            .spawn()
            .with_context(|| format!("starting {}", executable.display()))?;
        Ok(TestsBeside { package, child, output })
    }

    /// Waits for the tests and prints what they printed; an error where any failed.
    fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        print!("{}", std::fs::read_to_string(self.output.path())?);
        // Their own time is the harness's "finished in" above: they ended before this wait, or during it.
        println!("{}'s tests, run beside the pipelines: {status}", self.package);
        if !status.success() {
            bail!("{}'s tests failed ({status})", self.package);
        }
        Ok(())
    }
}

impl Drop for TestsBeside {
    fn drop(&mut self) {
        // Best effort, and nothing where `finish` waited for them.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The unit test executable of `package` among cargo's JSON build messages (one a line): its library's,
/// else its binary's (xtask has only a binary).
pub fn test_executable(messages: &str, package: &str) -> Option<PathBuf> {
    let of_kind = |kind: &str| {
        crate::executable_where(messages, |target, profile| {
            profile["test"] == true
                && target["name"] == package
                && target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        })
    };
    of_kind("lib").or_else(|| of_kind("bin"))
}

/// How long each stage of the suite took, printed when the suite ends, passed or failed: CI gives a cold
/// run (empty `target/`) an hour on 2 cores, and this says where it goes.
#[derive(Default)]
struct StageClock {
    stages: Vec<Stage>,
}

/// A stage's name, its time, and whether it ran beside the one before it (its time then inside that one's,
/// and not in the total).
struct Stage {
    name: &'static str,
    took: Duration,
    beside: bool,
}

impl StageClock {
    fn time<T>(&mut self, name: &'static str, run: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = run();
        self.stages.push(Stage { name, took: started.elapsed(), beside: false });
        result
    }

    /// A stage that ran beside the last one timed, which took `took`.
    fn beside(&mut self, name: &'static str, took: Duration) {
        self.stages.push(Stage { name, took, beside: true });
    }
}

impl Drop for StageClock {
    fn drop(&mut self) {
        println!("\ncargo xtask test, stage times:");
        for Stage { name, took, beside } in &self.stages {
            let beside = if *beside { "  (beside the stage above)" } else { "" };
            println!("  {name:<24} {:>6.0} s{beside}", took.as_secs_f64());
        }
        let total: Duration = self.stages.iter().filter(|stage| !stage.beside).map(|stage| stage.took).sum();
        println!("  {:<24} {:>6.0} s", "total", total.as_secs_f64());
    }
}

/// The files the device tool brings back from a call, at most: the check leaves one fewer, so that a call
/// stopped while it writes one beside its name (then renamed) still brings back every file.
const DEVICE_OUT_FILES: usize = 8;
/// What the rehearsal makes fail (`VGGQ_CHECK_FAIL`): the default build's smoke run, which must hand the
/// rest of the check to the tuning build; the rerun's eval on its device (`stage:eval`), which must
/// evaluate again on `--device auto` and still make the package whose SHA256SUMS the summary compares;
/// and the full-size eval likewise, whose figures the summary must still show. Every other stage must
/// still run, and the summary say so.
const FAILURES: [&str; 3] = ["smoke-run", "smoke-rerun:eval", "full-steps:eval"];
/// The full-size figures the summary shows: one row per ONNX file at least.
const FULL_SIZE_ROWS: usize = 4;
/// The stage the rehearsal stops at a cap of its own (`VGGQ_CHECK_CAP`), and that cap in seconds: the
/// full-shape benchmark, whose first round takes longer, so that the watchdog stops it mid-way; its
/// group must then end within the script's grace period (`STOP_GRACE`) and the stages after it run.
const STOPPED: (&str, u64) = ("bench-full", 20);
/// The GPU check, whose `STOP_GRACE=<seconds>` line is the grace period a stopped stage's group has.
const DEVICE_CHECK: &str = "scripts/device-check.sh";

/// The seconds a stopped stage may take in all: its cap, the script's grace period, and a few seconds
/// for the script's own steps.
fn stopped_within() -> Result<u64> {
    let script = std::fs::read_to_string(workspace_root().join(DEVICE_CHECK))?;
    let grace = script.lines().find_map(|line| line.strip_prefix("STOP_GRACE=")?.parse::<u64>().ok());
    Ok(STOPPED.1 + grace.with_context(|| format!("{DEVICE_CHECK} sets no STOP_GRACE"))? + 5)
}
/// The stage the failing smoke run brings in.
const FALLBACK_STAGE: &str = "smoke-run-autotune";

/// `scripts/device-check.sh --dry-run` with some stages made to fail: it must fail as a whole, its
/// summary must name those stages, show the fallback's smoke run and every other stage as run, and
/// `$OUT` hold no more files than come back.
fn rehearse_device_check(sh: &Shell) -> Result<()> {
    let out = crate::target_dir().join("device-check");
    let _out = sh.push_env("OUT", &out);
    let _fail = sh.push_env("VGGQ_CHECK_FAIL", FAILURES.join(" "));
    let _cap = sh.push_env("VGGQ_CHECK_CAP", format!("{}={}", STOPPED.0, STOPPED.1));
    let bundle = device_bundle::bundle_dir(sh, true);
    rehearse_missing_part(sh, &bundle)?;
    let _bundle = sh.push_env("VGGQ_BUNDLE", &bundle);
    if cmd!(sh, "{DEVICE_CHECK} --dry-run").run().is_ok() {
        bail!("the GPU check passed with {FAILURES:?} failing and {} stopped", STOPPED.0);
    }
    let summary = sh.read_file(out.join("summary.txt"))?;
    let stages = rehearsed_stages(&summary)?;
    let files = std::fs::read_dir(&out)?.count();
    if files >= DEVICE_OUT_FILES {
        bail!(
            "the GPU check left {files} files in {}: the device tool brings back {DEVICE_OUT_FILES}, one of them maybe \
             a file the call was stopped writing",
            out.display()
        );
    }
    // What comes home holds the smoke run's files the golden check reads (the rehearsal's run has limits:
    // no table compares it, and the check says so).
    all::golden_check(sh, &device_golden::smoke_run(sh, &out)?)?;
    println!(
        "device check rehearsed: {stages} stages, {FAILURES:?} failing on purpose, {} stopped at {} s, {FALLBACK_STAGE} \
         taking over, {files} files, its smoke run read by the golden check",
        STOPPED.0, STOPPED.1
    );
    Ok(())
}

/// The check run from `bundle` without its second part, as on a device machine that was not warm when a
/// later part was carried: it must stop before any stage and name the part to carry again.
fn rehearse_missing_part(sh: &Shell, bundle: &Path) -> Result<()> {
    let without = tempfile::tempdir()?;
    let mut parts: Vec<PathBuf> = std::fs::read_dir(bundle)?.map(|entry| Ok(entry?.path())).collect::<Result<_>>()?;
    parts.retain(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("part")));
    if parts.len() < 2 {
        bail!("the rehearsal bundle {} has {} part(s): it cannot leave one out", bundle.display(), parts.len());
    }
    for part in parts.iter().filter(|part| !part.ends_with("part02")) {
        std::os::unix::fs::symlink(part, without.path().join(part.file_name().context("a part's folder")?))?;
    }
    let out = without.path().join("out");
    let _out = sh.push_env("OUT", &out);
    let _bundle = sh.push_env("VGGQ_BUNDLE", without.path());
    let output = cmd!(sh, "{DEVICE_CHECK} --dry-run").ignore_status().output()?;
    let said = String::from_utf8_lossy(&output.stdout);
    if output.status.success() || !said.contains("lacks part02 of its") || out.join("summary.txt").exists() {
        bail!("the GPU check without part02 did not stop at once naming it ({}):\n{said}", output.status);
    }
    Ok(())
}

/// The rows of `vggq device`'s figures: the step against the CPU's and the two convolutions against each
/// other (`--check-step`), and the convolutions' times (`--conv-speed`).
const DEVICE_ROWS: [&str; 3] = ["step against the CPU", "conv: GEMM against conv2d", "conv speed"];

/// The summary's row of the commit the bundle was built from ("<40 hex digits> (as committed)"), which
/// the check's manifests record too: a rehearsal's bundle is built in a checkout.
const BUNDLE_ROW: &str = "bundle built from";

/// Whether the rows name the bundle's commit.
fn bundle_commit_shown(rows: &[(&str, &str)]) -> bool {
    rows.iter().any(|(key, value)| {
        key.trim() == BUNDLE_ROW
            && value
                .split_once(' ')
                .is_some_and(|(commit, _)| commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

/// The summary's row of the CPU run against the bundle's (`<verdict> here [<this CPU>] as where the bundle
/// was built [<that CPU>]`): in a rehearsal, the same machine and build, so the same files.
const CPU_BYTES_ROW: &str = "cpu bytes";

/// The summary's row of the kernels' tests on the check's CPU (`<cargo test's result line>, (...)`).
const KERNEL_TESTS_ROW: &str = "cpu kernel tests";

/// Whether the kernels' tests' row says they passed, some of them.
fn kernel_tests_passed(rows: &[(&str, &str)]) -> bool {
    rows.iter().any(|(key, value)| {
        key.trim() == KERNEL_TESTS_ROW
            && value
                .strip_prefix("ok. ")
                .and_then(|result| result.split_once(" passed; 0 failed;"))
                .is_some_and(|(passed, _)| passed.parse::<usize>().is_ok_and(|passed| passed > 0))
    })
}

/// Whether the CPU run's row says it gave the bundle's files.
fn cpu_bytes_same(rows: &[(&str, &str)]) -> bool {
    rows.iter().any(|(key, value)| {
        key.trim() == CPU_BYTES_ROW && value.starts_with("the same ") && value.contains(" as where the bundle was built ")
    })
}

/// The summary's row of each stage's peak memory in use (`<what was measured>: <stage> <GiB>, ...`).
const MEMORY_ROW: &str = "peak memory by stage";

/// Whether the memory row gives `stage` a peak in GiB.
fn memory_peak_shown(rows: &[(&str, &str)], stage: &str) -> bool {
    rows.iter()
        .filter(|(key, _)| key.trim() == MEMORY_ROW)
        .filter_map(|(_, value)| value.split_once(": "))
        .flat_map(|(_, peaks)| peaks.split(", "))
        .any(|peak| peak.strip_prefix(stage).and_then(|gib| gib.strip_prefix(' ')).is_some_and(|gib| gib.parse::<f64>().is_ok()))
}

/// The figures `vggq bench-train` summarises, which the summary shows for the smoke bench on the check's
/// device and for the CPU's, with PyTorch's ratio, from the last of the blocks it prints after every round.
const BENCH_FIGURES: [&str; 4] = ["train", "qat train", "eval", "qat/fp32 train"];
/// The benches whose figures the rehearsal's summary must show (the first word of their rows), and
/// whether over more than one round: the smoke bench's rounds are rehearsed, the CPU's, the same
/// command on another device, runs one (CI's hour).
const BENCH_ROWS: [(&str, bool); 2] = [("smoke", true), ("cpu", false)];

/// Checks the rehearsal's summary (`stage <name> | <verdict>` lines): the stages made to fail are named
/// as failed (those whose eval failed with the script's own status for it, 3, after their figures), the
/// stopped one as stopped and ended within the grace period, the fallback's smoke run ran, every other
/// stage is ok, the two smoke runs' SHA256SUMS were compared (the rerun packaged despite its eval), the
/// resumed training ended with the smoke run's model, `vggq device`'s figures are there, the fallback's
/// smoke run has its peak memory, the bundle's commit is named, the kernels' tests passed there and the CPU
/// run gave the bundle's model files (the same machine and build in a rehearsal), the full-size figures
/// are there (despite their eval), and the smoke bench's and the CPU bench's figures are there with a
/// ratio, the smoke bench's over more than its first round ([`BENCH_ROWS`]).
/// Returns how many stages ran.
fn rehearsed_stages(summary: &str) -> Result<usize> {
    // Each failure's stage and its verdict: a stage failed whole exits 99 (the script's injected status),
    // one whose eval was made to fail exits 3 after its report.
    let failed: Vec<(&str, &str)> = FAILURES
        .iter()
        .map(|failure| match failure.split_once(':') {
            Some((stage, _step)) => (stage, "FAILED (exit 3)"),
            None => (*failure, "FAILED (exit 99)"),
        })
        .collect();
    let stages: Vec<(&str, &str)> = summary.lines().filter_map(|line| line.strip_prefix("stage ")?.split_once(' ')).collect();
    let verdict = |name: &str| stages.iter().find(|(stage, _)| *stage == name).map(|(_, verdict)| *verdict);
    let rows: Vec<(&str, &str)> = summary.lines().filter_map(|line| line.split_once(" | ")).collect();
    // "| STOPPED at its time limit, 24 s"
    let within = stopped_within()?;
    let stopped_in_time = verdict(STOPPED.0)
        .and_then(|v| v.trim_start().strip_prefix("| STOPPED at its time limit, ")?.strip_suffix(" s")?.parse::<u64>().ok())
        .is_some_and(|seconds| seconds <= within);
    let as_rehearsed = stages.len() >= 6
        && failed.iter().all(|(name, expected)| verdict(name).is_some_and(|v| v.contains(expected)))
        && stopped_in_time
        && verdict(FALLBACK_STAGE).is_some()
        && stages
            .iter()
            .filter(|(name, _)| *name != STOPPED.0 && failed.iter().all(|(stage, _)| stage != name))
            .all(|(_, v)| v.contains("| ok"))
        && rows.iter().any(|(key, value)| key.trim() == "smoke rerun" && *value == "identical SHA256SUMS")
        && rows.iter().any(|(key, value)| key.trim() == "smoke resume" && *value == format!("the smoke run's {MODEL_FILE}"))
        && DEVICE_ROWS.iter().all(|row| rows.iter().any(|(key, _)| key.trim() == *row))
        && memory_peak_shown(&rows, FALLBACK_STAGE)
        && bundle_commit_shown(&rows)
        && kernel_tests_passed(&rows)
        && cpu_bytes_same(&rows)
        && rows.iter().filter(|(key, _)| key.starts_with("full size: ") && key.contains(".onnx [")).count() >= FULL_SIZE_ROWS;
    let bench_shown = BENCH_ROWS.iter().all(|&(bench, rounds)| {
        BENCH_FIGURES.iter().all(|figure| {
            let shown: Vec<_> = rows.iter().filter(|(key, _)| key.trim() == format!("{bench} {figure}")).collect();
            matches!(shown[..], [(_, figures)] if figures.contains("| ratio ") && !(rounds && figures.contains("(median of 1 rounds)")))
        })
    });
    if !as_rehearsed || !bench_shown {
        bail!(
            "the GPU check's summary does not show {FAILURES:?} failed, {} stopped within {within} s, \
             {FALLBACK_STAGE} run, every other stage run, the smoke runs' SHA256SUMS compared, the resumed training's model as the smoke run's, \
             `vggq device`'s {DEVICE_ROWS:?}, {FALLBACK_STAGE}'s peak memory, the bundle's commit, the kernels' tests passed and the CPU run's files as the bundle's, {FULL_SIZE_ROWS} full-size figures and the {BENCH_ROWS:?} benches' {BENCH_FIGURES:?} with a ratio (over their rounds where true):\n{summary}",
            STOPPED.0
        );
    }
    Ok(stages.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package's unit tests are found in cargo's messages: not its binary, nor another package's
    /// tests, nor its integration tests; its library's before its binary's, whichever cargo names first.
    #[test]
    fn the_tests_beside_are_the_packages_unit_tests() {
        let artifact = |name: &str, kind: &str, test: bool, executable: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","target":{{"name":"{name}","kind":["{kind}"]}},"profile":{{"test":{test}}},"executable":"{executable}"}}"#
            )
        };
        let messages = [
            artifact("xtask", "bin", false, "/t/release/xtask"),
            artifact("vggq", "bin", true, "/t/release/deps/vggq-0"),
            artifact("vggq", "lib", true, "/t/release/deps/vggq-1"),
            artifact("cli", "test", true, "/t/release/deps/cli-2"),
            "not json".into(),
            artifact("xtask", "bin", true, "/t/release/deps/xtask-3"),
            r#"{"reason":"build-finished","success":true}"#.into(),
        ]
        .join("\n");
        assert_eq!(test_executable(&messages, "xtask"), Some(PathBuf::from("/t/release/deps/xtask-3")));
        assert_eq!(test_executable(&messages, "vggq"), Some(PathBuf::from("/t/release/deps/vggq-1")));
        assert_eq!(test_executable(&messages, "cli"), None);
    }

    const SUMMARY: &str = "stage reassemble    | ok, 4 s
stage probe         | ok, 1 s
stage smoke-run     | FAILED (exit 99), 0 s
stage smoke-run-autotune | ok, 6 s
stage smoke-rerun   | FAILED (exit 3), 7 s
stage check-step    | ok, 3 s
stage bench-smoke   | ok, 24 s
stage bench-full    | STOPPED at its time limit, 24 s
stage full-steps    | FAILED (exit 3), 72 s
stage conv-speed    | ok, 2 s
stage smoke-resume  | ok, 21 s
stage cpu-kernels   | ok, 1 s
stage cpu-bytes     | ok, 9 s
stage bench-cpu     | ok, 30 s
bundle built from   | 544ea55c0f1e2d3b4a5968778695a4b3c2d1e0f9 (as committed)
step against the CPU | logits 0.0e0, loss 0.0e0, updates 0.0e0 (at most, at ), relative
conv: GEMM against conv2d | 3.1e-6 (at most, forward and weight gradient, relative)
conv speed          | GEMM 137.2 ms, conv2d 29.0 ms (smoke shapes, batch 32, forward and weight gradient, median of 3)
peak memory by stage | GiB of the host's memory in use (dry run: MemTotal - MemAvailable): reassemble 0.8, smoke-run-autotune 0.9, full-steps 4.0
smoke train         | vggq 1202.7 [1029.9-1375.4] | torch 1076.1 [988.5-1163.7] | ratio 1.11x [1.04-1.18] (median of 2 rounds)
smoke qat train     | vggq 1018.1 [994.2-1042.0] | torch 681.2 [663.0-699.5] | ratio 1.49x [1.49-1.50] (median of 2 rounds)
smoke eval          | vggq 5450.7 [5304.0-5597.4] | torch 3855.1 [3839.6-3870.6] | ratio 1.41x [1.37-1.46] (median of 2 rounds)
smoke qat/fp32 train | vggq 0.86 [0.76-0.97] | torch 0.64 [0.60-0.67] | ratio 1.35x [1.26-1.44] (median of 2 rounds)
cpu train           | vggq 1202.7 [1029.9-1375.4] | torch 1076.1 [988.5-1163.7] | ratio 1.11x [1.04-1.18] (median of 2 rounds)
cpu qat train       | vggq 1018.1 [994.2-1042.0] | torch 681.2 [663.0-699.5] | ratio 1.49x [1.49-1.50] (median of 2 rounds)
cpu eval            | vggq 5450.7 [5450.7-5450.7] | torch 3855.1 [3855.1-3855.1] | ratio 1.41x [1.41-1.41] (median of 1 rounds)
cpu qat/fp32 train  | vggq 0.86 [0.76-0.97] | torch 0.64 [0.60-0.67] | ratio 1.35x [1.26-1.44] (median of 2 rounds)
smoke rerun         | identical SHA256SUMS
smoke resume        | the smoke run's model_fp32.mpk
cpu kernel tests    | ok. 24 passed; 0 failed; 0 ignored; 0 measured; 82 filtered out; finished in 0.70s (model::kernels::, this CPU's instruction-set paths)
cpu bytes           | the same 5 model files here [AMD EPYC: 2 threads, avx2 kernels (the CPU has avx2)] as where the bundle was built [AMD EPYC: 2 threads, avx2 kernels (the CPU has avx2)]
full size: mission16_vgg11bn_fp32.onnx [cpu] | cpu | top-1 9.38 % | 58.2 img/s | 218.62 MiB
full size: mission16_vgg11bn_int8_dynamic.onnx [cpu] | cpu | top-1 9.38 % | 60.1 img/s | 79.40 MiB
full size: mission16_vgg11bn_int8_static.onnx [cpu] | cpu | top-1 9.38 % | 151.0 img/s | 54.39 MiB
full size: mission_16_vgg11bn_qat_int8_fp32match.onnx [cpu] | cpu | top-1 9.38 % | 150.2 img/s | 54.35 MiB
";

    /// Summaries the check must refuse: (what is wrong, text of [`SUMMARY`], what it becomes).
    const WRONG: [(&str, &str, &str); 35] = [
        ("no fallback", "stage smoke-run-autotune | ok, 6 s\n", ""),
        ("fallback failed", "smoke-run-autotune | ok", "smoke-run-autotune | FAILED (exit 1)"),
        ("stopped stage ran", "bench-full    | STOPPED at its time limit", "bench-full    | ok"),
        ("stopped stage failed", "bench-full    | STOPPED at its time limit", "bench-full    | FAILED (exit 1)"),
        ("stopped stage lingered", "time limit, 24 s", "time limit, 56 s"),
        ("failing stage ran", "smoke-run     | FAILED (exit 99)", "smoke-run     | ok"),
        ("other stage stopped", "stage smoke-resume  | ok", "stage smoke-resume  | STOPPED at its time limit"),
        ("full-size eval ran", "full-steps    | FAILED (exit 3)", "full-steps    | ok"),
        (
            "no full-size figures",
            "full size: mission16_vgg11bn_fp32.onnx [cpu] | cpu | top-1 9.38 % | 58.2 img/s | 218.62 MiB\n",
            "",
        ),
        ("figure twice", "smoke rerun ", "smoke eval | vggq 1.0 | torch 1.0 | ratio 1.00x\nsmoke rerun "),
        ("no ratio", " | ratio 1.49x [1.49-1.50]", ""),
        ("rerun's eval ran", "smoke-rerun   | FAILED (exit 3)", "smoke-rerun   | ok"),
        ("rerun failed otherwise", "smoke-rerun   | FAILED (exit 3)", "smoke-rerun   | FAILED (exit 1)"),
        ("first round only", "1.41x [1.37-1.46] (median of 2 rounds)", "1.37x [1.37-1.37] (median of 1 rounds)"),
        ("rerun not packaged", "smoke rerun         | identical SHA256SUMS\n", ""),
        ("rerun differs", "identical SHA256SUMS", "differs: mission16_vgg11bn_fp32.onnx"),
        ("resume not compared", "smoke resume        | the smoke run's model_fp32.mpk\n", ""),
        ("resume differs", "the smoke run's model_fp32.mpk", "model_fp32.mpk differs from the smoke run's"),
        ("no step check", "step against the CPU | logits 0.0e0, loss 0.0e0, updates 0.0e0 (at most, at ), relative\n", ""),
        ("no convolution check", "conv: GEMM against conv2d | 3.1e-6 (at most, forward and weight gradient, relative)\n", ""),
        ("no convolution times", "conv speed          | GEMM", "conv timed  | GEMM"),
        ("convolutions not timed", "conv-speed    | ok", "conv-speed    | FAILED (exit 1)"),
        ("no memory row", "peak memory by stage |", "peak memory |"),
        ("fallback's memory not sampled", "smoke-run-autotune 0.9, ", ""),
        ("memory not a figure", "smoke-run-autotune 0.9", "smoke-run-autotune -"),
        (
            "no bundle commit",
            "544ea55c0f1e2d3b4a5968778695a4b3c2d1e0f9 (as committed)",
            "no commit recorded (built outside a git checkout)",
        ),
        ("bundle commit cut short", "544ea55c0f1e2d3b4a5968778695a4b3c2d1e0f9 ", "544ea55 "),
        ("cpu kernel tests failed", "cpu-kernels   | ok", "cpu-kernels   | FAILED (exit 101)"),
        ("cpu kernel tests not shown", "cpu kernel tests    | ok. 24 passed", "cpu kernel tests    | no result"),
        ("cpu run failed", "cpu-bytes     | ok", "cpu-bytes     | FAILED (exit 1)"),
        ("cpu bench stopped", "bench-cpu     | ok", "bench-cpu     | STOPPED at its time limit"),
        ("no cpu bench figure", "cpu eval            | vggq 5450.7", "eval on the cpu | vggq 5450.7"),
        ("no cpu bench ratio", "| ratio 1.41x [1.41-1.41]", ""),
        ("cpu run not compared", "cpu bytes           | the same", "cpu run | the same"),
        (
            "cpu run differs",
            "| the same 5 model files here [AMD EPYC: 2 threads, avx2 kernels (the CPU has avx2)] as where",
            "| model_fp32.mpk (1 of 5 model files) differ here [AMD EPYC: 2 threads, avx2 kernels (the CPU has avx2)] from where",
        ),
    ];

    #[test]
    fn the_rehearsal_wants_its_failures_the_fallback_and_every_other_stage_ok() {
        assert_eq!(rehearsed_stages(SUMMARY).unwrap(), 14);
        for (what, text, becomes) in WRONG {
            let wrong = SUMMARY.replace(text, becomes);
            assert_ne!(wrong, SUMMARY, "{what}: the summary has no `{text}`");
            assert!(rehearsed_stages(&wrong).is_err(), "{what}: passed");
        }
    }
}
