//! The kernels against Burn's own operations composed (`composed`), forward on `Flex` and backward on
//! `Autodiff<Flex>`, on random inputs of odd channel counts: equal to FP32 rounding (summation order
//! differs). tests/kernels.rs holds them against PyTorch.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;

use burn::tensor::ops::FloatTensor;
use burn_flex::FlexTensor;

use super::{composed, primitive, tensor, VggBackend};

type AD = Autodiff<Flex>;

/// Largest difference relative to the largest magnitude of `expected`.
fn relative_error<B: Backend, const D: usize>(actual: Tensor<B, D>, expected: Tensor<B, D>) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    let scale = crate::host_reads::scalar(expected.clone().abs().max()) as f32;
    crate::host_reads::scalar((actual - expected).abs().max()) as f32 / scale.max(f32::MIN_POSITIVE)
}

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<AD, D> {
    AD::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// `sum(op(inputs) * weights)` differentiated, by our kernel and by the composed reference: the outputs
/// and every input's gradient agree to `tolerance`.
fn agrees<const N: usize>(
    inputs: [Tensor<AD, 4>; N],
    weights: Tensor<AD, 4>,
    ours: impl Fn(&[Tensor<AD, 4>]) -> Tensor<AD, 4>,
    reference: impl Fn(&[Tensor<AD, 4>]) -> Tensor<AD, 4>,
) {
    let tracked = |inputs: &[Tensor<AD, 4>]| inputs.iter().map(|t| t.clone().detach().require_grad()).collect::<Vec<_>>();
    let (a, b) = (tracked(&inputs), tracked(&inputs));
    let (out_a, out_b) = (ours(&a), reference(&b));
    assert!(relative_error(out_a.clone().inner(), out_b.clone().inner()) < 1e-5, "outputs differ");
    let (grads_a, grads_b) = ((out_a * weights.clone()).sum().backward(), (out_b * weights).sum().backward());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let error = relative_error(x.grad(&grads_a).expect("a gradient"), y.grad(&grads_b).expect("a gradient"));
        assert!(error < 1e-5, "gradient of input {i} differs by {error:e}");
    }
}

/// Vectors are carried as `[1, C, 1, 1]` tensors through `agrees` and flattened for the operations.
fn flat(t: &Tensor<AD, 4>) -> Tensor<AD, 1> {
    t.clone().flatten(0, 3)
}

/// A 3x3 convolution of `[n, c, h, w]` images to `o` channels and its gradients, ours against Burn's.
fn conv3x3_agrees([n, c, h, w]: [usize; 4], o: usize) {
    let (x, weight, bias) = (random([n, c, h, w], 1), random([o, c, 3, 3], 2), random([1, o, 1, 1], 3));
    agrees(
        [x, weight, bias],
        random([n, o, h, w], 4),
        |t| super::conv3x3(t[0].clone(), t[1].clone(), flat(&t[2])),
        |t| tensor(composed::conv3x3::<AD>(primitive(t[0].clone()), primitive(t[1].clone()), primitive(flat(&t[2])))),
    );
}

/// Shapes with odd channel counts, planes as small as the smoke profile's last ones, and a single row.
const CONV3X3_SHAPES: [([usize; 4], usize); 3] = [([3, 5, 6, 8], 7), ([2, 3, 2, 2], 4), ([2, 3, 1, 3], 4)];

#[test]
fn conv3x3_and_its_gradients_are_burns() {
    for (shape, outputs) in CONV3X3_SHAPES {
        conv3x3_agrees(shape, outputs);
    }
}

/// The GPU backends' convolution by each algorithm, with our backward pass (the input's gradient a
/// forward convolution), on burn-flex against Burn's convolution and its autodiff.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
#[test]
fn the_gpu_convolution_and_its_gradients_are_burns_by_each_algorithm() {
    use super::composed::Conv3x3Algorithm;
    // Besides the kernels' shapes (all one product over the batch in the GEMM), an image per product
    // (96 x 96 passes the positions a product takes) and two products of three images.
    let shapes = CONV3X3_SHAPES.into_iter().chain([([3, 2, 96, 96], 3), ([6, 2, 32, 64], 3)]);
    for algorithm in [Conv3x3Algorithm::BurnConv2d, Conv3x3Algorithm::Im2colGemm] {
        for ([n, c, h, w], o) in shapes.clone() {
            let (x, weight, bias) = (random([n, c, h, w], 1), random([o, c, 3, 3], 2), random([1, o, 1, 1], 3));
            agrees(
                [x, weight, bias],
                random([n, o, h, w], 4),
                |t| {
                    tensor(super::cubecl_autodiff::conv3x3::<Flex>(
                        algorithm,
                        primitive(t[0].clone()),
                        primitive(t[1].clone()),
                        primitive(flat(&t[2])),
                    ))
                },
                |t| tensor(composed::conv3x3::<AD>(primitive(t[0].clone()), primitive(t[1].clone()), primitive(flat(&t[2])))),
            );
        }
    }
}

/// An image whose im2col outgrows `IM2COL_BUDGET` goes in bands of rows (45 and then 3 here), each
/// read and written in place.
#[test]
fn conv3x3_in_bands_of_rows_and_its_gradients_are_burns() {
    conv3x3_agrees([3, 8, 48, 40], 5);
}

#[test]
fn batch_norm_relu_and_its_gradients_are_burns() {
    let (x, gamma, beta) = (random([4, 6, 4, 2], 5), random([1, 6, 1, 1], 6), random([1, 6, 1, 1], 7));
    agrees(
        [x.clone(), gamma.clone(), beta.clone()],
        random([4, 6, 4, 2], 8),
        |t| super::batch_norm_relu(t[0].clone(), flat(&t[1]), flat(&t[2])).0,
        |t| {
            tensor(
                composed::batch_norm_relu::<AD>(primitive(t[0].clone()), primitive(flat(&t[1])), primitive(flat(&t[2]))).output,
            )
        },
    );
    let (_, mean, variance) = super::batch_norm_relu(x.clone().inner(), flat(&gamma).inner(), flat(&beta).inner());
    let reference =
        composed::batch_norm_relu::<Flex>(primitive(x.inner()), primitive(flat(&gamma).inner()), primitive(flat(&beta).inner()));
    assert!(relative_error(mean, tensor(reference.mean)) < 1e-5);
    assert!(relative_error(variance, tensor(reference.variance)) < 1e-5);
}

#[test]
fn scale_shift_relu_is_burns() {
    let (x, scale, shift) = (random([2, 3, 4, 4], 9).inner(), random([3], 10).inner(), random([3], 11).inner());
    let ours = super::scale_shift_relu(x.clone(), scale.clone(), shift.clone());
    let reference = tensor(composed::scale_shift_relu::<Flex>(primitive(x), primitive(scale), primitive(shift)));
    assert_eq!(relative_error(ours, reference), 0.0);
}

/// Every value bit for bit, for a conv's `[N, C, H, W]` and a Linear's `[N, C]`: accumulators about the
/// integers fbgemm's layers sum, the multipliers of their scales, and ties (`x.5`, both signs) that
/// round to even, outputs below the ReLU's zero point and above 255.
#[test]
fn requantize_is_burns_bit_for_bit() {
    let values = |count: usize, seed: u64, spread: f32| {
        random([1, 1, 1, count], seed)
            .inner()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * spread).round())
            .collect::<Vec<_>>()
    };
    let requantized =
        |accumulator: Vec<f32>, shape: Vec<usize>, bias: Vec<f32>, multiplier: Vec<f32>, zero_point: f32, low: f32| {
            let c = bias.len();
            let primitive_of = |values: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(values, shape));
            let data = |t: FloatTensor<Flex>| t.into_data().to_vec::<f32>().unwrap();
            let (a, b, m) = (primitive_of(accumulator, shape), primitive_of(bias, vec![c]), primitive_of(multiplier, vec![c]));
            let ours = data(Flex::requantize(a.clone(), b.clone(), m.clone(), zero_point, low));
            let reference = data(composed::requantize::<Flex>(a, b, m, zero_point, low));
            assert_eq!(
                ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            ours
        };
    // A conv's: 3 images, 5 channels of 4 x 6.
    let (n, c, plane) = (3, 5, 24);
    let bias: Vec<f32> = values(c, 20, 300.0).iter().map(|v| v / 7.0).collect();
    let multiplier: Vec<f32> = values(c, 21, 10.0).iter().map(|v| 1e-3 + v.abs() * 4e-3).collect();
    let out = requantized(values(n * c * plane, 22, 20_000.0), vec![n, c, 4, 6], bias, multiplier, 61.0, 61.0);
    assert!(out.contains(&61.0) && out.contains(&255.0) && out.iter().any(|&v| v > 61.0 && v < 255.0), "{out:?}");
    // Ties: with a zero bias and a multiplier of 0.5, odd accumulators land on x.5.
    let odd: Vec<f32> = (-9..9).map(|k| (2 * k + 1) as f32).collect();
    let out = requantized(odd.clone(), vec![odd.len(), 1], vec![0.0], vec![0.5], 0.0, 0.0);
    let expected: Vec<f32> = odd.iter().map(|v| (v / 2.0).round_ties_even().max(0.0)).collect();
    assert_eq!(out, expected);
    // A Linear's, without ReLU: 4 rows of 7 outputs.
    let out = requantized(values(28, 23, 5_000.0), vec![4, 7], values(7, 24, 50.0), vec![0.01; 7], 100.0, 0.0);
    assert!(out.iter().any(|&v| v < 100.0), "{out:?}");
}

#[test]
fn max_pool2x2_and_its_gradient_are_burns() {
    agrees(
        [random([2, 3, 6, 4], 12)],
        random([2, 3, 3, 2], 13),
        |t| super::max_pool2x2(t[0].clone()),
        |t| tensor(composed::max_pool2x2::<AD>(primitive(t[0].clone()))),
    );
}

#[test]
fn linear_and_its_gradients_are_burns() {
    let (x, weight, bias) = (random([1, 1, 6, 9], 14), random([1, 1, 9, 5], 15), random([1, 1, 1, 5], 16));
    let matrix = |t: &Tensor<AD, 4>| {
        let [_, _, rows, columns] = t.dims();
        t.clone().reshape([rows, columns])
    };
    let as4 = |t: Tensor<AD, 2>| {
        let [rows, columns] = t.dims();
        t.reshape([1, 1, rows, columns])
    };
    agrees(
        [x, weight, bias],
        random([1, 1, 6, 5], 17),
        |t| as4(super::linear(matrix(&t[0]), matrix(&t[1]), flat(&t[2]))),
        |t| as4(tensor(composed::linear::<AD>(primitive(matrix(&t[0])), primitive(matrix(&t[1])), primitive(flat(&t[2]))))),
    );
}

/// Three SGD steps (the first without a velocity) on a parameter and its velocity.
fn sgd_steps<B: super::VggBackend>(param: Tensor<B, 2>, grads: &[Tensor<B, 2>; 3], step: super::SgdStep) -> [Tensor<B, 2>; 2] {
    let (mut param, mut velocity) = (param, None);
    for grad in grads {
        let (p, v) = super::sgd_step(param, grad.clone(), velocity, step);
        (param, velocity) = (p, Some(v));
    }
    [param, velocity.expect("a velocity after a step")]
}

/// Our one-pass SGD step is Burn's arithmetic exactly, and leaves a parameter it shares a buffer with
/// as it was.
#[test]
fn sgd_step_is_burns_and_copies_what_it_shares() {
    let step = super::SgdStep { learning_rate: 0.005, momentum: 0.9, weight_decay: 5e-4 };
    let param = random([70, 300], 18).inner();
    let grads = [19, 20, 21].map(|seed| random([70, 300], seed).inner());
    let before = param.clone().into_data();
    let ours = sgd_steps::<Flex>(param.clone(), &grads, step);
    param.into_data().assert_eq(&before, true);
    let composed = |p: Tensor<Flex, 2>, g: Tensor<Flex, 2>, v: Option<Tensor<Flex, 2>>| {
        let (p, v) = composed::sgd_step::<Flex>(primitive(p), primitive(g), v.map(primitive), step);
        (tensor::<Flex, 2>(p), tensor::<Flex, 2>(v))
    };
    let (mut p, mut v) = (Tensor::<Flex, 2>::from_data(before, &Default::default()), None);
    for g in grads {
        let (next_p, next_v) = composed(p, g, v);
        (p, v) = (next_p, Some(next_v));
    }
    ours[0].clone().into_data().assert_eq(&p.into_data(), true);
    ours[1].clone().into_data().assert_eq(&v.expect("a velocity").into_data(), true);
}

/// PyTorch's SGD, worked by hand: `p = 1, g = 0.5, lr = 0.1, momentum 0.9, weight decay 0.1`; step 1:
/// `d = 0.6, v = 0.6, p = 0.94`; steps 2 and 3 with `g = 0.5`: `d = 0.594, v = 1.134, p = 0.8266`, then
/// `d = 0.58266, v = 1.60326, p = 0.666274`.
#[test]
fn sgd_step_is_pytorchs_update() {
    let step = super::SgdStep { learning_rate: 0.1, momentum: 0.9, weight_decay: 0.1 };
    let full = |v: f32| Tensor::<Flex, 2>::full([2, 3], v, &Default::default());
    let [param, velocity] = sgd_steps::<Flex>(full(1.0), &[full(0.5), full(0.5), full(0.5)], step);
    assert!(relative_error(param, full(0.666274)) < 1e-6);
    assert!(relative_error(velocity, full(1.60326)) < 1e-6);
}

/// The loss and its gradient, ours against Burn's `log_softmax` composed: equal to f32 rounding.
#[test]
fn cross_entropy_and_its_gradient_are_burns() {
    let device = Default::default();
    let logits = random([1, 1, 7, 10], 22).reshape([7, 10]) * 4.0;
    let targets = Tensor::<AD, 1, Int>::from_ints([3, 0, 9, 9, 1, 5, 2], &device);
    let (a, b) = (logits.clone().detach().require_grad(), logits.detach().require_grad());
    let ours = super::cross_entropy(a.clone(), targets.clone());
    let reference: Tensor<AD, 1> = tensor(composed::cross_entropy::<AD>(primitive(b.clone()), targets.into_primitive()));
    assert!(relative_error(ours.clone().inner(), reference.clone().inner()) < 1e-6);
    let (ours, reference) = (ours.backward(), reference.backward());
    assert!(relative_error(a.grad(&ours).unwrap(), b.grad(&reference).unwrap()) < 1e-6);
}

/// Worked by hand: logits `[0, ln 3]`, target 1: softmax `[1/4, 3/4]`, loss `-ln(3/4)`, gradient
/// `[1/4, -1/4]`; a second row `[ln 3, 0]` with target 1 adds `ln 4` and `[3/4, -3/4]`, both halved.
#[test]
fn cross_entropy_is_the_mean_negative_log_likelihood() {
    let device = Default::default();
    let ln3 = 3f32.ln();
    let logits = Tensor::<AD, 2>::from_floats([[0.0, ln3], [ln3, 0.0]], &device).require_grad();
    let loss = super::cross_entropy(logits.clone(), Tensor::from_ints([1, 1], &device));
    let expected = (-(0.75f64).ln() + 4f64.ln()) / 2.0;
    assert!((crate::host_reads::scalar(loss.clone().inner()) - expected).abs() < 1e-7);
    let grad = crate::host_reads::values(logits.grad(&loss.backward()).unwrap());
    let want = [0.125, -0.125, 0.375, -0.375];
    assert!(grad.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-7), "{grad:?}");
}

/// Three steps of a fake quantizer (the first sets its observer, the later ones fold into it), ours and
/// the composed one on the same inputs: the outputs and the observers' ranges bit for bit, and the
/// gradients to `tolerance` (bit for bit where no sum is taken).
fn fake_quantizers_agree(
    inputs: impl Fn(u64) -> (Tensor<AD, 2>, Option<Tensor<AD, 1>>),
    ours: impl Fn(Tensor<AD, 2>, Option<Tensor<AD, 1>>, Option<super::Observed<AD>>) -> super::FakeQuantized<AD>,
    reference: impl Fn(Tensor<AD, 2>, Option<Tensor<AD, 1>>, Option<super::Observed<AD>>) -> super::FakeQuantized<AD>,
    tolerance: f32,
) {
    let (mut observed_ours, mut observed_reference) = (None, None);
    for step in 0..3 {
        let (x, factor) = inputs(30 + step);
        let track = |t: Tensor<AD, 2>| t.detach().require_grad();
        let (xa, xb) = (track(x.clone()), track(x));
        let (fa, fb) = (factor.clone().map(|f| f.detach().require_grad()), factor.map(|f| f.detach().require_grad()));
        let a = ours(xa.clone(), fa.clone(), observed_ours.take());
        let b = reference(xb.clone(), fb.clone(), observed_reference.take());
        let (out_a, out_b): (Tensor<AD, 2>, Tensor<AD, 2>) = (tensor(a.output), tensor(b.output));
        out_a.clone().inner().into_data().assert_eq(&out_b.clone().inner().into_data(), true);
        for (x, y) in [(&a.observed.min, &b.observed.min), (&a.observed.max, &b.observed.max)] {
            tensor::<AD, 1>(x.clone()).inner().into_data().assert_eq(&tensor::<AD, 1>(y.clone()).inner().into_data(), true);
        }
        let weights = random([1, 1, 6, 40], 40 + step).reshape([6, 40]);
        let (ga, gb) = ((out_a * weights.clone()).sum().backward(), (out_b * weights).sum().backward());
        assert!(relative_error(xa.grad(&ga).unwrap(), xb.grad(&gb).unwrap()) <= tolerance, "input gradient, step {step}");
        if let (Some(fa), Some(fb)) = (fa, fb) {
            let error = relative_error(fa.grad(&ga).unwrap(), fb.grad(&gb).unwrap());
            assert!(error <= tolerance.max(1e-6), "factor gradient differs by {error:e}, step {step}");
        }
        (observed_ours, observed_reference) = (Some(a.observed), Some(b.observed));
    }
}

#[test]
fn fake_quantized_activations_are_the_composed_ones() {
    fake_quantizers_agree(
        |seed| ((random([1, 1, 6, 40], seed).reshape([6, 40]) * 3.0).clamp_min(-0.5), None),
        |x, _, observed| AD::fake_quantize_activation(primitive(x), observed),
        |x, _, observed| composed::fake_quantize(primitive(x), 1, None, observed, super::FakeQuantization::ACTIVATION),
        0.0,
    );
}

#[test]
fn fake_quantized_scaled_weights_are_the_composed_ones() {
    let factor = |seed| Some(random([1, 1, 1, 6], seed).reshape([6]).abs() + 0.5);
    fake_quantizers_agree(
        |seed| (random([1, 1, 6, 40], seed).reshape([6, 40]), factor(seed + 100)),
        |x, factor, observed| AD::fake_quantize_weight(primitive(x), primitive(factor.expect("a factor")), observed),
        |x, factor, observed| {
            composed::fake_quantize(primitive(x), 6, factor.map(primitive), observed, super::FakeQuantization::WEIGHT)
        },
        0.0,
    );
}

/// A Linear's weight, `[I, O]`, per output (column).
#[test]
fn fake_quantized_linear_weights_are_the_composed_ones() {
    fake_quantizers_agree(
        |seed| (random([1, 1, 6, 40], seed).reshape([6, 40]), None),
        |x, _, observed| AD::fake_quantize_linear_weight(primitive(x), observed),
        |x, _, observed| composed::fake_quantize_columns::<AD>(primitive(x), observed),
        0.0,
    );
}

#[test]
fn unscaling_and_its_gradients_are_burns() {
    let (y, factor, bias) = (random([3, 5, 4, 4], 50), random([1, 5, 1, 1], 51).abs() + 0.5, random([1, 5, 1, 1], 52));
    agrees(
        [y, factor, bias],
        random([3, 5, 4, 4], 53),
        |t| super::unscale_bias(t[0].clone(), flat(&t[1]), flat(&t[2])),
        |t| tensor(composed::unscale_bias::<AD>(primitive(t[0].clone()), primitive(flat(&t[1])), primitive(flat(&t[2])))),
    );
}
