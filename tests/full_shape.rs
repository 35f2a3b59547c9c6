//! The full profile's shapes (128 px, full VGG11-BN, 8192 -> 4096 -> 4096 -> 10) through train ->
//! quantize -> export -> eval -> report -> verify on 128 training and 64 evaluation images from random weights:
//! `cargo xtask test` makes that run (`VGGQ_FULL_SHAPE_RUN`), and this checks what only full size shows.
//! The seed's run of the job is the reference for the file sizes (its FP32 ONNX: 227.37 MB, bytes / 2^20).

use std::path::{Path, PathBuf};
use std::process::Command;

use vggq::eval::EvalRun;
use vggq::profile::Profile;
use vggq_core::run_folder::{METRICS_FILE, TRAIN_REPORT_FILE};
use vggq_core::{QatMode, Variant};

fn run_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("VGGQ_FULL_SHAPE_RUN")
            .expect("VGGQ_FULL_SHAPE_RUN is not set: run through `cargo xtask test`, which makes the full-shape run and sets it"),
    )
}

fn eval_run(run: &Path) -> EvalRun {
    serde_json::from_str(&std::fs::read_to_string(run.join(METRICS_FILE)).unwrap()).unwrap()
}

/// ONNX file sizes in MiB (two decimals, as the seed's table gives them): FP32 and dynamic are the
/// seed's exactly; the static and QAT files hold the same parameters as the seed's (57.03 and 56.99 MiB)
/// in QDQ graphs of their own, pinned where we measured them.
#[test]
fn onnx_files_have_the_full_models_sizes() {
    let run = eval_run(&run_dir());
    let size = |variant: Variant| {
        let row = run.rows.iter().find(|r| r.file == variant.onnx_file()).unwrap_or_else(|| panic!("no {} row", variant.key()));
        format!("{:.2}", row.size_mib)
    };
    let sizes: Vec<String> = Variant::all(QatMode::Fp32match).into_iter().map(size).collect();
    println!("ONNX MiB: {sizes:?} (seed: 227.37, 83.25, 57.03, 56.99)");
    assert_eq!(sizes[..2], ["227.37", "83.25"], "the seed's sizes");
    assert_eq!(sizes[2..], ["57.02", "57.02"]);
}

/// ONNX Runtime fuses the static and QAT graphs at full size as at small size: every conv a
/// QLinearConv, every Linear a QGemm, no float Conv or Gemm left.
#[test]
fn onnx_runtime_runs_every_conv_and_linear_in_int8() {
    let run = eval_run(&run_dir());
    for variant in [Variant::StaticInt8, Variant::Qat(QatMode::Fp32match)] {
        let row = run.rows.iter().find(|r| r.file == variant.onnx_file()).unwrap();
        let count = |op: &str| row.eval.op_counts.get(op).copied().unwrap_or(0);
        assert_eq!((count("QLinearConv"), count("QGemm")), (8, 3), "{}: {:?}", variant.key(), row.eval.op_counts);
        assert_eq!(count("Conv") + count("Gemm") + count("FusedGemm"), 0, "{}: {:?}", variant.key(), row.eval.op_counts);
    }
}

/// The four `.pth` files load with `torch.load(weights_only=True)` and `load_state_dict(strict=True)`
/// into the modules the seed builds at full size, and run.
#[test]
fn pth_files_load_strictly_into_the_seeds_modules() {
    let run = run_dir();
    let python = vggq_core::places::test_python();
    let train_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join(TRAIN_REPORT_FILE)).unwrap()).unwrap();
    let profile: Profile = serde_json::from_value(train_report["profile"].clone()).unwrap();
    assert_eq!(profile.model, vggq::model::VggConfig::seed(), "the full profile's shapes");
    let config = vggq::quant::float_model::pth_config(&profile.model).torch_module_json(profile.model.input_size);
    let mut command = Command::new(python);
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/load_variants.py")).arg(config);
    for variant in Variant::all(QatMode::Fp32match) {
        command.arg(variant.key()).arg(run.join(variant.pth_file()));
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    assert_eq!(stdout.lines().count(), 4);
    assert!(stdout.lines().all(|line| line.contains(r#""logits": [2, 10]"#)), "{stdout}");
}

/// The package verifies, and `sha256sum -c` accepts its checksums of the models: the four `.pth` and ONNX
/// files and Burn's record.
#[test]
fn the_package_verifies() {
    let run = run_dir();
    let found = vggq::package::verify(&run).unwrap();
    assert!(found.is_empty(), "{found}");
    let sums = std::fs::read_to_string(run.join(vggq::package::CHECKSUMS_FILE)).unwrap();
    assert_eq!(sums.lines().count(), 9, "{sums}");
    let status = Command::new("sha256sum")
        .arg("--check")
        .arg("--quiet")
        .arg(vggq::package::CHECKSUMS_FILE)
        .current_dir(&run)
        .status()
        .unwrap();
    assert!(status.success());
}
