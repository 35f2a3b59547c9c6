//! VGG's CPU kernels (`vggq::model::kernels` on `Autodiff<Flex>`: 3x3 convolution, BatchNorm with ReLU
//! in training, 2x2 max-pool, Linear) against PyTorch on the same inputs: a conv block and a Linear, their
//! outputs and the gradients of every input (tests/python/kernels.py), to FP32 rounding; and against
//! themselves on other thread counts, bit for bit.

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

/// The largest difference from PyTorch allowed for an output or gradient, relative to its largest value
/// (README, "Fidelity to PyTorch"): FP32 rounding in another summation order (measured: at most 1.2e-6,
/// the weight gradient over 4,096 positions as dot products; 3.4e-7 at the smallest shape).
const KERNEL_BOUND: f64 = 2e-6;

/// Conv block shapes `(n, c, o, h, w)` that between them reach every path of the CPU kernels' weight
/// gradient (`cpu.rs`): small blocks of whole images through a GEMM; blocks of 1,024 columns and more as
/// dot products, over more than one reduction chunk (`dot_products::K_CHUNK`, 512); bands of one image's
/// rows where an image's im2col is over `IM2COL_BUDGET`, through a GEMM and as dot products.
const SHAPES: [(usize, usize, usize, usize, usize); 4] = [
    (4, 5, 7, 8, 6),    // whole images, one block, GEMM
    (4, 16, 8, 32, 32), // 1,024-column blocks (one image each): dot products, 2 chunks
    (2, 64, 8, 48, 48), // bands of 18 rows (864 columns): GEMM
    (1, 64, 8, 48, 48), // bands of 37 rows (1,776 columns): dot products
];

#[test]
fn a_conv_block_and_its_gradients_are_pytorchs() {
    let mut worst = (0.0, String::new());
    for (i, &shape) in SHAPES.iter().enumerate() {
        for (key, error) in conv_block_errors(shape, i as u64) {
            println!("{shape:?} {key}: relative error {error:.2e}");
            if error > worst.0 {
                worst = (error, format!("{shape:?} {key}"));
            }
        }
    }
    assert!(worst.0 <= KERNEL_BOUND, "{} differs from PyTorch's by {:.2e}", worst.1, worst.0);
}

/// Pools to compare: one thread, an even and an odd count, and more threads than some shapes have tasks.
const THREAD_COUNTS: [usize; 4] = [1, 2, 3, 5];

/// A conv block's outputs and gradients are the same bits on rayon pools of each of [`THREAD_COUNTS`]:
/// the kernels share work out by the problem's shape, never by the threads (`src/model/kernels/cpu.rs`).
/// CI's training on several thread counts (`cargo xtask test`) takes the smoke profile, whose small
/// planes never reach the weight gradient's bands of rows that the full profile's first layers take;
/// [`SHAPES`] reach every path.
#[test]
fn a_conv_block_is_the_same_bits_on_any_thread_count() {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let inputs = block_inputs(shape, i as u64);
        let on = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| conv_block(&inputs));
        let (first, rest) = THREAD_COUNTS.split_first().unwrap();
        let reference = on(*first);
        for &threads in rest {
            for ((key, expected), (_, actual)) in reference.iter().zip(on(threads)) {
                let differing = expected.iter().zip(&actual).filter(|(e, a)| e.to_bits() != a.to_bits()).count();
                assert_eq!(differing, 0, "{shape:?} {key}: {differing} values on {threads} threads differ from {first}'s");
            }
        }
    }
}

/// A conv block's shape `(n, c, o, h, w)` and its inputs: each named tensor's shape and values, drawn
/// from a normal distribution seeded by `seed`.
struct BlockInputs {
    shape: (usize, usize, usize, usize, usize),
    shapes: BTreeMap<&'static str, Vec<usize>>,
    values: BTreeMap<&'static str, Vec<f32>>,
}

fn block_inputs(shape @ (n, c, o, h, w): (usize, usize, usize, usize, usize), seed: u64) -> BlockInputs {
    let device = Default::default();
    AD::seed(&device, 3 + seed);
    let normal =
        |shape: Vec<usize>| Tensor::<AD, 1>::random([shape.iter().product::<usize>()], Distribution::Normal(0.0, 1.0), &device);
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
    let values = shapes.iter().map(|(name, shape)| (*name, vggq::host_reads::values(normal(shape.clone())))).collect();
    BlockInputs { shape, shapes, values }
}

/// One conv block (conv, BatchNorm, ReLU, max-pool, Linear) on our CPU kernels, forward and backward
/// from `sum(z * linear_output_weights)`: its outputs and every input's gradient, by name.
fn conv_block(inputs: &BlockInputs) -> [(&'static str, Vec<f32>); 9] {
    let (n, c, o, h, w) = inputs.shape;
    let device = Default::default();
    let tracked = |name: &str| Tensor::<AD, 1>::from_floats(inputs.values[name].as_slice(), &device).require_grad();
    let (x, weight, bias, gamma, beta) = (tracked("x"), tracked("weight"), tracked("bias"), tracked("gamma"), tracked("beta"));
    let conv = kernels::conv3x3(x.clone().reshape([n, c, h, w]), weight.clone().reshape([o, c, 3, 3]), bias.clone());
    let (normed, _, _) = kernels::batch_norm_relu(conv, gamma.clone(), beta.clone());
    let y = kernels::max_pool2x2(normed);
    let (linear_weight, linear_bias) = (tracked("linear_weight"), tracked("linear_bias"));
    let z = kernels::linear(y.clone().flatten(1, 3), linear_weight.clone().reshape([o * h / 2 * w / 2, 10]), linear_bias.clone());
    let output_weights =
        Tensor::<AD, 1>::from_floats(inputs.values["linear_output_weights"].as_slice(), &device).reshape([n, 10]);
    let grads = (z.clone() * output_weights).sum().backward();
    [
        ("y", vggq::host_reads::values(y.inner())),
        ("z", vggq::host_reads::values(z.inner())),
        ("grad_linear_weight", vggq::host_reads::values(linear_weight.grad(&grads).unwrap())),
        ("grad_linear_bias", vggq::host_reads::values(linear_bias.grad(&grads).unwrap())),
        ("grad_x", vggq::host_reads::values(x.grad(&grads).unwrap())),
        ("grad_weight", vggq::host_reads::values(weight.grad(&grads).unwrap())),
        ("grad_bias", vggq::host_reads::values(bias.grad(&grads).unwrap())),
        ("grad_gamma", vggq::host_reads::values(gamma.grad(&grads).unwrap())),
        ("grad_beta", vggq::host_reads::values(beta.grad(&grads).unwrap())),
    ]
}

/// Each output and gradient of one conv block ([`conv_block`]) on our CPU kernels, and its largest
/// difference from PyTorch's relative to PyTorch's largest value.
fn conv_block_errors(shape: (usize, usize, usize, usize, usize), seed: u64) -> Vec<(&'static str, f64)> {
    let python = vggq_core::places::test_python();
    let inputs = block_inputs(shape, seed);
    let ours = conv_block(&inputs);

    let dir = tempfile::tempdir().unwrap();
    let bytes: BTreeMap<&str, Vec<u8>> =
        inputs.values.iter().map(|(k, v)| (*k, v.iter().flat_map(|f| f.to_le_bytes()).collect())).collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b)| (*k, safetensors::tensor::TensorView::new(safetensors::Dtype::F32, inputs.shapes[k].clone(), b).unwrap()))
        .collect();
    let input_file = dir.path().join("inputs.safetensors");
    std::fs::write(&input_file, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let output_file = dir.path().join("outputs.safetensors");
    let output = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kernels.py"))
        .arg(&input_file)
        .arg(&output_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let torch_bytes = std::fs::read(&output_file).unwrap();
    let torch = safetensors::SafeTensors::deserialize(&torch_bytes).unwrap();
    let expected = |key: &str| -> Vec<f32> {
        torch.tensor(key).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };

    ours.into_iter()
        .map(|(key, values)| {
            // The conv bias's gradient is zero in exact arithmetic (the BatchNorm after it subtracts every
            // channel's mean): both sides hold rounding noise, measured against the weights' gradient.
            let scale = if key == "grad_bias" { magnitude(&expected("grad_weight")) } else { magnitude(&expected(key)) };
            (key, relative_error(&values, &expected(key), scale))
        })
        .collect()
}
