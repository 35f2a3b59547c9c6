//! Our files in real PyTorch: `torch.load(weights_only=True)`, the matching torchvision/quantized
//! module, `load_state_dict(strict=True)`, and exact equality with the values we wrote.
//! Python comes from `VGGQ_PYTHON` (set by `cargo xtask test`); without it these tests fail.

use std::path::Path;
use std::process::Command;

use vggq_pth::layout::{layout, Variant, VggConfig};
use vggq_pth::{write_file, QTensor, Quantizer, Tensor, Value};

use crate::synth;
use crate::util::{python, temp_dir};

/// Side of the square input image for the tiny model (five 2x2 pools leave 1x1).
const TINY_INPUT_SIDE: usize = 32;

fn variant_name(variant: Variant) -> &'static str {
    match variant {
        Variant::Fp32 => "fp32",
        Variant::DynamicInt8 => "dynamic_int8",
        Variant::StaticInt8Fx => "static_int8_fx",
        Variant::QatInt8Fx => "qat_int8_fx",
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => out.extend(['\\', c]),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("[{}]", items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "))
}

/// Appends the storage to `blob` and describes the tensor.
fn tensor_spec(kind: &str, dtype: &str, shape: &[usize], strides: &[usize], data: &[u8], blob: &mut Vec<u8>) -> String {
    let offset = blob.len();
    blob.extend_from_slice(data);
    format!(
        r#"{{"kind": "{kind}", "dtype": "{dtype}", "shape": {}, "strides": {}, "offset": {offset}, "nbytes": {}"#,
        list(shape),
        list(strides),
        data.len()
    )
}

fn plain(kind: &str, t: &Tensor, blob: &mut Vec<u8>) -> String {
    tensor_spec(kind, t.dtype.torch_name(), &t.shape, &t.strides, &t.data, blob) + "}"
}

fn quantized(q: &QTensor, blob: &mut Vec<u8>) -> String {
    let head = tensor_spec("qtensor", q.dtype.torch_name(), &q.shape, &q.strides, &q.data, blob);
    let quantizer = match &q.quantizer {
        Quantizer::PerTensorAffine { scale, zero_point } => {
            format!(r#""qscheme": "per_tensor_affine", "scale": {scale:?}, "zero_point": {zero_point}"#)
        }
        Quantizer::PerChannelAffine { scales, zero_points, axis } => format!(
            r#""qscheme": "per_channel_affine", "scales": {}, "zero_points": {}, "axis": {axis}"#,
            list(scales),
            list(zero_points)
        ),
    };
    format!("{head}, {quantizer}}}")
}

/// The manifest (JSON) and storage blob that tell Python what we wrote.
fn manifest(state_dict: &vggq_pth::StateDict) -> (String, Vec<u8>) {
    let mut blob = Vec::new();
    let entries: Vec<String> = state_dict
        .entries
        .iter()
        .map(|(key, value)| {
            let spec = match value {
                Value::Tensor(t) => plain("tensor", t, &mut blob),
                Value::Parameter(t) => plain("parameter", t, &mut blob),
                Value::QTensor(q) => quantized(q, &mut blob),
                Value::Dtype(d) => format!(r#"{{"kind": "dtype", "dtype": "{}"}}"#, d.torch_name()),
                Value::PackedLinear(p) => {
                    let weight = quantized(&p.weight, &mut blob);
                    let bias = p.bias.as_ref().map_or("null".to_owned(), |b| plain("parameter", b, &mut blob));
                    format!(r#"{{"kind": "packed", "weight": {weight}, "bias": {bias}}}"#)
                }
            };
            // Every spec is an object; prepend its key.
            format!("{{\"key\": {}, {}", json_str(key), &spec[1..])
        })
        .collect();
    let metadata: Vec<String> = state_dict.metadata.iter().map(|(p, v)| format!("[{}, {v}]", json_str(p))).collect();
    (format!("{{\"entries\": [{}], \"metadata\": [{}]}}", entries.join(",\n"), metadata.join(", ")), blob)
}

fn check_in_pytorch(variant: Variant) {
    let python = python();
    let config = VggConfig::tiny();
    let state_dict = synth::state_dict(&layout(&config, variant), 7);
    let dir = temp_dir();
    let name = variant_name(variant);
    let pth = dir.path().join(format!("tiny_{name}.pth"));
    write_file(&pth, &state_dict).unwrap();
    let (manifest, blob) = manifest(&state_dict);
    let (manifest_path, blob_path) = (dir.path().join("expected.json"), dir.path().join("expected.bin"));
    std::fs::write(&manifest_path, manifest).unwrap();
    std::fs::write(&blob_path, blob).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_load.py");
    let output = Command::new(&python)
        .arg(script)
        .arg(name)
        .arg(&pth)
        .arg(&manifest_path)
        .arg(&blob_path)
        .arg(config.torch_module_json(TINY_INPUT_SIDE))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}: PyTorch check failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.starts_with(&format!("ok {name}")), "{name}: unexpected output:\n{stdout}");
}

#[test]
fn fp32_loads_in_pytorch() {
    check_in_pytorch(Variant::Fp32);
}

#[test]
fn dynamic_int8_loads_in_pytorch() {
    check_in_pytorch(Variant::DynamicInt8);
}

#[test]
fn static_int8_fx_loads_in_pytorch() {
    check_in_pytorch(Variant::StaticInt8Fx);
}

#[test]
fn qat_int8_fx_loads_in_pytorch() {
    check_in_pytorch(Variant::QatInt8Fx);
}
