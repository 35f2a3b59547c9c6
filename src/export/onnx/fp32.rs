//! The FP32 graph, as torch.onnx exports the eval-mode model: Conv (BN folded) -> Relu [-> MaxPool] ...
//! -> AveragePool -> Flatten -> Gemm -> Relu -> Gemm -> Relu -> Gemm.

use super::graph::{GraphBuilder, INPUT_NAME, OUTPUT_NAME};
use super::layers::{self, CONV_KERNEL};
use super::proto::ModelProto;
use super::provenance::Provenance;
use super::ExportError;
use crate::model::VggConfig;
use crate::quant::float_model::FloatLinear;
use crate::quant::static_ptq::{FusedConv, FusedVgg};

/// Graph name, as in the file names.
pub const GRAPH_NAME: &str = "vgg11_bn";

/// The FP32 model with its BatchNorms folded (as torch.onnx folds them in an eval-mode export).
pub fn model(vgg: &FusedVgg, provenance: &Provenance) -> Result<ModelProto, ExportError> {
    let mut g = GraphBuilder::new();
    let mut x = features(&mut g, &vgg.convs, &vgg.config)?;
    for (index, linear) in vgg.classifier.iter().enumerate() {
        x = float_linear(&mut g, &x, index, linear, is_last(index, &vgg.classifier));
    }
    Ok(g.finish(GRAPH_NAME, vgg.config.input_size, vgg.config.classes, provenance.metadata()))
}

/// The float feature extractor, average pool and flatten: `input` -> `[N, classifier inputs]`. The dynamic
/// INT8 model keeps this part in FP32 too.
pub(super) fn features(g: &mut GraphBuilder, convs: &[FusedConv], config: &VggConfig) -> Result<String, ExportError> {
    let mut x = INPUT_NAME.to_string();
    for (i, conv) in convs.iter().enumerate() {
        let k = CONV_KERNEL;
        let weight = g.initializer(&format!("features.{i}.weight"), &[conv.out_channels, conv.in_channels, k, k], &conv.weight);
        let bias = g.initializer(&format!("features.{i}.bias"), &[conv.out_channels], &conv.bias);
        x = layers::conv(g, &x, &weight, &bias, &format!("features.{i}.conv"));
        x = layers::relu(g, &x, &format!("features.{i}.relu"));
        if conv.pool {
            x = layers::max_pool(g, &x, &format!("features.{i}.pool"));
        }
    }
    let x = layers::adaptive_average_pool(g, &x, config.input_size, config.pool_size, "avgpool")?;
    Ok(layers::flatten(g, &x, "flatten"))
}

/// Initializer prefixes of the three dense layers, named as our Burn module's fields.
pub(super) const DENSE_NAMES: [&str; 3] = ["classifier.hidden1", "classifier.hidden2", "classifier.output"];

/// `DENSE_NAMES[index]`: Gemm, then ReLU unless it is the output layer, which writes `logits`.
fn float_linear(g: &mut GraphBuilder, x: &str, index: usize, linear: &FloatLinear, last: bool) -> String {
    let name = DENSE_NAMES[index];
    let weight = g.initializer(&format!("{name}.weight"), &[linear.out_features, linear.in_features], &linear.weight);
    let bias = g.initializer(&format!("{name}.bias"), &[linear.out_features], &linear.bias);
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
