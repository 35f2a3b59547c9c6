//! The FP32 file computes what the Burn model computes.

use vggq::export::onnx::{self, Variant};

use crate::util::*;

/// Largest |ONNX - Burn| over the largest |Burn| logit: BN folding and summation order differ, little else
/// (measured: 5.3e-7 at 32 px, 7.7e-7 at 128 px).
const MAX_RELATIVE_ERROR: f64 = 1e-5;

#[test]
fn fp32_logits_equal_burns_forward() {
    let dir = tempfile::tempdir().unwrap();
    for side in [32, 128] {
        let config = tiny_config(side);
        let model = tiny_model(&config, 7);
        let path = dir.path().join(format!("fp32_{side}.onnx"));
        onnx::write(&path, &onnx::fp32::model(&fused(&model, &config), &provenance(Variant::Fp32)).unwrap()).unwrap();
        let mut session = ort_session(&path, side);
        let batch = cifar_batches(false, 32, side).epoch(0).next().unwrap();
        let expected = values(model.forward(images_tensor(&batch)));
        let actual = session.run(&batch.images, batch.len()).unwrap();
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(f64::from(v.abs())));
        let error = actual.iter().zip(&expected).map(|(a, e)| f64::from((a - e).abs())).fold(0.0, f64::max) / scale;
        println!("{side} px: relative error {error:e}");
        assert!(error <= MAX_RELATIVE_ERROR, "{side} px: relative error {error:e} (largest logit {scale})");
    }
}
