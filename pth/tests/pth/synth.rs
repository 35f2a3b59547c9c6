//! Deterministic state_dicts that fill a layout with pseudo-random values (tests and the benchmark).

use std::borrow::Cow;

use vggq_pth::layout::Layout;
use vggq_pth::{DType, PackedLinearParams, QScheme, QTensor, Quantizer, Signature, StateDict, Tensor, TensorSignature, Value};

/// SplitMix64: tiny, seedable, good enough to make every tensor differ.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0.01, 1): valid as a weight, a variance or a quantization scale.
    pub fn positive(&mut self) -> f64 {
        0.01 + 0.99 * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn bytes(sig: &TensorSignature, rng: &mut Rng) -> Vec<u8> {
    let numel: usize = sig.shape.iter().product();
    match sig.dtype {
        DType::F32 => (0..numel).flat_map(|_| (rng.positive() as f32).to_le_bytes()).collect(),
        DType::F64 => (0..numel).flat_map(|_| rng.positive().to_le_bytes()).collect(),
        DType::I64 => (0..numel).flat_map(|_| ((rng.next_u64() % 128) as i64).to_le_bytes()).collect(),
        DType::QInt8 | DType::QUInt8 => (0..numel).map(|_| rng.next_u64() as u8).collect(),
    }
}

fn tensor(sig: &TensorSignature, rng: &mut Rng) -> Tensor<'static> {
    Tensor { dtype: sig.dtype, shape: sig.shape.clone(), strides: sig.strides.clone(), data: Cow::Owned(bytes(sig, rng)) }
}

/// A weight scale. PyTorch's observers compute scales in float32 and fbgemm keeps packed weights'
/// scales in float32, so only float32-representable scales survive `load_state_dict` bit for bit.
fn scale(rng: &mut Rng) -> f64 {
    f64::from((rng.positive() / 100.0) as f32)
}

/// Weights are quantized symmetrically (zero point 0), as PyTorch's default qconfigs do.
fn qtensor(sig: &TensorSignature, rng: &mut Rng) -> QTensor<'static> {
    let quantizer = match sig.qscheme.expect("a quantized signature") {
        QScheme::PerTensorAffine => Quantizer::PerTensorAffine { scale: scale(rng), zero_point: 0 },
        QScheme::PerChannelAffine { axis } => Quantizer::PerChannelAffine {
            scales: (0..sig.shape[axis]).map(|_| scale(rng)).collect(),
            zero_points: vec![0; sig.shape[axis]],
            axis,
        },
    };
    QTensor {
        dtype: sig.dtype,
        shape: sig.shape.clone(),
        strides: sig.strides.clone(),
        data: Cow::Owned(bytes(sig, rng)),
        quantizer,
    }
}

/// A state_dict with the layout's keys, signatures and metadata, and values drawn from `seed`.
pub fn state_dict(layout: &Layout, seed: u64) -> StateDict<'static> {
    let mut rng = Rng::new(seed);
    let entries = layout
        .entries
        .iter()
        .map(|(key, signature)| {
            let value = match signature {
                Signature::Tensor(sig) if sig.qscheme.is_some() => Value::QTensor(qtensor(sig, &mut rng)),
                Signature::Tensor(sig) => Value::Tensor(tensor(sig, &mut rng)),
                Signature::Parameter(sig) => Value::Parameter(tensor(sig, &mut rng)),
                Signature::Dtype(d) => Value::Dtype(*d),
                Signature::PackedLinear { weight, bias } => Value::PackedLinear(PackedLinearParams {
                    weight: qtensor(weight, &mut rng),
                    bias: bias.as_ref().map(|b| tensor(b, &mut rng)),
                }),
            };
            (key.clone(), value)
        })
        .collect();
    StateDict { entries, metadata: layout.metadata.clone() }
}
