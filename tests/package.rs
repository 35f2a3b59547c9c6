//! The artifact package: checksums `sha256sum -c` accepts, and `verify` catching every kind of tampering.

use std::path::Path;
use std::process::Command;

use vggq::package::{self, FileRole, Provenance, CHECKSUMS_FILE};
use vggq_core::run_folder::METRICS_FILE;

fn provenance() -> Provenance {
    Provenance {
        git_commit: "0123abc".into(),
        git_dirty: Some(false),
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
        imagenet_weights: Some(vggq::model::WeightsFile {
            path: "vgg11_bn-6002323d.pth".into(),
            sha256: "6002323d".into(),
            downloaded_from: None,
        }),
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
    // Without its checksum list, a package is missing a file of its own (not an I/O error).
    std::fs::remove_file(dir.path().join(CHECKSUMS_FILE)).unwrap();
    let found = package::verify(dir.path()).unwrap();
    assert_eq!(found.missing, ["model.onnx", CHECKSUMS_FILE]);
    assert_eq!((found.changed.len(), found.lists.len()), (1, 0), "{found}");
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
    assert!(found.changed.is_empty(), "the file matches the forged manifest: {found}");
    assert_eq!(found.lists, [format!("{CHECKSUMS_FILE}: model.pth is {old}, the manifest says {forged}")]);
}

/// `SHA256SUMS` must list exactly the manifest's reproducible files: a line left out, one added, one
/// listed twice or one that is no checksum line are each named, and blame `SHA256SUMS`, not a model.
#[test]
fn checksums_with_lines_left_out_added_or_garbled_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    let sums_path = dir.path().join(CHECKSUMS_FILE);
    let sums = std::fs::read_to_string(&sums_path).unwrap();
    let onnx_line = sums.lines().find(|line| line.ends_with("  model.onnx")).unwrap();
    let pth_line = sums.lines().find(|line| line.ends_with("  model.pth")).unwrap();
    let metrics_hex = vggq::data::file_digest(&dir.path().join(METRICS_FILE), vggq::data::DigestAlgorithm::Sha256).unwrap().hex;
    std::fs::write(&sums_path, format!("{pth_line}\n{pth_line}\n{metrics_hex}  {METRICS_FILE}\nnot a line\n")).unwrap();
    let found = package::verify(dir.path()).unwrap();
    assert!(found.missing.is_empty() && found.extra.is_empty() && found.changed.is_empty(), "{found}");
    let said = found.to_string();
    for expected in [
        format!("{CHECKSUMS_FILE}: model.pth is listed twice"),
        format!("{CHECKSUMS_FILE}: model.onnx is left out"),
        format!("{CHECKSUMS_FILE}: {METRICS_FILE} is listed, the manifest has no reproducible file of that name"),
        format!("{CHECKSUMS_FILE}: line 4 is not"),
    ] {
        assert!(said.contains(&expected), "`{expected}` not said:\n{said}");
    }
    assert_eq!(found.lists.len(), 4, "{said}");
    std::fs::write(&sums_path, format!("{pth_line}\n{onnx_line}\n")).unwrap();
    assert!(package::verify(dir.path()).unwrap().is_empty(), "the same lines in another order are the same list");
}

/// A manifest entry that is a path would check a file outside the package (it passed with the package's
/// own file deleted); what the folder holds beyond the manifest (a link, a folder that is not a run's
/// own) is extra.
#[test]
fn manifest_paths_links_and_stray_folders_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(METRICS_FILE), elsewhere.path().join(METRICS_FILE)).unwrap();
    std::fs::remove_file(dir.path().join(METRICS_FILE)).unwrap();
    let manifest = dir.path().join(package::MANIFEST_FILE);
    let escaped = elsewhere.path().join(METRICS_FILE).display().to_string();
    let text = std::fs::read_to_string(&manifest).unwrap().replace(&format!("\"{METRICS_FILE}\""), &format!("\"{escaped}\""));
    std::fs::write(&manifest, text).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    for own in vggq_core::run_folder::RUN_FOLDERS {
        std::fs::create_dir(dir.path().join(own)).unwrap();
    }
    let found = package::verify(dir.path()).unwrap();
    assert_eq!(found.lists, [format!("{}: `{escaped}` is not a file name in the folder", package::MANIFEST_FILE)]);
    assert_eq!(found.extra, ["link", "sub/"]);
    // A package file's place held by a link to the same bytes elsewhere: they would not travel with it.
    std::fs::copy(dir.path().join("model.pth"), elsewhere.path().join("model.pth")).unwrap();
    std::fs::remove_file(dir.path().join("model.pth")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("model.pth"), dir.path().join("model.pth")).unwrap();
    let found = package::verify(dir.path()).unwrap();
    assert!(found.changed.is_empty() && found.missing.is_empty(), "{found}");
    assert_eq!(found.extra, ["link", "model.pth (a link in place of the file)", "sub/"]);
    // To other bytes: the link is the finding, said once (what it points to is not the package's).
    std::fs::remove_file(dir.path().join("model.pth")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("model.pth")).unwrap();
    let found = package::verify(dir.path()).unwrap();
    assert!(found.changed.is_empty() && found.missing.is_empty(), "{found}");
    assert_eq!(found.extra, ["link", "model.pth (a link in place of the file)", "sub/"]);
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
