//! The reviewed metric table of a run (`golden/<profile>.snap`): exact sizes, accuracy and agreement with
//! FP32, no timings. `cargo xtask all` and `cargo xtask test` point `VGGQ_GOLDEN_RUN` at the run they made.

use std::path::PathBuf;

use vggq::eval::ModelMetrics;
use vggq::report::golden_table;

#[test]
fn metrics_match_the_reviewed_golden_table() {
    let run = PathBuf::from(std::env::var_os("VGGQ_GOLDEN_RUN").expect(
        "VGGQ_GOLDEN_RUN is not set: run through `cargo xtask test` or `cargo xtask all`, which set it to their run",
    ));
    let read = |name: &str| std::fs::read_to_string(run.join(name)).unwrap_or_else(|e| panic!("{}: {e}", run.join(name).display()));
    let rows: Vec<ModelMetrics> = serde_json::from_str(&read("metrics.json")).unwrap();
    let train_report: serde_json::Value = serde_json::from_str(&read("train_report.json")).unwrap();
    let profile = train_report["profile"]["name"].as_str().expect("train_report.json names its profile").to_string();
    let manifest: serde_json::Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let provenance = &manifest["provenance"];

    insta::with_settings!({
        snapshot_path => "../golden",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!(
            "profile {profile}; device {}; {}; dataset {} ({})",
            provenance["device"], provenance["execution_providers"], provenance["dataset"], provenance["dataset_sha256"]
        ),
    }, {
        insta::assert_snapshot!(profile, golden_table(&rows));
    });
}
