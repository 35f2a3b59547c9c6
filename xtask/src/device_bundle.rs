//! `cargo xtask device-bundle`: what the GPU check (`scripts/device-check.sh`) needs on the GPU machine
//! the `device` tool lends, which has no cargo and no network, in git-ignored folders `.device/partNN/`
//! that one `device` call each carries (at most 64 MiB a call; parts are kept under
//! [`PART_LIMIT`]). Carry `part01` first, then the others while the machine stays warm, then run the
//! script; it reassembles everything there.
//!
//! The payloads, each xz-compressed and cut into pieces across the parts in order:
//! - `vggq`, built with `--features cuda` for the machine's CUDA 13.0 driver (`CUDARC_CUDA_VERSION`), in a
//!   target folder of its own so the main one stays warm; and beside it `vggq-autotune`, the same with
//!   cubecl's autotune, which the script falls back to where the default kernels fail (the first H200
//!   check saw the tuning build run; the default kernels have run on lavapipe only);
//! - the JPEG copy of CIFAR-10 and the PyTorch baseline (`../shared` does not travel);
//! - a small CPU training and quantization made here with that `vggq` ([`CPU_REFERENCE`]), which the
//!   check repeats on the GPU machine's CPU (AVX-512 where it has it, which CI's CPU has not), and the
//!   library's unit tests, whose kernel tests it runs there first ([`KERNEL_TESTS`]);
//! - ONNX Runtime's GPU build from the pinned `onnxruntime-gpu` wheel: the library, its shared
//!   provider and its CUDA provider (284 MB, the bulk of the bundle). The CUDA 13, cuBLAS and cuDNN 9
//!   libraries the provider needs are on the machine already, in its PyTorch's `nvidia/` wheels.
//!
//! `--dry-run` bundles the CPU build and the CPU ONNX Runtime instead, in small parts, for
//! `scripts/device-check.sh --dry-run` to rehearse the whole check here and in CI; a copy of the CPU
//! build stands in for `vggq-autotune` (autotune is a GPU matter), so that the fallback is rehearsed too.
//! It goes under `target/` ([`DRY_RUN_BUNDLE_DIR`]), so that a rehearsal (`cargo xtask test`) never
//! replaces a GPU bundle waiting in `.device/`, and `vggq.env` names the bundle's kind, which the script
//! checks against its mode: a rehearsal bundle carried to the GPU stops the check at once.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vggq_core::places::{shared_cifar10_jpeg, shared_torch_bench};
use xshell::{cmd, Shell};

use crate::onnxruntime::{self, CPU_WHEEL, GPU_WHEEL};
use crate::{device_golden, reproducibility, test};

/// The bundle's folder (git-ignored).
pub const BUNDLE_DIR: &str = ".device";
/// What a bundle's folder is called while it is written (`.device.partial`, ignored by git as `.device` is).
const PARTIAL_SUFFIX: &str = ".partial";
/// The dry run's bundle, in the target folder; the script finds it through `VGGQ_BUNDLE`.
pub const DRY_RUN_BUNDLE_DIR: &str = "device-bundle-dry-run";
/// What one `device` call carries at most: a part and the checkout's files together.
const CARRY_LIMIT: u64 = 64 << 20;
/// Bytes one part may hold: under [`CARRY_LIMIT`], with room for the checkout (checked when bundling).
pub const PART_LIMIT: u64 = 60 << 20;
/// The dry run's parts: small, so that reassembly from several parts is rehearsed too.
const DRY_RUN_PART_LIMIT: u64 = 8 << 20;
/// xz's preset: the smallest parts for the GPU machine, where every carried MiB counts; the fastest for
/// the dry run, which rehearses the same steps (xz -9 spent about two of CI's minutes on the two 90 MB
/// binaries alone, one thread each: xz splits its work into blocks of 3x the 64 MiB dictionary).
const XZ_PRESET: &str = "-9";
const DRY_RUN_XZ_PRESET: &str = "-1";
/// The CUDA API the machine's driver (580.x) offers; cudarc binds its newest (13.4) without a toolkit.
const DEVICE_CUDA_VERSION: &str = "13000";
/// The bundle's vggq built with cubecl's autotune (the script's fallback).
const TUNING_BUILD: &str = "vggq-autotune";
/// What the script shares with vggq, as shell variables, in the first part for it to source.
const SHARED_WITH_VGGQ: &str = "vggq.env";
/// The files of ONNX Runtime's wheel the check needs (the CUDA provider only in the GPU build).
const ORT_LIBRARIES: [&str; 3] = ["libonnxruntime.so", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"];

#[derive(clap::Args)]
pub struct Args {
    /// Bundle the CPU build and the CPU ONNX Runtime in small parts, to rehearse the check here.
    #[arg(long)]
    pub dry_run: bool,
}

/// What goes into a bundle, and how it is cut.
struct Contents {
    /// The default build, then the tuning one.
    binaries: Vec<PathBuf>,
    /// The folder of ONNX Runtime's libraries.
    onnxruntime: PathBuf,
    part_limit: u64,
    xz_preset: &'static str,
}

/// Where `run` writes the bundle: `.device/`, or for a dry run [`DRY_RUN_BUNDLE_DIR`] in the target folder.
pub fn bundle_dir(sh: &Shell, dry_run: bool) -> PathBuf {
    if dry_run {
        crate::target_dir().join(DRY_RUN_BUNDLE_DIR)
    } else {
        sh.current_dir().join(BUNDLE_DIR)
    }
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let Contents { binaries, onnxruntime: ort_dir, part_limit, xz_preset } = if args.dry_run {
        let vggq = crate::build_vggq(sh)?;
        let stand_in = crate::target_dir().join(TUNING_BUILD);
        sh.copy_file(&vggq, &stand_in)?;
        Contents {
            binaries: vec![vggq, stand_in],
            onnxruntime: onnxruntime::wheel_libraries(sh, CPU_WHEEL)?,
            part_limit: DRY_RUN_PART_LIMIT,
            xz_preset: DRY_RUN_XZ_PRESET,
        }
    } else {
        let target = crate::target_dir().join("device");
        let _version = sh.push_env("CUDARC_CUDA_VERSION", DEVICE_CUDA_VERSION);
        let _target = sh.push_env("CARGO_TARGET_DIR", &target);
        // One target folder for both builds: they share every crate autotune does not change. The
        // tuning build first, copied out, because the default one is then built over it.
        let build =
            |features: &str| crate::cargo_build_bin(sh, &["--release".into(), "--features".into(), features.into()], "vggq");
        let tuning = target.join(TUNING_BUILD);
        sh.copy_file(build("cuda,autotune")?, &tuning)?;
        Contents {
            binaries: vec![build("cuda")?, tuning],
            onnxruntime: onnxruntime::wheel_libraries(sh, GPU_WHEEL)?,
            part_limit: PART_LIMIT,
            xz_preset: XZ_PRESET,
        }
    };
    let reference = cpu_reference(sh, &binaries[0], args.dry_run)?;
    let mut payloads = binaries;
    payloads.extend([shared_cifar10_jpeg(), shared_torch_bench(), reference, kernel_tests(sh)?]);
    for entry in std::fs::read_dir(&ort_dir).with_context(|| format!("reading {}", ort_dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if ORT_LIBRARIES.iter().any(|library| name.starts_with(library)) {
            payloads.push(path);
        }
    }
    let bundle = bundle_dir(sh, args.dry_run);
    // Written beside it and renamed over it once whole: an interrupted bundling leaves the last bundle as it
    // was, never parts that look like one (the script takes `part01/SHA256SUMS` for a bundle).
    let building =
        bundle.with_file_name(format!("{}{PARTIAL_SUFFIX}", bundle.file_name().context("a bundle folder")?.to_string_lossy()));
    if building.exists() {
        sh.remove_path(&building)?;
    }
    let kind = if args.dry_run { "dry-run" } else { "cuda" };
    let parts = write_parts(sh, &payloads, &building, part_limit, xz_preset, kind)?;
    if bundle.exists() {
        sh.remove_path(&bundle)?;
    }
    std::fs::rename(&building, &bundle).with_context(|| format!("renaming {} to {}", building.display(), bundle.display()))?;
    let parts: Vec<(PathBuf, u64)> =
        parts.into_iter().map(|(part, bytes)| (bundle.join(part.strip_prefix(&building).unwrap_or(&part)), bytes)).collect();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    if args.dry_run {
        for (part, bytes) in &parts {
            println!("{}: {:.1} MiB", part.display(), mib(*bytes));
        }
        println!("rehearse with: VGGQ_BUNDLE={} VGGQ_PYTHON=... scripts/device-check.sh --dry-run", bundle.display());
        return Ok(());
    }
    // What a `device` call carries beside a part; only the real bundle is carried (and needs git for it).
    let checkout = checkout_bytes(sh)?;
    for (part, bytes) in &parts {
        println!("{}: {:.1} MiB, {:.1} MiB with the checkout", part.display(), mib(*bytes), mib(bytes + checkout));
    }
    if let Some((part, bytes)) = parts.iter().find(|(_, bytes)| bytes + checkout > CARRY_LIMIT) {
        bail!(
            "{} and the checkout's {:.1} MiB (tracked files, and untracked ones git does not ignore) make {:.1} MiB, \
             more than a `device` call carries ({:.0} MiB): move untracked files out of the checkout",
            part.display(),
            mib(checkout),
            mib(bytes + checkout),
            mib(CARRY_LIMIT)
        );
    }
    println!(
        "carry {} in turn (one `device` call each, while the machine is warm: check each reply says `warm: true` \
         and that `ls .device` there lists the earlier parts), then run scripts/device-check.sh with the last",
        parts
            .iter()
            .map(|(p, _)| p.strip_prefix(sh.current_dir()).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The payload that holds the CPU run the check repeats on the GPU machine's CPU (its `cpu-bytes` stage),
/// as made here with the bundle's vggq: its arguments, each model file's SHA-256 and the CPU facts it
/// ran with (JSON).
const CPU_REFERENCE: &str = "cpu-reference.json";

/// [`CPU_REFERENCE`], in the folder of its run here: CI's thread check's training and quantization on the
/// bundle's data with the bundle's `vggq` (a dry run's: the small one, which the rehearsal repeats).
fn cpu_reference(sh: &Shell, vggq: &Path, dry_run: bool) -> Result<PathBuf> {
    let name = if dry_run { "device-bundle-dry-run" } else { "device-bundle" };
    let run = reproducibility::reference_run(sh, vggq, &shared_cifar10_jpeg(), name, dry_run)?;
    let sha256: serde_json::Map<_, _> = run.sha256.into_iter().map(|(file, digest)| (file, digest.into())).collect();
    let report = run.folder.join(vggq_core::run_folder::TRAIN_REPORT_FILE);
    let report: serde_json::Value =
        serde_json::from_str(&sh.read_file(&report)?).with_context(|| format!("reading {}", report.display()))?;
    let reference = serde_json::json!({ "train": run.train, "quantize": run.quantize, "sha256": sha256, "cpu": report["cpu"] });
    let path = run.folder.join(CPU_REFERENCE);
    std::fs::write(&path, serde_json::to_string_pretty(&reference)?)?;
    Ok(path)
}

/// The payload that holds the library's unit tests, whose kernel tests ([`KERNEL_TESTS_FILTER`]) the
/// check runs on the GPU machine's CPU (its `cpu-kernels` stage): each instruction-set path that CPU has
/// against its definition, bit for bit, AVX-512's where it has it (CI's CPU has not).
const KERNEL_TESTS: &str = "vggq-kernel-tests";
/// The kernels' tests among the library's: those of `vggq::model::kernels`.
const KERNEL_TESTS_FILTER: &str = "model::kernels::";

/// [`KERNEL_TESTS`] in the target folder, copied from the executable `cargo xtask test` builds (the CPU
/// features: the kernels' tests are the CPU's; on a warm target, nothing to build).
fn kernel_tests(sh: &Shell) -> Result<PathBuf> {
    let built = test::test_executable(&test::build_tests(sh)?, "vggq").context("cargo built no unit tests of vggq's library")?;
    // What the check would run, counted here: an executable without them passes there, having run none.
    let listed = cmd!(sh, "{built} --list {KERNEL_TESTS_FILTER}").read()?;
    if !listed.lines().any(|line| line.ends_with(": test")) {
        bail!("{} lists no tests under {KERNEL_TESTS_FILTER}: not vggq's library's unit tests", built.display());
    }
    let copy = crate::target_dir().join(KERNEL_TESTS);
    sh.copy_file(&built, &copy)?;
    Ok(copy)
}

/// The run folder's file names by their constants' names (`METRICS_FILE=metrics.json`), the training's
/// checkpoint, the batch size, how `cargo xtask device-golden` finds the smoke run's files in what the
/// check brings home, and the bundle's payloads, one a line: the script reads them instead of spelling
/// them again.
fn shared_with_vggq() -> String {
    use vggq_core::run_folder::*;
    let file_name = |path: PathBuf| path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    [
        ("RESULTS_ARCHIVE", device_golden::RESULTS_ARCHIVE.to_string()),
        ("SMOKE_RUN_PREFIX", device_golden::SMOKE_RUN_PREFIX.to_string()),
        ("MODEL_FILE", MODEL_FILE.to_string()),
        ("TRAIN_REPORT_FILE", TRAIN_REPORT_FILE.to_string()),
        ("QUANT_REPORT_FILE", QUANT_REPORT_FILE.to_string()),
        ("METRICS_FILE", METRICS_FILE.to_string()),
        ("REPORT_FILE", REPORT_FILE.to_string()),
        ("GOLDEN_TABLE_FILE", GOLDEN_TABLE_FILE.to_string()),
        ("MANIFEST_FILE", MANIFEST_FILE.to_string()),
        ("CHECKSUMS_FILE", CHECKSUMS_FILE.to_string()),
        ("TRAIN_CHECKPOINT", checkpoint_in_run("train").display().to_string()),
        ("BATCH_SIZE", vggq_core::DEFAULT_BATCH_SIZE.to_string()),
        ("TUNING_BUILD", TUNING_BUILD.to_string()),
        ("DATA_FILE", file_name(shared_cifar10_jpeg())),
        ("TORCH_BENCH", file_name(shared_torch_bench())),
        ("CPU_REFERENCE_FILE", CPU_REFERENCE.to_string()),
        ("KERNEL_TESTS", KERNEL_TESTS.to_string()),
        ("KERNEL_TESTS_FILTER", KERNEL_TESTS_FILTER.to_string()),
    ]
    .iter()
    .map(|(variable, value)| format!("{variable}={value}\n"))
    .collect()
}

/// Bytes of the files a `device` call copies besides the carried part: the working tree's tracked files
/// and its untracked ones that git does not ignore.
fn checkout_bytes(sh: &Shell) -> Result<u64> {
    let files = cmd!(sh, "git ls-files -z --cached --others --exclude-standard").read()?;
    Ok(files
        .split('\0')
        .filter(|f| !f.is_empty())
        .filter_map(|f| std::fs::metadata(sh.current_dir().join(f)).ok())
        .map(|m| m.len())
        .sum())
}

/// Compresses every payload with xz (`preset`) and deals the pieces into `bundle/partNN/` folders of at most
/// `limit` bytes, in order; `part01/SHA256SUMS` holds each payload's digest, for the script to check what
/// it reassembled, and `part01/vggq.env` the bundle's `kind`, its number of parts (for the script to
/// name the parts a fresh machine lacks) and the git commit it was built from, among vggq's names.
/// Returns each part's folder and size.
fn write_parts(
    sh: &Shell,
    payloads: &[PathBuf],
    bundle: &Path,
    limit: u64,
    preset: &str,
    kind: &str,
) -> Result<Vec<(PathBuf, u64)>> {
    let staging = bundle.join("staging");
    sh.create_dir(&staging)?;
    let mut sums = String::new();
    let mut compressed = Vec::new();
    for payload in payloads {
        let name = payload.file_name().context("a payload is a file")?.to_string_lossy().into_owned();
        let digest = cmd!(sh, "sha256sum {payload}").read()?;
        sums.push_str(&format!("{}  {name}\n", digest.split_whitespace().next().unwrap_or_default()));
        let xz = staging.join(format!("{name}.xz"));
        eprintln!("compressing {name}");
        let bytes = cmd!(sh, "xz {preset} -T0 --stdout {payload}")
            .output()
            .with_context(|| format!("compressing {name} (needs xz)"))?
            .stdout;
        std::fs::write(&xz, bytes)?;
        compressed.push((name, xz));
    }
    let mut parts: Vec<(PathBuf, u64)> = Vec::new();
    let new_part = |parts: &mut Vec<(PathBuf, u64)>| -> Result<()> {
        let folder = bundle.join(format!("part{:02}", parts.len() + 1));
        std::fs::create_dir_all(&folder)?;
        parts.push((folder, 0));
        Ok(())
    };
    new_part(&mut parts)?;
    let sums_path = parts[0].0.join("SHA256SUMS");
    std::fs::write(&sums_path, &sums)?;
    // Written once the parts are counted, its room taken first (for up to 999 parts).
    // The commit the binaries were built from, for the check's runs to record in their manifests.
    let git: String = crate::all::git_facts(sh).iter().map(|(variable, value)| format!("{variable}={value}\n")).collect();
    let shared = |parts: usize| format!("BUNDLE_KIND={kind}\nBUNDLE_PARTS={parts}\n{git}{}", shared_with_vggq());
    parts[0].1 += (sums.len() + shared(999).len()) as u64;
    for (name, xz) in &compressed {
        let data = std::fs::read(xz)?;
        let mut offset = 0;
        let mut piece = 0;
        while offset < data.len() {
            let room = limit.saturating_sub(parts.last().expect("a part").1) as usize;
            if room == 0 {
                new_part(&mut parts)?;
                continue;
            }
            let end = (offset + room).min(data.len());
            let (folder, used) = parts.last_mut().expect("a part");
            let mut file = std::fs::File::create(folder.join(format!("{name}.xz.{piece:03}")))?;
            file.write_all(&data[offset..end])?;
            *used += (end - offset) as u64;
            offset = end;
            piece += 1;
        }
    }
    sh.remove_path(&staging)?;
    std::fs::write(parts[0].0.join(SHARED_WITH_VGGQ), shared(parts.len()))?;
    if let Some((part, bytes)) = parts.iter().find(|(_, bytes)| *bytes > limit) {
        bail!("{} holds {bytes} bytes, more than {limit}", part.display());
    }
    Ok(parts)
}
