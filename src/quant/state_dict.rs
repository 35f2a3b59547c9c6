//! PyTorch state_dicts of the FP32 and quantized models, key for key what `model.state_dict()` holds in
//! PyTorch for the same variant ([`vggq_pth::layout`]); every state_dict built here is validated
//! against that layout before it is returned.

use std::borrow::Cow;

use vggq_pth::layout::{layout, validate, Variant};
use vggq_pth::tensor::{channels_last_strides, contiguous_strides, to_channels_last};
use vggq_pth::{DType, PackedLinearParams, QTensor, Quantizer, StateDict, Tensor, Value};

use super::float_model::{
    float_blocks_from_state_dict, pools_after_convs, pth_config, torchvision_conv_indices, FloatConvBlock, FloatVgg,
    CLASSIFIER_LINEARS,
};
use super::model::{QuantMethod, QuantizedConv, QuantizedFeatures, QuantizedLinear, QuantizedVgg, QuantizedWeight, WeightScheme};
use super::QParams;
use super::QuantError;

fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Tensor<'static> {
    Tensor {
        dtype: DType::F32,
        strides: contiguous_strides(&shape),
        shape,
        data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

fn vector(values: &[f32]) -> Value<'static> {
    Value::Tensor(f32_tensor(vec![values.len()], values))
}

/// `features.{i}` (conv) and `features.{i+1}` (BatchNorm) of an FP32 block.
fn float_block_entries(index: usize, block: &FloatConvBlock, entries: &mut Vec<(String, Value<'static>)>) {
    let (conv, norm) = (format!("features.{index}"), format!("features.{}", index + 1));
    let shape = vec![block.out_channels, block.in_channels, 3, 3];
    entries.push((format!("{conv}.weight"), Value::Tensor(f32_tensor(shape, &block.weight))));
    entries.push((format!("{conv}.bias"), vector(&block.bias)));
    entries.push((format!("{norm}.weight"), vector(&block.norm.weight)));
    entries.push((format!("{norm}.bias"), vector(&block.norm.bias)));
    entries.push((format!("{norm}.running_mean"), vector(&block.norm.running_mean)));
    entries.push((format!("{norm}.running_var"), vector(&block.norm.running_var)));
    entries.push((format!("{norm}.num_batches_tracked"), Value::Tensor(Tensor::scalar_i64(block.norm.num_batches_tracked))));
}

fn finish(
    entries: Vec<(String, Value<'static>)>,
    config: &crate::model::VggConfig,
    variant: Variant,
    name: &'static str,
) -> Result<StateDict<'static>, QuantError> {
    let expected = layout(&pth_config(config), variant);
    let state_dict = StateDict { entries, metadata: expected.metadata.clone() };
    validate(&state_dict, &expected).map_err(|source| QuantError::Layout { variant: name, source })?;
    Ok(state_dict)
}

/// The FP32 model's state_dict (torchvision's `vgg11_bn` keys).
pub fn fp32_state_dict(model: &FloatVgg) -> Result<StateDict<'static>, QuantError> {
    let mut entries = Vec::new();
    for (index, block) in torchvision_conv_indices(&model.config).into_iter().zip(&model.blocks) {
        float_block_entries(index, block, &mut entries);
    }
    for (index, linear) in CLASSIFIER_LINEARS.iter().zip(&model.classifier) {
        let shape = vec![linear.out_features, linear.in_features];
        entries.push((format!("classifier.{index}.weight"), Value::Tensor(f32_tensor(shape, &linear.weight))));
        entries.push((format!("classifier.{index}.bias"), vector(&linear.bias)));
    }
    finish(entries, &model.config, Variant::Fp32, "fp32")
}

/// A qint8 weight as PyTorch stores it; 4-d (conv) weights channels-last, as fbgemm hands them back.
fn qtensor(weight: &QuantizedWeight) -> QTensor<'static> {
    let bytes: Vec<u8> = weight.values.iter().map(|&v| v as u8).collect();
    let (data, strides) = match *weight.shape.as_slice() {
        [n, c, h, w] => (
            to_channels_last([n, c, h, w], 1, &bytes).expect("a weight holds shape.product() values"),
            channels_last_strides(&weight.shape),
        ),
        _ => (bytes, contiguous_strides(&weight.shape)),
    };
    let quantizer = match weight.scheme {
        WeightScheme::PerTensor => {
            Quantizer::PerTensorAffine { scale: f64::from(weight.scales[0]), zero_point: i64::from(weight.zero_points[0]) }
        }
        WeightScheme::PerChannel => Quantizer::PerChannelAffine {
            scales: weight.scales.iter().map(|&s| f64::from(s)).collect(),
            zero_points: weight.zero_points.iter().map(|&z| i64::from(z)).collect(),
            axis: 0,
        },
    };
    QTensor { dtype: DType::QInt8, shape: weight.shape.clone(), strides, data: Cow::Owned(data), quantizer }
}

fn scalar_entries(prefix: &str, scale: f32, zero_point: i32, entries: &mut Vec<(String, Value<'static>)>) {
    entries.push((format!("{prefix}scale"), Value::Tensor(Tensor::scalar_f32(scale))));
    entries.push((format!("{prefix}zero_point"), Value::Tensor(Tensor::scalar_i64(i64::from(zero_point)))));
}

/// The state_dict PyTorch holds for `model`: `quantize_dynamic`'s for [`QuantMethod::Dynamic`],
/// `convert_fx`'s otherwise.
pub fn quantized_state_dict(model: &QuantizedVgg) -> Result<StateDict<'static>, QuantError> {
    let mut entries = Vec::new();
    match &model.features {
        QuantizedFeatures::Float(blocks) => {
            for (index, block) in torchvision_conv_indices(&model.config).into_iter().zip(blocks) {
                float_block_entries(index, block, &mut entries);
            }
        }
        QuantizedFeatures::Int8 { input, convs } => {
            entries.push(("features_0_input_scale_0".into(), Value::Tensor(Tensor::scalar_f32(input.scale))));
            entries
                .push(("features_0_input_zero_point_0".into(), Value::Tensor(Tensor::scalar_i64(i64::from(input.zero_point)))));
            for (index, conv) in torchvision_conv_indices(&model.config).into_iter().zip(convs) {
                let prefix = format!("features.{index}.");
                entries.push((format!("{prefix}weight"), Value::QTensor(qtensor(&conv.weight))));
                entries.push((format!("{prefix}bias"), Value::Parameter(f32_tensor(vec![conv.bias.len()], &conv.bias))));
                scalar_entries(&prefix, conv.output.scale, conv.output.zero_point, &mut entries);
            }
        }
    }
    for (index, linear) in CLASSIFIER_LINEARS.iter().zip(&model.classifier) {
        let prefix = format!("classifier.{index}.");
        // A dynamic Linear's output is float; PyTorch still saves its default scale 1.0 and zero point 0.
        let output = linear.output.unwrap_or(super::QParams { scale: 1.0, zero_point: 0 });
        scalar_entries(&prefix, output.scale, output.zero_point, &mut entries);
        entries.push((format!("{prefix}_packed_params.dtype"), Value::Dtype(DType::QInt8)));
        entries.push((
            format!("{prefix}_packed_params._packed_params"),
            Value::PackedLinear(PackedLinearParams {
                weight: qtensor(&linear.weight),
                bias: Some(f32_tensor(vec![linear.bias.len()], &linear.bias)),
            }),
        ));
    }
    let (variant, name) = match model.method {
        QuantMethod::Dynamic => (Variant::DynamicInt8, "dynamic_int8"),
        QuantMethod::Static => (Variant::StaticInt8Fx, "static_int8_fx"),
        QuantMethod::Qat => (Variant::QatInt8Fx, "qat_int8_fx"),
    };
    finish(entries, &model.config, variant, name)
}

/// Reads an int8 state_dict of `method` back into a [`QuantizedVgg`] shaped like `config`: what
/// [`quantized_state_dict`] writes, or what PyTorch's `quantize_dynamic` / `convert_fx` wrote (any
/// strides). The `vggq export` step builds its ONNX files from these, and PyTorch's own parameters run
/// through [`super::simulate`] this way.
pub fn int8_from_state_dict(
    state_dict: &StateDict<'_>,
    config: &crate::model::VggConfig,
    method: QuantMethod,
) -> Result<QuantizedVgg, QuantError> {
    let features = match method {
        QuantMethod::Dynamic => QuantizedFeatures::Float(float_blocks_from_state_dict(state_dict, config)?),
        QuantMethod::Static | QuantMethod::Qat => int8_features(state_dict, config)?,
    };
    let classifier = CLASSIFIER_LINEARS
        .iter()
        .enumerate()
        .map(|(i, index)| {
            let prefix = format!("classifier.{index}.");
            let key = format!("{prefix}_packed_params._packed_params");
            let Some(Value::PackedLinear(packed)) = state_dict.get(&key) else {
                return Err(QuantError::StateDict { key, reason: "is not a packed Linear".into() });
            };
            let bias = packed.bias.as_ref().map_or_else(|| vec![0.0; packed.weight.shape[0]], |b| f32_le(&b.data));
            // A dynamic Linear's saved scale and zero point are PyTorch's unused defaults: its output is float.
            let output = match method {
                QuantMethod::Dynamic => None,
                QuantMethod::Static | QuantMethod::Qat => Some(output_of(state_dict, &prefix)?),
            };
            Ok(QuantizedLinear {
                weight: weight_from_qtensor(&packed.weight, &key)?,
                bias,
                relu: i + 1 < CLASSIFIER_LINEARS.len(),
                output,
            })
        })
        .collect::<Result<_, QuantError>>()?;
    Ok(QuantizedVgg { method, config: config.clone(), features, classifier })
}

/// The quantized input and int8 convs of a `convert_fx` state_dict.
fn int8_features(state_dict: &StateDict<'_>, config: &crate::model::VggConfig) -> Result<QuantizedFeatures, QuantError> {
    let input = QParams {
        scale: f32_scalar(state_dict, "features_0_input_scale_0")?,
        zero_point: i32_scalar(state_dict, "features_0_input_zero_point_0")?,
    };
    let convs = pth_config(config)
        .convs()
        .iter()
        .zip(pools_after_convs(config))
        .map(|(conv, pool)| {
            let prefix = format!("features.{}.", conv.index);
            Ok(QuantizedConv {
                weight: weight_of(state_dict, &format!("{prefix}weight"))?,
                bias: f32_values(state_dict, &format!("{prefix}bias"))?,
                output: output_of(state_dict, &prefix)?,
                pool,
            })
        })
        .collect::<Result<_, QuantError>>()?;
    Ok(QuantizedFeatures::Int8 { input, convs })
}

/// FP32 values from a tensor's little-endian bytes, as `torch.save` stores them.
pub(crate) fn f32_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn plain_tensor<'a>(state_dict: &'a StateDict<'_>, key: &str) -> Result<&'a Tensor<'a>, QuantError> {
    match state_dict.get(key) {
        Some(Value::Tensor(t) | Value::Parameter(t)) => Ok(t),
        _ => Err(QuantError::StateDict { key: key.into(), reason: "is missing or not a plain tensor".into() }),
    }
}

fn f32_values(state_dict: &StateDict<'_>, key: &str) -> Result<Vec<f32>, QuantError> {
    let tensor = plain_tensor(state_dict, key)?;
    if tensor.dtype != DType::F32 {
        return Err(QuantError::StateDict { key: key.into(), reason: format!("has dtype {}, expected f32", tensor.dtype) });
    }
    Ok(f32_le(&tensor.data))
}

fn f32_scalar(state_dict: &StateDict<'_>, key: &str) -> Result<f32, QuantError> {
    f32_values(state_dict, key)?
        .first()
        .copied()
        .ok_or_else(|| QuantError::StateDict { key: key.into(), reason: "is empty".into() })
}

fn i32_scalar(state_dict: &StateDict<'_>, key: &str) -> Result<i32, QuantError> {
    let tensor = plain_tensor(state_dict, key)?;
    match (tensor.dtype, tensor.data.get(..8)) {
        (DType::I64, Some(bytes)) => zero_point(i64::from_le_bytes(bytes.try_into().expect("8 bytes")), key),
        _ => Err(QuantError::StateDict { key: key.into(), reason: "is not an int64 scalar".into() }),
    }
}

fn output_of(state_dict: &StateDict<'_>, prefix: &str) -> Result<QParams, QuantError> {
    Ok(QParams {
        scale: f32_scalar(state_dict, &format!("{prefix}scale"))?,
        zero_point: i32_scalar(state_dict, &format!("{prefix}zero_point"))?,
    })
}

fn weight_of(state_dict: &StateDict<'_>, key: &str) -> Result<QuantizedWeight, QuantError> {
    match state_dict.get(key) {
        Some(Value::QTensor(q)) => weight_from_qtensor(q, key),
        _ => Err(QuantError::StateDict { key: key.into(), reason: "is missing or not a quantized tensor".into() }),
    }
}

/// A qint8 tensor with any strides as a row-major [`QuantizedWeight`].
fn weight_from_qtensor(q: &QTensor<'_>, key: &str) -> Result<QuantizedWeight, QuantError> {
    if q.dtype != DType::QInt8 {
        return Err(QuantError::StateDict { key: key.into(), reason: format!("has dtype {}, expected qint8", q.dtype) });
    }
    let numel: usize = q.shape.iter().product();
    let row_major = contiguous_strides(&q.shape);
    let values = (0..numel)
        .map(|i| {
            let offset: usize = row_major.iter().zip(&q.shape).zip(&q.strides).map(|((&r, &d), &s)| (i / r % d) * s).sum();
            q.data[offset] as i8
        })
        .collect();
    let (scheme, scales, zero_points) = match &q.quantizer {
        Quantizer::PerTensorAffine { scale, zero_point } => (WeightScheme::PerTensor, &[*scale][..], &[*zero_point][..]),
        Quantizer::PerChannelAffine { scales, zero_points, .. } => (WeightScheme::PerChannel, &scales[..], &zero_points[..]),
    };
    let scales = scales.iter().map(|&s| weight_scale(s, key)).collect::<Result<_, _>>()?;
    let zero_points = zero_points.iter().map(|&z| zero_point(z, key)).collect::<Result<_, _>>()?;
    Ok(QuantizedWeight { shape: q.shape.clone(), values, scheme, scales, zero_points })
}

/// A scale as the kernels use it (float32, as PyTorch's observers compute it), refused where it is none:
/// a float64 that narrows to zero or infinity would divide by zero or scale every value to infinity.
fn weight_scale(scale: f64, key: &str) -> Result<f32, QuantError> {
    let narrowed = scale as f32;
    if narrowed.is_finite() && narrowed > 0.0 {
        Ok(narrowed)
    } else {
        Err(QuantError::StateDict { key: key.into(), reason: format!("has scale {scale:?}, not a positive float32") })
    }
}

/// A zero point as the kernels use it (int32), refused rather than wrapped where the file's int64 is wider.
fn zero_point(zero_point: i64, key: &str) -> Result<i32, QuantError> {
    i32::try_from(zero_point)
        .map_err(|_| QuantError::StateDict { key: key.into(), reason: format!("has zero point {zero_point}, beyond int32") })
}
