//! The quantized models simulated in Burn (float tensors holding quantized values), as the ONNX graphs
//! define them: the reference the INT8 files are checked against.

use burn::prelude::*;
use burn::tensor::module::{adaptive_avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use vggq::export::onnx::dynamic::quantize_per_tensor_symmetric;
use vggq::export::onnx::{ActivationQuant, ChannelInt8, FoldedVgg, QuantVgg};

use crate::util::B;

const UINT8_MAX: f32 = 255.0;

/// `QuantizeLinear` then `DequantizeLinear` (uint8).
fn fake_quant<const D: usize>(x: Tensor<B, D>, q: ActivationQuant) -> Tensor<B, D> {
    let zp = f32::from(q.zero_point);
    ((x / q.scale).round() + zp).clamp(0.0, UINT8_MAX).sub_scalar(zp) * q.scale
}

/// Per-output-channel int8 weights back to float, in `dims`.
fn dequantize<const D: usize>(w: &ChannelInt8, dims: [usize; D]) -> Tensor<B, D> {
    let per_channel = w.values.len() / w.scales.len();
    let values: Vec<f32> = w.values.iter().enumerate().map(|(i, &q)| f32::from(q) * w.scales[i / per_channel]).collect();
    Tensor::<B, 1>::from_floats(values.as_slice(), &Default::default()).reshape(dims)
}

/// The bias as the QDQ file stores it: int32 at scale `input_scale * weight_scale[o]`.
fn int32_bias(bias: &[f32], input_scale: f32, w: &ChannelInt8) -> Tensor<B, 1> {
    let values: Vec<f32> = bias
        .iter()
        .zip(&w.scales)
        .map(|(b, s)| {
            let scale = input_scale * s;
            (f64::from(*b) / f64::from(scale)).round_ties_even() as f32 * scale
        })
        .collect();
    Tensor::from_floats(values.as_slice(), &Default::default())
}

/// The static QDQ graph: `[N, 3, H, W]` -> logits.
pub fn static_int8(q: &QuantVgg, images: Tensor<B, 4>) -> Tensor<B, 2> {
    let mut quant = q.input;
    let mut x = fake_quant(images, quant);
    for conv in &q.convs {
        let weight = dequantize(&conv.weight, [conv.out_channels, conv.in_channels, 3, 3]);
        let bias = int32_bias(&conv.bias, quant.scale, &conv.weight);
        x = conv2d(x, weight, Some(bias), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).clamp_min(0.0);
        quant = conv.output;
        x = fake_quant(x, quant);
        if conv.pool_after {
            x = max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        }
    }
    let mut x = fake_quant(adaptive_avg_pool2d(x, [q.pool_size, q.pool_size]), quant).flatten::<2>(1, 3);
    for (i, dense) in q.dense.iter().enumerate() {
        let weight = dequantize(&dense.weight, [dense.outputs, dense.inputs]);
        let bias = int32_bias(&dense.bias, quant.scale, &dense.weight);
        x = x.matmul(weight.transpose()) + bias.unsqueeze();
        if i < 2 {
            x = x.clamp_min(0.0);
        }
        quant = dense.output;
        x = fake_quant(x, quant);
    }
    x
}

/// `DynamicQuantizeLinear` on the whole tensor: uint8 over `[min(0, lo), max(0, hi)]`.
fn dynamic_quant(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let lo = x.clone().min().into_scalar().min(0.0);
    let hi = x.clone().max().into_scalar().max(0.0);
    let scale = (hi - lo) / UINT8_MAX;
    let zero_point = (-lo / scale).round_ties_even().clamp(0.0, UINT8_MAX) as u8;
    fake_quant(x, ActivationQuant { scale, zero_point })
}

/// The dynamic graph: float features, then each Linear on dynamically quantized inputs and per-tensor
/// int8 weights.
pub fn dynamic_int8(model: &vggq::model::Vgg<B>, folded: &FoldedVgg, images: Tensor<B, 4>) -> Tensor<B, 2> {
    let mut x = model.avgpool.forward(model.features(images)).flatten::<2>(1, 3);
    for (i, dense) in folded.dense.iter().enumerate() {
        let q = quantize_per_tensor_symmetric(&dense.weight);
        let values: Vec<f32> = q.values.iter().map(|&v| f32::from(v) * q.scale).collect();
        let weight = Tensor::<B, 1>::from_floats(values.as_slice(), &Default::default()).reshape([dense.outputs, dense.inputs]);
        let bias = Tensor::<B, 1>::from_floats(dense.bias.as_slice(), &Default::default());
        x = dynamic_quant(x).matmul(weight.transpose()) + bias.unsqueeze();
        if i < 2 {
            x = x.clamp_min(0.0);
        }
    }
    x
}
