//! Burn forward passes over the plain-data models: the float fused model (calibration), and the
//! quantized models with fbgemm's integer arithmetic simulated in f32 tensors that hold integers, so
//! that accuracy can be measured before export.
//!
//! Static int8 (fbgemm `quantized::conv2d_relu` / `linear_relu`): the input is quantized with
//! `zp + round(x / s)` (by the f32 reciprocal), each layer accumulates `(x_q - zp_x) * w_q`, adds
//! `bias / (s_x * s_w)` and requantizes with `round(acc * (s_x * s_w / s_y)) + zp_y`, clamped to
//! `[0 or zp_y with ReLU, 255]`. Accumulations are exact while they stay below 2^24 (f32), which holds
//! for the smoke model; wider layers may differ from int32 sums in rare last-step roundings.
//!
//! Dynamic (fbgemm `quantized::linear_dynamic`, `reduce_range=True`): each Linear input tensor (the whole
//! batch) gets parameters from its min/max with ATen's `quant_utils::ChooseQuantizationParams`, the product is
//! scaled back to float and the bias added in float.

use burn::prelude::*;
use burn::tensor::module::adaptive_avg_pool2d;

use super::float_model::FloatVgg;
use super::model::{QuantizedFeatures, QuantizedLinear, QuantizedVgg, QuantizedWeight};
use super::qparams::{runtime_qparams, QParams, QuantRange};
use super::static_ptq::FusedVgg;
use crate::host_reads::{self, values};
use crate::model::kernels;
use crate::model::{VggBackend, BATCH_NORM_EPS};

fn tensor1<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn tensor<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// 3x3 convolution with padding 1 (zero real value, i.e. the zero point in the quantized domain), by
/// the backend's kernel: its sums in one order on every machine.
fn conv3x3<B: VggBackend>(x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &weight.device()));
    kernels::conv3x3(x, weight, bias)
}

/// `x` `[N, in]` times `weight` `[in, out]`, plus `bias` where given, by the backend's kernel.
fn matmul<B: VggBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[1]], &weight.device()));
    kernels::linear(x, weight, bias)
}

/// A float conv layer, with an eval-mode BatchNorm as a per-channel affine map where it is not folded.
struct FloatConv<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    /// `gamma / sqrt(var + eps)` and `beta - mean * that`, `[C]`.
    norm: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    pool: bool,
}

/// A float Linear with Burn's `[in, out]` weight.
struct FloatLinearLayer<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
}

/// The float network (fused for calibration, or with separate BNs for dynamic quantization's features).
pub struct FloatNet<B: Backend> {
    convs: Vec<FloatConv<B>>,
    linears: Vec<FloatLinearLayer<B>>,
    pool_size: usize,
}

impl<B: VggBackend> FloatNet<B> {
    /// The FX-fused model: BN already folded into each conv.
    pub fn fused(model: &FusedVgg, device: &B::Device) -> Self {
        let convs = model
            .convs
            .iter()
            .map(|c| FloatConv {
                weight: tensor(c.weight.clone(), [c.out_channels, c.in_channels, 3, 3], device),
                bias: tensor1(&c.bias, device),
                norm: None,
                pool: c.pool,
            })
            .collect();
        Self { convs, linears: float_linears(&model.classifier, device), pool_size: model.config.pool_size }
    }

    /// The unfused FP32 model (conv, then BN as in eval mode).
    pub fn unfused(model: &FloatVgg, device: &B::Device) -> Self {
        Self {
            convs: float_convs(&model.blocks, device),
            linears: float_linears(&model.classifier, device),
            pool_size: model.config.pool_size,
        }
    }

    /// Logits. `observe(point, values)` receives the values of every observation point as FX's
    /// `prepare_fx` graph feeds its observers, in the same order: point 0 the input, point `i` (1..=8)
    /// conv block `i`'s output and then, with the same observer, its max-pool's output (FX shares a
    /// pool's observer with its input), the last block's observer also the average pool's and the
    /// flatten's outputs, then one point per Linear (after its ReLU).
    pub fn forward(&self, images: Tensor<B, 4>, observe: &mut dyn FnMut(usize, Vec<f32>)) -> Tensor<B, 2> {
        observe(0, values(images.clone()));
        let mut x = images;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv3x3(x, conv.weight.clone(), Some(conv.bias.clone()));
            x = match &conv.norm {
                Some((scale, shift)) => kernels::scale_shift_relu(x, scale.clone(), shift.clone()),
                None => x.clamp_min(0.0),
            };
            observe(i + 1, values(x.clone()));
            if conv.pool {
                x = kernels::max_pool2x2(x);
                observe(i + 1, values(x.clone()));
            }
        }
        let last_conv = self.convs.len();
        let x = adaptive_avg_pool2d(x, [self.pool_size, self.pool_size]);
        observe(last_conv, values(x.clone()));
        let mut x = x.flatten::<2>(1, 3);
        observe(last_conv, values(x.clone()));
        let last = self.linears.len() - 1;
        for (i, linear) in self.linears.iter().enumerate() {
            x = matmul(x, linear.weight.clone(), Some(linear.bias.clone()));
            if i != last {
                x = x.clamp_min(0.0);
            }
            observe(last_conv + 1 + i, values(x.clone()));
        }
        x
    }
}

fn float_convs<B: Backend>(blocks: &[super::float_model::FloatConvBlock], device: &B::Device) -> Vec<FloatConv<B>> {
    blocks
        .iter()
        .map(|b| {
            let scale: Vec<f32> =
                b.norm.weight.iter().zip(&b.norm.running_var).map(|(g, v)| g / (v + BATCH_NORM_EPS).sqrt()).collect();
            let shift: Vec<f32> =
                b.norm.bias.iter().zip(&b.norm.running_mean).zip(&scale).map(|((beta, m), s)| beta - m * s).collect();
            FloatConv {
                weight: tensor(b.weight.clone(), [b.out_channels, b.in_channels, 3, 3], device),
                bias: tensor1(&b.bias, device),
                norm: Some((tensor1(&scale, device), tensor1(&shift, device))),
                pool: b.pool,
            }
        })
        .collect()
}

fn float_linears<B: Backend>(linears: &[super::float_model::FloatLinear], device: &B::Device) -> Vec<FloatLinearLayer<B>> {
    linears
        .iter()
        .map(|l| FloatLinearLayer {
            weight: tensor::<B, 2>(l.weight.clone(), [l.out_features, l.in_features], device).transpose(),
            bias: tensor1(&l.bias, device),
        })
        .collect()
}

/// Quantizes `x` with `q` into integers held as floats, clamped to quint8's storage range.
fn quantize<B: Backend, const D: usize>(x: Tensor<B, D>, q: QParams) -> Tensor<B, D> {
    ((x * (1.0 / q.scale)).round() + q.zero_point as f32).clamp(0.0, 255.0)
}

/// An int8 layer's integer weight and its requantization constants.
struct IntLayer<B: Backend, const W: usize> {
    /// Integer weight values, conv `[out, in, 3, 3]` or Linear `[in, out]`.
    weight: Tensor<B, W>,
    /// `bias / (s_x * s_w[c])`, `[C]`.
    bias_in_accumulator: Tensor<B, 1>,
    /// `s_x * s_w[c] / s_y`, `[C]`.
    multiplier: Tensor<B, 1>,
    input_zero_point: f32,
    output: QParams,
    relu: bool,
    pool: bool,
}

impl<B: VggBackend, const W: usize> IntLayer<B, W> {
    /// `values` is the integer weight as a tensor, `quantized` the weight it came from (for its scales).
    fn new(
        values: Tensor<B, W>,
        quantized: &QuantizedWeight,
        bias: &[f32],
        (input, output): (QParams, QParams),
        relu: bool,
        pool: bool,
        device: &B::Device,
    ) -> Self {
        let act_times_w: Vec<f32> = (0..bias.len()).map(|c| input.scale * quantized.scale(c)).collect();
        let bias_in_accumulator: Vec<f32> = bias.iter().zip(&act_times_w).map(|(b, s)| b / s).collect();
        let multiplier: Vec<f32> = act_times_w.iter().map(|s| s / output.scale).collect();
        IntLayer {
            weight: values,
            bias_in_accumulator: tensor1(&bias_in_accumulator, device),
            multiplier: tensor1(&multiplier, device),
            input_zero_point: input.zero_point as f32,
            output,
            relu,
            pool,
        }
    }

    /// fbgemm's `ReQuantizeOutput` with a float bias, of a conv's `[N, C, H, W]` or a Linear's `[N, C]`.
    fn requantize<const D: usize>(&self, accumulator: Tensor<B, D>) -> Tensor<B, D> {
        let zero_point = self.output.zero_point as f32;
        let low = if self.relu { zero_point } else { 0.0 };
        kernels::requantize(accumulator, self.bias_in_accumulator.clone(), self.multiplier.clone(), zero_point, low)
    }
}

/// A Burn executable form of a [`QuantizedVgg`].
pub struct SimulatedVgg<B: Backend> {
    kind: Simulation<B>,
    pool_size: usize,
}

enum Simulation<B: Backend> {
    /// `input_range`: the grid each Linear's input is quantized to at run time.
    Dynamic {
        convs: Vec<FloatConv<B>>,
        linears: Vec<DynamicLinear<B>>,
        input_range: QuantRange,
    },
    Int8 {
        input: QParams,
        convs: Vec<IntLayer<B, 4>>,
        linears: Vec<IntLayer<B, 2>>,
    },
}

/// A dynamic Linear: integer `[in, out]` weight, per-tensor scale, float bias.
struct DynamicLinear<B: Backend> {
    weight: Tensor<B, 2>,
    scale: f32,
    bias: Tensor<B, 1>,
    relu: bool,
}

fn integer_weight(values: &[i8]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

impl<B: VggBackend> SimulatedVgg<B> {
    pub fn new(model: &QuantizedVgg, device: &B::Device) -> Self {
        let linear_weight = |l: &QuantizedLinear| {
            tensor::<B, 2>(integer_weight(&l.weight.values), [l.weight.shape[0], l.weight.shape[1]], device).transpose()
        };
        let kind = match &model.features {
            QuantizedFeatures::Float(blocks) => Simulation::Dynamic {
                convs: float_convs(blocks, device),
                linears: model
                    .classifier
                    .iter()
                    .map(|l| DynamicLinear {
                        weight: linear_weight(l),
                        scale: l.weight.scales[0],
                        bias: tensor1(&l.bias, device),
                        relu: l.relu,
                    })
                    .collect(),
                input_range: QuantRange::QUINT8_REDUCED,
            },
            QuantizedFeatures::Int8 { input, convs } => {
                let mut previous = *input;
                let convs = convs
                    .iter()
                    .map(|c| {
                        let s = &c.weight.shape;
                        let weight = tensor(integer_weight(&c.weight.values), [s[0], s[1], s[2], s[3]], device);
                        let layer = IntLayer::new(weight, &c.weight, &c.bias, (previous, c.output), true, c.pool, device);
                        previous = c.output;
                        layer
                    })
                    .collect();
                let linears = model
                    .classifier
                    .iter()
                    .map(|l| {
                        let output = l.output.expect("int8 models quantize every Linear output");
                        let weight = linear_weight(l);
                        let layer = IntLayer::new(weight, &l.weight, &l.bias, (previous, output), l.relu, false, device);
                        previous = output;
                        layer
                    })
                    .collect();
                Simulation::Int8 { input: *input, convs, linears }
            }
        };
        SimulatedVgg { kind, pool_size: model.config.pool_size }
    }

    /// The same dynamic model as ONNX Runtime runs it: its `DynamicQuantizeLinear` quantizes Linear inputs
    /// to the full `[0, 255]`, where fbgemm (`reduce_range=True`) uses `[0, 127]`. Static and QAT models
    /// are unchanged.
    pub fn with_onnx_runtime_dynamic_inputs(mut self) -> Self {
        if let Simulation::Dynamic { input_range, .. } = &mut self.kind {
            *input_range = QuantRange::QUINT8;
        }
        self
    }

    /// Logits (dequantized for int8 models): `[N, 3, H, W]` -> `[N, classes]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match &self.kind {
            Simulation::Dynamic { convs, linears, input_range } => {
                let net_features = convs.iter().fold(images, |x, conv| {
                    let (scale, shift) = conv.norm.as_ref().expect("dynamic features keep their BatchNorms");
                    let x = conv3x3(x, conv.weight.clone(), Some(conv.bias.clone()));
                    let x = kernels::scale_shift_relu(x, scale.clone(), shift.clone());
                    if conv.pool {
                        kernels::max_pool2x2(x)
                    } else {
                        x
                    }
                });
                let mut x = adaptive_avg_pool2d(net_features, [self.pool_size, self.pool_size]).flatten::<2>(1, 3);
                for linear in linears {
                    let (min, max) = (host_reads::scalar(x.clone().min()), host_reads::scalar(x.clone().max()));
                    let q = runtime_qparams(min as f32, max as f32, *input_range, false);
                    let xq = quantize(x, q) - q.zero_point as f32;
                    x = matmul(xq, linear.weight.clone(), None) * (q.scale * linear.scale) + linear.bias.clone().unsqueeze();
                    if linear.relu {
                        x = x.clamp_min(0.0);
                    }
                }
                x
            }
            Simulation::Int8 { input, convs, linears } => {
                let x = convs.iter().fold(quantize(images, *input), |x, layer| {
                    let accumulator = conv3x3(x - layer.input_zero_point, layer.weight.clone(), None);
                    let y = layer.requantize(accumulator);
                    if layer.pool {
                        kernels::max_pool2x2(y)
                    } else {
                        y
                    }
                });
                // The quantized average pool rounds the mean back onto the same grid.
                let mut x = adaptive_avg_pool2d(x, [self.pool_size, self.pool_size]).round().flatten::<2>(1, 3);
                for layer in linears {
                    let accumulator = matmul(x - layer.input_zero_point, layer.weight.clone(), None);
                    x = layer.requantize(accumulator);
                }
                let output = linears.last().expect("a classifier").output;
                (x - output.zero_point as f32) * output.scale
            }
        }
    }
}
