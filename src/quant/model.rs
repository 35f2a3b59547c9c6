//! The quantized model as plain data: what the `.pth` and ONNX writers consume and what
//! [`super::simulate`] runs. Weights are in PyTorch's layouts (`[out, in, 3, 3]`, `[out, in]`), row-major.

use serde::{Deserialize, Serialize};

use super::float_model::FloatConvBlock;
use super::observer::MinMax;
use super::qparams::{symmetric_qparams, QParams, QuantRange};
use crate::model::VggConfig;

/// Which of PyTorch's flows produced a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantMethod {
    /// `quantize_dynamic({nn.Linear}, qint8)`.
    Dynamic,
    /// `prepare_fx` + calibration + `convert_fx` (fbgemm).
    Static,
    /// `prepare_qat_fx` + training + `convert_fx` (fbgemm).
    Qat,
}

/// Granularity of a weight's scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightScheme {
    /// One symmetric scale (`torch.per_tensor_affine` with zero point 0): dynamic Linears.
    PerTensor,
    /// One symmetric scale per output channel (axis 0): static and QAT convs and Linears.
    PerChannel,
}

/// A qint8 weight with its scales and zero points (one of each, or one per output channel).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    pub shape: Vec<usize>,
    pub values: Vec<i8>,
    pub scheme: WeightScheme,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
}

impl QuantizedWeight {
    /// Symmetric qint8 quantization of a `[out, ...]` weight whose range(s) are `ranges` (one for
    /// per-tensor, one per output channel otherwise), with the observer formula over `range`.
    pub fn symmetric(shape: Vec<usize>, weight: &[f32], ranges: &[MinMax], range: QuantRange) -> Self {
        let scheme = if ranges.len() == 1 { WeightScheme::PerTensor } else { WeightScheme::PerChannel };
        let qparams: Vec<QParams> = ranges.iter().map(|r| symmetric_qparams(r.min, r.max, range)).collect();
        let per_scale = weight.len() / qparams.len();
        let values = weight
            .chunks(per_scale)
            .zip(&qparams)
            .flat_map(|(row, &q)| row.iter().map(move |&w| q.quantize(w, QuantRange::QINT8) as i8))
            .collect();
        QuantizedWeight {
            shape,
            values,
            scheme,
            scales: qparams.iter().map(|q| q.scale).collect(),
            zero_points: qparams.iter().map(|q| q.zero_point).collect(),
        }
    }

    /// The scale that applies to output channel `c`.
    pub fn scale(&self, c: usize) -> f32 {
        self.scales[if self.scales.len() == 1 { 0 } else { c }]
    }
}

/// A Conv+BN+ReLU fused by FX: BN folded into the weight and bias, quint8 output.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv {
    /// `[out, in, 3, 3]`, per-channel.
    pub weight: QuantizedWeight,
    /// Float bias (fbgemm quantizes it on the fly with `input_scale * weight_scale`).
    pub bias: Vec<f32>,
    /// The output activation (after ReLU); a following max-pool keeps it.
    pub output: QParams,
    pub pool: bool,
}

/// A Linear (with its ReLU where the classifier has one).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLinear {
    /// `[out, in]`.
    pub weight: QuantizedWeight,
    pub bias: Vec<f32>,
    pub relu: bool,
    /// Output activation of a static Linear; `None` for a dynamic one, whose output is float.
    pub output: Option<QParams>,
}

/// The feature extractor of a quantized model.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizedFeatures {
    /// Dynamic quantization leaves convs and BNs in FP32.
    Float(Vec<FloatConvBlock>),
    /// Static / QAT: the network input is quantized with `input`, then every layer runs in int8.
    Int8 { input: QParams, convs: Vec<QuantizedConv> },
}

/// One INT8 variant of VGG11-BN.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedVgg {
    pub method: QuantMethod,
    pub config: VggConfig,
    pub features: QuantizedFeatures,
    /// The three Linears of the classifier; the ReLUs follow the first two.
    pub classifier: Vec<QuantizedLinear>,
}
