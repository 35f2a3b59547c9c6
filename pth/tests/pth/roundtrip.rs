//! Write, read back, compare: every dtype, qscheme and value kind, through memory and through files.

use std::borrow::Cow;

use vggq_pth::layout::{layout, validate, Variant, VggConfig};
use vggq_pth::{
    read_pth, read_state_dict, write_file, write_to, DType, PackedLinearParams, QTensor, Quantizer, StateDict, Tensor, Value,
};

use crate::synth;
use crate::util::temp_dir;

/// One entry of each kind the four variants use, plus the ones PyTorch could write but they do not
/// (quint8 weights, a Linear without bias, non-zero zero points, float64 tensors, large ints).
fn every_kind() -> StateDict<'static> {
    let weights: &'static [f32] = Box::leak(vec![0.5f32, -1.25, 3.0, f32::MIN_POSITIVE, -0.0, 7.5].into_boxed_slice());
    let qint8 = |shape: Vec<usize>, strides: Vec<usize>, quantizer| QTensor {
        dtype: DType::QInt8,
        data: Cow::Owned((0..shape.iter().product::<usize>()).map(|i| (i as u8).wrapping_mul(37)).collect()),
        shape,
        strides,
        quantizer,
    };
    let entries = vec![
        ("float".to_owned(), Value::Tensor(Tensor::from_f32(vec![2, 3], weights))),
        ("float.transposed".to_owned(), Value::Tensor(Tensor { strides: vec![1, 2], ..Tensor::from_f32(vec![2, 3], weights) })),
        ("scalar.f32".to_owned(), Value::Tensor(Tensor::scalar_f32(0.125))),
        ("scalar.i64".to_owned(), Value::Tensor(Tensor::scalar_i64(i64::MIN))),
        ("scalar.i64.big".to_owned(), Value::Tensor(Tensor::scalar_i64(1 << 40))),
        (
            "double".to_owned(),
            Value::Tensor(Tensor {
                dtype: DType::F64,
                shape: vec![2],
                strides: vec![1],
                data: Cow::Owned([1.5f64, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
            }),
        ),
        ("param".to_owned(), Value::Parameter(Tensor::from_f32(vec![6], weights))),
        (
            "q.per_tensor".to_owned(),
            Value::QTensor(qint8(
                vec![3, 2],
                vec![2, 1],
                Quantizer::PerTensorAffine { scale: 0.0013861123006790876, zero_point: -3 },
            )),
        ),
        (
            "q.per_channel.channels_last".to_owned(),
            Value::QTensor(qint8(
                vec![2, 3, 3, 3],
                vggq_pth::tensor::channels_last_strides(&[2, 3, 3, 3]),
                Quantizer::PerChannelAffine { scales: vec![0.1, 1e-300], zero_points: vec![0, 5], axis: 0 },
            )),
        ),
        (
            "q.per_channel.axis1".to_owned(),
            Value::QTensor(qint8(
                vec![2, 3],
                vec![3, 1],
                Quantizer::PerChannelAffine { scales: vec![0.5, 0.25, 2.0], zero_points: vec![1, 2, 3], axis: 1 },
            )),
        ),
        (
            "q.quint8".to_owned(),
            Value::QTensor(QTensor {
                dtype: DType::QUInt8,
                ..qint8(vec![4], vec![1], Quantizer::PerTensorAffine { scale: 0.02, zero_point: 128 })
            }),
        ),
        ("dtype.qint8".to_owned(), Value::Dtype(DType::QInt8)),
        ("dtype.quint8".to_owned(), Value::Dtype(DType::QUInt8)),
        (
            "packed.with_bias".to_owned(),
            Value::PackedLinear(PackedLinearParams {
                weight: qint8(vec![2, 3], vec![3, 1], Quantizer::PerTensorAffine { scale: 0.5, zero_point: 0 }),
                bias: Some(Tensor::from_f32(vec![2], &weights[..2])),
            }),
        ),
        (
            "packed.without_bias".to_owned(),
            Value::PackedLinear(PackedLinearParams {
                weight: qint8(
                    vec![3, 2],
                    vec![2, 1],
                    Quantizer::PerChannelAffine { scales: vec![1.0, 2.0, 3.0], zero_points: vec![0; 3], axis: 0 },
                ),
                bias: None,
            }),
        ),
    ];
    let metadata = vec![(String::new(), 1), ("a.b".to_owned(), 4), ("it's".to_owned(), 3)];
    StateDict { entries, metadata }
}

#[test]
fn every_value_kind_round_trips() {
    let original = every_kind();
    let bytes = write_to(Vec::new(), "every_kind", &original).unwrap();
    assert_eq!(read_state_dict(&bytes).unwrap(), original);
}

#[test]
fn every_variant_round_trips_at_another_size() {
    // A config unlike the reference: width 1/8, 2x2 pooling, head 48 -> 7 classes.
    let config = VggConfig::vgg11_bn(8, 2, 48, 7);
    for (seed, variant) in Variant::ALL.into_iter().enumerate() {
        let expected = layout(&config, variant);
        let original = synth::state_dict(&expected, seed as u64);
        validate(&original, &expected).unwrap();
        let bytes = write_to(Vec::new(), "model", &original).unwrap();
        let back = read_state_dict(&bytes).unwrap();
        assert_eq!(back, original, "{variant:?}");
        validate(&back, &expected).unwrap();
    }
}

#[test]
fn write_file_is_atomic_and_names_the_archive_after_the_stem() {
    let dir = temp_dir();
    let path = dir.path().join("my_model.pth");
    std::fs::write(&path, b"previous contents").unwrap();
    let original = every_kind();
    write_file(&path, &original).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = read_pth(&bytes).unwrap();
    assert_eq!(file.archive, "my_model");
    assert_eq!(file.state_dict, original);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["my_model.pth"], "no temporary file may remain");
}

#[test]
fn a_failed_write_leaves_the_old_file() {
    let dir = temp_dir();
    let path = dir.path().join("kept.pth");
    std::fs::write(&path, b"previous contents").unwrap();
    let mut bad = every_kind();
    bad.entries.push(("float".to_owned(), Value::Dtype(DType::QInt8)));
    let err = write_file(&path, &bad).unwrap_err();
    assert_eq!(err.to_string(), "duplicate key `float`");
    assert_eq!(std::fs::read(&path).unwrap(), b"previous contents");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn inconsistent_tensors_are_refused_by_key() {
    let mut bad = every_kind();
    if let Value::Tensor(t) = &mut bad.entries[0].1 {
        t.shape = vec![4, 3];
    }
    let err = write_to(Vec::new(), "x", &bad).unwrap_err();
    assert_eq!(err.to_string(), "tensor `float`: storage holds 24 bytes, shape [4, 3] of torch.float32 needs 48");
}

#[test]
fn archive_names_with_separators_are_refused() {
    let err = write_to(Vec::new(), "a/b", &every_kind()).unwrap_err();
    assert!(matches!(err, vggq_pth::Error::InvalidArchiveName(name) if name == "a/b"));
}

#[test]
fn a_missing_folder_is_named() {
    let dir = temp_dir();
    let path = dir.path().join("absent/model.pth");
    let err = write_file(&path, &every_kind()).unwrap_err();
    assert!(
        matches!(&err, vggq_pth::Error::File { path: named, source } if *named == path && source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}
