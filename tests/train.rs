//! The smoke profile end to end through the library on the real images: CIFAR-10 (JPEG copy) -> split
//! -> VGG11-BN with PyTorch's initialisation trained two epochs on the CPU -> the quantize flow with the
//! QAT the pipeline does not run (fine-tuning the trained model), each variant scored and written as a
//! `.pth`. The FP32 model is the one `cargo xtask test`'s smoke run trained
//! (`VGGQ_GOLDEN_RUN`): training it here again gave the same bytes (the suite's reruns hold training to
//! that on every core count) and took about 30 of its 130 s on 2 cores.

use std::time::Duration;

use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Record};
use serde::Deserialize;
use vggq::backend::{BackendKind, CpuBackend, Selection};
use vggq::data::{load, BatchLoader, DataSource, ImageCounts, ImageSet, LoaderConfig};
use vggq::host_reads::progress_read_interval;
use vggq::model::Vgg;
use vggq::pipeline::{quantize, QuantizeSettings, RunData};
use vggq::profile::Profile;
use vggq::quant::qat::train_qat;
use vggq::quant::Calibration;
use vggq::score::Score;
use vggq::train::{train, Checkpoints, EpochReport, TrainConfig};
use vggq_core::run_folder::{MODEL_FILE, TRAIN_REPORT_FILE};
use vggq_core::{QatMode, Variant};

mod util;

/// Burn's CPU backend draws from one generator per process: tests that seed it and draw run one at a time.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Below every seed of the recipe, ours and PyTorch's (README, "Fidelity to PyTorch": seeds 0-2 gave val
/// 40.20-43.00 % and test 41.52-44.86 % here, 37.90-44.25 % and 37.98-44.53 % in PyTorch): a model that
/// learns less than this has regressed.
const MIN_VAL_ACCURACY: f64 = 37.0;
const MIN_TEST_ACCURACY: f64 = 38.0;

/// What this test reads of the smoke run's `train_report.json`.
#[derive(Deserialize)]
struct TrainReport {
    profile: Profile,
    device: Selection,
    data_images: ImageCounts,
    epochs: Vec<EpochReport>,
    test: Score,
}

#[test]
fn smoke_profile_learns_and_quantizes_on_real_cifar10() {
    let _generator = GENERATOR.lock().unwrap();
    let run = util::golden_run();
    let report: TrainReport = serde_json::from_str(&std::fs::read_to_string(run.join(TRAIN_REPORT_FILE)).unwrap()).unwrap();
    let profile = Profile::smoke();
    assert_eq!(report.profile, profile, "{} is not the smoke profile's recipe", run.display());
    assert_eq!(report.device.backend, BackendKind::Cpu, "{} did not train on the CPU", run.display());
    let cifar = load(&DataSource::Local { path: util::shared_cifar10_jpeg() }).unwrap();
    // All of CIFAR-10, as the run recorded: its reports say nothing of the data's departing.
    assert_eq!((report.data_images, cifar.image_counts()), (ImageCounts::CIFAR10, ImageCounts::CIFAR10));
    let data = RunData::new(cifar, &profile).unwrap();
    assert_eq!((data.train.len(), data.val.len(), data.test.len()), (8_000, 2_000, 10_000));

    let last = report.epochs.last().unwrap();
    println!("smoke fp32: val {:.2} % after {} epochs, test {:.2} %", last.val.accuracy, last.epoch, report.test.accuracy);
    assert_eq!(last.epoch, profile.train.epochs);
    assert!(last.val.accuracy >= MIN_VAL_ACCURACY, "val accuracy {:.2} %", last.val.accuracy);
    assert!(report.test.accuracy >= MIN_TEST_ACCURACY, "test accuracy {:.2} %", report.test.accuracy);
    assert!(report.epochs[1].train.loss < report.epochs[0].train.loss, "training loss did not fall");

    let device = Default::default();
    let model = profile
        .model
        .init::<CpuBackend>(&device)
        .load_file(run.join(MODEL_FILE).with_extension(""), &NamedMpkFileRecorder::<FullPrecisionSettings>::new(), &device)
        .unwrap();
    let settings = QuantizeSettings { calibration: Calibration::Histogram, qat_mode: QatMode::Finetune };
    let quantized = quantize(model, &profile, &data, settings, None, &device, None).unwrap();
    let scores: Vec<(Variant, f64, f64)> = quantized.scores.iter().map(|(v, s)| (*v, s.val.accuracy, s.test.accuracy)).collect();
    println!("smoke variants (val %, test %): {scores:?}");
    assert_eq!(scores.iter().map(|s| s.0).collect::<Vec<_>>(), Variant::all(QatMode::Finetune));
    let (_, fp32_val, fp32_test) = scores[0];
    assert_eq!((fp32_val, fp32_test), (last.val.accuracy, report.test.accuracy), "the flow scores the trained model");
    // PTQ within what PyTorch's own quantization of such a model costs (measured here, val / test:
    // dynamic, Linears only, -0.05 / +0.04 points; static -0.20 / +0.17).
    for (variant, val, test) in [scores[1], scores[2]] {
        assert!(
            (val - fp32_val).abs() <= 0.5 && (test - fp32_test).abs() <= 0.5,
            "{variant:?}: val {val:.2} test {test:.2} vs fp32 {fp32_val:.2} {fp32_test:.2}"
        );
    }
    // QAT fine-tuning the undertrained model for an epoch at a tenth of its learning rate trains it
    // further: measured val 47.00 % and test 48.93 % (+2.20 / +3.51 points), as this CPU run gives on
    // every machine; held to within half a point of them.
    let (_, qat_val, qat_test) = scores[3];
    assert!(
        (qat_val - 47.00).abs() <= 0.5 && (qat_test - 48.93).abs() <= 0.5,
        "QAT finetune: val {qat_val:.2} test {qat_test:.2} (measured: 47.00 and 48.93; fp32 {fp32_val:.2} {fp32_test:.2})"
    );

    let dir = tempfile::tempdir().unwrap();
    let files = quantized.write_pth_files(dir.path()).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, Variant::all(QatMode::Finetune).map(|v| v.pth_file()));
    for file in &files {
        vggq_pth::read_state_dict(&std::fs::read(file).unwrap()).unwrap();
    }
}

/// A training run again after it stopped resumes from the checkpoint it left inside its last epoch and
/// ends with the bytes of the run that never stopped: FP32, and QAT, whose observers are part of its
/// state; and taking checkpoints changes nothing of what either training computes. On random images at the
/// smoke shapes, 12 full batches and a partial one an epoch, read every 3 steps, so that the progress
/// read after step 12 lies inside it; checkpoints at every progress read (interval zero), so the straight
/// run of two epochs leaves the one from step 12 of the second.
#[test]
fn a_resumed_training_ends_with_the_bytes_of_one_that_never_stopped() {
    const STEPS_BEFORE_READ: usize = 12;
    assert_eq!(progress_read_interval(STEPS_BEFORE_READ + 1), 3, "the set below is sized for a read after step 12");
    let _generator = GENERATOR.lock().unwrap();
    let device = Default::default();
    let profile = Profile::smoke();
    let config = &TrainConfig { epochs: 2, ..profile.train.clone() };
    let side = profile.model.input_size;
    let classes = profile.model.classes as u8;
    let images = (STEPS_BEFORE_READ + 1) * config.batch_size + config.batch_size / 2;
    let train_set = BatchLoader::new(ImageSet::random(images, classes, 1), LoaderConfig::train(side, config.seed)).unwrap();
    let val_set = BatchLoader::new(ImageSet::random(32, classes, 2), LoaderConfig::eval(side)).unwrap();
    // As the pipeline starts a training: the generator seeded, then the model drawn from it.
    let initial = |seed| {
        CpuBackend::seed(&device, seed);
        profile.model.init::<CpuBackend>(&device)
    };
    let bytes = |model: Vgg<CpuBackend>| {
        rmp_serde::to_vec_named(&model.valid().with_numbered_ids().into_record().into_item::<FullPrecisionSettings>()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoints_at = |name: &str| Checkpoints::new(dir.path().join(name), name.into()).every(Duration::ZERO);
    let left_inside_the_last_epoch = |checkpoints: &Checkpoints| {
        let checkpoint = checkpoints.load::<CpuBackend>(&device).unwrap().expect("a checkpoint is left");
        assert_eq!(checkpoint.epochs.len(), 1);
        assert_eq!(checkpoint.unfinished.map(|unfinished| unfinished.steps), Some(STEPS_BEFORE_READ));
    };

    let checkpoints = checkpoints_at("train.checkpoint.mpk");
    let fp32 = |seed, checkpoints| train(initial(seed), &train_set, &val_set, config, &device, checkpoints).unwrap();
    let (straight, straight_epochs) = fp32(config.seed, Some(&checkpoints));
    left_inside_the_last_epoch(&checkpoints);
    let straight = bytes(straight);
    assert!(bytes(fp32(config.seed, None).0) == straight, "taking checkpoints changed the training");
    let (resumed, resumed_epochs) = fp32(config.seed, Some(&checkpoints));
    assert_eq!(resumed_epochs[0], straight_epochs[0], "the first epoch is the checkpoint's");
    assert_eq!((resumed_epochs[1].train, resumed_epochs[1].val), (straight_epochs[1].train, straight_epochs[1].val));
    assert!(bytes(resumed) == straight, "the resumed FP32 training ends with other bytes");
    // The masks the steps before the checkpoint drew are what puts the generator back: resumed from a
    // generator seeded otherwise (the checkpoint's weights replace the ones drawn from it), the run ends
    // elsewhere.
    let (elsewhere, _) = fp32(config.seed + 1, Some(&checkpoints));
    assert!(bytes(elsewhere) != straight, "the generator's place does not reach the resumed steps");

    let checkpoints = checkpoints_at("quantize.checkpoint.mpk");
    let qat = |checkpoints| {
        train_qat(initial(config.seed), &profile.model, &train_set, &val_set, config, &device, checkpoints).unwrap()
    };
    let (straight, straight_epochs) = qat(Some(&checkpoints));
    left_inside_the_last_epoch(&checkpoints);
    assert!(qat(None).0 == straight, "taking checkpoints changed the QAT training");
    let (resumed, resumed_epochs) = qat(Some(&checkpoints));
    assert_eq!(resumed_epochs[0], straight_epochs[0]);
    assert_eq!((resumed_epochs[1].train, resumed_epochs[1].val), (straight_epochs[1].train, straight_epochs[1].val));
    assert!(resumed == straight, "the resumed QAT training converts to another int8 model");
}
