//! The float nodes every variant shares, with the attributes torch.onnx (TorchScript exporter, opset 17)
//! writes for them, so our graphs read like PyTorch's.

use super::graph::{Attr, GraphBuilder};
use super::ExportError;
use crate::model::FEATURE_STRIDE;

/// VGG's convolutions: 3x3, stride 1, padding 1.
pub const CONV_KERNEL: usize = 3;
const CONV_PADDING: i64 = 1;
/// VGG's max-pool: 2x2, stride 2.
const MAX_POOL: i64 = 2;

/// `Conv(x, weight, bias)` with VGG's 3x3, padding-1 geometry.
pub fn conv(g: &mut GraphBuilder, x: &str, weight: &str, bias: &str, output: &str) -> String {
    let k = CONV_KERNEL as i64;
    g.node(
        "Conv",
        &[x, weight, bias],
        output,
        &[
            ("dilations", Attr::Ints(vec![1, 1])),
            ("group", Attr::Int(1)),
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("pads", Attr::Ints(vec![CONV_PADDING; 4])),
            ("strides", Attr::Ints(vec![1, 1])),
        ],
    )
}

/// 2x2 max-pool with stride 2.
pub fn max_pool(g: &mut GraphBuilder, x: &str, output: &str) -> String {
    g.node(
        "MaxPool",
        &[x],
        output,
        &[
            ("ceil_mode", Attr::Int(0)),
            ("dilations", Attr::Ints(vec![1, 1])),
            ("kernel_shape", Attr::Ints(vec![MAX_POOL, MAX_POOL])),
            ("pads", Attr::Ints(vec![0; 4])),
            ("strides", Attr::Ints(vec![MAX_POOL, MAX_POOL])),
        ],
    )
}

/// `AdaptiveAvgPool2d(pool_size)` on the features of an `input_size` image, as torch.onnx writes it: a
/// `GlobalAveragePool` for a 1x1 output, else an `AveragePool` whose kernel and stride are the ratio of the
/// sides (1x1, an identity, for the seed's 4x4 -> 4x4). Ratios that are not whole have no fixed-kernel form.
pub fn adaptive_average_pool(
    g: &mut GraphBuilder,
    x: &str,
    input_size: usize,
    pool_size: usize,
    output: &str,
) -> Result<String, ExportError> {
    let side = input_size / FEATURE_STRIDE;
    if pool_size == 1 {
        return Ok(g.node("GlobalAveragePool", &[x], output, &[]));
    }
    if pool_size == 0 || !side.is_multiple_of(pool_size) {
        return Err(ExportError::UnsupportedPool { side, pool_size });
    }
    let k = (side / pool_size) as i64;
    Ok(g.node("AveragePool", &[x], output, &[("kernel_shape", Attr::Ints(vec![k, k])), ("strides", Attr::Ints(vec![k, k]))]))
}

/// `Flatten(axis = 1)`: `[N, C, H, W]` -> `[N, C*H*W]` in PyTorch's order.
pub fn flatten(g: &mut GraphBuilder, x: &str, output: &str) -> String {
    g.node("Flatten", &[x], output, &[("axis", Attr::Int(1))])
}

/// `Gemm(x, weight, bias)` with torch.nn.Linear's `[out, in]` weight (`transB = 1`).
pub fn gemm(g: &mut GraphBuilder, x: &str, weight: &str, bias: &str, output: &str) -> String {
    g.node(
        "Gemm",
        &[x, weight, bias],
        output,
        &[("alpha", Attr::Float(1.0)), ("beta", Attr::Float(1.0)), ("transB", Attr::Int(1))],
    )
}

pub fn relu(g: &mut GraphBuilder, x: &str, output: &str) -> String {
    g.node("Relu", &[x], output, &[])
}
