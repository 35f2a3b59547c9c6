//! Dynamic INT8: the classifier's Linear layers in ONNX Runtime's dynamic form (what its
//! `quantize_dynamic` writes for MatMul), convolutions in FP32:
//!
//! `DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, 0) -> Cast -> Mul(x_scale * w_scale) -> Add(bias)`
//!
//! ORT's CPU optimizer fuses the chain into one `DynamicQuantizeMatMul`. Activations are quantized per
//! batch at run time (uint8, asymmetric); weights are int8, per-tensor symmetric, as `torch.quantize_dynamic`
//! quantizes them.

use super::folded::{Dense, FoldedVgg};
use super::fp32::{self, is_last, DENSE_NAMES, GRAPH_NAME};
use super::graph::{Attr, GraphBuilder, OUTPUT_NAME};
use super::layers;
use super::proto::{tensor_proto::DataType, ModelProto};
use super::provenance::Provenance;
use super::ExportError;

/// int8's range as `torch.quantize_dynamic`'s default weight observer (`MinMaxObserver(dtype=qint8,
/// qscheme=per_tensor_symmetric)`) uses it: the scale maps the largest magnitude to (127 - (-128)) / 2.
const INT8_HALF_RANGE: f32 = 127.5;

/// Weights quantized per tensor, symmetric: `real = scale * q`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerTensorInt8 {
    pub values: Vec<i8>,
    pub scale: f32,
}

/// `torch.quantize_dynamic`'s weight quantization: `scale = max(|min|, |max|) / 127.5` (at least
/// f32::EPSILON, as torch's observer clamps it), zero point 0, round half to even, clamp to int8.
///
/// Kept private to the exporter until `src/quant` offers the same function.
pub fn quantize_per_tensor_symmetric(weights: &[f32]) -> PerTensorInt8 {
    let max_abs = weights.iter().fold(0.0_f32, |m, w| m.max(w.abs()));
    let scale = (max_abs / INT8_HALF_RANGE).max(f32::EPSILON);
    let values = weights
        .iter()
        .map(|w| (w / scale).round_ties_even().clamp(f32::from(i8::MIN), f32::from(i8::MAX)) as i8)
        .collect();
    PerTensorInt8 { values, scale }
}

pub fn model(vgg: &FoldedVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let mut g = GraphBuilder::new();
    let mut x = fp32::features(&mut g, vgg)?;
    for (index, dense) in vgg.dense.iter().enumerate() {
        let output = if is_last(index, &vgg.dense) { OUTPUT_NAME.to_string() } else { format!("{}.add", DENSE_NAMES[index]) };
        x = dynamic_dense(&mut g, &x, DENSE_NAMES[index], dense, &output);
        if !is_last(index, &vgg.dense) {
            x = layers::relu(&mut g, &x, &format!("{}.relu", DENSE_NAMES[index]));
        }
    }
    Ok(g.finish(GRAPH_NAME, vgg.input_size, vgg.classes(), provenance.metadata()))
}

/// One Linear layer in the dynamic form, writing `output`.
fn dynamic_dense(g: &mut GraphBuilder, x: &str, name: &str, dense: &Dense, output: &str) -> String {
    let quantized = quantize_per_tensor_symmetric(&dense.weight);
    // MatMulInteger multiplies x [N, in] by B [in, out]: the transpose of torch's layout.
    let transposed = transpose(&quantized.values, dense.outputs, dense.inputs);
    let weight = g.initializer(&format!("{name}.weight_quantized"), &[dense.inputs, dense.outputs], &transposed);
    let weight_scale = g.initializer(&format!("{name}.weight_scale"), &[], &[quantized.scale]);
    let weight_zero_point = g.initializer(&format!("{name}.weight_zero_point"), &[], &[0_i8]);
    let bias = g.initializer(&format!("{name}.bias"), &[dense.outputs], &dense.bias);

    let (x_q, x_scale, x_zero_point) = (format!("{name}.x_quantized"), format!("{name}.x_scale"), format!("{name}.x_zero_point"));
    g.node_with_outputs("DynamicQuantizeLinear", &[x], &[&x_q, &x_scale, &x_zero_point], &[]);
    let scale = g.node("Mul", &[&x_scale, &weight_scale], &format!("{name}.scale"), &[]);
    let acc = g.node("MatMulInteger", &[&x_q, &weight, &x_zero_point, &weight_zero_point], &format!("{name}.matmul"), &[]);
    let acc = g.node("Cast", &[&acc], &format!("{name}.cast"), &[("to", Attr::Int(DataType::Float as i64))]);
    let y = g.node("Mul", &[&acc, &scale], &format!("{name}.mul"), &[]);
    g.node("Add", &[&y, &bias], output, &[])
}

/// `[rows, cols]` -> `[cols, rows]`, row-major.
pub(super) fn transpose<T: Copy>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| values[r * cols + c])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_like_torch_symmetric_minmax() {
        // Exact binary fractions: max |w| = 7.96875 -> scale 1/16; the quotients -127.5, 0.5, 1.5 and 127.5
        // round half to even to -128, 0, 2 and 128, which clamps to 127.
        let q = quantize_per_tensor_symmetric(&[-7.968_75, 0.031_25, 0.093_75, 7.968_75]);
        assert_eq!(q.scale, 0.0625);
        assert_eq!(q.values, vec![-128, 0, 2, 127]);
    }

    #[test]
    fn zero_weights_get_the_smallest_scale() {
        assert_eq!(quantize_per_tensor_symmetric(&[0.0; 3]).scale, f32::EPSILON);
    }

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(transpose(&[1, 2, 3, 4, 5, 6], 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }
}
