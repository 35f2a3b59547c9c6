//! The artifact package: checksums `sha256sum -c` accepts, and `verify` catching every kind of tampering.

use std::path::Path;
use std::process::Command;

use vggq::package::{self, FileRole, Provenance, CHECKSUMS_FILE};

fn provenance() -> Provenance {
    Provenance {
        git_commit: "0123abc".into(),
        git_dirty: false,
        rustc: "rustc 1.95.0".into(),
        burn: vggq::BURN_VERSION.into(),
        ort: "2.0.0-rc.15".into(),
        onnxruntime: "1.32.0".into(),
        device: "cpu".into(),
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
    std::fs::write(dir.join("metrics.json"), b"{}").unwrap();
    let roles = vec![
        FileRole::reproducible("model.pth", "fp32", "pth", "train"),
        FileRole::reproducible("model.onnx", "fp32", "onnx", "export"),
        FileRole::varying("metrics.json", "report", "json", "eval"),
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
    assert!(text.contains("changed: model.pth") && text.contains("missing: model.onnx") && text.contains("extra: stray.bin"), "{text}");
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
