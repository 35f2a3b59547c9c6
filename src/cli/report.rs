//! `vggq report --run DIR`: `report.md` and its charts from `metrics.json`, then the package's
//! `manifest.json` and `SHA256SUMS` over everything the run wrote.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vggq::backend::autotune::AutotuneCache;
use vggq::eval::EvalRun;
use vggq::package::{self, FileRole, Provenance, Unlisted};
use vggq::report::{self, ReportInput, RunRecipe};
use vggq::steps::{self, RunFolderLock};

use super::run_dir::{
    require_from_step, QuantizedRun, TrainedRun, GOLDEN_TABLE_FILE, METRICS_FILE, MODEL_FILE, QUANT_REPORT_FILE, REPORT_FILE,
    TRAIN_REPORT_FILE,
};

/// SHA-256 of `../shared/data/cifar10-jpeg.tar.gz`: numbers measured on it are labelled as such.
const JPEG_COPY_SHA256: &str = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db";

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (`train_report.json`, `quant_report.json`, `metrics.json`, the `.pth` and `.onnx` files).
    #[arg(long)]
    run: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedRun::open(&args.run)?;
    let quantized = QuantizedRun::open(&args.run)?;
    let metrics_path = args.run.join(METRICS_FILE);
    require_from_step(&metrics_path, "eval")?;
    let _writing = RunFolderLock::take(&args.run)?;
    // What the package will vouch for belongs together: each step's files as it wrote them, from the files
    // the step before wrote.
    steps::require_current(&args.run, &["train", "quantize", "export", "eval"])?;
    let eval: EvalRun = serde_json::from_str(
        &std::fs::read_to_string(&metrics_path).with_context(|| format!("reading {}", metrics_path.display()))?,
    )
    .with_context(|| format!("parsing {}", metrics_path.display()))?;
    // A table of some of the run's models (an `eval` of files named on the command line) is not the run's.
    for variant in quantized.variants() {
        let onnx = variant.onnx_file();
        if !eval.rows.iter().any(|row| row.file == onnx) {
            bail!("{} has no figures for {onnx}: run `vggq eval --run {}`", metrics_path.display(), args.run.display());
        }
    }

    let dataset = dataset_name(&trained.dataset);
    let profile = trained.profile.name();
    let recipe = RunRecipe { profile: &trained.profile, data_images: trained.data_images, quantize: quantized.settings };
    let input =
        ReportInput { recipe, dataset: &dataset, device: &trained.device.reason, class_names: &trained.classes, eval: &eval };
    // The cache as training and quantization left it: its digest names the kernels they chose, where the
    // build that trained timed them (whatever this build does).
    let autotune = trained
        .autotune
        .as_ref()
        .map(|cache| AutotuneCache::read(&args.run, &cache.folder_in(&args.run), cache.tuned))
        .transpose()?;
    let tolerance = report::Tolerance::for_run(&profile, trained.device.arithmetic(autotune.as_ref()));
    let charts = report::charts(&eval.rows);
    let written = [(REPORT_FILE, report::markdown(&input)), (GOLDEN_TABLE_FILE, report::golden_table(&eval, tolerance, &recipe))]
        .into_iter()
        .chain(charts.iter().cloned());

    let mut roles = Vec::new();
    for variant in quantized.variants() {
        roles.push(FileRole::reproducible(quantized.pth_file(variant)?, variant.key(), "pth", "vggq quantize"));
        roles.push(FileRole::reproducible(variant.onnx_file(), variant.key(), "onnx", "vggq export"));
    }
    roles.push(FileRole::reproducible(MODEL_FILE, "fp32", "burn-record", "vggq train"));
    for (name, format, source) in [
        (TRAIN_REPORT_FILE, "json", "vggq train"),
        (QUANT_REPORT_FILE, "json", "vggq quantize"),
        (METRICS_FILE, "json", "vggq eval"),
        (REPORT_FILE, "markdown", REPORT_SOURCE),
        (GOLDEN_TABLE_FILE, "markdown", REPORT_SOURCE),
    ] {
        roles.push(FileRole::varying(name, "report", format, source));
    }
    for (name, _) in &charts {
        roles.push(FileRole::varying(name, "report", "svg", REPORT_SOURCE));
    }
    refuse_unpackaged(&args.run, &roles)?;

    for (name, text) in written {
        write(&args.run.join(name), &text)?;
    }
    package::write(&args.run, roles, provenance(&trained, &eval, &dataset, autotune)?)?;
    println!("wrote {} ({}, {}, charts)", args.run.join(REPORT_FILE).display(), package::MANIFEST_FILE, package::CHECKSUMS_FILE);
    Ok(())
}

/// The source the package's manifest gives the files `vggq report` writes.
const REPORT_SOURCE: &str = "vggq report";

/// Clears what killed writes of the package's files left (their temporary files, which the next write of
/// each would clear), then fails where the folder still holds anything else the package would not list,
/// or a link in place of one of its files (whose bytes would not travel with the folder):
/// `vggq verify` refuses a package with files its manifest does not name, so a report that packaged the
/// run beside them would make a package that fails its own check.
fn refuse_unpackaged(run: &Path, roles: &[FileRole]) -> Result<()> {
    let names: Vec<&str> = roles.iter().map(|role| role.name.as_str()).collect();
    for name in names.iter().chain(&[package::CHECKSUMS_FILE, package::MANIFEST_FILE]) {
        for removed in vggq::atomic::remove_temps_of(run, name).with_context(|| format!("clearing {}", run.display()))? {
            println!("removed {} (a killed write of {name} left it)", removed.display());
        }
    }
    let (mut strays, mut links) = (Vec::new(), Vec::new());
    for entry in package::unlisted(run, names)? {
        match entry {
            Unlisted::LinkInPlace(name) => {
                // Report's own files are written anew, each in place of the link (a rename replaces the
                // link, not what it points to); another step's file is its step's to put there.
                if let Some(role) = roles.iter().find(|role| role.name == name && role.source != REPORT_SOURCE) {
                    links.push(format!("{name} ({})", role.source));
                }
            }
            other => strays.push(other.to_string()),
        }
    }
    let mut refusals = Vec::new();
    if !strays.is_empty() {
        let them = if strays.len() == 1 { "it" } else { "them" };
        refusals.push(format!(
            "{} holds what no step of the run wrote: {}; move {them} out of the run folder",
            run.display(),
            strays.join(", ")
        ));
    }
    if !links.is_empty() {
        refusals.push(format!(
            "{} holds links in place of files its steps wrote: {}; put the files themselves there",
            run.display(),
            links.join(", ")
        ));
    }
    if !refusals.is_empty() {
        bail!("{} (`vggq verify` refuses a package beside files its manifest does not name)", refusals.join("; and "));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    vggq::atomic::write(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// "CIFAR-10 (JPEG copy)" for the team's copy, else CIFAR-10 with the source's fingerprint.
fn dataset_name(fingerprint: &str) -> String {
    if fingerprint.contains(JPEG_COPY_SHA256) {
        "CIFAR-10 (JPEG copy)".into()
    } else {
        format!("CIFAR-10 ({fingerprint})")
    }
}

/// Where the run came from. The compiler is the one that built this binary, ONNX Runtime the library
/// `eval` ran; the git facts come from `cargo xtask all`, which knows them (`VGGQ_GIT_COMMIT`,
/// `VGGQ_GIT_DIRTY`), and are unknown where the steps are run by hand (not "clean").
fn provenance(run: &TrainedRun, eval: &EvalRun, dataset: &str, autotune: Option<AutotuneCache>) -> Result<Provenance> {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".into());
    let mut providers: Vec<String> = eval.rows.iter().map(|r| format!("{:?}: {}", r.eval.requested, r.eval.placement)).collect();
    providers.dedup();
    providers.extend(eval.unavailable.iter().map(|u| format!("{:?}: not available: {}", u.provider, u.reason)));
    Ok(Provenance {
        git_commit: env("VGGQ_GIT_COMMIT"),
        git_dirty: std::env::var("VGGQ_GIT_DIRTY").ok().map(|dirty| dirty == "true"),
        rustc: env!("VGGQ_RUSTC").into(),
        burn: vggq::BURN_VERSION.into(),
        ort: vggq::ORT_CRATE_VERSION.into(),
        onnxruntime: eval.session.onnxruntime.clone().unwrap_or_else(|| "unknown".into()),
        device: run.device.backend.name().into(),
        device_reason: run.device.reason.clone(),
        gpu: run.device.gpu().cloned(),
        adapter: run.device.adapter().cloned(),
        precision: run.precision,
        cpu: run.cpu.clone(),
        autotune,
        execution_providers: providers,
        seed: run.profile.train.seed,
        imagenet_weights: run.imagenet_weights.clone(),
        dataset: dataset.into(),
        dataset_sha256: run.dataset.split_whitespace().next().unwrap_or_default().trim_start_matches("sha256:").into(),
        config: serde_json::to_value(&run.profile)?,
    })
}
