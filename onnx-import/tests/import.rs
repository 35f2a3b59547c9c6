//! The committed fixture is fresh, and burn-import's model computes our logits.

use burn::backend::Flex;
use vggq_onnx_import::{fixture_config, fixture_model, fixture_onnx, imported, pattern, FIXTURE};

/// Set to rewrite the fixture from the current exporter instead of failing on a difference.
const BLESS: &str = "VGGQ_BLESS";
/// Largest |ours - burn-import's| over the largest logit (measured: 4.4e-7, summation order).
const MAX_RELATIVE_ERROR: f64 = 1e-5;

#[test]
fn committed_fixture_is_what_the_exporter_writes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let fresh = fixture_onnx();
    if std::env::var_os(BLESS).is_some() {
        vggq::atomic::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{FIXTURE} is stale (the exporter now writes different bytes): run `{BLESS}=1 cargo test --release -p vggq-onnx-import` and commit it"
    );
}

#[test]
fn burn_import_model_matches_our_logits() {
    let device = Default::default();
    let config = fixture_config();
    let images = pattern::<Flex, 4>([4, 3, config.input_size, config.input_size], 999, 2.0, &device);
    let ours: Vec<f32> = fixture_model::<Flex>(&device).forward(images.clone()).into_data().to_vec().unwrap();
    let theirs: Vec<f32> = imported::Model::<Flex>::default().forward(images).into_data().to_vec().unwrap();
    assert_eq!(ours.len(), theirs.len());
    let scale = ours.iter().fold(0.0_f64, |m, v| m.max(f64::from(v.abs())));
    let error = ours.iter().zip(&theirs).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max) / scale;
    println!("relative error {error:e}");
    assert!(error <= MAX_RELATIVE_ERROR, "relative error {error:e}");
}
