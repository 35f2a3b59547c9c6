//! Static INT8 (static PTQ and QAT) in ONNX's QDQ form: int8 weights per output channel (axis 0), uint8
//! activations, int32 biases, float ops between `DequantizeLinear` and `QuantizeLinear` pairs.
//!
//! The graph is laid out so that ONNX Runtime's CPU optimizer fuses every layer into an integer kernel:
//! each Conv and Gemm reads DQ(activation), DQ(int8 weight), DQ(int32 bias with scale `s_x * s_w[o]`)
//! and feeds one `QuantizeLinear` (through its ReLU, which ORT drops when the zero point is 0), giving
//! `QLinearConv` and `QGemm`. MaxPool and Flatten run on the uint8 tensors directly (both are exact on
//! quantized values), so nothing stands between a `QuantizeLinear` and the next layer's `DequantizeLinear`.

use super::fp32::{is_last, DENSE_NAMES, GRAPH_NAME};
use super::graph::{Attr, GraphBuilder, INPUT_NAME, OUTPUT_NAME};
use super::layers::{self, CONV_KERNEL};
use super::proto::ModelProto;
use super::provenance::Provenance;
use super::ExportError;

/// Affine uint8 quantization of an activation: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuant {
    pub scale: f32,
    pub zero_point: u8,
}

/// int8 weights, symmetric per output channel: `real[o, ..] = scales[o] * values[o, ..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInt8 {
    /// Row-major, output channel first.
    pub values: Vec<i8>,
    /// One per output channel.
    pub scales: Vec<f32>,
}

/// A quantized 3x3 convolution (BN folded), ReLU and optional 2x2 max-pool.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConv {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out, in, 3, 3]`.
    pub weight: ChannelInt8,
    /// FP32; the exporter stores it as int32 at scale `input.scale * weight.scales[o]`.
    pub bias: Vec<f32>,
    pub pool_after: bool,
    /// Quantization of the ReLU's output (and so of the pool's).
    pub output: ActivationQuant,
}

/// A quantized fully connected layer (ReLU after it unless it is the output layer).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantDense {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs, inputs]` (torch.nn.Linear's layout).
    pub weight: ChannelInt8,
    pub bias: Vec<f32>,
    /// Quantization of the ReLU's output, or of the logits for the output layer.
    pub output: ActivationQuant,
}

/// Everything the QDQ exporter needs: the quantization engineer's model converts into this. Each layer's
/// input quantization is the previous layer's output quantization (`input` for the first conv); the
/// average pool and flatten keep the last conv's.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantVgg {
    pub input_size: usize,
    pub pool_size: usize,
    /// Quantization of the (normalised) input image.
    pub input: ActivationQuant,
    pub convs: Vec<QuantConv>,
    /// hidden1, hidden2, output.
    pub dense: [QuantDense; 3],
}

impl QuantVgg {
    pub fn classes(&self) -> usize {
        self.dense[2].outputs
    }
}

pub fn model(vgg: &QuantVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let mut g = GraphBuilder::new();
    let mut quant = vgg.input;
    let mut x = quantize(&mut g, INPUT_NAME, quant, "input");
    for (i, conv) in vgg.convs.iter().enumerate() {
        let name = format!("features.{i}");
        let k = CONV_KERNEL;
        let x_float = dequantize(&mut g, &x, quant, &name);
        let weight = weight(&mut g, &name, &[conv.out_channels, conv.in_channels, k, k], &conv.weight);
        let bias = bias(&mut g, &name, &conv.bias, quant.scale, &conv.weight.scales)?;
        let y = layers::conv(&mut g, &x_float, &weight, &bias, &format!("{name}.conv"));
        let y = layers::relu(&mut g, &y, &format!("{name}.relu"));
        quant = conv.output;
        x = quantize(&mut g, &y, quant, &name);
        if conv.pool_after {
            x = layers::max_pool(&mut g, &x, &format!("{name}.pool"));
        }
    }
    // AveragePool has no uint8 form in ONNX: DQ -> AveragePool -> Q at the same scale, which ORT turns
    // into QLinearAveragePool.
    let pooled = dequantize(&mut g, &x, quant, "avgpool");
    let pooled = layers::adaptive_average_pool(&mut g, &pooled, vgg.input_size, vgg.pool_size, "avgpool")?;
    x = quantize(&mut g, &pooled, quant, "avgpool.output");
    x = layers::flatten(&mut g, &x, "flatten");
    for (index, dense) in vgg.dense.iter().enumerate() {
        let name = DENSE_NAMES[index];
        let x_float = dequantize(&mut g, &x, quant, name);
        let weight = weight(&mut g, name, &[dense.outputs, dense.inputs], &dense.weight);
        let bias = bias(&mut g, name, &dense.bias, quant.scale, &dense.weight.scales)?;
        let mut y = layers::gemm(&mut g, &x_float, &weight, &bias, &format!("{name}.gemm"));
        if !is_last(index, &vgg.dense) {
            y = layers::relu(&mut g, &y, &format!("{name}.relu"));
        }
        quant = dense.output;
        x = quantize(&mut g, &y, quant, name);
    }
    // The logits leave the graph as float, at the output layer's quantization.
    g.node("DequantizeLinear", &[&x, &format!("{}.output_scale", DENSE_NAMES[2]), &format!("{}.output_zero_point", DENSE_NAMES[2])], OUTPUT_NAME, &[]);
    Ok(g.finish(GRAPH_NAME, vgg.input_size, vgg.classes(), provenance.metadata()))
}

/// `QuantizeLinear(x)` to uint8 with scalar parameters `{name}.output_scale` and `{name}.output_zero_point`.
fn quantize(g: &mut GraphBuilder, x: &str, quant: ActivationQuant, name: &str) -> String {
    let scale = g.initializer(&format!("{name}.output_scale"), &[], &[quant.scale]);
    let zero_point = g.initializer(&format!("{name}.output_zero_point"), &[], &[quant.zero_point]);
    g.node("QuantizeLinear", &[x, &scale, &zero_point], &format!("{name}.quantized"), &[])
}

/// `DequantizeLinear(x)` of the uint8 tensor entering layer `name`.
fn dequantize(g: &mut GraphBuilder, x: &str, quant: ActivationQuant, name: &str) -> String {
    let scale = g.initializer(&format!("{name}.input_scale"), &[], &[quant.scale]);
    let zero_point = g.initializer(&format!("{name}.input_zero_point"), &[], &[quant.zero_point]);
    g.node("DequantizeLinear", &[x, &scale, &zero_point], &format!("{name}.input"), &[])
}

/// The int8 weight and its per-channel dequantization (axis 0, zero points 0).
fn weight(g: &mut GraphBuilder, name: &str, dims: &[usize], weight: &ChannelInt8) -> String {
    let values = g.initializer(&format!("{name}.weight_quantized"), dims, &weight.values);
    let channels = weight.scales.len();
    let scales = g.initializer(&format!("{name}.weight_scale"), &[channels], &weight.scales);
    let zero_points = g.initializer(&format!("{name}.weight_zero_point"), &[channels], &vec![0_i8; channels]);
    g.node("DequantizeLinear", &[&values, &scales, &zero_points], &format!("{name}.weight"), &[("axis", Attr::Int(0))])
}

/// The bias as int32 at scale `input_scale * weight_scales[o]` (what QLinearConv and QGemm add to their
/// int32 accumulators) and its per-channel dequantization.
fn bias(g: &mut GraphBuilder, name: &str, bias: &[f32], input_scale: f32, weight_scales: &[f32]) -> Result<String, ExportError> {
    let scales: Vec<f32> = weight_scales.iter().map(|w| input_scale * w).collect();
    let values = bias
        .iter()
        .zip(&scales)
        .enumerate()
        .map(|(channel, (b, s))| {
            let q = (f64::from(*b) / f64::from(*s)).round_ties_even();
            if q.abs() > f64::from(i32::MAX) || !q.is_finite() {
                return Err(ExportError::BiasOverflow { layer: name.to_string(), channel });
            }
            Ok(q as i32)
        })
        .collect::<Result<Vec<i32>, _>>()?;
    let channels = scales.len();
    let values = g.initializer(&format!("{name}.bias_quantized"), &[channels], &values);
    let scales = g.initializer(&format!("{name}.bias_scale"), &[channels], &scales);
    let zero_points = g.initializer(&format!("{name}.bias_zero_point"), &[channels], &vec![0_i32; channels]);
    Ok(g.node("DequantizeLinear", &[&values, &scales, &zero_points], &format!("{name}.bias"), &[("axis", Attr::Int(0))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_are_int32_at_input_times_weight_scale() {
        let mut g = GraphBuilder::new();
        assert!(bias(&mut g, "layer", &[0.75, -0.25], 0.5, &[0.5, 0.25]).is_ok());
    }

    #[test]
    fn a_bias_beyond_int32_is_refused() {
        let mut g = GraphBuilder::new();
        let error = bias(&mut g, "layer", &[0.0, 1e10], 1e-3, &[1e-3, 1e-3]).unwrap_err();
        assert!(matches!(error, ExportError::BiasOverflow { ref layer, channel: 1 } if layer == "layer"), "{error}");
    }
}
