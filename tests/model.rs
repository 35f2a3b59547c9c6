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
    // Summation order alone (measured: 8.5e-7).
    assert!(relative <= 1e-5, "max relative error {relative:e} > 1e-5");
}

#[test]
fn checkpoint_with_wrong_shapes_names_the_tensor() {
    // The width-1/16 checkpoint offered to a width-1/8 model.
    let config = VggConfig { width_divisor: 8, ..fixture_config() };
    let error =
        load_features(config.init::<B>(&Default::default()), &config, &fixture("vgg11_bn_w16_imagenet_layout.pth")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ModelError::Checkpoint { .. }), "{message}");
    // Named as the file names it (ours is `features.0.conv.weight`).
    assert!(message.contains("'features.0.weight'") && message.contains("Shape mismatch"), "{message}");
    assert!(!message.contains(".conv."), "{message}");
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

    // Files that are no checkpoint at all are said to be so, not reported by their first pickle opcode.
    let empty = dir.path().join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let error = load_features(config.init::<B>(&Default::default()), &config, &empty).unwrap_err();
    assert!(matches!(error, ModelError::EmptyCheckpoint(_)) && error.to_string().contains("empty (0 bytes)"), "{error}");
    let html = dir.path().join("error_page.pth");
    std::fs::write(&html, b"<html><body>403 Forbidden</body></html>").unwrap();
    let error = load_features(config.init::<B>(&Default::default()), &config, &html).unwrap_err();
    assert!(matches!(error, ModelError::NotACheckpoint(_)) && error.to_string().contains("error_page.pth"), "{error}");
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

/// `--init random` initialises as the seed's PyTorch model does: torchvision's `VGG(init_weights=True)`
/// for the features (conv weights `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, conv biases 0,
/// BatchNorm weight 1 and bias 0) and `nn.Linear`'s default for the rebuilt classifier (weight and
/// bias uniform in ±1/sqrt(fan_in)). Checked on the seed's full-size model, where every layer has
/// enough values for its spread to be measured within a few percent.
#[test]
fn random_init_is_pytorchs() {
    let config = VggConfig::seed();
    B::seed(&Default::default(), 0);
    let model = config.init::<B>(&Default::default());
    let values = |t: Tensor<B, 1>| vggq::host_reads::values(t);
    let std = |v: &[f32]| {
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    for (i, block) in model.features.iter().enumerate() {
        let [out, _, kh, kw] = block.conv.weight.dims();
        let weight = values(block.conv.weight.val().flatten(0, 3));
        let expected = (2.0 / (out * kh * kw) as f64).sqrt();
        // Relative standard error of a sample std is 1/sqrt(2n): at least 1728 values here, 4 sigma.
        let tolerance = 4.0 / (2.0 * weight.len() as f64).sqrt();
        assert!((std(&weight) / expected - 1.0).abs() < tolerance, "conv {i}: std {} vs kaiming {expected}", std(&weight));
        assert!(values(block.conv.bias.as_ref().unwrap().val()).iter().all(|&b| b == 0.0), "conv {i} bias");
        assert!(
            values(block.norm.weight.val()).iter().all(|&w| w == 1.0) && values(block.norm.bias.val()).iter().all(|&b| b == 0.0)
        );
    }
    let head = &model.classifier;
    for (i, linear) in [&head.hidden1, &head.hidden2, &head.output].into_iter().enumerate() {
        let [fan_in, _] = linear.weight.dims();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = values(linear.weight.val().flatten(0, 1));
        let bias = values(linear.bias.as_ref().unwrap().val());
        assert!(weight.iter().chain(&bias).all(|&w| (w as f64).abs() <= bound), "linear {i} beyond ±1/sqrt(fan_in)");
        let tolerance = 4.0 / (2.0 * weight.len() as f64).sqrt();
        assert!((std(&weight) / (bound / 3f64.sqrt()) - 1.0).abs() < tolerance, "linear {i}: std {}", std(&weight));
        assert!(std(&bias) > bound / 3f64.sqrt() / 2.0, "linear {i} bias is uniform too, not zero");
    }
}
