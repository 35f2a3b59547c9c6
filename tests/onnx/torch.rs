//! Our ONNX files against the PyTorch modules loaded from our `.pth` (`src/quant`'s state_dicts, written
//! by vggq-pth): FP32 logits equal, dynamic INT8 top-1 agrees with `torch.quantize_dynamic`, static INT8
//! top-1 agrees with `convert_fx`'s module holding the same parameters.

use std::path::Path;
use std::process::Command;

use vggq::export::onnx::{self, Variant};
use vggq::quant::state_dict::{fp32_state_dict, quantized_state_dict};
use vggq::quant::{quantize_dynamic, FloatVgg, SimulatedVgg};
use vggq_pth::layout::VggConfig as PthConfig;

use crate::util::*;

const SIDE: usize = 32;
const TEST_IMAGES: usize = 256;
/// FP32: largest |ONNX - PyTorch| over the largest logit (measured: 6.8e-7, summation order).
const MAX_RELATIVE_ERROR: f64 = 1e-5;
const MIN_AGREEMENT: f64 = 0.99;
/// Static INT8: rows whose top-1 agrees with PyTorch's outright, near-ties on the output grid counted
/// against (measured: 0.973 on the tiny model, 7 near-ties of 256 rows).
const MIN_EXACT_AGREEMENT: f64 = 0.95;
/// Static INT8: logits within one output step of PyTorch's (measured: 0.997).
const MIN_WITHIN_ONE_STEP: f64 = 0.99;
const CALIBRATION_IMAGES: usize = 128;

fn f32_file(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn pth_config() -> PthConfig {
    let config = tiny_config(SIDE);
    PthConfig::vgg11_bn(config.width_divisor, config.pool_size, config.hidden, config.classes)
}

/// The logits of ONNX Runtime on `onnx_path` and of PyTorch's `variant` loaded from `pth`, with the
/// largest difference relative to the largest PyTorch logit.
struct Comparison {
    relative_error: f64,
    onnx: Vec<f32>,
    torch: Vec<f32>,
}

fn compare(variant: &str, onnx_path: &Path, pth: &Path, dir: &Path) -> Comparison {
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
        .args([
            variant.as_ref(),
            pth.as_os_str(),
            pth_config.torch_module_json(SIDE).as_ref(),
            images_path.as_os_str(),
            logits_path.as_os_str(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "torch_agreement.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let torch = std::fs::read(dir.join("logits.f32.torch"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Comparison { relative_error: result["relative_error"].as_f64().unwrap(), onnx: logits, torch }
}

#[test]
fn fp32_onnx_equals_pytorch_loaded_from_our_pth() {
    let config = tiny_config(SIDE);
    let float = FloatVgg::from_model(&trained_tiny_model(), &config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::Fp32.onnx_file());
    onnx::write(&path, &onnx::fp32::model(&vggq::quant::FusedVgg::fuse(&float), &provenance(Variant::Fp32)).unwrap()).unwrap();
    let pth = dir.path().join("model_fp32.pth");
    vggq_pth::write_file(&pth, &fp32_state_dict(&float).unwrap()).unwrap();
    let comparison = compare("fp32", &path, &pth, dir.path());
    let error = comparison.relative_error;
    println!("relative error {error:e}");
    assert!(error <= MAX_RELATIVE_ERROR, "relative error {error:e}");
    assert_eq!(top1_agreement(&comparison.onnx, &comparison.torch, config.classes), 1.0);
}

#[test]
fn dynamic_int8_onnx_agrees_with_pytorch_quantize_dynamic() {
    let config = tiny_config(SIDE);
    let float = FloatVgg::from_model(&trained_tiny_model(), &config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::DynamicInt8.onnx_file());
    onnx::write(&path, &onnx::dynamic::model(&quantize_dynamic(&float), &provenance(Variant::DynamicInt8)).unwrap()).unwrap();
    // PyTorch quantizes the FP32 model itself: its own `quantize_dynamic`, not our parameters.
    let pth = dir.path().join("model_fp32.pth");
    vggq_pth::write_file(&pth, &fp32_state_dict(&float).unwrap()).unwrap();
    let comparison = compare("dynamic_int8", &path, &pth, dir.path());
    // fbgemm quantizes each Linear input to [0, 127], ONNX Runtime to [0, 255]: the runtimes disagree by
    // design wherever two logits are closer than that grid difference moves them. How far it moves them
    // is measured on our simulation of the same model on both grids, independently of either runtime.
    let quantized = quantize_dynamic(&float);
    let on_fbgemm_grid = SimulatedVgg::<B>::new(&quantized, &Default::default());
    let on_ort_grid = SimulatedVgg::<B>::new(&quantized, &Default::default()).with_onnx_runtime_dynamic_inputs();
    let mut grid_effect = 0.0_f32;
    for batch in cifar_batches(false, TEST_IMAGES, SIDE).epoch(0) {
        let a = values(on_fbgemm_grid.forward(images_tensor(&batch)));
        let b = values(on_ort_grid.forward(images_tensor(&batch)));
        grid_effect = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(grid_effect, f32::max);
    }
    let strict = top1_agreement_within(&comparison.onnx, &comparison.torch, config.classes, 0.0);
    let agreement = top1_agreement_within(&comparison.onnx, &comparison.torch, config.classes, grid_effect);
    let largest = comparison.onnx.iter().zip(&comparison.torch).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!(
        "top-1 agreement {strict} exact, {agreement} within the grid effect {grid_effect:e}; largest difference {largest:e}"
    );
    assert!(agreement >= MIN_AGREEMENT, "top-1 agreement {agreement}");
    // The tolerance only explains near-ties: most rows agree outright (measured: 0.977).
    assert!(strict >= 0.95, "exact top-1 agreement {strict}");
    // ORT's logits lie about as far from PyTorch's as the grids move the simulation's (measured: 1.42e-2
    // and 1.38e-2); the grid effect is itself held near its measured size, so that a simulation gone
    // wrong cannot widen the bound.
    assert!(grid_effect < 2e-2, "grid effect {grid_effect:e}");
    assert!(largest <= 1.25 * grid_effect, "largest logit difference {largest:e}, grid effect {grid_effect:e}");
}

#[test]
fn static_int8_onnx_agrees_with_pytorch_convert_fx_loaded_from_the_same_parameters() {
    let config = tiny_config(SIDE);
    let quantized = static_quantized(&trained_tiny_model(), &config, CALIBRATION_IMAGES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Variant::StaticInt8.onnx_file());
    onnx::write(&path, &onnx::qdq::model(&quantized, &provenance(Variant::StaticInt8)).unwrap()).unwrap();
    let pth = dir.path().join("model_int8_static.pth");
    vggq_pth::write_file(&pth, &quantized_state_dict(&quantized).unwrap()).unwrap();
    let comparison = compare("static_int8_fx", &path, &pth, dir.path());
    let step = one_output_step(&quantized);
    let agreement = top1_agreement_within(&comparison.onnx, &comparison.torch, config.classes, step);
    let exact = top1_agreement_within(&comparison.onnx, &comparison.torch, config.classes, 0.0);
    assert_eq!(comparison.onnx.len(), comparison.torch.len());
    let differences: Vec<f32> = comparison.onnx.iter().zip(&comparison.torch).map(|(a, b)| (a - b).abs() / step).collect();
    let largest = differences.iter().copied().fold(0.0, f32::max);
    let within_one = differences.iter().filter(|&&d| d <= 1.0 + 1e-3).count() as f64 / differences.len() as f64;
    println!(
        "top-1 agreement {agreement} within one output step, {exact} exact; logits within one output step {within_one}, largest difference {largest} steps"
    );
    assert!(agreement >= MIN_AGREEMENT, "top-1 agreement {agreement}");
    // Both requantize every layer onto the same grids; ONNX Runtime and fbgemm may round an accumulator
    // apart by one step, which later layers carry on: logits stay within two output steps, and nearly all
    // within one. A wrong scale, zero point or bias is many steps off.
    assert!(largest <= 2.0 + 1e-3, "logits differ by {largest} output steps");
    assert!(within_one >= MIN_WITHIN_ONE_STEP, "{within_one} of the logits within one output step");
    assert!(exact >= MIN_EXACT_AGREEMENT, "exact top-1 agreement {exact}");
}
