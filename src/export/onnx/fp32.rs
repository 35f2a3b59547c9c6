//! The FP32 graph, as torch.onnx exports the eval-mode model: Conv (BN folded) -> Relu [-> MaxPool] ...
//! -> AveragePool -> Flatten -> Gemm -> Relu -> Gemm -> Relu -> Gemm.

use super::folded::{Dense, FoldedVgg};
use super::graph::{GraphBuilder, INPUT_NAME, OUTPUT_NAME};
use super::layers::{self, CONV_KERNEL};
use super::provenance::Provenance;
use super::proto::ModelProto;
use super::ExportError;

/// Graph name, as in the file names.
pub const GRAPH_NAME: &str = "vgg11_bn";

pub fn model(vgg: &FoldedVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let mut g = GraphBuilder::new();
    let mut x = features(&mut g, vgg)?;
    for (index, dense) in vgg.dense.iter().enumerate() {
        x = float_dense(&mut g, &x, index, dense, is_last(index, &vgg.dense));
    }
    Ok(g.finish(GRAPH_NAME, vgg.input_size, vgg.classes(), provenance.metadata()))
}

/// The float feature extractor, average pool and flatten: `input` -> `[N, classifier inputs]`. The dynamic
/// INT8 model keeps this part in FP32 too.
pub(super) fn features(g: &mut GraphBuilder, vgg: &FoldedVgg) -> Result<String, ExportError> {
    let mut x = INPUT_NAME.to_string();
    for (i, conv) in vgg.convs.iter().enumerate() {
        let k = CONV_KERNEL;
        let weight = g.initializer(&format!("features.{i}.weight"), &[conv.out_channels, conv.in_channels, k, k], &conv.weight);
        let bias = g.initializer(&format!("features.{i}.bias"), &[conv.out_channels], &conv.bias);
        x = layers::conv(g, &x, &weight, &bias, &format!("features.{i}.conv"));
        x = layers::relu(g, &x, &format!("features.{i}.relu"));
        if conv.pool_after {
            x = layers::max_pool(g, &x, &format!("features.{i}.pool"));
        }
    }
    let x = layers::adaptive_average_pool(g, &x, vgg.input_size, vgg.pool_size, "avgpool")?;
    Ok(layers::flatten(g, &x, "flatten"))
}

/// Initializer prefixes of the three dense layers, named as our Burn module's fields.
pub(super) const DENSE_NAMES: [&str; 3] = ["classifier.hidden1", "classifier.hidden2", "classifier.output"];

/// `DENSE_NAMES[index]`: Gemm, then ReLU unless it is the output layer, which writes `logits`.
fn float_dense(g: &mut GraphBuilder, x: &str, index: usize, dense: &Dense, last: bool) -> String {
    let name = DENSE_NAMES[index];
    let weight = g.initializer(&format!("{name}.weight"), &[dense.outputs, dense.inputs], &dense.weight);
    let bias = g.initializer(&format!("{name}.bias"), &[dense.outputs], &dense.bias);
    if last {
        return layers::gemm(g, x, &weight, &bias, OUTPUT_NAME);
    }
    let y = layers::gemm(g, x, &weight, &bias, &format!("{name}.gemm"));
    layers::relu(g, &y, &format!("{name}.relu"))
}

/// Whether `index` is the classifier's output layer.
pub(super) fn is_last<T>(index: usize, layers: &[T]) -> bool {
    index + 1 == layers.len()
}
