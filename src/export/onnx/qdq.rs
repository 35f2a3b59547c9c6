//! Static INT8 (static PTQ and QAT, [`QuantizedVgg`]s with int8 features) in ONNX's QDQ form: the int8
//! weights per output channel (axis 0) and uint8 activation parameters `convert_fx` chose, int32 biases,
//! float ops between `DequantizeLinear` and `QuantizeLinear` pairs.
//!
//! The graph is laid out so that ONNX Runtime's CPU optimizer fuses every layer into an integer kernel:
//! each Conv and Gemm reads DQ(activation), DQ(int8 weight), DQ(int32 bias with scale `s_x * s_w[o]`)
//! and feeds one `QuantizeLinear` (through its ReLU, which ORT drops when the zero point is 0), giving
//! `QLinearConv` and `QGemm`. MaxPool and Flatten run on the uint8 tensors directly (both are exact on
//! quantized values), so nothing stands between a `QuantizeLinear` and the next layer's `DequantizeLinear`.

use super::fp32::{is_last, DENSE_NAMES, GRAPH_NAME};
use super::graph::{Attr, Element, GraphBuilder, INPUT_NAME, OUTPUT_NAME};
use super::layers::{self, CONV_KERNEL};
use super::proto::ModelProto;
use super::provenance::Provenance;
use super::ExportError;
use crate::quant::{QParams, QuantizedFeatures, QuantizedVgg, QuantizedWeight, WeightScheme};

/// The static or QAT model `vgg`.
pub fn model(vgg: &QuantizedVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let QuantizedFeatures::Int8 { input, convs } = &vgg.features else {
        return Err(ExportError::WrongMethod { exporter: "QDQ", method: vgg.method });
    };
    let mut g = GraphBuilder::new();
    let mut quant = *input;
    let mut x = quantize(&mut g, INPUT_NAME, quant, "input")?;
    for (i, conv) in convs.iter().enumerate() {
        let name = format!("features.{i}");
        debug_assert_eq!(conv.weight.shape[2..], [CONV_KERNEL, CONV_KERNEL], "VGG's 3x3 kernels");
        let x_float = dequantize(&mut g, &x, quant, &name)?;
        let weight = weight(&mut g, &name, &conv.weight)?;
        let bias = bias(&mut g, &name, &conv.bias, quant.scale, &conv.weight)?;
        let y = layers::conv(&mut g, &x_float, &weight, &bias, &format!("{name}.conv"));
        let y = layers::relu(&mut g, &y, &format!("{name}.relu"));
        quant = conv.output;
        x = quantize(&mut g, &y, quant, &name)?;
        if conv.pool {
            x = layers::max_pool(&mut g, &x, &format!("{name}.pool"));
        }
    }
    // AveragePool has no uint8 form in ONNX: DQ -> AveragePool -> Q at the same scale, which ORT turns
    // into QLinearAveragePool.
    let pooled = dequantize(&mut g, &x, quant, "avgpool")?;
    let pooled = layers::adaptive_average_pool(&mut g, &pooled, vgg.config.input_size, vgg.config.pool_size, "avgpool")?;
    x = quantize(&mut g, &pooled, quant, "avgpool.output")?;
    x = layers::flatten(&mut g, &x, "flatten");
    for (index, linear) in vgg.classifier.iter().enumerate() {
        let name = DENSE_NAMES[index];
        let x_float = dequantize(&mut g, &x, quant, name)?;
        let weight = weight(&mut g, name, &linear.weight)?;
        let bias = bias(&mut g, name, &linear.bias, quant.scale, &linear.weight)?;
        let mut y = layers::gemm(&mut g, &x_float, &weight, &bias, &format!("{name}.gemm"));
        if !is_last(index, &vgg.classifier) {
            y = layers::relu(&mut g, &y, &format!("{name}.relu"));
        }
        quant = linear.output.expect("int8 models quantize every Linear output");
        x = quantize(&mut g, &y, quant, name)?;
    }
    // The logits leave the graph as float, at the output layer's quantization.
    g.node(
        "DequantizeLinear",
        &[&x, &format!("{}.output_scale", DENSE_NAMES[2]), &format!("{}.output_zero_point", DENSE_NAMES[2])],
        OUTPUT_NAME,
        &[],
    );
    Ok(g.finish(GRAPH_NAME, vgg.config.input_size, vgg.config.classes, provenance.metadata()))
}

/// `QuantizeLinear(x)` to uint8 with scalar parameters `{name}.output_scale` and `{name}.output_zero_point`.
fn quantize(g: &mut GraphBuilder, x: &str, quant: QParams, name: &str) -> Result<String, ExportError> {
    let zero_point: u8 = zero_point(name, quant.zero_point)?;
    let scale = g.initializer(&format!("{name}.output_scale"), &[], &[quant.scale]);
    let zero_point = g.initializer(&format!("{name}.output_zero_point"), &[], &[zero_point]);
    Ok(g.node("QuantizeLinear", &[x, &scale, &zero_point], &format!("{name}.quantized"), &[]))
}

/// `DequantizeLinear(x)` of the uint8 tensor entering layer `name`.
fn dequantize(g: &mut GraphBuilder, x: &str, quant: QParams, name: &str) -> Result<String, ExportError> {
    let zero_point: u8 = zero_point(name, quant.zero_point)?;
    let scale = g.initializer(&format!("{name}.input_scale"), &[], &[quant.scale]);
    let zero_point = g.initializer(&format!("{name}.input_zero_point"), &[], &[zero_point]);
    Ok(g.node("DequantizeLinear", &[x, &scale, &zero_point], &format!("{name}.input"), &[]))
}

/// A zero point in the integer type ONNX stores it as (uint8 activations, int8 weights).
fn zero_point<T: Element + TryFrom<i32>>(tensor: &str, zero_point: i32) -> Result<T, ExportError> {
    T::try_from(zero_point).map_err(|_| ExportError::ZeroPoint {
        tensor: tensor.to_string(),
        zero_point,
        data_type: T::DATA_TYPE,
    })
}

/// The shape of a weight's scales and zero points: a scalar per tensor, `[out]` per channel.
pub(super) fn scale_dims(weight: &QuantizedWeight) -> Vec<usize> {
    match weight.scheme {
        WeightScheme::PerTensor => vec![],
        WeightScheme::PerChannel => vec![weight.scales.len()],
    }
}

/// A weight's zero points as int8.
pub(super) fn weight_zero_points(name: &str, weight: &QuantizedWeight) -> Result<Vec<i8>, ExportError> {
    weight.zero_points.iter().map(|&z| zero_point(&format!("{name}.weight"), z)).collect()
}

/// The int8 weight and its dequantization (per channel along axis 0, or per tensor).
fn weight(g: &mut GraphBuilder, name: &str, weight: &QuantizedWeight) -> Result<String, ExportError> {
    let values = g.initializer(&format!("{name}.weight_quantized"), &weight.shape, &weight.values);
    let dims = scale_dims(weight);
    let scales = g.initializer(&format!("{name}.weight_scale"), &dims, &weight.scales);
    let zero_points = g.initializer(&format!("{name}.weight_zero_point"), &dims, &weight_zero_points(name, weight)?);
    Ok(g.node("DequantizeLinear", &[&values, &scales, &zero_points], &format!("{name}.weight"), &[("axis", Attr::Int(0))]))
}

/// The bias as int32 at scale `input_scale * weight_scale[o]` (what QLinearConv and QGemm add to their
/// int32 accumulators) and its per-channel dequantization. fbgemm quantizes the float bias the same way
/// at run time; a bias beyond int32 at that scale is refused rather than clamped.
fn bias(
    g: &mut GraphBuilder,
    name: &str,
    bias: &[f32],
    input_scale: f32,
    weight: &QuantizedWeight,
) -> Result<String, ExportError> {
    let scales: Vec<f32> = (0..bias.len()).map(|c| input_scale * weight.scale(c)).collect();
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
    use super::super::proto::tensor_proto::DataType;
    use super::*;

    /// A `[2, 1]` per-channel weight with `scales`.
    fn weight_with_scales(scales: [f32; 2]) -> QuantizedWeight {
        QuantizedWeight {
            shape: vec![2, 1],
            values: vec![1, -1],
            scheme: WeightScheme::PerChannel,
            scales: scales.to_vec(),
            zero_points: vec![0, 0],
        }
    }

    /// A bias is stored as int32 at the input's scale times its channel's weight scale (0.25 and 0.125
    /// here), rounded half to even (-0.3125 / 0.125 = -2.5 -> -2), with zero points 0, and dequantized
    /// along its channels.
    #[test]
    fn biases_are_int32_at_input_times_weight_scale() {
        let mut g = GraphBuilder::new();
        let output = bias(&mut g, "layer", &[0.75, -0.3125], 0.5, &weight_with_scales([0.5, 0.25])).unwrap();
        let graph = g.finish("bias", 32, 10, Vec::new()).graph.unwrap();
        let words = |name: &str, data_type: DataType| -> Vec<[u8; 4]> {
            let tensor = graph.initializer.iter().find(|t| t.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(tensor.data_type, Some(data_type as i32), "{name}");
            tensor.raw_data.as_ref().unwrap().chunks_exact(4).map(|word| word.try_into().unwrap()).collect()
        };
        let values: Vec<i32> = words("layer.bias_quantized", DataType::Int32).into_iter().map(i32::from_le_bytes).collect();
        let scales: Vec<f32> = words("layer.bias_scale", DataType::Float).into_iter().map(f32::from_le_bytes).collect();
        let zero_points: Vec<i32> = words("layer.bias_zero_point", DataType::Int32).into_iter().map(i32::from_le_bytes).collect();
        assert_eq!(
            (values.as_slice(), scales.as_slice(), zero_points.as_slice()),
            (&[3, -2][..], &[0.25, 0.125][..], &[0, 0][..])
        );
        let node = graph.node.last().unwrap();
        assert_eq!(node.op_type.as_deref(), Some("DequantizeLinear"));
        assert_eq!(node.input, ["layer.bias_quantized", "layer.bias_scale", "layer.bias_zero_point"]);
        assert_eq!((node.output.as_slice(), output.as_str()), (&["layer.bias".to_string()][..], "layer.bias"));
    }

    #[test]
    fn a_bias_beyond_int32_is_refused() {
        let mut g = GraphBuilder::new();
        let error = bias(&mut g, "layer", &[0.0, 1e10], 1e-3, &weight_with_scales([1e-3, 1e-3])).unwrap_err();
        assert!(matches!(error, ExportError::BiasOverflow { ref layer, channel: 1 } if layer == "layer"), "{error}");
    }

    #[test]
    fn an_activation_zero_point_beyond_uint8_is_refused() {
        let mut g = GraphBuilder::new();
        let error = quantize(&mut g, "x", QParams { scale: 1.0, zero_point: 256 }, "layer").unwrap_err();
        assert!(matches!(error, ExportError::ZeroPoint { zero_point: 256, .. }), "{error}");
    }
}
