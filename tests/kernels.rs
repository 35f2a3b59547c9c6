//! VGG's CPU kernels (`vggq::model::kernels` on `Autodiff<Flex>`: 3x3 convolution, BatchNorm with ReLU
//! in training, 2x2 max-pool, Linear) against PyTorch on the same inputs: a conv block and a Linear, their
//! outputs and the gradients of every input (tests/python/kernels.py), to FP32 rounding.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use vggq::model::kernels;

type AD = Autodiff<Flex>;

/// Largest magnitude.
fn magnitude(values: &[f32]) -> f64 {
    values.iter().fold(0.0f64, |m, &e| m.max(f64::from(e.abs())))
}

/// Largest difference relative to `scale`.
fn relative_error(actual: &[f32], expected: &[f32], scale: f64) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual.iter().zip(expected).map(|(&a, &e)| f64::from((a - e).abs())).fold(0.0, f64::max) / scale
}

#[test]
fn a_conv_block_and_its_gradients_are_pytorchs() {
    let python = vggq_core::places::test_python();
    let device = Default::default();
    AD::seed(&device, 3);
    let normal =
        |shape: Vec<usize>| Tensor::<AD, 1>::random([shape.iter().product::<usize>()], Distribution::Normal(0.0, 1.0), &device);
    let (n, c, o, h, w) = (4, 5, 7, 8, 6);
    let shapes: BTreeMap<&str, Vec<usize>> = BTreeMap::from([
        ("x", vec![n, c, h, w]),
        ("weight", vec![o, c, 3, 3]),
        ("bias", vec![o]),
        ("gamma", vec![o]),
        ("beta", vec![o]),
        ("linear_weight", vec![o * h / 2 * w / 2, 10]),
        ("linear_bias", vec![10]),
        ("linear_output_weights", vec![n, 10]),
    ]);
    let values: BTreeMap<&str, Vec<f32>> =
        shapes.iter().map(|(name, shape)| (*name, vggq::host_reads::values(normal(shape.clone())))).collect();

    let tracked = |name: &str| Tensor::<AD, 1>::from_floats(values[name].as_slice(), &device).require_grad();
    let (x, weight, bias, gamma, beta) = (tracked("x"), tracked("weight"), tracked("bias"), tracked("gamma"), tracked("beta"));
    let conv = kernels::conv3x3(x.clone().reshape([n, c, h, w]), weight.clone().reshape([o, c, 3, 3]), bias.clone());
    let (normed, _, _) = kernels::batch_norm_relu(conv, gamma.clone(), beta.clone());
    let y = kernels::max_pool2x2(normed);
    let (linear_weight, linear_bias) = (tracked("linear_weight"), tracked("linear_bias"));
    let z = kernels::linear(y.clone().flatten(1, 3), linear_weight.clone().reshape([o * h / 2 * w / 2, 10]), linear_bias.clone());
    let output_weights = Tensor::<AD, 1>::from_floats(values["linear_output_weights"].as_slice(), &device).reshape([n, 10]);
    let grads = (z.clone() * output_weights).sum().backward();

    let dir = tempfile::tempdir().unwrap();
    let bytes: BTreeMap<&str, Vec<u8>> =
        values.iter().map(|(k, v)| (*k, v.iter().flat_map(|f| f.to_le_bytes()).collect())).collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b)| (*k, safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shapes[k].clone(), b).unwrap()))
        .collect();
    let inputs = dir.path().join("inputs.safetensors");
    std::fs::write(&inputs, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let outputs = dir.path().join("outputs.safetensors");
    let output = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kernels.py"))
        .arg(&inputs)
        .arg(&outputs)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let torch_bytes = std::fs::read(&outputs).unwrap();
    let torch = safetensors::SafeTensors::deserialize(&torch_bytes).unwrap();
    let expected = |key: &str| -> Vec<f32> {
        torch.tensor(key).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };

    let ours = [
        ("y", vggq::host_reads::values(y.inner())),
        ("z", vggq::host_reads::values(z.inner())),
        ("grad_linear_weight", vggq::host_reads::values(linear_weight.grad(&grads).unwrap())),
        ("grad_linear_bias", vggq::host_reads::values(linear_bias.grad(&grads).unwrap())),
        ("grad_x", vggq::host_reads::values(x.grad(&grads).unwrap())),
        ("grad_weight", vggq::host_reads::values(weight.grad(&grads).unwrap())),
        ("grad_bias", vggq::host_reads::values(bias.grad(&grads).unwrap())),
        ("grad_gamma", vggq::host_reads::values(gamma.grad(&grads).unwrap())),
        ("grad_beta", vggq::host_reads::values(beta.grad(&grads).unwrap())),
    ];
    for (key, values) in ours {
        // The conv bias's gradient is zero in exact arithmetic (the BatchNorm after it subtracts every
        // channel's mean): both sides hold rounding noise, measured against the weights' gradient.
        let scale = if key == "grad_bias" { magnitude(&expected("grad_weight")) } else { magnitude(&expected(key)) };
        let error = relative_error(&values, &expected(key), scale);
        println!("{key}: relative error {error:.2e}");
        // FP32 rounding in another summation order (measured: at most a few 1e-7).
        assert!(error < 1e-5, "{key} differs from PyTorch's by {error:e}");
    }
}
