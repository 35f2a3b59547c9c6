//! The state_dict layout PyTorch produces for torchvision's VGG11-BN (any width, pooling and head
//! size) in each of the four variants we export, and [`validate`], which checks a state_dict
//! against it.
//!
//! The rules were read off the reference files PyTorch 2.15 wrote (see the tests): which modules
//! survive FX fusion, which `_version` each module class reports, which tensors are parameters,
//! and that fbgemm hands convolution weights back channels-last.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::tensor::{channels_last_strides, contiguous_strides, DType, QScheme, Signature, StateDict, TensorSignature};

/// Kernel size of every VGG convolution.
const KERNEL: usize = 3;
/// `_version` of `BatchNorm2d` (every other float module reports 1).
const BATCH_NORM_VERSION: u64 = 2;
/// `_version` of `torch.ao.nn.quantized.dynamic.Linear`.
const DYNAMIC_LINEAR_VERSION: u64 = 4;
/// `_version` of `torch.ao.nn.quantized.Linear` and the fused `LinearReLU`.
const STATIC_LINEAR_VERSION: u64 = 3;
/// `_version` of `LinearPackedParams`.
const PACKED_PARAMS_VERSION: u64 = 3;
/// Axis of per-channel weight quantization (output channels) for convolutions and Linears.
const WEIGHT_CHANNEL_AXIS: usize = 0;

/// One item of torchvision's `cfg` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// A 3x3 convolution with this many output channels, followed by BatchNorm2d and ReLU.
    Conv(usize),
    /// `MaxPool2d(2, 2)` (`'M'`).
    MaxPool,
}

/// The shape of a VGG-BN: `VGG(make_layers(features, batch_norm=True))` with the average pool and
/// classifier sized by the fields below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VggConfig {
    /// torchvision's cfg list.
    pub features: Vec<Feature>,
    /// Channels of the input image.
    pub in_channels: usize,
    /// Side of `AdaptiveAvgPool2d((side, side))`.
    pub avgpool_side: usize,
    /// Width of the two hidden classifier layers.
    pub hidden: usize,
    /// Number of classes.
    pub classes: usize,
}

/// torchvision's VGG11 cfg ("A").
const VGG11_CFG: [Option<usize>; 13] =
    [Some(64), None, Some(128), None, Some(256), Some(256), None, Some(512), Some(512), None, Some(512), Some(512), None];

impl VggConfig {
    /// VGG11-BN on RGB input with every convolution's width divided by `width_divisor`.
    pub fn vgg11_bn(width_divisor: usize, avgpool_side: usize, hidden: usize, classes: usize) -> Self {
        let features = VGG11_CFG.iter().map(|c| c.map_or(Feature::MaxPool, |c| Feature::Conv(c / width_divisor))).collect();
        VggConfig { features, in_channels: 3, avgpool_side, hidden, classes }
    }

    /// The model of the reference files: width 1/16, 1x1 pooling, head 32 -> 64 -> 64 -> 10.
    pub fn tiny() -> Self {
        Self::vgg11_bn(16, 1, 64, 10)
    }

    /// The model vggq trains: full width, 4x4 pooling (128-px input), head 8192 -> 4096 -> 4096 -> 10.
    pub fn full() -> Self {
        Self::vgg11_bn(1, 4, 4096, 10)
    }

    /// This network as the JSON `scripts/torch_vgg.py` builds its torchvision module from (conv widths
    /// with 0 for a max-pool, the average pool's side, the head), with the input side the tests feed it.
    pub fn torch_module_json(&self, input_side: usize) -> String {
        let features: Vec<usize> = self
            .features
            .iter()
            .map(|f| match f {
                Feature::Conv(c) => *c,
                Feature::MaxPool => 0,
            })
            .collect();
        format!(
            r#"{{"features": {features:?}, "avgpool_side": {}, "hidden": {}, "classes": {}, "input_side": {input_side}}}"#,
            self.avgpool_side, self.hidden, self.classes
        )
    }

    /// Each convolution's `features` index with its input and output channels.
    pub fn convs(&self) -> Vec<Conv> {
        let mut convs = Vec::new();
        let mut index = 0;
        let mut channels = self.in_channels;
        for feature in &self.features {
            match *feature {
                Feature::Conv(out) => {
                    convs.push(Conv { index, in_channels: channels, out_channels: out });
                    channels = out;
                    index += 3; // conv, batch norm, relu
                }
                Feature::MaxPool => index += 1,
            }
        }
        convs
    }

    /// `features` indices of the max pools.
    fn pools(&self) -> Vec<usize> {
        let mut pools = Vec::new();
        let mut index = 0;
        for feature in &self.features {
            match feature {
                Feature::Conv(_) => index += 3,
                Feature::MaxPool => {
                    pools.push(index);
                    index += 1;
                }
            }
        }
        pools
    }

    /// Number of modules in `features`.
    fn feature_modules(&self) -> usize {
        self.features.iter().map(|f| if let Feature::Conv(_) = f { 3 } else { 1 }).sum()
    }

    /// The three Linears as `(classifier index, in_features, out_features)`.
    pub fn linears(&self) -> [(usize, usize, usize); 3] {
        let last_channels = self.convs().last().map_or(self.in_channels, |c| c.out_channels);
        let flat = last_channels * self.avgpool_side * self.avgpool_side;
        [(0, flat, self.hidden), (3, self.hidden, self.hidden), (6, self.hidden, self.classes)]
    }
}

/// One convolution of `features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    /// Its index in `features` (its BatchNorm is at `index + 1`).
    pub index: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

/// The model variants vggq writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The float model in eval mode.
    Fp32,
    /// `quantize_dynamic(model, {nn.Linear}, torch.qint8)`.
    DynamicInt8,
    /// `prepare_fx` / calibrate / `convert_fx` with `get_default_qconfig_mapping('fbgemm')`.
    StaticInt8Fx,
    /// `prepare_qat_fx` / train / `convert_fx` with `get_default_qat_qconfig_mapping('fbgemm')`.
    QatInt8Fx,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 4] = [Variant::Fp32, Variant::DynamicInt8, Variant::StaticInt8Fx, Variant::QatInt8Fx];
}

/// The entries and `_metadata` of a state_dict, as PyTorch orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Keys with what each holds.
    pub entries: Vec<(String, Signature)>,
    /// Module prefixes with their `_version`.
    pub metadata: Vec<(String, u64)>,
}

fn tensor(dtype: DType, shape: Vec<usize>) -> TensorSignature {
    TensorSignature { dtype, strides: contiguous_strides(&shape), shape, qscheme: None }
}

fn scalar(dtype: DType) -> Signature {
    Signature::Tensor(tensor(dtype, vec![]))
}

fn vector(len: usize) -> Signature {
    Signature::Tensor(tensor(DType::F32, vec![len]))
}

/// The expected layout of `variant` for a model shaped like `config`.
pub fn layout(config: &VggConfig, variant: Variant) -> Layout {
    let mut entries = Vec::new();
    let mut metadata = vec![(String::new(), 1), ("features".to_owned(), 1)];
    let quantized_features = matches!(variant, Variant::StaticInt8Fx | Variant::QatInt8Fx);
    let convs = config.convs();

    if quantized_features {
        // convert_fx quantizes the model input with a scale and zero point named after the first module.
        entries.push(("features_0_input_scale_0".to_owned(), scalar(DType::F32)));
        entries.push(("features_0_input_zero_point_0".to_owned(), scalar(DType::I64)));
        for conv in &convs {
            let shape = vec![conv.out_channels, conv.in_channels, KERNEL, KERNEL];
            let weight = TensorSignature {
                dtype: DType::QInt8,
                strides: channels_last_strides(&shape),
                shape,
                qscheme: Some(QScheme::PerChannelAffine { axis: WEIGHT_CHANNEL_AXIS }),
            };
            let prefix = format!("features.{}", conv.index);
            entries.push((format!("{prefix}.weight"), Signature::Tensor(weight)));
            entries.push((format!("{prefix}.bias"), Signature::Parameter(tensor(DType::F32, vec![conv.out_channels]))));
            entries.push((format!("{prefix}.scale"), scalar(DType::F32)));
            entries.push((format!("{prefix}.zero_point"), scalar(DType::I64)));
        }
        // Fusion folds each BatchNorm and ReLU into its convolution; the pools remain.
        let mut kept: Vec<usize> = convs.iter().map(|c| c.index).chain(config.pools()).collect();
        kept.sort_unstable();
        metadata.extend(kept.into_iter().map(|i| (format!("features.{i}"), 1)));
    } else {
        for conv in &convs {
            let (conv_prefix, bn_prefix) = (format!("features.{}", conv.index), format!("features.{}", conv.index + 1));
            let c = conv.out_channels;
            entries.push((
                format!("{conv_prefix}.weight"),
                Signature::Tensor(tensor(DType::F32, vec![c, conv.in_channels, KERNEL, KERNEL])),
            ));
            entries.push((format!("{conv_prefix}.bias"), vector(c)));
            for name in ["weight", "bias", "running_mean", "running_var"] {
                entries.push((format!("{bn_prefix}.{name}"), vector(c)));
            }
            entries.push((format!("{bn_prefix}.num_batches_tracked"), scalar(DType::I64)));
        }
        let batch_norms: Vec<usize> = convs.iter().map(|c| c.index + 1).collect();
        metadata.extend((0..config.feature_modules()).map(|i| {
            let version = if batch_norms.contains(&i) { BATCH_NORM_VERSION } else { 1 };
            (format!("features.{i}"), version)
        }));
    }
    metadata.push(("avgpool".to_owned(), 1));
    metadata.push(("classifier".to_owned(), 1));

    let linears = config.linears();
    match variant {
        Variant::Fp32 => {
            for (index, in_features, out_features) in linears {
                entries.push((
                    format!("classifier.{index}.weight"),
                    Signature::Tensor(tensor(DType::F32, vec![out_features, in_features])),
                ));
                entries.push((format!("classifier.{index}.bias"), vector(out_features)));
            }
            metadata.extend((0..=6).map(|i| (format!("classifier.{i}"), 1)));
        }
        Variant::DynamicInt8 | Variant::StaticInt8Fx | Variant::QatInt8Fx => {
            let (qscheme, linear_version) = if variant == Variant::DynamicInt8 {
                (QScheme::PerTensorAffine, DYNAMIC_LINEAR_VERSION)
            } else {
                (QScheme::PerChannelAffine { axis: WEIGHT_CHANNEL_AXIS }, STATIC_LINEAR_VERSION)
            };
            for (index, in_features, out_features) in linears {
                let prefix = format!("classifier.{index}");
                let shape = vec![out_features, in_features];
                let weight =
                    TensorSignature { dtype: DType::QInt8, strides: contiguous_strides(&shape), shape, qscheme: Some(qscheme) };
                entries.push((format!("{prefix}.scale"), scalar(DType::F32)));
                entries.push((format!("{prefix}.zero_point"), scalar(DType::I64)));
                entries.push((format!("{prefix}._packed_params.dtype"), Signature::Dtype(DType::QInt8)));
                entries.push((
                    format!("{prefix}._packed_params._packed_params"),
                    Signature::PackedLinear { weight, bias: Some(tensor(DType::F32, vec![out_features])) },
                ));
            }
            // Dynamic quantization keeps every classifier module; FX fuses each ReLU (1, 4) into its Linear.
            let kept: &[usize] = if variant == Variant::DynamicInt8 { &[0, 1, 2, 3, 4, 5, 6] } else { &[0, 2, 3, 5, 6] };
            for &i in kept {
                if linears.iter().any(|&(index, _, _)| index == i) {
                    metadata.push((format!("classifier.{i}"), linear_version));
                    metadata.push((format!("classifier.{i}._packed_params"), PACKED_PARAMS_VERSION));
                } else {
                    metadata.push((format!("classifier.{i}"), 1));
                }
            }
        }
    }
    Layout { entries, metadata }
}

/// Checks that `state_dict` has exactly the layout's keys, in its order, with its signatures and
/// `_metadata`; the error names the first offending key.
pub fn validate(state_dict: &StateDict<'_>, layout: &Layout) -> Result<()> {
    let expected: HashMap<&str, (usize, &Signature)> =
        layout.entries.iter().enumerate().map(|(i, (k, s))| (k.as_str(), (i, s))).collect();
    let present: HashMap<&str, usize> = state_dict.entries.iter().enumerate().map(|(i, (k, _))| (k.as_str(), i)).collect();
    for (key, value) in &state_dict.entries {
        let &(_, signature) = expected.get(key.as_str()).ok_or_else(|| Error::UnexpectedKey { key: key.clone() })?;
        let found = value.signature();
        if &found != signature {
            return Err(Error::SignatureMismatch { key: key.clone(), expected: signature.to_string(), found: found.to_string() });
        }
    }
    for (position, (key, signature)) in layout.entries.iter().enumerate() {
        match present.get(key.as_str()) {
            None => return Err(Error::MissingKey { key: key.clone(), expected: signature.to_string() }),
            Some(&found) if found != position => {
                return Err(Error::KeyOutOfOrder { key: key.clone(), found, expected: position })
            }
            Some(_) => {}
        }
    }
    let versions = |m: &[(String, u64)], i: usize| m.get(i).map(|(p, v)| (p.clone(), v.to_string()));
    for i in 0..layout.metadata.len().max(state_dict.metadata.len()) {
        let (expected, found) = (versions(&layout.metadata, i), versions(&state_dict.metadata, i));
        if expected != found {
            let absent = || ("absent".to_owned(), "absent".to_owned());
            let (prefix, expected_version) = expected.clone().unwrap_or_else(absent);
            let found_version = match &found {
                Some((p, v)) if *p == prefix => v.clone(),
                Some((p, v)) => format!("`{p}` version {v} in its place"),
                None => "absent".to_owned(),
            };
            let prefix = if expected.is_some() { prefix } else { found.map(|(p, _)| p).unwrap_or_default() };
            return Err(Error::MetadataMismatch { prefix, expected: expected_version, found: found_version });
        }
    }
    Ok(())
}
