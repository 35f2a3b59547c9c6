//! The GPU code path on wgpu (Mesa's lavapipe where CI runs it): one training step of the smoke model on
//! burn-wgpu, Burn's composed operations compiled by cubecl, against the same step on burn-flex with our
//! CPU kernels, from the same weights on the same batch, and the convolution CUDA trains with (an im2col
//! GEMM) against wgpu's (`vggq device --check-step`). Through the binary, which has both backends
//! compiled in already: compiled in here, they took this test minutes to build.

#![cfg(feature = "wgpu")]

use std::process::Command;

use vggq::backend::step_agreement::StepAgreement;

/// The largest difference allowed between the two forward passes (logits, loss), relative to the largest
/// magnitude: both compute in FP32, in other orders (measured on lavapipe: 2.8e-6 and 0).
const FORWARD_BOUND: f64 = 2e-5;
/// The same for each parameter's update: the parameters' own FP32 spacing alone makes 1e-4 of an update
/// (measured on lavapipe: at most 2.4e-4).
const UPDATE_BOUND: f64 = 1e-3;
/// A conv bias moves by rounding alone (measured at most 3.0e-10).
const CONV_BIAS_UPDATE: f64 = 1e-8;
/// The im2col GEMM convolution (CUDA's) against Burn's `conv2d` (wgpu's), forward and for the weights'
/// gradient, relative: both FP32 on lavapipe, in other orders (measured 6.7e-6; a tap out of place
/// makes it order 1, TF32 order 1e-3).
const CONV_ALGORITHMS_BOUND: f64 = 2e-5;

#[test]
fn a_training_step_on_wgpu_is_the_cpu_step() {
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["device", "--device", "wgpu", "--check-step", "--json"])
        .output()
        .expect("vggq runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "vggq device --device wgpu --check-step failed: {stderr}");
    let findings: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON findings");
    let step: StepAgreement = serde_json::from_value(findings["step_agreement"].clone()).expect("a step agreement");
    println!("{step:?}");
    assert!(step.logits <= FORWARD_BOUND && step.loss <= FORWARD_BOUND, "logits {:.2e}, loss {:.2e}", step.logits, step.loss);
    assert!(step.update <= UPDATE_BOUND, "{:?} updated {:.2e} apart (relative)", step.update_parameter, step.update);
    assert!(step.conv_bias_update <= CONV_BIAS_UPDATE, "a conv bias moved {:.2e}", step.conv_bias_update);
    let conv = findings["conv_agreement"].as_f64().expect("the convolutions' agreement");
    assert!(conv <= CONV_ALGORITHMS_BOUND, "the im2col GEMM convolution is {conv:.2e} from Burn's");
}
