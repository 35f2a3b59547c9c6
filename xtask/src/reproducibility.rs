//! What `cargo xtask test` checks of the promise that a CPU run is the same bytes on every machine: a
//! small training and quantization at the smoke shapes on 1, 2, 3 and 5 threads, with the AVX2 kernels
//! forced (`VGGQ_ISA=avx2`), and under qemu-user emulating a Haswell (AVX2 and FMA, no AVX-512, so
//! every library's own instruction-set choice too), each giving the same `model_fp32.mpk` and `.pth`
//! files; and of lavapipe, where CI runs the GPU code path, that its training is the same bytes on that
//! emulated Haswell too, and when it is killed and resumed. `cargo xtask other-cpus` checks what CI
//! cannot afford: the same small run on an emulated x86-64 without AVX2 and FMA and as an aarch64 build.
//! On a host that is not x86-64, only the thread counts are checked (the rest is x86-64's). The data is
//! CIFAR-10's binary layout with generated pixels: under emulation, reading it costs little where
//! decoding JPEGs would not.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vggq_core::interrupted::kill_once_written;
use vggq_core::run_folder::{checkpoint_in_run, AUTOTUNE_FOLDER, MODEL_FILE};
use vggq_core::{QatMode, Variant};
use xshell::{cmd, Shell};

use crate::debian::{self, found};

/// Where the runs and their data go: `reproducibility/` in the target folder.
fn folder() -> PathBuf {
    crate::target_dir().join("reproducibility")
}
/// The core counts the native runs use.
const THREADS: [usize; 4] = [1, 2, 3, 5];
/// The native runs: a few hundred images, every step of training and quantization.
const NATIVE_LIMITS: [&str; 8] = ["--train-images", "320", "--eval-images", "160", "--calibration-batches", "2", "--epochs", "1"];
/// The emulated run (and its native twin): a few dozen images, qemu being some hundred times slower.
const EMULATED_LIMITS: [&str; 8] = ["--train-images", "64", "--eval-images", "32", "--calibration-batches", "1", "--epochs", "1"];
/// The emulated lavapipe run (and its native twin): one training step, lavapipe under emulation
/// taking about two minutes for it.
const LAVAPIPE_LIMITS: [&str; 8] = ["--train-images", "32", "--eval-images", "32", "--calibration-batches", "1", "--epochs", "1"];
/// The lavapipe run killed and resumed (and its straight twin): an epoch of 12 full batches and a
/// partial one, read every 3 steps, so that a checkpoint is taken inside it (at the progress read after
/// step 3) and the rerun draws again both a first step's pass and later steps' masks: 213 s on 2 cores
/// without AVX-512 (straight 96, killed 38, resumed 79), where 1,648 images (52 steps, read after step
/// 50) ran about 104 steps of 5.5 s.
const LAVAPIPE_RESUME_LIMITS: [&str; 8] =
    ["--train-images", "400", "--eval-images", "32", "--calibration-batches", "1", "--epochs", "1"];
/// The killed run's checkpoints: at every progress read (its straight twin takes none inside the epoch).
const LAVAPIPE_RESUME_CHECKPOINTS: [&str; 2] = ["--checkpoint-minutes", "0"];
/// What the rerun says.
const LAVAPIPE_RESUMING: &str = "resuming after step 3 of 13 in epoch 1 of 1";
/// The CPU qemu-user emulates: AVX2 and FMA, no AVX-512.
const EMULATED_CPU: &str = "Haswell";
/// The CPU `other-cpus` emulates: AVX, no AVX2 and no FMA (the kernels' scalar path, and every library's
/// choice for such a CPU).
const NO_FMA_CPU: &str = "SandyBridge";
/// The architecture `other-cpus` builds vggq for and runs under qemu-user, with Debian's cross toolchain
/// (its C compiler for ring, its linker and its system libraries for qemu).
const ARM_TARGET: &str = "aarch64-unknown-linux-gnu";
const ARM_GCC: &str = "aarch64-linux-gnu-gcc";
const ARM_SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// Whether this host is x86-64: the forced AVX2 kernels are x86-64's, and qemu-x86_64 runs this host's
/// own build on the emulated CPUs. Elsewhere (an aarch64 host) the checks keep to what runs natively.
const X86_HOST: bool = cfg!(target_arch = "x86_64");

pub fn run(sh: &Shell, vggq: &Path) -> Result<()> {
    let data = generated_cifar()?;
    let mut native = Vec::new();
    for threads in THREADS {
        let _threads = sh.push_env("RAYON_NUM_THREADS", threads.to_string());
        native.push(train_and_quantize(sh, &[vggq], &data, &format!("threads-{threads}"), &NATIVE_LIMITS)?);
    }
    for (run, threads) in native.iter().zip(THREADS).skip(1) {
        same_files(&native[0], run, &model_files()).with_context(|| format!("1 thread against {threads}"))?;
    }
    println!("reproducible: 1, 2, 3 and 5 threads give the same model files");
    if !X86_HOST {
        println!("not checked on this {} host: the AVX2 kernels and an emulated Haswell (x86-64's)", std::env::consts::ARCH);
        return Ok(());
    }
    let avx2 = {
        let _isa = sh.push_env("VGGQ_ISA", "avx2");
        train_and_quantize(sh, &[vggq], &data, "avx2", &NATIVE_LIMITS)?
    };
    same_files(&native[0], &avx2, &model_files()).context("1 thread against VGGQ_ISA=avx2")?;
    println!("reproducible: the AVX2 kernels give the same model files");

    let qemu = qemu(sh, "qemu-x86_64")?;
    let reference = train_and_quantize(sh, &[vggq], &data, "native-small", &EMULATED_LIMITS)?;
    let emulated = train_and_quantize(sh, &emulated(&qemu, EMULATED_CPU, vggq), &data, "qemu-haswell", &EMULATED_LIMITS)?;
    same_files(&reference, &emulated, &model_files()).context("this CPU against an emulated Haswell (qemu-user)")?;
    println!("reproducible: qemu-x86_64 -cpu {EMULATED_CPU} gives the same model files as this CPU");
    Ok(())
}

/// Mesa's shader cache, off: each run compiles its own kernels.
const SHADER_CACHE_OFF: (&str, &str) = ("MESA_SHADER_CACHE_DISABLE", "true");

/// lavapipe's thread count for its rerun (`LP_NUM_THREADS`; by default it runs its kernels on as many
/// threads as the CPU has cores).
const LAVAPIPE_THREADS: (&str, &str) = ("LP_NUM_THREADS", "3");

/// One wgpu training step on lavapipe, the GPU code path CI runs, then again on another count of
/// lavapipe's threads and, on an x86-64 host, on an emulated Haswell: each must give the same model
/// (and, between the two, a training killed and resumed must too: [`resumed_on_lavapipe`]).
/// Lavapipe compiles the kernels with LLVM for the CPU it finds (AVX-512 instructions where there are
/// some), and its adapter's name says only its vector width ("256 bits" on both), so the reviewed
/// `smoke-wgpu` table would hold its tolerance for the same arithmetic on a CPU that computes otherwise
/// unless the training is the same bytes there. qemu computes the approximate reciprocal instructions
/// (`rcpps`, `rsqrtps`) as exact divisions, as no real CPU does, so this fails too where such an
/// instruction reaches the model. Mesa's shader cache is off: each run compiles its own kernels (with
/// `autotune`, from the first run's choices). One step runs every kernel training runs; the thread
/// count's check trained the pipeline's 320 images again before, 102 s here against 39 s.
pub fn lavapipe(sh: &Shell, vggq: &Path) -> Result<()> {
    let data = generated_cifar()?;
    let _no_shader_cache = sh.push_env(SHADER_CACHE_OFF.0, SHADER_CACHE_OFF.1);
    let model = [MODEL_FILE.to_string()];
    let reference = train(sh, &[vggq], &data, "lavapipe-native", "wgpu", &LAVAPIPE_LIMITS, &[])?;
    print_checksums(sh, &reference, &model)?;
    let autotune = reference.join(AUTOTUNE_FOLDER);
    let reuse = [Path::new("--autotune-cache"), autotune.as_path()];
    let (variable, threads) = LAVAPIPE_THREADS;
    let rerun = {
        let _threads = sh.push_env(variable, threads);
        train(sh, &[vggq], &data, "lavapipe-threads", "wgpu", &LAVAPIPE_LIMITS, &reuse)?
    };
    print_checksums(sh, &rerun, &model)?;
    same_files(&reference, &rerun, &model).with_context(|| format!("lavapipe on its default threads against {threads}"))?;
    println!("reproducible on wgpu: lavapipe on {threads} threads ({variable}) trains the same model as on its default");
    resumed_on_lavapipe(sh, vggq, &data)?;
    println!("reproducible on wgpu: killed inside its epoch and resumed, a training ends as one with no checkpoint");
    if !X86_HOST {
        println!("not checked on this {} host: lavapipe on an emulated Haswell (x86-64's)", std::env::consts::ARCH);
        return Ok(());
    }
    let emulated = train(
        sh,
        &emulated(&qemu(sh, "qemu-x86_64")?, EMULATED_CPU, vggq),
        &data,
        "lavapipe-qemu-haswell",
        "wgpu",
        &LAVAPIPE_LIMITS,
        &reuse,
    )?;
    print_checksums(sh, &emulated, &model)?;
    same_files(&reference, &emulated, &model).context("lavapipe on this CPU against an emulated Haswell")?;
    println!("reproducible on wgpu: lavapipe under qemu-x86_64 -cpu {EMULATED_CPU} trains the same model as on this CPU");
    Ok(())
}

/// A wgpu training killed once its checkpoint inside the epoch is written, then run again, trains the
/// same model as one that never stopped and took no checkpoint: the rerun's replay of Burn's random draws
/// through cubecl (whose fusion takes a random operation's seed when it runs) as a GPU would make it, and
/// a checkpoint's reads leaving fusion's queue as it was; the CPU's is `tests/cli.rs`'s.
fn resumed_on_lavapipe(sh: &Shell, vggq: &Path, data: &Path) -> Result<()> {
    let model = [MODEL_FILE.to_string()];
    let straight = train(sh, &[vggq], data, "lavapipe-straight", "wgpu", &LAVAPIPE_RESUME_LIMITS, &[])?;
    print_checksums(sh, &straight, &model)?;
    // The straight run's kernels (a build with `autotune` chooses them by timing).
    let autotune = straight.join(AUTOTUNE_FOLDER);
    let out = folder().join("lavapipe-resumed");
    // What an earlier check left would be resumed from, or found before this run's checkpoint.
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let checkpoint = out.join(checkpoint_in_run("train"));
    // The killed run's command is its rerun's.
    let args: Vec<OsString> = ["train", "--profile", "smoke", "--device", "wgpu"]
        .into_iter()
        .chain(LAVAPIPE_RESUME_LIMITS)
        .chain(LAVAPIPE_RESUME_CHECKPOINTS)
        .map(OsString::from)
        .chain([OsString::from("--autotune-cache"), autotune.into_os_string()])
        .chain([OsString::from("--data"), data.into()])
        .chain([OsString::from("--out"), out.clone().into_os_string()])
        .collect();
    let mut first = std::process::Command::new(vggq);
    first
        .args(&args)
        .current_dir(sh.current_dir())
        .env(SHADER_CACHE_OFF.0, SHADER_CACHE_OFF.1)
        .stdout(std::process::Stdio::null());
    kill_once_written(&mut first, &checkpoint).context("vggq train, to be killed once its checkpoint is written")?;
    let resumed = cmd!(sh, "{vggq} {args...}").read()?;
    if !resumed.contains(LAVAPIPE_RESUMING) {
        bail!("vggq train, run again after it was killed, did not resume:\n{resumed}");
    }
    print_checksums(sh, &out, &model)?;
    same_files(&straight, &out, &model).context("lavapipe, killed and resumed, against a training that never stopped")
}

/// `cargo xtask other-cpus`: the small training and quantization of [`run`]'s emulated check, natively,
/// on an emulated x86-64 without AVX2 and FMA, and built for aarch64 Linux and run under qemu-user (its
/// NEON kernels, after their unit tests there): the same model files on each. Kept out of CI: the
/// emulated scalar path takes about 7 minutes of 2 cores (`f32::mul_add` without FMA is glibc's exact
/// `fmaf` in software), the aarch64 build 18 cold. An x86-64 host's.
pub fn other_cpus(sh: &Shell, vggq: &Path) -> Result<()> {
    if !X86_HOST {
        bail!(
            "other-cpus runs this host's build on emulated x86-64 CPUs and cross-builds for {ARM_TARGET}: it needs an \
             x86-64 host, and this one is {}",
            std::env::consts::ARCH
        );
    }
    let data = generated_cifar()?;
    let reference = train_and_quantize(sh, &[vggq], &data, "native-small", &EMULATED_LIMITS)?;
    let qemu_x86 = qemu(sh, "qemu-x86_64")?;
    let no_fma = train_and_quantize(sh, &emulated(&qemu_x86, NO_FMA_CPU, vggq), &data, "qemu-sandybridge", &EMULATED_LIMITS)?;
    same_files(&reference, &no_fma, &model_files()).context("this CPU against an emulated SandyBridge (qemu-user)")?;
    println!("reproducible: qemu-x86_64 -cpu {NO_FMA_CPU} (no AVX2, no FMA) gives the same model files as this CPU");

    let qemu_arm = qemu(sh, "qemu-aarch64")?;
    let arm_vggq = build_for_arm(sh, &qemu_arm)?;
    let on_arm = [qemu_arm.as_path(), Path::new("-L"), Path::new(ARM_SYSROOT), arm_vggq.as_path()];
    let on_arm = train_and_quantize(sh, &on_arm, &data, "qemu-aarch64", &EMULATED_LIMITS)?;
    same_files(&reference, &on_arm, &model_files()).context("this CPU against aarch64 (qemu-user)")?;
    println!("reproducible: vggq built for {ARM_TARGET}, under qemu-aarch64, gives the same model files as this CPU");
    Ok(())
}

/// vggq built for [`ARM_TARGET`], CPU only (the package alone, no GPU backend: the cross build needs
/// neither), installing the Rust target and Debian's cross toolchain where they are missing; first, the
/// kernels' unit tests built for it and run under `qemu_arm`, which hold the NEON paths to the
/// definitions bit for bit.
fn build_for_arm(sh: &Shell, qemu_arm: &Path) -> Result<PathBuf> {
    let installed = cmd!(sh, "rustup target list --installed").read().context("rustup, to add the aarch64 target")?;
    if !installed.lines().any(|line| line.trim() == ARM_TARGET) {
        cmd!(sh, "rustup target add {ARM_TARGET}").run()?;
    }
    let toolchain = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];
    if found(sh, ARM_GCC).is_none() {
        debian::install(sh, &toolchain, "to cross-compile vggq for aarch64")?;
    }
    if found(sh, ARM_GCC).is_none() {
        bail!("{ARM_GCC} is missing: install Debian's {} to build vggq for {ARM_TARGET}", toolchain.join(" and "));
    }
    let target_variable = ARM_TARGET.replace('-', "_");
    let _cc = sh.push_env(format!("CC_{target_variable}"), ARM_GCC);
    let _ar = sh.push_env(format!("AR_{target_variable}"), "aarch64-linux-gnu-ar");
    let _linker = sh.push_env(format!("CARGO_TARGET_{}_LINKER", target_variable.to_uppercase()), ARM_GCC);
    let _runner = sh.push_env(
        format!("CARGO_TARGET_{}_RUNNER", target_variable.to_uppercase()),
        format!("{} -L {ARM_SYSROOT}", qemu_arm.display()),
    );
    cmd!(sh, "cargo test --release --target {ARM_TARGET} --package vggq --lib kernels").run()?;
    crate::cargo_build_bin(sh, &["--release", "--target", ARM_TARGET, "--package", "vggq"].map(String::from), "vggq")
}

/// `vggq` behind qemu-user, emulating `cpu`.
fn emulated<'a>(qemu: &'a Path, cpu: &'a str, vggq: &'a Path) -> [&'a Path; 4] {
    [qemu, Path::new("-cpu"), Path::new(cpu), vggq]
}

/// `program train` and `program quantize` (`program` possibly behind an emulator) on the CPU into
/// `reproducibility/name` in the target folder; returns the folder.
fn train_and_quantize(sh: &Shell, program: &[&Path], data: &Path, name: &str, limits: &[&str]) -> Result<PathBuf> {
    let out = train(sh, program, data, name, "cpu", limits, &[])?;
    let (first, rest) = program.split_first().context("a program")?;
    cmd!(sh, "{first} {rest...} quantize --run {out} {QUANTIZE_ON_CPU...} --data {data}").ignore_stdout().run()?;
    print_checksums(sh, &out, &model_files())?;
    Ok(out)
}

/// `vggq quantize`'s arguments in [`train_and_quantize`], beside its run and data.
const QUANTIZE_ON_CPU: [&str; 3] = ["--device", "cpu", "--force"];

/// A CPU run that another machine repeats, to compare its model files with this one's.
pub struct ReferenceRun {
    /// Where it ran here.
    pub folder: PathBuf,
    /// `vggq train` and `vggq quantize`'s arguments, beside `--data` and `--out` / `--run`.
    pub train: Vec<String>,
    pub quantize: Vec<String>,
    /// The files to compare, each with its SHA-256 here.
    pub sha256: Vec<(String, String)>,
}

/// [`run`]'s thread check's training and quantization on the CPU (where `small`, its emulated run's few
/// dozen images), with `vggq` on `data`, into `reproducibility/name` in the target folder: for
/// `cargo xtask device-bundle`, whose check repeats it on the GPU machine's CPU.
pub fn reference_run(sh: &Shell, vggq: &Path, data: &Path, name: &str, small: bool) -> Result<ReferenceRun> {
    let limits: &[&str] = if small { &EMULATED_LIMITS } else { &NATIVE_LIMITS };
    let folder = train_and_quantize(sh, &[vggq], data, name, limits)?;
    let files = model_files();
    let digests = sha256sum(sh, &folder, &files)?;
    let digests = digests.lines().map(|line| line.split_whitespace().next().unwrap_or_default().to_string());
    Ok(ReferenceRun {
        sha256: files.into_iter().zip(digests).collect(),
        folder,
        train: train_args("cpu", limits).map(String::from).collect(),
        quantize: QUANTIZE_ON_CPU.map(String::from).to_vec(),
    })
}

/// `vggq train`'s arguments in [`train`] on `device` with `limits`, beside its data, its folder and
/// anything extra.
fn train_args<'a>(device: &'a str, limits: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    ["--profile", "smoke", "--device", device, "--force"].into_iter().chain(limits.iter().copied())
}

/// `program train` on `device` into `reproducibility/name` in the target folder with `extra` arguments;
/// returns the folder.
fn train(
    sh: &Shell,
    program: &[&Path],
    data: &Path,
    name: &str,
    device: &str,
    limits: &[&str],
    extra: &[&Path],
) -> Result<PathBuf> {
    let out = folder().join(name);
    let (first, rest) = program.split_first().context("a program")?;
    let args = train_args(device, limits);
    cmd!(sh, "{first} {rest...} train {args...} {extra...} --data {data} --out {out}").ignore_stdout().run()?;
    Ok(out)
}

/// Prints `sha256sum` of `files` in `folder`: the log shows what was compared.
fn print_checksums(sh: &Shell, folder: &Path, files: &[String]) -> Result<()> {
    println!("{}", sha256sum(sh, folder, files)?);
    Ok(())
}

/// `sha256sum`'s lines for `files` in `folder`, in their order (`<digest>  <path>`).
fn sha256sum(sh: &Shell, folder: &Path, files: &[String]) -> Result<String> {
    let paths: Vec<PathBuf> = files.iter().map(|file| folder.join(file)).collect();
    Ok(cmd!(sh, "sha256sum {paths...}").read()?)
}

/// The model files both runs must share, byte for byte.
fn model_files() -> Vec<String> {
    let mut files = vec![MODEL_FILE.to_string()];
    files.extend(Variant::all(QatMode::Fp32match).map(Variant::pth_file));
    files
}

/// Fails unless each of `files` is the same bytes in the folders `a` and `b`, naming the first that is
/// not and how many of its bytes differ.
fn same_files(a: &Path, b: &Path, files: &[String]) -> Result<()> {
    for file in files {
        let (left, right) = (a.join(file), b.join(file));
        let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        let (left_bytes, right_bytes) = (read(&left)?, read(&right)?);
        if left_bytes != right_bytes {
            let differing = left_bytes.iter().zip(&right_bytes).filter(|(x, y)| x != y).count();
            bail!(
                "{} and {} differ: {differing} of {} bytes ({} against {} in all)",
                left.display(),
                right.display(),
                left_bytes.len().min(right_bytes.len()),
                left_bytes.len(),
                right_bytes.len()
            );
        }
    }
    Ok(())
}

/// One of qemu-user's emulators (`qemu-x86_64`, `qemu-aarch64`), installed from Debian's packages where it
/// is missing (CI runs as root).
fn qemu(sh: &Shell, emulator: &str) -> Result<PathBuf> {
    if found(sh, emulator).is_none() {
        debian::install(sh, &["qemu-user"], "to run vggq on an emulated CPU")?;
    }
    found(sh, emulator).map(PathBuf::from).with_context(|| {
        format!(
            "{emulator} is missing: install Debian's qemu-user (`apt-get install qemu-user`); the reproducibility \
             checks run vggq on an emulated CPU with it"
        )
    })
}

/// CIFAR-10's binary layout (`cifar-10-batches-bin/`) with generated pixels and labels: 10,000 training
/// images (the smoke profile's subset needs that many) and 200 test images, written once.
fn generated_cifar() -> Result<PathBuf> {
    let root = folder().join("data");
    let batches = root.join("cifar-10-batches-bin");
    let complete = batches.join("test_batch.bin");
    if complete.exists() {
        return Ok(root);
    }
    std::fs::create_dir_all(&batches)?;
    let classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    std::fs::write(batches.join("batches.meta.txt"), classes.join("\n") + "\n")?;
    // A linear congruential generator: the same bytes on every machine.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut records = |count: usize| -> Vec<u8> {
        let mut bytes = Vec::with_capacity(count * 3073);
        for i in 0..count {
            bytes.push((i % classes.len()) as u8);
            bytes.extend((0..3072).map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            }));
        }
        bytes
    };
    for batch in 1..=5 {
        std::fs::write(batches.join(format!("data_batch_{batch}.bin")), records(2_000))?;
    }
    // Last, and whole (an interrupted write leaves none): its presence says the folder is complete.
    vggq_core::atomic::write(&complete, &records(200))?;
    Ok(root)
}
