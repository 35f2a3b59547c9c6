//! The files themselves: accepted by onnx's full checker, deterministic, with their metadata.

use prost::Message;
use vggq::export::onnx::proto::ModelProto;
use vggq::export::onnx::{self, Variant, NO_PTH, SOURCE_PTH_SHA256_KEY, VARIANT_KEY};
use vggq::quant::QuantMethod;

use crate::shared::fixtures;
use crate::util::*;

/// The four variants of a tiny model, exported from memory.
fn tiny_variants(side: usize) -> Vec<(Variant, ModelProto)> {
    let models = TinyModels::new(side);
    Variant::all(vggq_core::QatMode::Fp32match)
        .into_iter()
        .map(|variant| (variant, models.export(&provenance(variant))))
        .collect()
}

#[test]
fn every_variant_passes_the_full_checker_and_loads_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    for side in [32, 128] {
        for (variant, proto) in tiny_variants(side) {
            let path = dir.path().join(format!("{side}_{}", variant.onnx_file()));
            onnx::write(&path, &proto).unwrap();
            onnx_check(&path);
            let mut session = ort_session(&path, side);
            let logits = session.run(&vec![0.5; 2 * 3 * side * side], 2).unwrap();
            assert_eq!(logits.len(), 2 * 10, "{variant:?} at {side} px");
        }
    }
}

#[test]
fn the_same_model_gives_the_same_bytes() {
    let first: Vec<Vec<u8>> = tiny_variants(32).iter().map(|(_, p)| p.encode_to_vec()).collect();
    let second: Vec<Vec<u8>> = tiny_variants(32).iter().map(|(_, p)| p.encode_to_vec()).collect();
    assert_eq!(first, second);
}

#[test]
fn metadata_names_the_variant_and_the_source_pth() {
    for (variant, proto) in tiny_variants(32) {
        let decoded = ModelProto::decode(proto.encode_to_vec().as_slice()).unwrap();
        let get = |key: &str| decoded.metadata_props.iter().find(|p| p.key.as_deref() == Some(key)).and_then(|p| p.value.clone());
        assert_eq!(get(VARIANT_KEY).as_deref(), Some(variant.key()));
        assert_eq!(get(SOURCE_PTH_SHA256_KEY).as_deref(), Some(NO_PTH));
        assert_eq!(decoded.producer_name.as_deref(), Some("vggq"));
        assert_eq!(decoded.opset_import[0].version, Some(17));
    }
}

#[test]
fn a_pool_that_does_not_divide_is_refused() {
    let mut config = tiny_config(96);
    config.pool_size = 2; // 3x3 features to 2x2
    let error = onnx::fp32::model(&fused(&tiny_model(&config, 0), &config), &provenance(Variant::Fp32)).unwrap_err();
    assert!(matches!(error, onnx::ExportError::UnsupportedPool { side: 3, pool_size: 2 }), "{error}");
}

#[test]
fn each_exporter_refuses_the_other_method() {
    let models = TinyModels::new(32);
    let error = onnx::qdq::model(&models.dynamic, &provenance(Variant::StaticInt8)).unwrap_err();
    assert!(matches!(error, onnx::ExportError::WrongMethod { method: QuantMethod::Dynamic, .. }), "{error}");
    let error = onnx::dynamic::model(&models.static_ptq, &provenance(Variant::DynamicInt8)).unwrap_err();
    assert!(matches!(error, onnx::ExportError::WrongMethod { method: QuantMethod::Static, .. }), "{error}");
}

#[test]
fn a_cuda_request_is_never_reported_as_cuda_without_cuda_nodes() {
    use vggq::eval::{OnnxSession, Provider};
    let dir = tempfile::tempdir().unwrap();
    let (_, proto) = tiny_variants(32).remove(0);
    let path = dir.path().join("fp32.onnx");
    onnx::write(&path, &proto).unwrap();
    // Fails clearly when ORT_DYLIB_PATH is unset.
    let _ = ort_session(&path, 32);
    // Without a GPU (or with a CPU-only ONNX Runtime) registration fails loudly instead of quietly giving
    // a CPU session; with one, the label follows the nodes ORT's profile puts on CUDA.
    match OnnxSession::open(&path, 32, Provider::Cuda, Some(1)) {
        // The reason is the first missing piece: the driver (whether its library loads, asked here of the
        // dynamic loader directly), else the provider's libraries.
        // SAFETY: the NVIDIA driver's library, where there is one; loading runs its initialisers.
        Err(vggq::eval::EvalError::CudaUnavailable(reason)) => match unsafe { libloading::Library::new("libcuda.so.1") } {
            Err(_) => assert!(reason.starts_with("no NVIDIA driver: none of libcuda.so"), "{reason}"),
            Ok(_) => match vggq_core::places::missing_cuda_provider_libraries(None).first() {
                Some(missing) => assert!(reason.contains(missing), "{reason}"),
                None => assert!(reason.starts_with("ONNX Runtime could not register its CUDA provider"), "{reason}"),
            },
        },
        Err(other) => panic!("a CUDA request failed without saying what CUDA lacks: {other}"),
        Ok(session) => {
            let on_cuda = session.placement.nodes.contains_key("CUDAExecutionProvider");
            assert_eq!(session.placement.to_string().starts_with("CUDA"), on_cuda, "{}", session.placement);
        }
    }
}

/// A benchmark's evaluation (files named on the command line, a report of its own) measures every time
/// and leaves no step record (`.steps/`) anywhere: only a run's evaluation is a step of its pipeline.
#[test]
fn evaluating_named_files_measures_every_time_and_records_no_step() {
    let dir = tempfile::tempdir().unwrap();
    let (_, proto) = tiny_variants(32).remove(0);
    let model = dir.path().join("fp32.onnx");
    onnx::write(&model, &proto).unwrap();
    let data = dir.path().join("data");
    fixtures::write_cifar_binary_of(&data, &fixtures::CIFAR10_CLASSES);
    let report = dir.path().join("bench.json");
    for attempt in 1..=2 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vggq"))
            .arg("eval")
            .arg(&model)
            .args(["--device", "cpu", "--batch", "1", "--warmup", "0", "--data"])
            .arg(&data)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "attempt {attempt}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(!stdout.contains("up to date") && stdout.contains("fp32.onnx"), "attempt {attempt}:\n{stdout}");
    }
    assert!(report.is_file());
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(!names.iter().any(|name| name == ".steps"), "{names:?}");
}
