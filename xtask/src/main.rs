//! `cargo xtask`: every workflow step of vggq, as Rust instead of shell scripts.
//!
//! Each command is a module with one `run` function; `main` parses the flags, moves to the workspace
//! root and dispatches. Commands shell out to cargo, the `vggq` binary and the pinned Python venv with
//! `xshell`, where arguments are values, never shell text.

mod all;
mod bench;
mod debian;
mod device_bundle;
mod device_golden;
mod inspect;
mod lavapipe;
mod locks;
mod onnxruntime;
mod python;
mod reproducibility;
mod test;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vggq_core::places::{has_wgpu_api, workspace_root, CudaToolkit, VULKAN_LOADER};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test, benchmark and package vggq")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the commands that build vggq build it.
#[derive(clap::Args)]
struct Build {
    /// Build vggq with cubecl's autotune (the `autotune` feature): on a GPU, each operation and shape
    /// times its candidate kernels and keeps the fastest, at the cost of compiling every candidate on a
    /// machine's first run (minutes) and of kernel choices that follow timing. Without it, each operation
    /// runs its default kernel. The command's builds of vggq (its binary and its tests) then take it.
    #[arg(long, global = true)]
    autotune: bool,
}

/// `--autotune`, for every build xtask makes in this process.
static AUTOTUNE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Command {
    /// The main job: train VGG11-BN on CIFAR-10 and write everything under `artifacts/<profile>/`.
    /// Needs Rust and `python3 -m pip` (to fetch ONNX Runtime's wheel), nothing else.
    All {
        #[command(flatten)]
        args: all::Args,
        #[command(flatten)]
        build: Build,
    },
    /// The whole test suite, as CI runs it (sets up the pinned PyTorch venv first).
    Test {
        #[command(flatten)]
        args: test::Args,
        #[command(flatten)]
        build: Build,
    },
    /// Install, ahead of time, what the tests and benchmarks need beside Rust: ONNX Runtime (with the CUDA
    /// provider's libraries where an NVIDIA driver is present) and the pinned Python venv. Idempotent.
    Setup,
    /// Write the pip locks in `xtask/locks/` again from PyPI: after a pin changes (an ONNX Runtime wheel's
    /// version, `scripts/requirements-interop.txt`), each with everything it needs and every file's SHA-256.
    Lock,
    /// Benchmarks, each beside its baseline on the same machine.
    Bench {
        #[command(flatten)]
        args: bench::Args,
        #[command(flatten)]
        build: Build,
    },
    /// Re-hash an artifact package against its manifest; fails on any missing, extra or changed file.
    Verify {
        #[command(flatten)]
        args: verify::Args,
        #[command(flatten)]
        build: Build,
    },
    /// List what a `.pth` file holds, as PyTorch sees it, without executing anything in it.
    Inspect(inspect::Args),
    /// The same-bytes check CI cannot afford: x86-64 without AVX2 and FMA, and aarch64, under qemu-user.
    ///
    /// The small training and quantization of `cargo xtask test`'s emulated check, natively, under
    /// `qemu-x86_64 -cpu SandyBridge` (no AVX2, no FMA: the kernels' scalar path) and built for aarch64
    /// Linux under `qemu-aarch64` (the NEON kernels, after their unit tests there), which must give the
    /// same model files: 11 minutes on 2 cores, most of it emulation, and 18 more for the first aarch64
    /// build. Installs qemu-user, the Rust target and Debian's cross toolchain where missing.
    OtherCpus {
        #[command(flatten)]
        build: Build,
    },
    /// Pack what the GPU check (`scripts/device-check.sh`) needs on the lent GPU machine into `.device/`,
    /// in parts that one `device` call carries each.
    DeviceBundle(device_bundle::Args),
    /// The golden check of the GPU check's smoke run, from the files the check brought home: the first
    /// GPU run's table pending as `golden/smoke-cuda.snap.new` for review (failing where it is beyond the
    /// recipe's spread of the smoke tables of the other devices), or compared with the reviewed one.
    DeviceGolden {
        #[command(flatten)]
        args: device_golden::Args,
        #[command(flatten)]
        build: Build,
    },
}

fn main() -> Result<()> {
    forget_own_package_variables();
    end_after_commands_on_stop()?;
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(workspace_root());
    TARGET_DIR.set(cargo_target_dir(&sh)?).expect("set once, first thing");
    let outcome = dispatch(cli.command, &sh);
    if outcome.is_err() && STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        // The command failed because the signal stopped it, and said so itself: xtask's "terminated by a
        // signal" would only repeat it. The signal thread ends xtask as the signal would have.
        loop {
            std::thread::park();
        }
    }
    outcome
}

fn dispatch(command: Command, sh: &xshell::Shell) -> Result<()> {
    if let Some(build) = command.build() {
        AUTOTUNE.set(build.autotune).expect("set once, before any build");
    }
    match command {
        Command::All { args, .. } => all::run(sh, args).map(|_| ()),
        Command::Test { args, .. } => test::run(sh, args),
        Command::Setup => setup(sh).map(|_| ()),
        Command::Lock => locks::run(sh),
        Command::Bench { args, .. } => bench::run(sh, args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify { args, .. } => verify::run(sh, args),
        Command::DeviceBundle(args) => device_bundle::run(sh, args),
        Command::DeviceGolden { args, .. } => device_golden::run(sh, args),
        Command::OtherCpus { .. } => reproducibility::other_cpus(sh, &build_vggq(sh)?),
    }
}

impl Command {
    /// How the command builds vggq; `None` for those that build nothing.
    fn build(&self) -> Option<&Build> {
        match self {
            Command::All { build, .. }
            | Command::Test { build, .. }
            | Command::Bench { build, .. }
            | Command::Verify { build, .. }
            | Command::DeviceGolden { build, .. }
            | Command::OtherCpus { build } => Some(build),
            // The GPU bundle builds vggq both ways itself.
            Command::Setup | Command::Lock | Command::Inspect(_) | Command::DeviceBundle(_) => None,
        }
    }
}

/// Removes what `cargo run` set for running xtask itself (its package's name, version and manifest folder),
/// first thing, while xtask is one thread. The cargo builds xtask runs inherit its environment, and cargo
/// reruns a build script when a variable it watches differs from the last build's: ring's watches
/// `CARGO_PKG_NAME` and the others, so every switch between `cargo xtask` and a plain `cargo build` or
/// `cargo test` rebuilt ring and what depends on it (vggq: minutes with the burn stack linked in).
fn forget_own_package_variables() {
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        let own = ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|prefix| name_text.starts_with(prefix))
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&&*name_text);
        if own {
            std::env::remove_var(&name);
        }
    }
}

/// Whether a stop signal came: the commands' errors from then on are the stop's.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C and a terminal's hang-up reach xtask and the commands it runs alike (one process group), SIGTERM maybe xtask alone
/// (a job runner's): either way xtask ends, as the signal ends a process, only once the commands it runs
/// have ended, the signal passed on to any that did not get it (SIGTERM's, and one xtask started since).
/// A `vggq` training saves its state before it ends, and xtask ending at once would give the prompt back
/// while it still runs (a rerun then refused as busy). A second signal ends xtask at once.
fn end_after_commands_on_stop() -> std::io::Result<()> {
    use vggq_core::signals::{self, Signals};
    let mut watched = Signals::new(signals::stop_signals())?;
    std::thread::Builder::new().name("xtask-signals".into()).spawn(move || {
        let Some(signal) = watched.forever().next() else { return };
        STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
        // The terminal's Ctrl-C or hang-up reached the commands running now.
        let mut signalled = if signals::reaches_the_group(signal) { running_commands() } else { Vec::new() };
        loop {
            let running = running_commands();
            // A second signal ends xtask at once, as it does vggq, whatever still runs.
            if running.is_empty() || watched.pending().next().is_some() {
                signals::end_as(signal);
            }
            let unsignalled: Vec<String> = running.into_iter().filter(|child| !signalled.contains(child)).collect();
            for child in unsignalled {
                if let Err(error) = child.parse().map_err(std::io::Error::other).and_then(|pid| signals::send(pid, signal)) {
                    eprintln!("xtask could not pass {} on to process {child}: {error}", signals::name(signal));
                }
                signalled.push(child);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })?;
    Ok(())
}

/// The process ids of the commands xtask runs now: the children of each of its threads, as Linux lists
/// them (none where it does not, and xtask then ends at once, as it did before it watched signals).
fn running_commands() -> Vec<String> {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    threads
        .filter_map(|thread| std::fs::read_to_string(thread.ok()?.path().join("children")).ok())
        .flat_map(|children| children.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// A path given on xtask's command line, as the commands xtask runs from the workspace root must see it:
/// a relative one names a place below the folder `cargo xtask` was run in, as on any command line. clap
/// calls this while parsing, before `main` moves to the root.
fn given_path(text: &str) -> std::io::Result<PathBuf> {
    Ok(rebased(Path::new(text), &std::env::current_dir()?, &workspace_root()))
}

/// `path`, relative to `here`, as seen from `root`: relative still where `here` lies below `root` (run
/// from the root, unchanged), else absolute.
fn rebased(path: &Path, here: &Path, root: &Path) -> PathBuf {
    match here.strip_prefix(root) {
        Ok(below) => below.join(path),
        Err(_) => here.join(path),
    }
}

/// ONNX Runtime and the pinned Python venv, for the tests and benchmarks; says where they are.
fn setup(sh: &xshell::Shell) -> Result<Setup> {
    let onnxruntime = onnxruntime::ensure(sh)?;
    println!(
        "ONNX Runtime: {} (the vggq binary finds it through {})",
        onnxruntime.library.display(),
        onnxruntime::ORT_DYLIB_PATH
    );
    let python = python::ensure_venv(sh)?;
    println!("python venv: {}", python.display());
    Ok(Setup { python, onnxruntime })
}

/// Where `setup` put things.
struct Setup {
    python: PathBuf,
    onnxruntime: onnxruntime::OnnxRuntime,
}

/// Cargo's target folder, as cargo resolves it for this workspace (`$CARGO_TARGET_DIR`, `build.target-dir`
/// in a cargo config, else `target/` in the workspace); asked once, first thing.
static TARGET_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where cargo builds for this workspace ([`TARGET_DIR`]).
fn target_dir() -> &'static Path {
    TARGET_DIR.get().expect("main asks cargo first thing")
}

/// Cargo's answer for [`TARGET_DIR`] (`cargo metadata`'s `target_directory`).
fn cargo_target_dir(sh: &xshell::Shell) -> Result<PathBuf> {
    let metadata = xshell::cmd!(sh, "cargo metadata --no-deps --format-version 1").quiet().read()?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata).context("reading `cargo metadata`")?;
    let target = metadata["target_directory"].as_str().context("`cargo metadata` names no target_directory")?;
    Ok(PathBuf::from(target))
}

/// The GPU backends this machine can build and run, each with why: `cuda` where it has a CUDA toolkit,
/// `wgpu` where wgpu has a graphics API (the Vulkan loader on Linux; `cargo xtask test` installs Mesa's
/// lavapipe behind it). A machine with neither compiles neither. `autotune` where `--autotune` asks.
fn backend_features() -> Vec<(&'static str, String)> {
    let cuda =
        CudaToolkit::find().map(|toolkit| ("cuda", format!("this machine has the CUDA toolkit in {}", toolkit.root.display())));
    let wgpu = has_wgpu_api().then(|| ("wgpu", format!("this machine has a graphics API for wgpu ({VULKAN_LOADER} on Linux)")));
    let autotune = AUTOTUNE.get().copied().unwrap_or(false).then(|| ("autotune", "asked for with --autotune".to_string()));
    cuda.into_iter().chain(wgpu).chain(autotune).collect()
}

/// The package selection and `--features` ([`backend_features`]) every cargo command xtask runs on the
/// `vggq` package takes: the whole workspace, so that Cargo unifies the same dependency features for each
/// (onnx-import turns on burn-store's `burnpack`, and burn-import, its build dependency, changes vggq's
/// build script's dependencies) and one build of vggq serves the binary, the tests and the golden check.
/// `cargo build --bin vggq` alone and `cargo test --workspace` each compiled vggq's library and binary
/// (about 10 minutes of a cold CI run on 2 cores), and none rebuilds the burn stack with other features.
fn vggq_cargo_flags() -> Vec<String> {
    cargo_flags(&backend_features())
}

/// [`vggq_cargo_flags`] with `features` already probed.
fn cargo_flags(features: &[(&str, String)]) -> Vec<String> {
    let mut flags = vec!["--workspace".to_string()];
    let names: Vec<&str> = features.iter().map(|(name, _)| *name).collect();
    if !names.is_empty() {
        flags.extend(["--features".to_string(), names.join(",")]);
    }
    flags
}

/// Builds the `vggq` binary in release mode with this machine's features; returns its path.
fn build_vggq(sh: &xshell::Shell) -> Result<PathBuf> {
    let features = backend_features();
    for (feature, why) in &features {
        println!("vggq is built with `{feature}`: {why}");
    }
    let mut args = vec!["--release".to_string()];
    args.extend(cargo_flags(&features));
    cargo_build_bin(sh, &args, "vggq")
}

/// `first` on `sh`, with `beside` run meanwhile on a shell of its own (in the same folder, without the
/// variables pushed on `sh`, which a shell keeps to itself): for work that mostly waits on the network
/// (ONNX Runtime's wheel, the Python venv: about two minutes of a cold CI run) beside [`build_vggq`],
/// which keeps the cores busy (13 minutes cold on 2 cores). Returns what both returned, and how long
/// `beside` took; `first`'s error where both failed.
fn run_beside<A, B: Send>(
    sh: &xshell::Shell,
    first: impl FnOnce(&xshell::Shell) -> Result<A>,
    beside: impl FnOnce(&xshell::Shell) -> Result<B> + Send,
) -> Result<(A, B, std::time::Duration)> {
    let folder = sh.current_dir();
    std::thread::scope(|scope| {
        let beside = scope.spawn(move || {
            let started = std::time::Instant::now();
            let sh = xshell::Shell::new()?;
            sh.change_dir(folder);
            Ok::<_, anyhow::Error>((beside(&sh)?, started.elapsed()))
        });
        let first = first(sh);
        let beside = beside.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let first = first?;
        let (done, took) = beside?;
        Ok((first, done, took))
    })
}

/// `cargo build {args} --bin {bin}`; returns the executable's path as cargo names it, never guessed from
/// the target folder (a cargo config's `build.target`, or `--target` in `args`, puts it elsewhere).
fn cargo_build_bin(sh: &xshell::Shell, args: &[String], bin: &str) -> Result<PathBuf> {
    let messages = xshell::cmd!(sh, "cargo build {args...} --bin {bin} --message-format=json-render-diagnostics").read()?;
    built_executable(&messages, bin).with_context(|| format!("cargo built no `{bin}` executable"))
}

/// The executable of the binary `name` among cargo's JSON build messages (one a line).
fn built_executable(messages: &str, name: &str) -> Option<PathBuf> {
    executable_where(messages, |target, _| target["name"] == name)
}

/// The first executable among cargo's JSON build messages (one a line) whose artifact's target and
/// profile `wanted` takes.
fn executable_where(messages: &str, wanted: impl Fn(&serde_json::Value, &serde_json::Value) -> bool) -> Option<PathBuf> {
    messages.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|message| {
        let built = message["reason"] == "compiler-artifact" && wanted(&message["target"], &message["profile"]);
        built.then(|| message["executable"].as_str().map(PathBuf::from)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands xtask runs are found as its threads' children while they run, and not after.
    #[test]
    fn running_commands_are_the_threads_children() {
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id().to_string();
        assert!(running_commands().contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!running_commands().contains(&pid));
    }

    /// The binary is found in cargo's messages, not guessed from the target folder.
    #[test]
    fn the_built_binary_is_the_one_cargo_names() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"vggq_core"},"executable":null}"#,
            "not json",
            r#"{"reason":"compiler-artifact","target":{"name":"vggq"},"executable":"/t/x86_64-unknown-linux-gnu/release/vggq"}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(built_executable(&messages, "vggq"), Some(PathBuf::from("/t/x86_64-unknown-linux-gnu/release/vggq")));
        assert_eq!(built_executable(&messages, "xtask"), None);
    }

    /// The two run at once (each waits for the other's message), in the same folder, and the first's
    /// error is the one said where both fail.
    #[test]
    fn work_beside_runs_meanwhile_and_the_first_error_is_said() {
        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(std::env::temp_dir());
        let (to_beside, from_first) = std::sync::mpsc::channel();
        let (to_first, from_beside) = std::sync::mpsc::channel();
        let wait = std::time::Duration::from_secs(10);
        let (first, beside, _) = run_beside(
            &sh,
            |sh| {
                to_beside.send(())?;
                from_beside.recv_timeout(wait)?;
                Ok(sh.current_dir())
            },
            move |sh| {
                from_first.recv_timeout(wait)?;
                to_first.send(())?;
                Ok(sh.current_dir())
            },
        )
        .unwrap();
        assert_eq!((first, beside), (std::env::temp_dir(), std::env::temp_dir()));
        let failed = run_beside(&sh, |_| -> Result<()> { anyhow::bail!("first") }, |_| -> Result<()> { anyhow::bail!("beside") });
        assert_eq!(failed.unwrap_err().to_string(), "first");
        let failed = run_beside(&sh, |_| Ok(()), |_| -> Result<()> { anyhow::bail!("beside") });
        assert_eq!(failed.unwrap_err().to_string(), "beside");
    }

    #[test]
    fn a_given_path_means_the_same_place_from_the_root() {
        let root = Path::new("/work/vggq");
        let data = Path::new("../shared/data.tar.gz");
        assert_eq!(rebased(data, root, root), data, "run from the root: unchanged");
        assert_eq!(rebased(data, &root.join("xtask"), root), Path::new("xtask/../shared/data.tar.gz"));
        assert_eq!(rebased(data, Path::new("/home/me"), root), Path::new("/home/me/../shared/data.tar.gz"));
        assert_eq!(rebased(Path::new("/data/cifar"), &root.join("xtask"), root), Path::new("/data/cifar"), "absolute");
    }

    /// `--autotune` is offered by the commands that build vggq, after their name as after their
    /// subcommand's, and by no other.
    #[test]
    fn autotune_belongs_to_the_commands_that_build() {
        let autotune =
            |line: &str| Cli::try_parse_from(line.split(' ')).map(|cli| cli.command.build().map(|build| build.autotune));
        assert_eq!(autotune("xtask all --autotune").unwrap(), Some(true));
        assert_eq!(autotune("xtask all").unwrap(), Some(false));
        assert_eq!(autotune("xtask bench train --autotune").unwrap(), Some(true));
        assert_eq!(autotune("xtask device-golden dir --autotune").unwrap(), Some(true));
        assert_eq!(autotune("xtask inspect model.pth").unwrap(), None);
        for refused in [
            "xtask inspect model.pth --autotune",
            "xtask setup --autotune",
            "xtask device-bundle --autotune",
            "xtask --autotune all",
        ] {
            assert!(autotune(refused).is_err(), "{refused}");
        }
    }
}
