//! Where static calibration spends its time at the full profile's size (VGG11-BN at full width, 128-px
//! batches of 32): float forward passes vs observers. `cargo run --release --example calibration_timing`.
//! The weights are random: the timing does not depend on them.

use burn::backend::Flex;
use indicatif::ProgressBar;
use vggq::data::Batch;
use vggq::quant::static_ptq::{calibrate, FusedVgg};
use vggq::quant::{Calibration, FloatVgg};

const BATCHES: usize = 3;

fn main() {
    let config = vggq::model::VggConfig::seed();
    let device = Default::default();
    let float = FloatVgg::from_model(&config.init::<Flex>(&device), &config);
    let fused = FusedVgg::fuse(&float);
    // A deterministic pattern spanning the normalised range: the histogram work depends on the spread only.
    let batches: Vec<Batch> = (0..BATCHES)
        .map(|i| Batch {
            images: (0..32 * 3 * 128 * 128).map(|j| (((j * 7 + i * 13) % 255) as f32 / 64.0) - 2.0).collect(),
            labels: vec![0; 32],
            side: 128,
        })
        .collect();
    for method in [Calibration::Histogram, Calibration::Minmax] {
        let (_, t) = calibrate::<Flex>(&fused, batches.clone(), method, &device, &ProgressBar::hidden()).unwrap();
        println!(
            "{method:?}: {} batches of 32 at 128 px, full width: forward {:.2} s, observers {:.2} s",
            t.batches, t.forward_seconds, t.observer_seconds
        );
    }
}
