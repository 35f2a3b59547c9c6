//! `vggq export`'s path: the ONNX files it builds from a run folder's `.pth` files are byte for byte the
//! files exported from the in-memory models those `.pth` files were written from, and their metadata
//! names each `.pth` by its SHA-256.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use prost::Message;
use vggq::data::{bytes_digest, DigestAlgorithm};
use vggq::export::onnx::proto::ModelProto;
use vggq::export::onnx::{self, Provenance, Variant, CALIBRATION_KEY, SOURCE_PTH_SHA256_KEY, TRAINING_KEY};
use vggq::profile::{Profile, ProfileName};
use vggq::quant::state_dict::{fp32_state_dict, quantized_state_dict};
use vggq::steps::Step;
use vggq_core::run_folder::{QUANT_REPORT_FILE, TRAIN_REPORT_FILE};
use vggq_core::QatMode;

use crate::util::*;

/// The variants of the run folder below: QAT fine-tuned, so its files carry the finetune names.
const VARIANTS: [Variant; 4] = [Variant::Fp32, Variant::DynamicInt8, Variant::StaticInt8, Variant::Qat(QatMode::Finetune)];

/// A run folder as `vggq train --epochs 0` and `vggq quantize --qat-mode finetune`
/// leave it (their stamps included, which export checks), holding `models` for a 32-px tiny configuration.
fn write_run_folder(dir: &Path, models: &TinyModels) {
    let mut profile = Profile::named(ProfileName::Smoke);
    profile.model = tiny_config(32);
    let classes: Vec<String> = (0..profile.model.classes).map(|c| format!("class{c}")).collect();
    let train_report = serde_json::json!({
        "profile": profile,
        "device": vggq::backend::select(vggq::backend::DeviceRequest::Cpu).unwrap(),
        "precision": { "matmul": "fp32", "conv": "fp32" },
        "dataset": "sha256:0000 (archive test.tar.gz)",
        "classes": classes,
        "epochs": [],
    });
    std::fs::write(dir.join(TRAIN_REPORT_FILE), train_report.to_string()).unwrap();
    let state_dicts = [
        fp32_state_dict(&models.float),
        quantized_state_dict(&models.dynamic),
        quantized_state_dict(&models.static_ptq),
        quantized_state_dict(&models.qat),
    ];
    let mut variants = Vec::new();
    for (variant, state_dict) in VARIANTS.into_iter().zip(state_dicts) {
        vggq_pth::write_file(&dir.join(variant.pth_file()), &state_dict.unwrap()).unwrap();
        variants.push(serde_json::json!({ "variant": variant, "file": variant.pth_file() }));
    }
    let quant_report = serde_json::json!({
        "dataset": "tiny test images",
        "calibration": "histogram",
        "calibration_batches": 2,
        "calibration_timing": { "images": 64 },
        "qat_mode": "finetune",
        "qat_epochs": [],
        "variants": variants,
    });
    std::fs::write(dir.join(QUANT_REPORT_FILE), quant_report.to_string()).unwrap();
    Step::new("train", dir, &(), &[], vec![dir.join(TRAIN_REPORT_FILE)]).unwrap().record().unwrap();
    let quantized = VARIANTS.iter().map(|v| dir.join(v.pth_file())).chain([dir.join(QUANT_REPORT_FILE)]).collect();
    Step::new("quantize", dir, &(), &[], quantized).unwrap().record().unwrap();
}

#[test]
fn vggq_export_builds_each_onnx_from_its_pth_as_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let models = TinyModels::new(32);
    write_run_folder(dir.path(), &models);
    let output = Command::new(env!("CARGO_BIN_EXE_vggq")).arg("export").arg("--run").arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "vggq export failed:\n{}", String::from_utf8_lossy(&output.stderr));

    for variant in VARIANTS {
        let written = std::fs::read(dir.path().join(variant.onnx_file())).unwrap();
        let metadata: BTreeMap<String, String> = ModelProto::decode(written.as_slice())
            .unwrap()
            .metadata_props
            .into_iter()
            .map(|p| (p.key.unwrap(), p.value.unwrap()))
            .collect();
        let digest = bytes_digest(&std::fs::read(dir.path().join(variant.pth_file())).unwrap(), DigestAlgorithm::Sha256).hex;
        assert_eq!(metadata.get(SOURCE_PTH_SHA256_KEY), Some(&digest), "{variant:?}");
        assert!(metadata[TRAINING_KEY].starts_with("untrained"), "{variant:?}: {}", metadata[TRAINING_KEY]);
        if variant == Variant::StaticInt8 {
            let calibration = &metadata[CALIBRATION_KEY];
            assert!(calibration.starts_with("histogram observers") && calibration.contains("64 images"), "{calibration}");
        } else {
            assert!(!metadata.contains_key(CALIBRATION_KEY), "{variant:?}");
        }
        let provenance = Provenance {
            variant,
            source_pth_sha256: Some(digest),
            training: metadata[TRAINING_KEY].clone(),
            calibration: metadata.get(CALIBRATION_KEY).cloned(),
        };
        assert!(
            written == onnx::graph::encode(&models.export(&provenance)),
            "{variant:?}: the bytes differ from the in-memory export"
        );
    }
}

#[test]
fn a_pth_of_another_variant_is_refused() {
    let models = TinyModels::new(32);
    let state_dict = fp32_state_dict(&models.float).unwrap();
    let error = onnx::model_from_state_dict(&state_dict, &tiny_config(32), &provenance(Variant::StaticInt8)).unwrap_err();
    assert!(matches!(error, onnx::ExportError::Layout { variant: Variant::StaticInt8, .. }), "{error}");
}
