//! The model against PyTorch: torchvision's checkpoint layout loads, and `features(x)` reproduces
//! PyTorch's output.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use vggq::model::{load_features, ModelError, VggConfig};

mod util;

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    util::shared_dir().join("fixtures/torchvision").join(name)
}

/// The fixture's model: torchvision's VGG11-BN at width 1/16 with its ImageNet head (7x7 pool, 1000 classes).
fn fixture_config() -> VggConfig {
    VggConfig { pool_size: 7, ..VggConfig::for_input(16, 32, 128, 1000) }
}

fn read_tensor<const D: usize>(file: &Path, key: &str) -> Tensor<B, D> {
    let bytes = std::fs::read(file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(key).unwrap();
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    Tensor::from_data(TensorData::new(values, view.shape().to_vec()), &Default::default())
}

#[test]
fn pretrained_features_reproduce_pytorch() {
    let config = fixture_config();
    let model = load_features(config.init::<B>(&Default::default()), &config, &fixture("vgg11_bn_w16_imagenet_layout.pth"))
        .expect("the torchvision-layout checkpoint loads");
    let io = fixture("vgg11_bn_w16_features_io.safetensors");
    let expected = read_tensor::<4>(&io, "features");
    let actual = model.features(read_tensor::<4>(&io, "input"));
    assert_eq!(actual.dims(), expected.dims());

    // Relative to the largest output: ReLU makes many outputs exactly zero, where an element-wise
    // relative error means nothing.
    let scale: f32 = expected.clone().abs().max().into_scalar();
    let max_error: f32 = (actual - expected).abs().max().into_scalar();
    let relative = max_error / scale;
    println!("features: max abs error {max_error:e}, relative to max |output| {relative:e}");
    assert!(relative <= 1e-4, "max relative error {relative:e} > 1e-4");
}

#[test]
fn checkpoint_with_wrong_shapes_names_the_tensor() {
    // The width-1/16 checkpoint offered to a width-1/8 model.
    let config = VggConfig { width_divisor: 8, ..fixture_config() };
    let error = load_features(config.init::<B>(&Default::default()), &config, &fixture("vgg11_bn_w16_imagenet_layout.pth"))
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ModelError::Checkpoint { .. }), "{message}");
    assert!(message.contains("features.0.conv.weight") && message.contains("Shape mismatch"), "{message}");
}

#[test]
fn missing_and_corrupt_checkpoints_are_clear_errors() {
    let config = fixture_config();
    let missing = load_features(config.init::<B>(&Default::default()), &config, Path::new("/nonexistent/vgg.pth"));
    assert!(matches!(missing, Err(ModelError::MissingCheckpoint(_))));

    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.pth");
    let bytes = std::fs::read(fixture("vgg11_bn_w16_imagenet_layout.pth")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = load_features(config.init::<B>(&Default::default()), &config, &truncated).unwrap_err();
    assert!(error.to_string().contains("truncated.pth"), "{error}");
}

#[test]
fn checkpoint_with_an_unknown_feature_tensor_names_it() {
    let config = fixture_config();
    let bytes = std::fs::read(fixture("vgg11_bn_w16_imagenet_layout.pth")).unwrap();
    let mut state_dict = vggq_pth::read_state_dict(&bytes).unwrap();
    let extra = state_dict.get("features.0.bias").expect("the fixture has features.0.bias").clone();
    state_dict.entries.push(("features.30.bias".to_string(), extra));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra_key.pth");
    vggq_pth::write_file(&path, &state_dict).unwrap();

    let error = load_features(config.init::<B>(&Default::default()), &config, &path).unwrap_err();
    assert!(matches!(&error, ModelError::UnexpectedTensor { key, .. } if key == "features.30.bias"), "{error}");
}

#[test]
fn a_pickle_that_is_not_a_state_dict_is_rejected_and_never_executed() {
    let config = fixture_config();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("executed");
    // Protocol 2: os.system("touch <marker>"), which an unrestricted unpickler would run.
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    let path = dir.path().join("hostile.pth");
    std::fs::write(&path, &pickle).unwrap();

    let result = load_features(config.init::<B>(&Default::default()), &config, &path);
    assert!(result.is_err(), "a pickle holding no tensors was accepted as pretrained weights");
    assert!(!marker.exists(), "the pickle's code ran");
}
