//! Our ONNX files against the PyTorch modules loaded from our `.pth` (written by vggq-pth in
//! torchvision's layout): FP32 logits equal, dynamic INT8 top-1 agrees with `torch.quantize_dynamic`.

use std::path::Path;
use std::process::Command;

use vggq::export::onnx::{self, FoldedVgg, Variant};
use vggq::model::Vgg;
use vggq_pth::layout::{layout, Variant as PthVariant, VggConfig as PthConfig};
use vggq_pth::{StateDict, Tensor, Value};

use crate::util::*;

const SIDE: usize = 32;
const TEST_IMAGES: usize = 256;
const MAX_RELATIVE_ERROR: f64 = 1e-4;
const MIN_AGREEMENT: f64 = 0.99;

/// The Burn model's tensors under torchvision's names: conv `features.{i}`, its BatchNorm
/// `features.{i + 1}`, a slot per ReLU and max-pool; `classifier.{0, 3, 6}` with `[out, in]` weights.
fn torchvision_tensors(model: &Vgg<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut tensors = Vec::new();
    let mut index = 0;
    for block in &model.features {
        let w = block.conv.weight.val();
        tensors.push((format!("features.{index}.weight"), w.dims().to_vec(), values(w)));
        tensors.push((format!("features.{index}.bias"), vec![block.conv.weight.dims()[0]], values(block.conv.bias.as_ref().unwrap().val())));
        let norm = &block.norm;
        for (name, t) in [("weight", norm.weight.val()), ("bias", norm.bias.val()), ("running_mean", norm.running_mean.value()), ("running_var", norm.running_var.value())] {
            tensors.push((format!("features.{}.{name}", index + 1), t.dims().to_vec(), values(t)));
        }
        index += if block.pool { 4 } else { 3 };
    }
    let head = &model.classifier;
    for (torch_index, linear) in [(0, &head.hidden1), (3, &head.hidden2), (6, &head.output)] {
        let w = linear.weight.val().transpose();
        tensors.push((format!("classifier.{torch_index}.weight"), w.dims().to_vec(), values(w)));
        let b = linear.bias.as_ref().unwrap().val();
        tensors.push((format!("classifier.{torch_index}.bias"), b.dims().to_vec(), values(b)));
    }
    tensors
}

fn write_fp32_pth(model: &Vgg<B>, config: &PthConfig, path: &Path) {
    let tensors = torchvision_tensors(model);
    let expected = layout(config, PthVariant::Fp32);
    let entries = expected
        .entries
        .iter()
        .map(|(key, _)| {
            let value = if key.ends_with("num_batches_tracked") {
                Tensor::scalar_i64(0)
            } else {
                let (_, shape, data) = tensors.iter().find(|(k, _, _)| k == key).unwrap_or_else(|| panic!("no tensor for `{key}`"));
                Tensor::from_f32(shape.clone(), data)
            };
            (key.clone(), Value::Tensor(value))
        })
        .collect();
    vggq_pth::write_file(path, &StateDict { entries, metadata: expected.metadata }).unwrap();
}

fn config_json(config: &PthConfig) -> String {
    let features: Vec<usize> = config
        .features
        .iter()
        .map(|f| match f {
            vggq_pth::layout::Feature::Conv(c) => *c,
            vggq_pth::layout::Feature::MaxPool => 0,
        })
        .collect();
    format!(
        r#"{{"features": {features:?}, "avgpool_side": {}, "hidden": {}, "classes": {}, "input_side": {SIDE}}}"#,
        config.avgpool_side, config.hidden, config.classes
    )
}

fn f32_file(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

/// (relative error, top-1 agreement) of PyTorch's `variant` against ONNX Runtime on `onnx_path`.
fn compare(variant: &str, onnx_path: &Path, model: &Vgg<B>, dir: &Path) -> (f64, f64) {
    let config = tiny_config(SIDE);
    let pth_config = PthConfig::vgg11_bn(config.width_divisor, config.pool_size, config.hidden, config.classes);
    let pth = dir.join("model_fp32.pth");
    write_fp32_pth(model, &pth_config, &pth);
    let mut session = ort_session(onnx_path, SIDE);
    let (mut images, mut logits) = (Vec::new(), Vec::new());
    for batch in cifar_batches(false, TEST_IMAGES, SIDE).epoch(0) {
        logits.extend(session.run(&batch.images, batch.len()).unwrap());
        images.extend(batch.images);
    }
    let (images_path, logits_path) = (dir.join("images.f32"), dir.join("logits.f32"));
    f32_file(&images_path, &images);
    f32_file(&logits_path, &logits);
    let distinct = distinct_top1(&logits, config.classes);
    assert!(distinct >= MIN_DISTINCT_TOP1, "the model predicts only {distinct} classes");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/python/torch_agreement.py");
    let output = Command::new(python())
        .arg(script)
        .args([variant.as_ref(), pth.as_os_str(), config_json(&pth_config).as_ref(), images_path.as_os_str(), logits_path.as_os_str()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "torch_agreement.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    (result["relative_error"].as_f64().unwrap(), result["top1_agreement"].as_f64().unwrap())
}

#[test]
fn fp32_onnx_equals_pytorch_loaded_from_our_pth() {
    let config = tiny_config(SIDE);
    let model = trained_tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::Fp32.file_name());
    onnx::write(&path, &onnx::fp32::model(&FoldedVgg::from_model(&model, &config), &provenance(Variant::Fp32)).unwrap()).unwrap();
    let (error, agreement) = compare("fp32", &path, &model, dir.path());
    assert!(error <= MAX_RELATIVE_ERROR, "relative error {error:e}");
    assert_eq!(agreement, 1.0);
}

#[test]
fn dynamic_int8_onnx_agrees_with_pytorch_quantize_dynamic() {
    let config = tiny_config(SIDE);
    let model = trained_tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::Int8Dynamic.file_name());
    onnx::write(&path, &onnx::dynamic::model(&FoldedVgg::from_model(&model, &config), &provenance(Variant::Int8Dynamic)).unwrap()).unwrap();
    let (_, agreement) = compare("dynamic_int8", &path, &model, dir.path());
    println!("top-1 agreement {agreement}");
    assert!(agreement >= MIN_AGREEMENT, "top-1 agreement {agreement}");
}
