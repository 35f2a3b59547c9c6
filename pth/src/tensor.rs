//! The plain data a state_dict holds: tensors, quantized tensors, packed Linear parameters.
//!
//! Tensors borrow their bytes (`Cow<'a, [u8]>`) so that a caller holding the weights can hand them to
//! the writer without a copy, and so that the reader can hand out slices of the file it parsed.

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};

/// Element types found in the state_dicts this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `torch.float32`, stored in a `torch.FloatStorage`.
    F32,
    /// `torch.float64`, the dtype of per-channel quantization scales.
    F64,
    /// `torch.int64`: `num_batches_tracked`, zero points.
    I64,
    /// `torch.qint8`: signed 8-bit quantized values.
    QInt8,
    /// `torch.quint8`: unsigned 8-bit quantized values.
    QUInt8,
}

impl DType {
    /// Every dtype, for lookups by name.
    pub const ALL: [DType; 5] = [DType::F32, DType::F64, DType::I64, DType::QInt8, DType::QUInt8];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::QInt8 | DType::QUInt8 => 1,
        }
    }

    /// Whether tensors of this dtype need a quantizer (`_rebuild_qtensor`).
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::QInt8 | DType::QUInt8)
    }

    /// The attribute of module `torch` naming this dtype, as in `torch.qint8`.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::QInt8 => "qint8",
            DType::QUInt8 => "quint8",
        }
    }

    /// The legacy storage class (in module `torch`) that torch.save names in each persistent id.
    pub fn storage_class(self) -> &'static str {
        match self {
            DType::F32 => "FloatStorage",
            DType::F64 => "DoubleStorage",
            DType::I64 => "LongStorage",
            DType::QInt8 => "QInt8Storage",
            DType::QUInt8 => "QUInt8Storage",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "torch.{}", self.torch_name())
    }
}

/// Strides of a row-major (contiguous) tensor of `shape`, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// Strides of a 4-d `[N, C, H, W]` tensor stored channels-last (NHWC), as fbgemm returns quantized
/// convolution weights; other ranks get contiguous strides.
pub fn channels_last_strides(shape: &[usize]) -> Vec<usize> {
    match *shape {
        [_, c, h, w] => vec![c * h * w, 1, w * c, c],
        _ => contiguous_strides(shape),
    }
}

/// Reorders the row-major bytes of a 4-d `[N, C, H, W]` tensor with `element_size`-byte elements
/// into channels-last storage, to pair with [`channels_last_strides`] (how PyTorch saves fbgemm's
/// quantized convolution weights). `None` if `data` does not hold exactly that many elements.
pub fn to_channels_last(shape: [usize; 4], element_size: usize, data: &[u8]) -> Option<Vec<u8>> {
    let [n, c, h, w] = shape;
    let numel = n.checked_mul(c)?.checked_mul(h)?.checked_mul(w)?;
    if numel.checked_mul(element_size)? != data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    let source = ((ni * c + ci) * h + hi) * w + wi;
                    out.extend_from_slice(&data[source * element_size..(source + 1) * element_size]);
                }
            }
        }
    }
    Some(out)
}

/// A dense tensor: `torch._utils._rebuild_tensor_v2(storage, 0, shape, strides, False, OrderedDict())`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<'a> {
    /// Element type; never a quantized dtype (those are [`QTensor`]s).
    pub dtype: DType,
    /// Sizes; empty for a 0-d scalar such as `num_batches_tracked`.
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub strides: Vec<usize>,
    /// The whole storage, little-endian: exactly `numel * dtype.size()` bytes.
    pub data: Cow<'a, [u8]>,
}

impl<'a> Tensor<'a> {
    /// A contiguous `f32` tensor that borrows `values` (no copy on little-endian hosts).
    pub fn from_f32(shape: Vec<usize>, values: &'a [f32]) -> Self {
        Tensor { dtype: DType::F32, strides: contiguous_strides(&shape), shape, data: f32_bytes(values) }
    }

    /// A 0-d `float32` tensor, such as a quantized module's output `scale`.
    pub fn scalar_f32(value: f32) -> Tensor<'static> {
        Tensor { dtype: DType::F32, shape: vec![], strides: vec![], data: Cow::Owned(value.to_le_bytes().to_vec()) }
    }

    /// A 0-d `int64` tensor, such as `num_batches_tracked` or a `zero_point`.
    pub fn scalar_i64(value: i64) -> Tensor<'static> {
        Tensor { dtype: DType::I64, shape: vec![], strides: vec![], data: Cow::Owned(value.to_le_bytes().to_vec()) }
    }

    /// Number of elements (1 for a 0-d tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The signature (dtype, shape, strides) that layouts compare.
    pub fn signature(&self) -> TensorSignature {
        TensorSignature { dtype: self.dtype, shape: self.shape.clone(), strides: self.strides.clone(), qscheme: None }
    }

    /// Checks that the storage holds exactly the elements the shape and strides address.
    pub(crate) fn check(&self, key: &str) -> Result<()> {
        if self.dtype.is_quantized() {
            return Err(invalid(key, format!("dtype {} needs a quantizer; use a QTensor", self.dtype)));
        }
        check_storage(key, self.dtype, &self.shape, &self.strides, self.data.len())
    }
}

/// How a quantized tensor maps integers to reals.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantizer {
    /// `torch.per_tensor_affine`: one scale and zero point for the whole tensor.
    PerTensorAffine {
        /// Real value of one integer step.
        scale: f64,
        /// Integer that represents 0.0.
        zero_point: i64,
    },
    /// `torch.per_channel_affine`: one scale and zero point per index along `axis`.
    /// PyTorch pickles them as a `float64` and an `int64` tensor.
    PerChannelAffine {
        /// Scales, one per channel.
        scales: Vec<f64>,
        /// Zero points, one per channel.
        zero_points: Vec<i64>,
        /// The channel dimension.
        axis: usize,
    },
}

/// The quantization scheme of a [`Quantizer`], as layouts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QScheme {
    /// `torch.per_tensor_affine`.
    PerTensorAffine,
    /// `torch.per_channel_affine` along `axis`.
    PerChannelAffine {
        /// The channel dimension.
        axis: usize,
    },
}

impl QScheme {
    /// The attribute of module `torch` naming this scheme.
    pub fn torch_name(self) -> &'static str {
        match self {
            QScheme::PerTensorAffine => "per_tensor_affine",
            QScheme::PerChannelAffine { .. } => "per_channel_affine",
        }
    }
}

impl fmt::Display for QScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QScheme::PerTensorAffine => write!(f, "torch.per_tensor_affine"),
            QScheme::PerChannelAffine { axis } => write!(f, "torch.per_channel_affine axis={axis}"),
        }
    }
}

impl Quantizer {
    /// The scheme, without the parameters.
    pub fn scheme(&self) -> QScheme {
        match self {
            Quantizer::PerTensorAffine { .. } => QScheme::PerTensorAffine,
            Quantizer::PerChannelAffine { axis, .. } => QScheme::PerChannelAffine { axis: *axis },
        }
    }
}

/// A quantized tensor: `torch._utils._rebuild_qtensor(storage, 0, shape, strides, quantizer, False, OrderedDict())`.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor<'a> {
    /// [`DType::QInt8`] or [`DType::QUInt8`].
    pub dtype: DType,
    /// Sizes.
    pub shape: Vec<usize>,
    /// Strides in elements; fbgemm's convolution weights are channels-last ([`channels_last_strides`]).
    pub strides: Vec<usize>,
    /// The integer storage, one byte per element.
    pub data: Cow<'a, [u8]>,
    /// Scale(s) and zero point(s).
    pub quantizer: Quantizer,
}

impl QTensor<'_> {
    /// The signature (dtype, shape, strides, qscheme) that layouts compare.
    pub fn signature(&self) -> TensorSignature {
        TensorSignature {
            dtype: self.dtype,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            qscheme: Some(self.quantizer.scheme()),
        }
    }

    pub(crate) fn check(&self, key: &str) -> Result<()> {
        if !self.dtype.is_quantized() {
            return Err(invalid(key, format!("a quantized tensor cannot have dtype {}", self.dtype)));
        }
        check_storage(key, self.dtype, &self.shape, &self.strides, self.data.len())?;
        if let Quantizer::PerChannelAffine { scales, zero_points, axis } = &self.quantizer {
            let channels = *self
                .shape
                .get(*axis)
                .ok_or_else(|| invalid(key, format!("axis {axis} is out of range for rank {}", self.shape.len())))?;
            if scales.len() != channels || zero_points.len() != channels {
                return Err(invalid(
                    key,
                    format!("{} scales and {} zero points for {channels} channels", scales.len(), zero_points.len()),
                ));
            }
        }
        Ok(())
    }
}

/// `LinearPackedParams._packed_params` of a quantized Linear: the tuple `(weight, bias)`, the bias
/// pickled as a `torch.nn.Parameter`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedLinearParams<'a> {
    /// The quantized weight, `[out_features, in_features]`.
    pub weight: QTensor<'a>,
    /// The float bias, `[out_features]`, or `None` for a Linear without bias.
    pub bias: Option<Tensor<'a>>,
}

/// One value of a state_dict.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A plain tensor (buffers, float weights, scalar scales and zero points).
    Tensor(Tensor<'a>),
    /// A `torch.nn.Parameter` (`requires_grad=True`), as quantized convolutions save their bias.
    Parameter(Tensor<'a>),
    /// A quantized tensor.
    QTensor(QTensor<'a>),
    /// A bare dtype, as in `classifier.0._packed_params.dtype: torch.qint8`.
    Dtype(DType),
    /// A quantized Linear's packed weight and bias.
    PackedLinear(PackedLinearParams<'a>),
}

/// What a state_dict entry is, without its numbers: what layouts list and `validate` compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A plain tensor.
    Tensor(TensorSignature),
    /// A `Parameter`.
    Parameter(TensorSignature),
    /// A bare dtype.
    Dtype(DType),
    /// Packed Linear parameters: the weight and, if any, the bias.
    PackedLinear {
        /// The quantized weight.
        weight: TensorSignature,
        /// The bias.
        bias: Option<TensorSignature>,
    },
}

/// Dtype, shape, strides and (for quantized tensors) scheme of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSignature {
    /// Element type.
    pub dtype: DType,
    /// Sizes.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub strides: Vec<usize>,
    /// `Some` exactly for quantized tensors.
    pub qscheme: Option<QScheme>,
}

impl Value<'_> {
    /// The value's signature.
    pub fn signature(&self) -> Signature {
        match self {
            Value::Tensor(t) => Signature::Tensor(t.signature()),
            Value::Parameter(t) => Signature::Parameter(t.signature()),
            Value::QTensor(q) => Signature::Tensor(q.signature()),
            Value::Dtype(d) => Signature::Dtype(*d),
            Value::PackedLinear(p) => {
                Signature::PackedLinear { weight: p.weight.signature(), bias: p.bias.as_ref().map(Tensor::signature) }
            }
        }
    }

    /// Checks every tensor inside the value; errors name `key`.
    pub(crate) fn check(&self, key: &str) -> Result<()> {
        match self {
            Value::Tensor(t) | Value::Parameter(t) => t.check(key),
            Value::QTensor(q) => q.check(key),
            Value::Dtype(_) => Ok(()),
            Value::PackedLinear(p) => {
                p.weight.check(key)?;
                p.bias.as_ref().map_or(Ok(()), |b| b.check(key))
            }
        }
    }
}

/// Renders like the reference listing: `torch.qint8 [4, 3, 3, 3] torch.per_channel_affine axis=0`.
impl fmt::Display for TensorSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.dtype, self.shape)?;
        match self.qscheme {
            Some(q) => write!(f, " {q}"),
            None => Ok(()),
        }
    }
}

/// Renders like the reference listing: `tuple(torch.qint8 [64, 32] torch.per_tensor_affine, torch.float32 [64])`.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Tensor(t) | Signature::Parameter(t) => write!(f, "{t}"),
            Signature::Dtype(d) => write!(f, "dtype {d}"),
            Signature::PackedLinear { weight, bias: Some(bias) } => write!(f, "tuple({weight}, {bias})"),
            Signature::PackedLinear { weight, bias: None } => write!(f, "tuple({weight}, None)"),
        }
    }
}

/// A state_dict: its entries in order, and the `_metadata` attribute (module prefix -> `version`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateDict<'a> {
    /// Keys and values in the order `Module.state_dict()` produces them.
    pub entries: Vec<(String, Value<'a>)>,
    /// `state_dict._metadata`: each module prefix (`""` for the root) with its `_version`, in order.
    pub metadata: Vec<(String, u64)>,
}

impl<'a> StateDict<'a> {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Little-endian bytes of `values`, borrowed where the host is little-endian.
pub(crate) fn f32_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding and no invalid bit patterns as bytes, u8 has alignment 1, and the
        // byte length covers exactly the slice's memory, which stays borrowed for the same lifetime.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) })
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

fn invalid(key: &str, reason: String) -> Error {
    Error::InvalidTensor { key: key.to_owned(), reason }
}

/// Checks that a storage of `storage_len` bytes holds exactly `numel` elements and that every element
/// the strides address lies inside it (overflow-checked: shapes may come from a hostile file).
fn check_storage(key: &str, dtype: DType, shape: &[usize], strides: &[usize], storage_len: usize) -> Result<()> {
    if shape.len() != strides.len() {
        return Err(invalid(key, format!("{} sizes but {} strides", shape.len(), strides.len())));
    }
    let numel =
        shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| invalid(key, "element count overflows".into()))?;
    let expected_len = numel.checked_mul(dtype.size()).ok_or_else(|| invalid(key, "byte size overflows".into()))?;
    if storage_len != expected_len {
        return Err(invalid(key, format!("storage holds {storage_len} bytes, shape {shape:?} of {dtype} needs {expected_len}")));
    }
    if numel == 0 {
        return Ok(());
    }
    let last_offset = shape
        .iter()
        .zip(strides)
        .try_fold(0usize, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)))
        .ok_or_else(|| invalid(key, "stride offsets overflow".into()))?;
    if last_offset >= numel {
        return Err(invalid(key, format!("strides {strides:?} address element {last_offset} of {numel}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_storage_matches_its_strides() {
        let shape = [2, 3, 2, 2];
        let nchw: Vec<u8> = (0..24).collect();
        let nhwc = to_channels_last(shape, 1, &nchw).unwrap();
        let strides = channels_last_strides(&shape);
        for (i, &value) in nchw.iter().enumerate() {
            let index = [i / 12, i / 4 % 3, i / 2 % 2, i % 2];
            let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            assert_eq!(nhwc[offset], value);
        }
        assert_eq!(to_channels_last(shape, 1, &nchw[1..]), None);
    }

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(contiguous_strides(&[4, 3, 3, 3]), [27, 9, 3, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
        assert_eq!(channels_last_strides(&[4, 3, 3, 3]), [27, 1, 9, 3]);
    }
}
