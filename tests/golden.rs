//! The reviewed metric table of a run (`golden/<profile>-<device>.snap`, e.g. `smoke-cpu`): exact
//! sizes, accuracy and agreement with FP32, no timings. `cargo xtask all` and `cargo xtask test` point
//! `VGGQ_GOLDEN_RUN` at the run they made. A run with limits or overrides is not its profile's recipe
//! and has no golden table. Where a profile and device have none yet, insta writes the table as a pending
//! snapshot (`.snap.new`) for review and the check passes; under CI (`CI=true`) it fails.

use std::path::PathBuf;

use vggq::backend::Selection;
use vggq::eval::EvalRun;
use vggq::profile::Profile;
use vggq::report::golden_table;

#[test]
fn metrics_match_the_reviewed_golden_table() {
    let run = PathBuf::from(
        std::env::var_os("VGGQ_GOLDEN_RUN")
            .expect("VGGQ_GOLDEN_RUN is not set: run through `cargo xtask test` or `cargo xtask all`, which set it to their run"),
    );
    let read =
        |name: &str| std::fs::read_to_string(run.join(name)).unwrap_or_else(|e| panic!("{}: {e}", run.join(name).display()));
    let train_report: serde_json::Value = serde_json::from_str(&read("train_report.json")).unwrap();
    let profile: Profile = serde_json::from_value(train_report["profile"].clone()).unwrap();
    let device: Selection = serde_json::from_value(train_report["device"].clone()).unwrap();
    if !profile.is_as_named() {
        println!("{}: the {} profile with limits or overrides has no golden table", run.display(), profile.name());
        return;
    }
    let eval: EvalRun = serde_json::from_str(&read("metrics.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let provenance = &manifest["provenance"];
    let name = format!("{}-{}", profile.name(), device.backend.name());

    insta::with_settings!({
        snapshot_path => "../golden",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!(
            "profile {}; device {}; gpu {}; {}; onnxruntime {}; dataset {} ({})",
            profile.name(), provenance["device"], provenance["gpu"], provenance["execution_providers"],
            provenance["onnxruntime"], provenance["dataset"], provenance["dataset_sha256"]
        ),
    }, {
        let reviewed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(format!("{name}.snap"));
        if reviewed.exists() || std::env::var_os("CI").is_some() {
            insta::assert_snapshot!(name, golden_table(&eval));
        } else {
            // No reviewed table for this profile and device: insta writes it as `.snap.new` and fails the
            // assertion; the run still passes, and `cargo xtask all` says how to review the table.
            let pending = std::panic::catch_unwind(|| insta::assert_snapshot!(name.clone(), golden_table(&eval)));
            assert!(pending.is_err(), "insta accepted a table without a reviewed snapshot");
        }
    });
}
