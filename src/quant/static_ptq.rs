//! Static post-training quantization as FX does it with `get_default_qconfig_mapping("fbgemm")`:
//! fuse (Conv+BN+ReLU with BN folded, Linear+ReLU), observe activations on calibration batches, convert
//! to int8 with per-channel symmetric weights.
//!
//! Observation points are those FX inserts for this graph: the network input, the output of every fused
//! conv (the max-pool after it shares its parameters) and of every Linear. The adaptive average pool and
//! flatten share their input's parameters, so they add none. FX gives each classifier dropout an
//! observer of its own (as QAT's), which in calibration (eval mode: the dropout is the identity) sees
//! exactly its input's values; conversion keeps no parameters of it.

use std::time::Instant;

use burn::prelude::*;
use indicatif::ProgressBar;
use serde::Serialize;

use super::float_model::{FloatConvBlock, FloatLinear, FloatVgg};
use super::fold::fold_batch_norm;
use super::model::{QuantMethod, QuantizedConv, QuantizedFeatures, QuantizedLinear, QuantizedVgg, QuantizedWeight};
use super::observer::{ActivationObserver, Calibration, MinMax};
use super::qparams::{QParams, QuantRange};
use super::simulate::FloatNet;
use super::QuantError;
use crate::data::Batch;
use crate::model::VggBackend;

/// A conv with its BatchNorm folded in (ReLU follows).
#[derive(Debug, Clone, PartialEq)]
pub struct FusedConv {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out, in, 3, 3]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub pool: bool,
}

/// The float model after FX fusion: what calibration runs and what conversion quantizes.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedVgg {
    pub config: crate::model::VggConfig,
    pub convs: Vec<FusedConv>,
    pub classifier: Vec<FloatLinear>,
}

impl FusedConv {
    /// `block` with its eval-mode BatchNorm folded into the conv.
    pub fn fold(block: &FloatConvBlock) -> Self {
        let (weight, bias) = fold_batch_norm(&block.weight, &block.bias, &block.norm);
        FusedConv { in_channels: block.in_channels, out_channels: block.out_channels, weight, bias, pool: block.pool }
    }
}

impl FusedVgg {
    /// `fuse_fx` in eval mode: every BatchNorm folded into its conv.
    pub fn fuse(model: &FloatVgg) -> Self {
        let convs = model.blocks.iter().map(FusedConv::fold).collect();
        FusedVgg { config: model.config.clone(), convs, classifier: model.classifier.clone() }
    }

    /// Number of activation observation points: input, convs, Linears.
    pub fn observation_points(&self) -> usize {
        1 + self.convs.len() + self.classifier.len()
    }
}

/// Where calibration time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CalibrationTiming {
    pub batches: usize,
    pub images: usize,
    /// Float forward passes, reading the activations back included.
    pub forward_seconds: f64,
    /// Observers (histogram updates).
    pub observer_seconds: f64,
}

/// Runs `batches` through the fused float model and records every observation point with an observer of
/// `method`; returns the activation parameters in observation order (input, convs, Linears).
pub fn calibrate<B: VggBackend>(
    model: &FusedVgg,
    batches: impl IntoIterator<Item = Batch>,
    method: Calibration,
    device: &B::Device,
    progress: &ProgressBar,
) -> Result<(Vec<QParams>, CalibrationTiming), QuantError> {
    let net = FloatNet::<B>::fused(model, device);
    let mut observers: Vec<ActivationObserver> =
        (0..model.observation_points()).map(|_| ActivationObserver::new(method)).collect();
    let mut timing = CalibrationTiming::default();
    for batch in batches {
        let images = Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), batch.shape()), device);
        let started = Instant::now();
        let mut activations = Vec::with_capacity(observers.len());
        net.forward(images, &mut |point, values| activations.push((point, values)));
        timing.forward_seconds += started.elapsed().as_secs_f64();
        let started = Instant::now();
        for (point, values) in &activations {
            observers[*point].observe(values);
        }
        timing.observer_seconds += started.elapsed().as_secs_f64();
        timing.batches += 1;
        timing.images += batch.len();
        progress.inc(1);
    }
    let qparams = observers
        .iter()
        .enumerate()
        .map(|(point, observer)| observer.qparams().ok_or(QuantError::NotCalibrated { point }))
        .collect::<Result<_, _>>()?;
    Ok((qparams, timing))
}

/// `convert_fx`: int8 weights (per-channel symmetric over `weight_ranges`, one list per conv then per
/// Linear), float biases, and the activation parameters `activations` (input, convs, Linears).
pub fn convert(model: &FusedVgg, activations: &[QParams], weight_ranges: &[Vec<MinMax>], method: QuantMethod) -> QuantizedVgg {
    let (input, rest) = activations.split_first().expect("one parameter set per observation point");
    let (conv_outputs, linear_outputs) = rest.split_at(model.convs.len());
    let (conv_ranges, linear_ranges) = weight_ranges.split_at(model.convs.len());
    let convs = model
        .convs
        .iter()
        .zip(conv_outputs)
        .zip(conv_ranges)
        .map(|((conv, &output), ranges)| QuantizedConv {
            weight: QuantizedWeight::symmetric(
                vec![conv.out_channels, conv.in_channels, 3, 3],
                &conv.weight,
                ranges,
                QuantRange::QINT8,
            ),
            bias: conv.bias.clone(),
            output,
            pool: conv.pool,
        })
        .collect();
    let last = model.classifier.len() - 1;
    let classifier = model
        .classifier
        .iter()
        .zip(linear_outputs)
        .zip(linear_ranges)
        .enumerate()
        .map(|(i, ((linear, &output), ranges))| QuantizedLinear {
            weight: QuantizedWeight::symmetric(
                vec![linear.out_features, linear.in_features],
                &linear.weight,
                ranges,
                QuantRange::QINT8,
            ),
            bias: linear.bias.clone(),
            relu: i != last,
            output: Some(output),
        })
        .collect();
    QuantizedVgg { method, config: model.config.clone(), features: QuantizedFeatures::Int8 { input: *input, convs }, classifier }
}

/// Per-channel min/max of every weight of `model` (`PerChannelMinMaxObserver`, axis 0): convs, then
/// Linears.
pub fn weight_ranges(model: &FusedVgg) -> Vec<Vec<MinMax>> {
    let convs = model.convs.iter().map(|c| MinMax::per_channel(&c.weight, c.out_channels));
    let linears = model.classifier.iter().map(|l| MinMax::per_channel(&l.weight, l.out_features));
    convs.chain(linears).collect()
}

/// The whole static flow: fuse, calibrate on `batches`, convert.
pub fn quantize_static<B: VggBackend>(
    model: &FloatVgg,
    batches: impl IntoIterator<Item = Batch>,
    method: Calibration,
    device: &B::Device,
    progress: &ProgressBar,
) -> Result<(QuantizedVgg, CalibrationTiming), QuantError> {
    let fused = FusedVgg::fuse(model);
    let (activations, timing) = calibrate::<B>(&fused, batches, method, device, progress)?;
    Ok((convert(&fused, &activations, &weight_ranges(&fused), QuantMethod::Static), timing))
}
