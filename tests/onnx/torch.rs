//! Our ONNX files against the PyTorch modules loaded from our `.pth` (written by vggq-pth in
//! torchvision's layout): FP32 logits equal, dynamic INT8 top-1 agrees with `torch.quantize_dynamic`.

use std::path::Path;
use std::process::Command;

use vggq::export::onnx::{self, FoldedVgg, Variant};
use vggq::model::Vgg;
use vggq_pth::layout::{layout, Variant as PthVariant, VggConfig as PthConfig};
use vggq_pth::tensor::{channels_last_strides, contiguous_strides, to_channels_last};
use vggq_pth::{DType, PackedLinearParams, QTensor, Quantizer, StateDict, Tensor, Value};
use vggq::export::onnx::{minmax, ChannelInt8, QuantVgg};

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

/// int8 weights as PyTorch's per-channel affine qint8 tensor (zero points 0), channels-last for convs
/// as fbgemm saves them.
fn qtensor(w: &ChannelInt8, shape: Vec<usize>) -> QTensor<'static> {
    let bytes: Vec<u8> = w.values.iter().map(|&v| v as u8).collect();
    let (strides, data) = match <[usize; 4]>::try_from(shape.as_slice()) {
        Ok(dims) => (channels_last_strides(&shape), to_channels_last(dims, 1, &bytes).unwrap()),
        Err(_) => (contiguous_strides(&shape), bytes),
    };
    QTensor {
        dtype: DType::QInt8,
        shape,
        strides,
        data: data.into(),
        quantizer: Quantizer::PerChannelAffine {
            scales: w.scales.iter().map(|&s| f64::from(s)).collect(),
            zero_points: vec![0; w.scales.len()],
            axis: 0,
        },
    }
}

/// `q` as `convert_fx` (fbgemm) names and stores it, in the order of vggq-pth's layout.
fn write_static_pth(q: &QuantVgg, config: &PthConfig, path: &Path) {
    let expected = layout(config, PthVariant::StaticInt8Fx);
    let conv_index = |key: &str| config.convs().iter().position(|c| key.starts_with(&format!("features.{}.", c.index)));
    let dense_index = |key: &str| ["classifier.0.", "classifier.3.", "classifier.6."].iter().position(|p| key.starts_with(p));
    let scalar_value = |key: &str, scale: f32, zero_point: u8| {
        if key.ends_with("scale") || key.ends_with("scale_0") {
            Value::Tensor(Tensor::scalar_f32(scale))
        } else {
            Value::Tensor(Tensor::scalar_i64(i64::from(zero_point)))
        }
    };
    let entries = expected
        .entries
        .iter()
        .map(|(key, _)| {
            let value = if key.starts_with("features_0_input") {
                scalar_value(key, q.input.scale, q.input.zero_point)
            } else if let Some(i) = conv_index(key) {
                let conv = &q.convs[i];
                match key.rsplit('.').next().unwrap() {
                    "weight" => Value::QTensor(qtensor(&conv.weight, vec![conv.out_channels, conv.in_channels, 3, 3])),
                    "bias" => Value::Parameter(Tensor::from_f32(vec![conv.out_channels], &conv.bias)),
                    _ => scalar_value(key, conv.output.scale, conv.output.zero_point),
                }
            } else if let Some(i) = dense_index(key) {
                let dense = &q.dense[i];
                if key.ends_with("_packed_params.dtype") {
                    Value::Dtype(DType::QInt8)
                } else if key.ends_with("_packed_params._packed_params") {
                    Value::PackedLinear(PackedLinearParams {
                        weight: qtensor(&dense.weight, vec![dense.outputs, dense.inputs]),
                        bias: Some(Tensor::from_f32(vec![dense.outputs], &dense.bias)),
                    })
                } else {
                    scalar_value(key, dense.output.scale, dense.output.zero_point)
                }
            } else {
                panic!("no value for `{key}`")
            };
            (key.clone(), value)
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

fn pth_config() -> PthConfig {
    let config = tiny_config(SIDE);
    PthConfig::vgg11_bn(config.width_divisor, config.pool_size, config.hidden, config.classes)
}

/// (relative error, top-1 agreement) of PyTorch's `variant` loaded from `pth` against ONNX Runtime on
/// `onnx_path`.
fn compare(variant: &str, onnx_path: &Path, pth: &Path, dir: &Path) -> (f64, f64) {
    let config = tiny_config(SIDE);
    let pth_config = pth_config();
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
    let pth = dir.path().join("model_fp32.pth");
    write_fp32_pth(&model, &pth_config(), &pth);
    let (error, agreement) = compare("fp32", &path, &pth, dir.path());
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
    let pth = dir.path().join("model_fp32.pth");
    write_fp32_pth(&model, &pth_config(), &pth);
    let (_, agreement) = compare("dynamic_int8", &path, &pth, dir.path());
    println!("top-1 agreement {agreement}");
    assert!(agreement >= MIN_AGREEMENT, "top-1 agreement {agreement}");
}

#[test]
fn static_int8_onnx_agrees_with_pytorch_convert_fx_loaded_from_the_same_parameters() {
    let config = tiny_config(SIDE);
    let model = trained_tiny_model();
    let mut ranges = minmax::Ranges::default();
    for batch in cifar_batches(true, 128, SIDE).epoch(0) {
        ranges.observe(&model, images_tensor(&batch));
    }
    let quantized = ranges.quantize(&FoldedVgg::from_model(&model, &config));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::Int8Static.file_name());
    onnx::write(&path, &onnx::qdq::model(&quantized, &provenance(Variant::Int8Static)).unwrap()).unwrap();
    let pth = dir.path().join("model_int8_static.pth");
    write_static_pth(&quantized, &pth_config(), &pth);
    let (_, agreement) = compare("static_int8_fx", &path, &pth, dir.path());
    println!("top-1 agreement {agreement}");
    assert!(agreement >= MIN_AGREEMENT, "top-1 agreement {agreement}");
}
