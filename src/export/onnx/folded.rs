//! The FP32 network as plain arrays, BatchNorm folded into the convolutions as torch.onnx folds it when
//! exporting an eval-mode model: the input of every ONNX exporter, independent of Burn.

use burn::prelude::*;

use crate::model::{Vgg, VggConfig};

/// torch.nn.BatchNorm2d's epsilon, which our `BatchNorm2d` uses too.
const BATCH_NORM_EPSILON: f32 = 1e-5;

/// A 3x3 convolution (padding 1) with its BatchNorm folded in, followed by ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedConv {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out, in, 3, 3]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// Whether a 2x2 max-pool follows the ReLU.
    pub pool_after: bool,
}

/// A fully connected layer in PyTorch's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs, inputs]`, row-major (torch.nn.Linear's layout; Burn stores the transpose).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// VGG11-BN for inference: convs (BN folded), adaptive average pool, three dense layers (ReLU after the
/// first two; dropout is the identity at inference).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedVgg {
    pub input_size: usize,
    /// Side of the adaptive average pool's output.
    pub pool_size: usize,
    pub convs: Vec<FoldedConv>,
    /// hidden1, hidden2, output.
    pub dense: [Dense; 3],
}

impl FoldedVgg {
    /// Reads the weights of `model` (built from `config`) and folds every BatchNorm's running statistics
    /// into its convolution: `w' = w * gamma / sqrt(var + eps)`, `b' = (b - mean) * gamma / sqrt(var + eps) + beta`.
    pub fn from_model<B: Backend>(model: &Vgg<B>, config: &VggConfig) -> Self {
        let convs = model
            .features
            .iter()
            .map(|block| {
                let [out_channels, in_channels, kh, kw] = block.conv.weight.dims();
                let mut weight = values(block.conv.weight.val());
                let mut bias = match &block.conv.bias {
                    Some(bias) => values(bias.val()),
                    None => vec![0.0; out_channels],
                };
                let gamma = values(block.norm.weight.val());
                let beta = values(block.norm.bias.val());
                let mean = values(block.norm.running_mean.value());
                let var = values(block.norm.running_var.value());
                let per_filter = in_channels * kh * kw;
                for o in 0..out_channels {
                    let scale = gamma[o] / (var[o] + BATCH_NORM_EPSILON).sqrt();
                    weight[o * per_filter..(o + 1) * per_filter].iter_mut().for_each(|w| *w *= scale);
                    bias[o] = (bias[o] - mean[o]) * scale + beta[o];
                }
                FoldedConv { in_channels, out_channels, weight, bias, pool_after: block.pool }
            })
            .collect();
        let head = &model.classifier;
        FoldedVgg {
            input_size: config.input_size,
            pool_size: config.pool_size,
            convs,
            dense: [dense(&head.hidden1), dense(&head.hidden2), dense(&head.output)],
        }
    }

    pub fn classes(&self) -> usize {
        self.dense[2].outputs
    }
}

fn dense<B: Backend>(linear: &burn::nn::Linear<B>) -> Dense {
    let [inputs, outputs] = linear.weight.dims();
    Dense {
        inputs,
        outputs,
        weight: values(linear.weight.val().transpose()),
        bias: match &linear.bias {
            Some(bias) => values(bias.val()),
            None => vec![0.0; outputs],
        },
    }
}

fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().expect("converted to f32 above")
}
