//! VGG11-BN (configuration "A" with batch norm) in Burn, shaped like torchvision's `vgg11_bn` so its
//! weights map one-to-one onto torchvision's state_dict.

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vggq_core::{ModelShape, ProfileName};

use super::batch_norm::{renumbered, BatchNorm2d};
use super::kernels::{self, VggBackend};

/// One entry of a VGG feature configuration: a 3x3 conv (+BN +ReLU) of the given width, or a 2x2 max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureLayer {
    Conv(usize),
    MaxPool,
}

/// torchvision's configuration "A" (VGG11) at full width.
pub const VGG11_FEATURES: [FeatureLayer; 13] = {
    use FeatureLayer::{Conv, MaxPool};
    [
        Conv(64),
        MaxPool,
        Conv(128),
        MaxPool,
        Conv(256),
        Conv(256),
        MaxPool,
        Conv(512),
        Conv(512),
        MaxPool,
        Conv(512),
        Conv(512),
        MaxPool,
    ]
};

/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: normal with std sqrt(2 / (out_channels x 3 x 3)).
const CONV_INIT: Initializer = Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true };

/// The five max-pools halve the input five times.
pub const FEATURE_STRIDE: usize = 32;

/// The shape of a VGG11-BN: everything that changes the tensors, nothing about training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggConfig {
    /// Conv widths are torchvision's divided by this (1 = the real VGG11-BN).
    pub width_divisor: usize,
    /// Side of the square input images in pixels; a multiple of 32.
    pub input_size: usize,
    /// Side of the adaptive average pool's output. torchvision uses 7 for 224-px ImageNet input; the seed
    /// rebuilds it as input/32 so the pool is an identity at 128 px (4x4).
    pub pool_size: usize,
    /// Width of the two hidden classifier layers (4096 in torchvision).
    pub hidden: usize,
    pub classes: usize,
    /// Dropout probability of the classifier (0.5 in torchvision).
    pub dropout: f64,
}

impl VggConfig {
    /// The seed's model: 128-px input, 4x4 pool, Linear 8192 -> 4096 -> 4096 -> 10.
    pub fn seed() -> Self {
        Self::of_shape(ProfileName::Full.model_shape(), 10)
    }

    /// A profile's network for `classes` classes.
    pub fn of_shape(shape: ModelShape, classes: usize) -> Self {
        Self::for_input(shape.width_divisor, shape.input_size, shape.hidden, classes)
    }

    /// A VGG11-BN whose average pool is input/32, as the seed rebuilds it.
    pub fn for_input(width_divisor: usize, input_size: usize, hidden: usize, classes: usize) -> Self {
        Self { width_divisor, input_size, pool_size: input_size / FEATURE_STRIDE, hidden, classes, dropout: 0.5 }
    }

    /// The feature configuration at this width.
    pub fn features(&self) -> Vec<FeatureLayer> {
        VGG11_FEATURES
            .iter()
            .map(|layer| match *layer {
                FeatureLayer::Conv(width) => FeatureLayer::Conv(width / self.width_divisor),
                FeatureLayer::MaxPool => FeatureLayer::MaxPool,
            })
            .collect()
    }

    /// Channels leaving the last conv.
    pub fn feature_channels(&self) -> usize {
        let last_conv = VGG11_FEATURES.iter().rev().find_map(|layer| match layer {
            FeatureLayer::Conv(width) => Some(width),
            FeatureLayer::MaxPool => None,
        });
        last_conv.expect("VGG11 has convolutions") / self.width_divisor
    }

    /// Inputs of the first classifier layer: channels x pool x pool.
    pub fn classifier_inputs(&self) -> usize {
        self.feature_channels() * self.pool_size * self.pool_size
    }

    /// The network initialised as torchvision's `VGG(init_weights=True)` initialises its features (conv
    /// weights `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, conv biases 0, BatchNorm weight 1
    /// and bias 0) and as the seed builds its new classifier (`nn.Linear`'s default: weight and bias
    /// uniform in ±1/sqrt(fan_in), which is Burn's default Linear).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg<B> {
        let mut features = Vec::new();
        let mut in_channels = 3;
        for layer in self.features() {
            match layer {
                FeatureLayer::Conv(out_channels) => {
                    let mut conv = Conv2dConfig::new([in_channels, out_channels], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_initializer(CONV_INIT)
                        .init(device);
                    conv.bias = Some(Param::from_tensor(Tensor::zeros([out_channels], device)));
                    features.push(ConvBlock { conv, norm: BatchNorm2d::new(out_channels, device), pool: false });
                    in_channels = out_channels;
                }
                FeatureLayer::MaxPool => {
                    features.last_mut().expect("VGG configurations start with a conv").pool = true;
                }
            }
        }
        Vgg {
            features,
            avgpool: AdaptiveAvgPool2dConfig::new([self.pool_size, self.pool_size]).init(),
            classifier: Classifier {
                hidden1: LinearConfig::new(self.classifier_inputs(), self.hidden).init(device),
                hidden2: LinearConfig::new(self.hidden, self.hidden).init(device),
                output: LinearConfig::new(self.hidden, self.classes).init(device),
                dropout: DropoutConfig::new(self.dropout).init(),
            },
        }
    }
}

/// Conv 3x3 (padding 1) -> BatchNorm -> ReLU, then a 2x2 max-pool where the configuration has one.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    pub conv: Conv2d<B>,
    pub norm: BatchNorm2d<B>,
    /// Whether a max-pool follows this block.
    pub pool: bool,
}

/// torchvision's classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    pub hidden1: Linear<B>,
    pub hidden2: Linear<B>,
    pub output: Linear<B>,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct Vgg<B: Backend> {
    pub features: Vec<ConvBlock<B>>,
    pub avgpool: AdaptiveAvgPool2d,
    pub classifier: Classifier<B>,
}

impl<B: Backend> Vgg<B> {
    /// The same model with its parameters and running statistics numbered in order from 0. Burn draws
    /// each id at random when it creates one, and its records hold them: numbered, a saved record is a
    /// function of the values alone.
    pub fn with_numbered_ids(self) -> Self {
        let mut count = 0;
        let mut next = || {
            count += 1;
            ParamId::from(count - 1)
        };
        let features = self
            .features
            .into_iter()
            .map(|block| {
                let conv = Conv2d {
                    weight: renumbered(block.conv.weight, next()),
                    bias: block.conv.bias.map(|bias| renumbered(bias, next())),
                    ..block.conv
                };
                ConvBlock { conv, norm: block.norm.with_ids(&mut next), pool: block.pool }
            })
            .collect();
        let mut linear = |layer: Linear<B>| Linear {
            weight: renumbered(layer.weight, next()),
            bias: layer.bias.map(|bias| renumbered(bias, next())),
        };
        let head = self.classifier;
        let classifier = Classifier {
            hidden1: linear(head.hidden1),
            hidden2: linear(head.hidden2),
            output: linear(head.output),
            dropout: head.dropout,
        };
        Vgg { features, avgpool: self.avgpool, classifier }
    }
}

impl<B: VggBackend> Vgg<B> {
    /// torchvision's `model.features(x)`: [N, 3, H, W] -> [N, C, H/32, W/32].
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.features.iter().fold(images, |x, block| {
            let x = block.norm.forward_relu(block.conv_forward(x));
            if block.pool {
                kernels::max_pool2x2(x)
            } else {
                x
            }
        })
    }

    /// Logits: [N, 3, H, W] -> [N, classes]. Dropout and batch statistics apply on autodiff backends
    /// only, as in Burn (`model.valid()` gives the evaluation model).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.avgpool.forward(self.features(images)).flatten::<2>(1, 3);
        let head = &self.classifier;
        let linear = |layer: &Linear<B>, x| kernels::linear(x, layer.weight.val(), linear_bias(layer));
        let x = head.dropout.forward(Relu::new().forward(linear(&head.hidden1, x)));
        let x = head.dropout.forward(Relu::new().forward(linear(&head.hidden2, x)));
        linear(&head.output, x)
    }

    /// Folds every BatchNorm's pending update of its running statistics in
    /// ([`BatchNorm2d::fold_running_statistics`]).
    pub fn fold_running_statistics(&self) {
        for block in &self.features {
            block.norm.fold_running_statistics();
        }
    }

    /// What a training forward pass of `images` images draws from the backend's generator once the
    /// model's parameters are drawn (the classifier's two dropout masks, as [`forward`](Self::forward)
    /// and QAT's pass draw them), drawn without the pass: a resumed training puts the generator where the
    /// finished epochs left it.
    pub fn draw_dropout_masks(&self, images: usize, device: &B::Device) {
        let head = &self.classifier;
        for hidden in [&head.hidden1, &head.hidden2] {
            let [_, features] = hidden.weight.dims();
            let _ = head.dropout.forward(Tensor::<B, 2>::zeros([images, features], device));
        }
    }
}

/// The bias of one of the classifier's Linears (each has one, as in torchvision).
pub fn linear_bias<B: Backend>(layer: &Linear<B>) -> Tensor<B, 1> {
    layer.bias.as_ref().expect("the classifier's Linears have biases").val()
}

impl<B: VggBackend> ConvBlock<B> {
    /// The block's 3x3 convolution (padding 1) with its bias.
    pub fn conv_forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let bias = self.conv.bias.as_ref().expect("VGG's convolutions have biases").val();
        kernels::conv3x3(x, self.conv.weight.val(), bias)
    }
}
