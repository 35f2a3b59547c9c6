//! `vggq report --run DIR`: `report.md` and its charts from `metrics.json`, then the package's
//! `manifest.json` and `SHA256SUMS` over everything the run wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vggq::eval::ModelMetrics;
use vggq::package::{self, FileRole, Provenance};
use vggq::report::{self, ReportInput};

use super::run_dir::{pth_name, TrainedRun, METRICS_FILE, MODEL_FILE, QUANT_REPORT_FILE, TRAIN_REPORT_FILE};

/// SHA-256 of `../shared/data/cifar10-jpeg.tar.gz`: numbers measured on it are labelled as such.
const JPEG_COPY_SHA256: &str = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db";

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (`train_report.json`, `quant_report.json`, `metrics.json`, the `.pth` and `.onnx` files).
    #[arg(long)]
    run: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let run = TrainedRun::open(&args.run)?;
    let metrics_path = args.run.join(METRICS_FILE);
    let rows: Vec<ModelMetrics> = serde_json::from_str(
        &std::fs::read_to_string(&metrics_path).with_context(|| format!("reading {} (run `vggq eval` first)", metrics_path.display()))?,
    )
    .with_context(|| format!("parsing {}", metrics_path.display()))?;

    let dataset = dataset_name(&run.dataset);
    let input = ReportInput { profile: &run.profile.name, dataset: &dataset, class_names: &run.classes, rows: &rows };
    write(&args.run.join("report.md"), &report::markdown(&input))?;
    let charts = report::charts(&rows);
    for (name, svg) in &charts {
        write(&args.run.join(name), svg)?;
    }

    let mut roles = Vec::new();
    for variant in ["fp32", "dynamic_int8", "static_int8_fx", "qat_int8_fp32match", "qat_int8_finetune"] {
        let pth = pth_name(variant);
        if args.run.join(&pth).is_file() {
            roles.push(FileRole::reproducible(&pth, variant, "pth", "vggq quantize"));
        }
    }
    for row in rows.iter().filter(|row| row.eval.requested == rows[0].eval.requested) {
        roles.push(FileRole::reproducible(&row.file, report::variant_label(&row.file), "onnx", "vggq export"));
    }
    roles.push(FileRole::varying(MODEL_FILE, "fp32", "burn-record", "vggq train"));
    for (name, format, source) in [
        (TRAIN_REPORT_FILE, "json", "vggq train"),
        (QUANT_REPORT_FILE, "json", "vggq quantize"),
        (METRICS_FILE, "json", "vggq eval"),
        ("report.md", "markdown", "vggq report"),
    ] {
        roles.push(FileRole::varying(name, "report", format, source));
    }
    for (name, _) in &charts {
        roles.push(FileRole::varying(name, "report", "svg", "vggq report"));
    }
    let provenance = provenance(&run, &rows, &dataset)?;
    package::write(&args.run, roles, provenance)?;
    println!("wrote {} ({}, {}, {})", args.run.join("report.md").display(), package::MANIFEST_FILE, package::CHECKSUMS_FILE, "charts");
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

/// Where the run came from. Git and rustc facts come from `cargo xtask all`, which knows them
/// (`VGGQ_GIT_COMMIT`, `VGGQ_GIT_DIRTY`, `VGGQ_RUSTC`, `VGGQ_ONNXRUNTIME`); run by hand they read "unknown".
fn provenance(run: &TrainedRun, rows: &[ModelMetrics], dataset: &str) -> Result<Provenance> {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".into());
    let mut providers: Vec<String> = rows.iter().map(|r| format!("{:?}: {}", r.eval.requested, r.eval.placement)).collect();
    providers.dedup();
    Ok(Provenance {
        git_commit: env("VGGQ_GIT_COMMIT"),
        git_dirty: env("VGGQ_GIT_DIRTY") == "true",
        rustc: env("VGGQ_RUSTC"),
        burn: vggq::BURN_VERSION.into(),
        ort: vggq::ORT_CRATE_VERSION.into(),
        onnxruntime: env("VGGQ_ONNXRUNTIME"),
        device: serde_json::to_value(run.backend)?.as_str().unwrap_or("unknown").into(),
        execution_providers: providers,
        seed: run.profile.train.seed,
        dataset: dataset.into(),
        dataset_sha256: run.dataset.split_whitespace().next().unwrap_or_default().trim_start_matches("sha256:").into(),
        config: serde_json::to_value(&run.profile)?,
    })
}
