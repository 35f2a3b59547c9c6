//! The FP32 network as plain data in PyTorch's layouts (conv weights `[out, in, 3, 3]`, Linear weights
//! `[out, in]`): what every quantization pass starts from, read from a Burn [`Vgg`] or from a
//! torchvision-layout `.pth` state_dict.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use vggq_pth::{DType, StateDict, Value};

use super::QuantError;
use crate::model::{Vgg, VggConfig};

/// A BatchNorm2d in eval mode.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    /// Training batches the running statistics have seen.
    pub num_batches_tracked: i64,
}

/// Conv 3x3 (padding 1) -> BatchNorm -> ReLU (-> 2x2 max-pool).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatConvBlock {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out, in, 3, 3]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub norm: BatchNormParams,
    /// Whether a max-pool follows.
    pub pool: bool,
}

/// A Linear with PyTorch's weight layout.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatLinear {
    pub in_features: usize,
    pub out_features: usize,
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The whole FP32 VGG11-BN.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatVgg {
    pub config: VggConfig,
    pub blocks: Vec<FloatConvBlock>,
    /// `classifier.0`, `classifier.3`, `classifier.6`.
    pub classifier: Vec<FloatLinear>,
}

/// `classifier` indices of torchvision's three Linears (ReLU and Dropout sit between them).
pub const CLASSIFIER_LINEARS: [usize; 3] = [0, 3, 6];

use crate::host_reads::values;

impl FloatVgg {
    /// Copies the parameters of a Burn model (any backend) out of it. Burn keeps Linear weights as
    /// `[in, out]`; they are transposed here.
    pub fn from_model<B: Backend>(model: &Vgg<B>, config: &VggConfig) -> Self {
        let blocks = model
            .features
            .iter()
            .map(|block| {
                let [out_channels, in_channels, _, _] = block.conv.weight.dims();
                let bias = block.conv.bias.as_ref().map_or_else(|| vec![0.0; out_channels], |b| values(b.val()));
                FloatConvBlock {
                    in_channels,
                    out_channels,
                    weight: values(block.conv.weight.val()),
                    bias,
                    norm: BatchNormParams {
                        weight: values(block.norm.weight.val()),
                        bias: values(block.norm.bias.val()),
                        running_mean: values(block.norm.running_mean.value_sync()),
                        running_var: values(block.norm.running_var.value_sync()),
                        num_batches_tracked: values(block.norm.num_batches_tracked.value_sync())[0] as i64,
                    },
                    pool: block.pool,
                }
            })
            .collect();
        let head = &model.classifier;
        let classifier = [&head.hidden1, &head.hidden2, &head.output]
            .into_iter()
            .map(|linear| {
                let [in_features, out_features] = linear.weight.dims();
                FloatLinear {
                    in_features,
                    out_features,
                    weight: values(linear.weight.val().transpose()),
                    bias: linear.bias.as_ref().map_or_else(|| vec![0.0; out_features], |b| values(b.val())),
                }
            })
            .collect();
        FloatVgg { config: config.clone(), blocks, classifier }
    }

    /// The Burn model holding these parameters (running statistics and batch counts included): the
    /// inverse of [`FloatVgg::from_model`].
    pub fn to_model<B: Backend>(&self, device: &B::Device) -> Vgg<B> {
        let param = |values: &[f32]| Param::from_tensor(Tensor::<B, 1>::from_floats(values, device));
        let running = |values: &[f32]| RunningState::new(Tensor::<B, 1>::from_floats(values, device));
        let mut model = self.config.init::<B>(device);
        for (block, params) in model.features.iter_mut().zip(&self.blocks) {
            let shape = [params.out_channels, params.in_channels, 3, 3];
            block.conv.weight = Param::from_tensor(Tensor::<B, 1>::from_floats(params.weight.as_slice(), device).reshape(shape));
            block.conv.bias = Some(param(&params.bias));
            let norm = &mut block.norm;
            norm.weight = param(&params.norm.weight);
            norm.bias = param(&params.norm.bias);
            norm.running_mean = running(&params.norm.running_mean);
            norm.running_var = running(&params.norm.running_var);
            norm.num_batches_tracked = running(&[params.norm.num_batches_tracked as f32]);
        }
        let head = &mut model.classifier;
        for (linear, params) in [&mut head.hidden1, &mut head.hidden2, &mut head.output].into_iter().zip(&self.classifier) {
            let weight =
                Tensor::<B, 1>::from_floats(params.weight.as_slice(), device).reshape([params.out_features, params.in_features]);
            linear.weight = Param::from_tensor(weight.transpose());
            linear.bias = Some(param(&params.bias));
        }
        model
    }

    /// Reads a torchvision-layout FP32 state_dict (`features.N.*`, `classifier.N.*`) shaped like `config`.
    pub fn from_state_dict(state_dict: &StateDict<'_>, config: &VggConfig) -> Result<Self, QuantError> {
        let classifier = pth_config(config)
            .linears()
            .iter()
            .map(|&(index, in_features, out_features)| {
                Ok(FloatLinear {
                    in_features,
                    out_features,
                    weight: f32_entry(state_dict, &format!("classifier.{index}.weight"), out_features * in_features)?,
                    bias: f32_entry(state_dict, &format!("classifier.{index}.bias"), out_features)?,
                })
            })
            .collect::<Result<_, QuantError>>()?;
        Ok(FloatVgg { config: config.clone(), blocks: float_blocks_from_state_dict(state_dict, config)?, classifier })
    }
}

/// The FP32 conv blocks (`features.N.*`) of a state_dict shaped like `config`: the whole feature
/// extractor of the FP32 model and of the dynamic one, which leaves it in FP32.
pub(crate) fn float_blocks_from_state_dict(
    state_dict: &StateDict<'_>,
    config: &VggConfig,
) -> Result<Vec<FloatConvBlock>, QuantError> {
    pth_config(config)
        .convs()
        .iter()
        .zip(pools_after_convs(config))
        .map(|(conv, pool)| {
            let (c, n) = (format!("features.{}", conv.index), format!("features.{}", conv.index + 1));
            Ok(FloatConvBlock {
                in_channels: conv.in_channels,
                out_channels: conv.out_channels,
                weight: f32_entry(state_dict, &format!("{c}.weight"), conv.out_channels * conv.in_channels * 9)?,
                bias: f32_entry(state_dict, &format!("{c}.bias"), conv.out_channels)?,
                norm: BatchNormParams {
                    weight: f32_entry(state_dict, &format!("{n}.weight"), conv.out_channels)?,
                    bias: f32_entry(state_dict, &format!("{n}.bias"), conv.out_channels)?,
                    running_mean: f32_entry(state_dict, &format!("{n}.running_mean"), conv.out_channels)?,
                    running_var: f32_entry(state_dict, &format!("{n}.running_var"), conv.out_channels)?,
                    num_batches_tracked: i64_scalar(state_dict, &format!("{n}.num_batches_tracked"))?,
                },
                pool,
            })
        })
        .collect()
}

/// Whether each conv of `config` is followed by a max-pool.
pub(crate) fn pools_after_convs(config: &VggConfig) -> Vec<bool> {
    use crate::model::FeatureLayer;
    let mut pools: Vec<bool> = Vec::new();
    for layer in config.features() {
        match layer {
            FeatureLayer::Conv(_) => pools.push(false),
            FeatureLayer::MaxPool => *pools.last_mut().expect("VGG configurations start with a conv") = true,
        }
    }
    pools
}

/// The `.pth` crate's description of the same network.
pub fn pth_config(config: &VggConfig) -> vggq_pth::layout::VggConfig {
    vggq_pth::layout::VggConfig::vgg11_bn(config.width_divisor, config.pool_size, config.hidden, config.classes)
}

/// The `nn.Sequential` index of each conv in torchvision's `make_layers(cfg, batch_norm=True)`, as the
/// `.pth` layout knows them (a conv takes three slots, conv, bn and relu; a max-pool one).
pub fn torchvision_conv_indices(config: &VggConfig) -> Vec<usize> {
    pth_config(config).convs().iter().map(|conv| conv.index).collect()
}

/// The 0-d int64 tensor under `key`.
fn i64_scalar(state_dict: &StateDict<'_>, key: &str) -> Result<i64, QuantError> {
    match state_dict.get(key) {
        Some(Value::Tensor(t)) if t.dtype == DType::I64 && t.numel() == 1 && t.data.len() == 8 => {
            Ok(i64::from_le_bytes(t.data[..8].try_into().expect("8 bytes")))
        }
        Some(_) => Err(QuantError::StateDict { key: key.into(), reason: "is not a 0-d int64 tensor".into() }),
        None => Err(QuantError::StateDict { key: key.into(), reason: "is missing".into() }),
    }
}

/// A contiguous f32 tensor of exactly `len` elements under `key`.
fn f32_entry(state_dict: &StateDict<'_>, key: &str, len: usize) -> Result<Vec<f32>, QuantError> {
    let tensor = match state_dict.get(key) {
        Some(Value::Tensor(t) | Value::Parameter(t)) => t,
        Some(_) => return Err(QuantError::StateDict { key: key.into(), reason: "is not a plain tensor".into() }),
        None => return Err(QuantError::StateDict { key: key.into(), reason: "is missing".into() }),
    };
    if tensor.dtype != DType::F32
        || tensor.numel() != len
        || tensor.strides != vggq_pth::tensor::contiguous_strides(&tensor.shape)
    {
        return Err(QuantError::StateDict {
            key: key.into(),
            reason: format!("expected {len} contiguous f32 values, found {} {:?}", tensor.dtype, tensor.shape),
        });
    }
    Ok(super::state_dict::f32_le(&tensor.data))
}
