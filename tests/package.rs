//! The artifact package: checksums `sha256sum -c` accepts, and `verify` catching every kind of tampering.

use std::path::Path;
use std::process::Command;

use vggq::package::{self, FileRole, Provenance, CHECKSUMS_FILE};
use vggq_core::run_folder::METRICS_FILE;

fn provenance() -> Provenance {
    Provenance {
        git_commit: "0123abc".into(),
        git_dirty: false,
        rustc: "rustc 1.95.0".into(),
        burn: vggq::BURN_VERSION.into(),
        ort: "2.0.0-rc.15".into(),
        onnxruntime: "1.32.0".into(),
        device: "cpu".into(),
        device_reason: "CPU (burn-flex): --device cpu".into(),
        gpu: None,
        adapter: None,
        precision: vggq::backend::precision::Precision {
            matmul: vggq::backend::precision::Arithmetic::Fp32,
            conv: vggq::backend::precision::Arithmetic::Fp32,
        },
        cpu: Some(vggq::model::CpuFacts::here()),
        autotune: None,
        execution_providers: vec!["CPU".into()],
        seed: 0,
        dataset: "CIFAR-10 (JPEG copy)".into(),
        dataset_sha256: "45b0".into(),
        config: serde_json::json!({ "profile": "smoke" }),
    }
}

/// A package of two small artifacts in a fresh folder.
fn package(dir: &Path) {
    std::fs::write(dir.join("model.pth"), b"weights").unwrap();
    std::fs::write(dir.join("model.onnx"), b"graph").unwrap();
    std::fs::write(dir.join(METRICS_FILE), b"{}").unwrap();
    let roles = vec![
        FileRole::reproducible("model.pth", "fp32", "pth", "train"),
        FileRole::reproducible("model.onnx", "fp32", "onnx", "export"),
        FileRole::varying(METRICS_FILE, "report", "json", "eval"),
    ];
    package::write(dir, roles, provenance()).unwrap();
}

#[test]
fn intact_package_verifies_here_and_with_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    assert!(package::verify(dir.path()).unwrap().is_empty());
    let sums = std::fs::read_to_string(dir.path().join(CHECKSUMS_FILE)).unwrap();
    assert_eq!(sums.lines().count(), 2, "the two reproducible artifacts, not the measurements:\n{sums}");
    let status = Command::new("sha256sum").arg("-c").arg(CHECKSUMS_FILE).current_dir(dir.path()).status().unwrap();
    assert!(status.success(), "sha256sum -c rejected our SHA256SUMS");
}

#[test]
fn verify_names_changed_missing_and_extra_files() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    std::fs::write(dir.path().join("model.pth"), b"weightz").unwrap();
    std::fs::remove_file(dir.path().join("model.onnx")).unwrap();
    std::fs::write(dir.path().join("stray.bin"), b"?").unwrap();

    let found = package::verify(dir.path()).unwrap();
    assert_eq!(found.missing, vec!["model.onnx".to_string()]);
    assert_eq!(found.extra, vec!["stray.bin".to_string()]);
    assert_eq!(found.changed.len(), 1);
    assert_eq!(found.changed[0].0, "model.pth");
    let text = found.to_string();
    assert!(
        text.contains("changed: model.pth") && text.contains("missing: model.onnx") && text.contains("extra: stray.bin"),
        "{text}"
    );
}

#[test]
fn checksums_that_disagree_with_the_manifest_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    // A manifest edited to bless a changed model still disagrees with SHA256SUMS.
    std::fs::write(dir.path().join("model.pth"), b"weightz").unwrap();
    let manifest = dir.path().join(package::MANIFEST_FILE);
    let forged = vggq::data::file_digest(&dir.path().join("model.pth"), vggq::data::DigestAlgorithm::Sha256).unwrap().hex;
    let text = std::fs::read_to_string(&manifest).unwrap();
    let manifest_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let old = manifest_json["files"].as_array().unwrap().iter().find(|f| f["name"] == "model.pth").unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&manifest, text.replace(&old, &forged)).unwrap();
    let found = package::verify(dir.path()).unwrap();
    assert_eq!(found.changed.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), vec!["model.pth"]);
}

#[test]
fn a_full_disk_is_a_clear_error() {
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let weights = [0.5_f32; 4096];
    let state_dict = vggq_pth::StateDict {
        entries: vec![("weight".into(), vggq_pth::Value::Tensor(vggq_pth::Tensor::from_f32(vec![4096], &weights)))],
        metadata: vec![(String::new(), 1)],
    };
    let error = vggq_pth::write_to(std::io::BufWriter::new(full), "model", &state_dict).expect_err("writing to a full disk");
    assert!(error.to_string().contains("No space left"), "{error}");
}

#[test]
fn a_failed_atomic_write_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty folder where the file should go: the data is written, the final rename fails.
    let target = dir.path().join(METRICS_FILE);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    assert!(vggq::atomic::write(&target, b"new").is_err());
    assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"x", "what was there is untouched");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(METRICS_FILE)], "a temporary file was left behind");
}
