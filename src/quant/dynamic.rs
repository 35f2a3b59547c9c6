//! Dynamic post-training quantization: `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, qint8)`.
//!
//! Only the Linears change: their weights become qint8 with one symmetric scale from a `MinMaxObserver`
//! (`default_weight_observer`); convs and BNs stay FP32, and activations are quantized at run time
//! (see [`super::simulate`]).

use super::float_model::FloatVgg;
use super::model::{QuantMethod, QuantizedFeatures, QuantizedLinear, QuantizedVgg, QuantizedWeight};
use super::observer::MinMax;
use super::qparams::QuantRange;

/// The dynamically quantized twin of `model`.
pub fn quantize_dynamic(model: &FloatVgg) -> QuantizedVgg {
    let last = model.classifier.len() - 1;
    let classifier = model
        .classifier
        .iter()
        .enumerate()
        .map(|(i, linear)| QuantizedLinear {
            weight: QuantizedWeight::symmetric(
                vec![linear.out_features, linear.in_features],
                &linear.weight,
                &[MinMax::of(&linear.weight)],
                QuantRange::QINT8,
            ),
            bias: linear.bias.clone(),
            relu: i != last,
            output: None,
        })
        .collect();
    QuantizedVgg {
        method: QuantMethod::Dynamic,
        config: model.config.clone(),
        features: QuantizedFeatures::Float(model.blocks.clone()),
        classifier,
    }
}
