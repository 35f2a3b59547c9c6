//! Min/max calibration into a [`QuantVgg`]: a stand-in so the QDQ exporter and the benchmarks can run
//! before the quantization stage (`src/quant`) lands; that stage's static PTQ and QAT models convert into
//! the same [`QuantVgg`] and replace this.
//!
//! Activations: uint8 affine over the observed `[min(0, lo), max(0, hi)]`, as torch's `MinMaxObserver`
//! (`scale = (hi - lo) / 255`, `zero_point = -round(lo / scale)`). Weights: int8 symmetric per output
//! channel, `scale = max|w| / 127.5`, round half to even.

use burn::nn::Relu;
use burn::prelude::*;

use super::folded::{Dense, FoldedVgg};
use super::qdq::{ActivationQuant, ChannelInt8, QuantConv, QuantDense, QuantVgg};
use crate::model::Vgg;

/// uint8's number of steps.
const UINT8_STEPS: f32 = 255.0;
/// Half of int8's range, as torch's symmetric observers use it.
const INT8_HALF_RANGE: f32 = 127.5;

/// Observed ranges, in the order the QDQ graph quantizes: the input, each conv's ReLU output, each dense
/// layer's output.
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    ranges: Vec<(f32, f32)>,
}

impl Ranges {
    /// Runs `images` ([N, 3, H, W]) through the eval model and widens the ranges.
    pub fn observe<B: Backend>(&mut self, model: &Vgg<B>, images: Tensor<B, 4>) {
        let mut observed = vec![min_max(images.clone())];
        let mut x = images;
        for block in &model.features {
            x = Relu::new().forward(block.norm.forward(block.conv.forward(x)));
            observed.push(min_max(x.clone()));
            if block.pool {
                x = model.max_pool.forward(x);
            }
        }
        let mut x = model.avgpool.forward(x).flatten::<2>(1, 3);
        let head = &model.classifier;
        for (i, linear) in [&head.hidden1, &head.hidden2, &head.output].into_iter().enumerate() {
            x = linear.forward(x);
            if i < 2 {
                x = Relu::new().forward(x);
            }
            observed.push(min_max(x.clone()));
        }
        if self.ranges.is_empty() {
            self.ranges = observed;
        } else {
            for (range, (lo, hi)) in self.ranges.iter_mut().zip(observed) {
                *range = (range.0.min(lo), range.1.max(hi));
            }
        }
    }

    /// The quantized model: `vgg`'s folded weights with the observed activation ranges.
    pub fn quantize(&self, vgg: &FoldedVgg) -> QuantVgg {
        assert_eq!(self.ranges.len(), 1 + vgg.convs.len() + vgg.dense.len(), "observe at least one batch first");
        let activation = |i: usize| activation_quant(self.ranges[i]);
        let convs = vgg
            .convs
            .iter()
            .enumerate()
            .map(|(i, conv)| QuantConv {
                in_channels: conv.in_channels,
                out_channels: conv.out_channels,
                weight: per_channel_symmetric(&conv.weight, conv.out_channels),
                bias: conv.bias.clone(),
                pool_after: conv.pool_after,
                output: activation(1 + i),
            })
            .collect();
        let dense = |i: usize, layer: &Dense| QuantDense {
            inputs: layer.inputs,
            outputs: layer.outputs,
            weight: per_channel_symmetric(&layer.weight, layer.outputs),
            bias: layer.bias.clone(),
            output: activation(1 + vgg.convs.len() + i),
        };
        QuantVgg {
            input_size: vgg.input_size,
            pool_size: vgg.pool_size,
            input: activation(0),
            convs,
            dense: [dense(0, &vgg.dense[0]), dense(1, &vgg.dense[1]), dense(2, &vgg.dense[2])],
        }
    }
}

fn min_max<B: Backend, const D: usize>(x: Tensor<B, D>) -> (f32, f32) {
    (x.clone().min().into_scalar().elem(), x.max().into_scalar().elem())
}

/// uint8 affine parameters for `[lo, hi]` widened to contain 0 (so that 0, ReLU's floor and the
/// padding value, is exact).
pub fn activation_quant((lo, hi): (f32, f32)) -> ActivationQuant {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / UINT8_STEPS).max(f32::EPSILON);
    let zero_point = (-lo / scale).round_ties_even().clamp(0.0, UINT8_STEPS) as u8;
    ActivationQuant { scale, zero_point }
}

/// int8 symmetric per output channel (rows of `weights`).
pub fn per_channel_symmetric(weights: &[f32], channels: usize) -> ChannelInt8 {
    let per_channel = weights.len() / channels;
    let mut values = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(channels);
    for row in weights.chunks(per_channel) {
        let scale = (row.iter().fold(0.0_f32, |m, w| m.max(w.abs())) / INT8_HALF_RANGE).max(f32::EPSILON);
        values.extend(row.iter().map(|w| (w / scale).round_ties_even().clamp(f32::from(i8::MIN), f32::from(i8::MAX)) as i8));
        scales.push(scale);
    }
    ChannelInt8 { values, scales }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_ranges_get_zero_point_zero() {
        assert_eq!(activation_quant((0.0, 255.0)), ActivationQuant { scale: 1.0, zero_point: 0 });
    }

    #[test]
    fn signed_ranges_put_zero_on_a_step() {
        let q = activation_quant((-1.0, 3.0));
        assert_eq!(q.zero_point, 64);
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-9);
    }

    #[test]
    fn each_channel_gets_its_own_scale() {
        let q = per_channel_symmetric(&[1.0, -0.5, 0.25, 0.125], 2);
        assert_eq!(q.scales, vec![1.0 / 127.5, 0.25 / 127.5]);
        assert_eq!(q.values, vec![127, -64, 127, 64]);
    }
}
