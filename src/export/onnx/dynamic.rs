//! Dynamic INT8: the classifier's Linear layers in ONNX Runtime's dynamic form (what its
//! `quantize_dynamic` writes for MatMul), convolutions in FP32:
//!
//! `DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, w_zp) -> Cast -> Mul(x_scale * w_scale) -> Add(bias)`
//!
//! ORT's CPU optimizer fuses the chain into one `DynamicQuantizeMatMul`. Activations are quantized per
//! batch at run time (uint8, asymmetric); the int8 weights and their scales are those
//! `torch.quantize_dynamic` chose ([`crate::quant::quantize_dynamic`]), stored as uint8 (value and zero
//! point plus 128: the same real numbers, see [`as_uint8`]).

use super::fp32::{self, is_last, DENSE_NAMES, GRAPH_NAME};
use super::graph::{Attr, GraphBuilder, OUTPUT_NAME};
use super::layers;
use super::proto::{tensor_proto::DataType, ModelProto};
use super::provenance::Provenance;
use super::qdq::{scale_dims, weight_zero_points};
use super::ExportError;
use crate::quant::static_ptq::FusedConv;
use crate::quant::{QuantizedFeatures, QuantizedLinear, QuantizedVgg};

/// The dynamic model `vgg` ([`crate::quant::QuantMethod::Dynamic`]): its float conv blocks with their
/// BatchNorms folded, its int8 Linears.
pub fn model(vgg: &QuantizedVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let QuantizedFeatures::Float(blocks) = &vgg.features else {
        return Err(ExportError::WrongMethod { exporter: "dynamic", method: vgg.method });
    };
    let convs: Vec<FusedConv> = blocks.iter().map(FusedConv::fold).collect();
    let mut g = GraphBuilder::new();
    let mut x = fp32::features(&mut g, &convs, &vgg.config)?;
    for (index, linear) in vgg.classifier.iter().enumerate() {
        let last = is_last(index, &vgg.classifier);
        let output = if last { OUTPUT_NAME.to_string() } else { format!("{}.add", DENSE_NAMES[index]) };
        x = dynamic_linear(&mut g, &x, DENSE_NAMES[index], linear, &output)?;
        if !last {
            x = layers::relu(&mut g, &x, &format!("{}.relu", DENSE_NAMES[index]));
        }
    }
    Ok(g.finish(GRAPH_NAME, vgg.config.input_size, vgg.config.classes, provenance.metadata()))
}

/// One Linear layer in the dynamic form, writing `output`.
fn dynamic_linear(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    linear: &QuantizedLinear,
    output: &str,
) -> Result<String, ExportError> {
    let [outputs, inputs] = linear.weight.shape[..] else {
        unreachable!("a Linear weight is [out, in], as QuantizedLinear documents");
    };
    // MatMulInteger multiplies x [N, in] by B [in, out]: the transpose of torch's layout. Per-channel
    // scales and zero points (if any) then apply per column, which broadcasting over [N, out] gives.
    let transposed = transpose(&linear.weight.values, outputs, inputs);
    let weight = g.initializer(&format!("{name}.weight_quantized"), &[inputs, outputs], &as_uint8(&transposed));
    let dims = scale_dims(&linear.weight);
    let weight_scale = g.initializer(&format!("{name}.weight_scale"), &dims, &linear.weight.scales);
    let weight_zero_point =
        g.initializer(&format!("{name}.weight_zero_point"), &dims, &as_uint8(&weight_zero_points(name, &linear.weight)?));
    let bias = g.initializer(&format!("{name}.bias"), &[outputs], &linear.bias);

    let (x_q, x_scale, x_zero_point) = (format!("{name}.x_quantized"), format!("{name}.x_scale"), format!("{name}.x_zero_point"));
    g.node_with_outputs("DynamicQuantizeLinear", &[x], &[&x_q, &x_scale, &x_zero_point], &[]);
    let scale = g.node("Mul", &[&x_scale, &weight_scale], &format!("{name}.scale"), &[]);
    let acc = g.node("MatMulInteger", &[&x_q, &weight, &x_zero_point, &weight_zero_point], &format!("{name}.matmul"), &[]);
    let acc = g.node("Cast", &[&acc], &format!("{name}.cast"), &[("to", Attr::Int(DataType::Float as i64))]);
    let y = g.node("Mul", &[&acc, &scale], &format!("{name}.mul"), &[]);
    Ok(g.node("Add", &[&y, &bias], output, &[]))
}

/// int8 weights or zero points as uint8, 128 added to each: `(w + 128) - (z + 128)` is `w - z`, so the
/// layer computes the same numbers. ONNX Runtime's CPU kernels (MLAS) multiply uint8 activations by int8
/// weights, on x86-64 CPUs without VNNI (AVX2 ones among them), with `vpmaddubsw`, which adds each pair
/// of products into an int16 and saturates it (2 * 255 * 127 > 32767); uint8 by uint8 they widen to
/// int16 first, and every sum is exact on every CPU. With int8 weights the smoke run's dynamic model
/// scored 45.43 % top-1 on an AVX2-only CPU and 45.40 % on one with AVX-512 VNNI.
fn as_uint8(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&value| (i16::from(value) + 128) as u8).collect()
}

/// `[rows, cols]` -> `[cols, rows]`, row-major.
fn transpose<T: Copy>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| values[r * cols + c])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(transpose(&[1, 2, 3, 4, 5, 6], 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn uint8_weights_keep_their_differences_from_the_zero_point() {
        assert_eq!(as_uint8(&[-128, -1, 0, 1, 127]), vec![0, 127, 128, 129, 255]);
    }
}
