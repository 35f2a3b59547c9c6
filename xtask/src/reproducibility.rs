//! What `cargo xtask test` checks of the promise that a CPU run is the same bytes on every machine: a
//! small training and quantization at the smoke shapes on 1, 2, 3 and 5 threads, with the AVX2 kernels
//! forced (`VGGQ_ISA=avx2`), and under qemu-user emulating a Haswell (AVX2 and FMA, no AVX-512, so
//! every library's own instruction-set choice too), each giving the same `model_fp32.mpk` and `.pth`
//! files; and of lavapipe, where CI runs the GPU code path, that its training is the same bytes on that
//! emulated Haswell too. The data is CIFAR-10's binary layout with generated pixels: under emulation,
//! reading it costs little where decoding JPEGs would not.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vggq_core::run_folder::{AUTOTUNE_FOLDER, MODEL_FILE};
use vggq_core::{QatMode, Variant};
use xshell::{cmd, Shell};

/// Where the runs and their data go.
const FOLDER: &str = "target/reproducibility";
/// The core counts the native runs use.
const THREADS: [usize; 4] = [1, 2, 3, 5];
/// The native runs: a few hundred images, every step of training and quantization.
const NATIVE_LIMITS: [&str; 8] = ["--train-images", "320", "--eval-images", "160", "--calibration-batches", "2", "--epochs", "1"];
/// The emulated run (and its native twin): a few dozen images, qemu being some hundred times slower.
const EMULATED_LIMITS: [&str; 8] = ["--train-images", "64", "--eval-images", "32", "--calibration-batches", "1", "--epochs", "1"];
/// The emulated lavapipe run (and its native twin): one training step, lavapipe under emulation
/// taking about two minutes for it.
const LAVAPIPE_LIMITS: [&str; 8] = ["--train-images", "32", "--eval-images", "32", "--calibration-batches", "1", "--epochs", "1"];
/// The CPU qemu-user emulates: AVX2 and FMA, no AVX-512.
const EMULATED_CPU: &str = "Haswell";

pub fn run(sh: &Shell, vggq: &Path) -> Result<()> {
    let data = generated_cifar(sh)?;
    let mut native = Vec::new();
    for threads in THREADS {
        let _threads = sh.push_env("RAYON_NUM_THREADS", threads.to_string());
        native.push(train_and_quantize(sh, &[vggq], &data, &format!("threads-{threads}"), &NATIVE_LIMITS)?);
    }
    let avx2 = {
        let _isa = sh.push_env("VGGQ_ISA", "avx2");
        train_and_quantize(sh, &[vggq], &data, "avx2", &NATIVE_LIMITS)?
    };
    for (run, name) in native.iter().skip(1).chain([&avx2]).zip(["2 threads", "3 threads", "5 threads", "VGGQ_ISA=avx2"]) {
        same_files(&native[0], run, &model_files()).with_context(|| format!("1 thread against {name}"))?;
    }
    println!("reproducible: 1, 2, 3 and 5 threads and the AVX2 kernels give the same model files");

    let qemu = qemu(sh)?;
    let reference = train_and_quantize(sh, &[vggq], &data, "native-small", &EMULATED_LIMITS)?;
    let emulated = train_and_quantize(sh, &emulated(&qemu, vggq), &data, "qemu-haswell", &EMULATED_LIMITS)?;
    same_files(&reference, &emulated, &model_files()).context("this CPU against an emulated Haswell (qemu-user)")?;
    println!("reproducible: qemu-x86_64 -cpu {EMULATED_CPU} gives the same model files as this CPU");
    Ok(())
}

/// Lavapipe compiles the kernels with LLVM for the CPU it finds (AVX-512 instructions where there are
/// some), and its adapter's name says only its vector width ("256 bits" on both), so the reviewed
/// `smoke-wgpu` table would hold its tolerance for the same arithmetic on a CPU that computes otherwise
/// unless the training is the same bytes there: one wgpu training step here and on an emulated Haswell
/// must give the same model. qemu computes the approximate reciprocal instructions (`rcpps`, `rsqrtps`)
/// as exact divisions, as no real CPU does, so this fails too where such an instruction reaches the
/// model. Mesa's shader cache is off: the emulated run compiles its own kernels (with `autotune`, from
/// the native run's choices).
pub fn lavapipe(sh: &Shell, vggq: &Path) -> Result<()> {
    let data = generated_cifar(sh)?;
    let _no_shader_cache = sh.push_env("MESA_SHADER_CACHE_DISABLE", "true");
    let model = [MODEL_FILE.to_string()];
    let reference = train(sh, &[vggq], &data, "lavapipe-native", "wgpu", &LAVAPIPE_LIMITS, &[])?;
    print_checksums(sh, &reference, &model)?;
    let autotune = reference.join(AUTOTUNE_FOLDER);
    let reuse = [Path::new("--autotune-cache"), autotune.as_path()];
    let emulated = train(sh, &emulated(&qemu(sh)?, vggq), &data, "lavapipe-qemu-haswell", "wgpu", &LAVAPIPE_LIMITS, &reuse)?;
    print_checksums(sh, &emulated, &model)?;
    same_files(&reference, &emulated, &model).context("lavapipe on this CPU against an emulated Haswell")?;
    println!("reproducible on wgpu: lavapipe under qemu-x86_64 -cpu {EMULATED_CPU} trains the same model as on this CPU");
    Ok(())
}

/// `vggq` behind qemu-user, emulating `EMULATED_CPU`.
fn emulated<'a>(qemu: &'a Path, vggq: &'a Path) -> [&'a Path; 4] {
    [qemu, Path::new("-cpu"), Path::new(EMULATED_CPU), vggq]
}

/// `program train` and `program quantize` (`program` possibly behind an emulator) on the CPU into
/// `FOLDER/name`; returns the folder.
fn train_and_quantize(sh: &Shell, program: &[&Path], data: &Path, name: &str, limits: &[&str]) -> Result<PathBuf> {
    let out = train(sh, program, data, name, "cpu", limits, &[])?;
    let (first, rest) = program.split_first().context("a program")?;
    cmd!(sh, "{first} {rest...} quantize --run {out} --device cpu --force --data {data}").ignore_stdout().run()?;
    print_checksums(sh, &out, &model_files())?;
    Ok(out)
}

/// `program train` on `device` into `FOLDER/name` with `extra` arguments; returns the folder.
fn train(
    sh: &Shell,
    program: &[&Path],
    data: &Path,
    name: &str,
    device: &str,
    limits: &[&str],
    extra: &[&Path],
) -> Result<PathBuf> {
    let out = Path::new(FOLDER).join(name);
    let (first, rest) = program.split_first().context("a program")?;
    cmd!(
        sh,
        "{first} {rest...} train --profile smoke --device {device} --force {limits...} {extra...} --data {data} --out {out}"
    )
    .ignore_stdout()
    .run()?;
    Ok(out)
}

/// Prints `sha256sum` of `files` in `folder`: the log shows what was compared.
fn print_checksums(sh: &Shell, folder: &Path, files: &[String]) -> Result<()> {
    let paths: Vec<PathBuf> = files.iter().map(|file| folder.join(file)).collect();
    println!("{}", cmd!(sh, "sha256sum {paths...}").read()?);
    Ok(())
}

/// The model files both runs must share, byte for byte.
fn model_files() -> Vec<String> {
    let mut files = vec![MODEL_FILE.to_string()];
    files.extend(Variant::all(QatMode::Fp32match).map(Variant::pth_file));
    files
}

/// Fails unless each of `files` is the same bytes in the folders `a` and `b`, naming the first that is
/// not and how many of its bytes differ.
pub fn same_files(a: &Path, b: &Path, files: &[String]) -> Result<()> {
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

/// qemu-user's x86-64 emulator, installed from Debian's packages where it is missing (CI runs as root).
fn qemu(sh: &Shell) -> Result<PathBuf> {
    let found = || cmd!(sh, "sh -c 'command -v qemu-x86_64'").quiet().ignore_status().read().ok().filter(|p| !p.is_empty());
    if let Some(path) = found() {
        return Ok(PathBuf::from(path));
    }
    let root = cmd!(sh, "id -u").read().is_ok_and(|id| id.trim() == "0");
    if root {
        println!("installing qemu-user (Debian's package) to run the kernels on an emulated AVX2-only CPU");
        cmd!(sh, "apt-get install -y --no-install-recommends qemu-user").run().context("apt-get install qemu-user")?;
    }
    found().map(PathBuf::from).context(
        "qemu-x86_64 is missing: install Debian's qemu-user (`apt-get install qemu-user`); the reproducibility check \
         runs the kernels on an emulated AVX2-only CPU with it",
    )
}

/// CIFAR-10's binary layout (`cifar-10-batches-bin/`) with generated pixels and labels: 10,000 training
/// images (the smoke profile's subset needs that many) and 200 test images, written once.
fn generated_cifar(sh: &Shell) -> Result<PathBuf> {
    let root = sh.current_dir().join(FOLDER).join("data");
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
    // Last: its presence says the folder is complete.
    std::fs::write(&complete, records(200))?;
    Ok(root)
}
