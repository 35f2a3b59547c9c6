//! The layout module against the reference files, and `validate`'s errors.

use vggq_pth::layout::{layout, validate, Variant, VggConfig};
use vggq_pth::{read_state_dict, Error, Signature, Value};

use crate::util::{reference_bytes, REFERENCE_STEMS};

const VARIANTS: [Variant; 4] = [Variant::Fp32, Variant::DynamicInt8, Variant::StaticInt8Fx, Variant::QatInt8Fx];

#[test]
fn tiny_layouts_equal_what_pytorch_wrote() {
    for (stem, variant) in REFERENCE_STEMS.into_iter().zip(VARIANTS) {
        let bytes = reference_bytes(stem);
        let reference = read_state_dict(&bytes).unwrap();
        let expected = layout(&VggConfig::tiny(), variant);
        let found: Vec<(String, Signature)> = reference.entries.iter().map(|(k, v)| (k.clone(), v.signature())).collect();
        for (i, (e, f)) in expected.entries.iter().zip(&found).enumerate() {
            assert_eq!(e, f, "{stem}: entry {i}");
        }
        assert_eq!(expected.entries.len(), found.len(), "{stem}: entry count");
        assert_eq!(expected.metadata, reference.metadata, "{stem}: _metadata");
        validate(&reference, &expected).unwrap_or_else(|e| panic!("{stem}: {e}"));
    }
}

#[test]
fn full_layout_has_the_vgg11_bn_shapes() {
    let fp32 = layout(&VggConfig::full(), Variant::Fp32);
    let shape = |key: &str| match fp32.entries.iter().find(|(k, _)| k == key).map(|(_, s)| s) {
        Some(Signature::Tensor(t)) => t.shape.clone(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(fp32.entries.len(), 62);
    assert_eq!(shape("features.25.weight"), [512, 512, 3, 3]);
    assert_eq!(shape("classifier.0.weight"), [4096, 8192]);
    assert_eq!(shape("classifier.6.weight"), [10, 4096]);
    let numel: usize = fp32
        .entries
        .iter()
        .map(|(_, s)| match s {
            Signature::Tensor(t) => t.shape.iter().product::<usize>(),
            other => panic!("{other:?}"),
        })
        .sum();
    // Floats plus eight int64 num_batches_tracked: the 227 MiB of the full FP32 file.
    assert_eq!(numel, 59_612_306);
}

#[test]
fn validate_names_the_offending_key() {
    let tiny = VggConfig::tiny();
    let bytes = reference_bytes("tiny_dynamic_int8");
    let reference = read_state_dict(&bytes).unwrap();

    let mut missing = reference.clone();
    missing.entries.remove(3);
    assert!(
        matches!(validate(&missing, &layout(&tiny, Variant::DynamicInt8)), Err(Error::MissingKey { key, .. }) if key == "features.1.bias")
    );

    let wrong_variant = validate(&reference, &layout(&tiny, Variant::Fp32));
    assert!(matches!(wrong_variant, Err(Error::UnexpectedKey { key }) if key == "classifier.0.scale"));

    let mut swapped = reference.clone();
    swapped.entries.swap(0, 1);
    assert!(
        matches!(validate(&swapped, &layout(&tiny, Variant::DynamicInt8)), Err(Error::KeyOutOfOrder { key, .. }) if key == "features.0.weight")
    );

    let mut wrong_dtype = reference.clone();
    let dtype_entry = wrong_dtype.entries.iter_mut().find(|(k, _)| k == "classifier.0._packed_params.dtype").unwrap();
    dtype_entry.1 = Value::Dtype(vggq_pth::DType::QUInt8);
    let err = validate(&wrong_dtype, &layout(&tiny, Variant::DynamicInt8)).unwrap_err();
    assert_eq!(err.to_string(), "key `classifier.0._packed_params.dtype`: expected dtype torch.qint8, found dtype torch.quint8");

    let mut wrong_metadata = reference;
    wrong_metadata.metadata[3].1 = 1;
    let err = validate(&wrong_metadata, &layout(&tiny, Variant::DynamicInt8)).unwrap_err();
    assert_eq!(err.to_string(), "_metadata entry `features.1`: expected 2, found 1");
}
