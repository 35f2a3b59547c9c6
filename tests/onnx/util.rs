//! Tiny models with non-trivial weights, CIFAR-10 batches, and the external tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::module::{AutodiffModule, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;
use vggq::data::{self, BatchLoader, DataSource, ImageSet, LoaderConfig};
use vggq::eval::{OnnxSession, Provider, ORT_DYLIB_PATH};
use vggq::export::onnx::proto::ModelProto;
use vggq::export::onnx::{Provenance, Variant};
use vggq::model::{Vgg, VggConfig};
use vggq::quant::{quantize_dynamic, quantize_static, Calibration, FloatVgg, FusedVgg, QuantMethod, QuantizedVgg};
use vggq::train::TrainConfig;
use vggq_core::places::shared_cifar10_jpeg;

pub type B = Flex;

/// VGG11-BN at 1/16 width with a small head: seconds per export and run. `side` 32 gives a 1x1 pool
/// (GlobalAveragePool), 128 the seed's identity 4x4 pool.
pub fn tiny_config(side: usize) -> VggConfig {
    VggConfig::for_input(16, side, 64, 10)
}

/// Held while a test seeds the backend's one random generator and draws from it (initialisation,
/// dropout): tests run on parallel threads, and another's draws in between would change this one's.
static RANDOM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A randomly initialised eval model whose BatchNorms have non-trivial statistics and affine
/// parameters, so that folding them is tested.
pub fn tiny_model(config: &VggConfig, seed: u64) -> Vgg<B> {
    let device = Default::default();
    let _random = RANDOM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(&device, seed);
    let mut model = config.init::<B>(&device);
    for block in &mut model.features {
        let c = block.norm.weight.dims()[0];
        let uniform = |lo, hi| Tensor::<B, 1>::random([c], Distribution::Uniform(lo, hi), &device);
        block.norm.running_mean = RunningState::new(uniform(-0.5, 0.5));
        block.norm.running_var = RunningState::new(uniform(0.5, 2.0));
        block.norm.weight = burn::module::Param::from_tensor(uniform(0.5, 1.5));
        block.norm.bias = burn::module::Param::from_tensor(uniform(-0.2, 0.2));
    }
    model
}

/// The FP32 exporter's input: `model` with its BatchNorms folded.
pub fn fused(model: &Vgg<B>, config: &VggConfig) -> FusedVgg {
    FusedVgg::fuse(&FloatVgg::from_model(model, config))
}

/// Static PTQ of `model` with histogram observers (PyTorch's fbgemm default) over `calibration_images`
/// CIFAR-10 training images.
pub fn static_quantized(model: &Vgg<B>, config: &VggConfig, calibration_images: usize) -> QuantizedVgg {
    let batches = cifar_batches(true, calibration_images, config.input_size).epoch(0);
    let float = FloatVgg::from_model(model, config);
    let progress = indicatif::ProgressBar::hidden();
    quantize_static::<B>(&float, batches, Calibration::Histogram, &Default::default(), &progress).expect("calibrated").0
}

/// Calibration images of [`TinyModels`]' static variants: a few batches are enough for file-level tests.
const TINY_CALIBRATION_IMAGES: usize = 64;

/// What `vggq quantize` makes of a tiny model: the FP32 model and its three INT8 variants.
pub struct TinyModels {
    pub float: FloatVgg,
    pub dynamic: QuantizedVgg,
    pub static_ptq: QuantizedVgg,
    pub qat: QuantizedVgg,
}

impl TinyModels {
    pub fn new(side: usize) -> Self {
        let config = tiny_config(side);
        let model = tiny_model(&config, 1);
        let float = FloatVgg::from_model(&model, &config);
        let static_ptq = static_quantized(&model, &config, TINY_CALIBRATION_IMAGES);
        // The QDQ writer treats QAT and static PTQ alike (same kinds of parameters, same graph): a
        // QAT-labelled copy of the static model stands in for the fourth file without minutes of training.
        let qat = QuantizedVgg { method: QuantMethod::Qat, ..static_ptq.clone() };
        TinyModels { dynamic: quantize_dynamic(&float), float, static_ptq, qat }
    }

    /// `provenance.variant`'s model exported from memory.
    pub fn export(&self, provenance: &Provenance) -> ModelProto {
        let model = match provenance.variant {
            Variant::Fp32 => vggq::export::onnx::fp32::model(&FusedVgg::fuse(&self.float), provenance),
            Variant::DynamicInt8 => vggq::export::onnx::dynamic::model(&self.dynamic, provenance),
            Variant::StaticInt8 => vggq::export::onnx::qdq::model(&self.static_ptq, provenance),
            Variant::Qat(_) => vggq::export::onnx::qdq::model(&self.qat, provenance),
        };
        model.expect("tiny models export")
    }
}

pub fn provenance(variant: Variant) -> Provenance {
    Provenance { variant, source_pth_sha256: None, training: "untrained: test model".into(), calibration: None }
}

/// The shared CIFAR-10 (JPEG copy), read once per test binary.
fn cifar() -> &'static data::Cifar10 {
    static CIFAR: OnceLock<data::Cifar10> = OnceLock::new();
    CIFAR.get_or_init(|| {
        let path = shared_cifar10_jpeg();
        data::load(&DataSource::Local { path }).expect("the shared CIFAR-10 copy loads")
    })
}

/// `count` images spread over the whole test set (which is ordered by class), or over the training
/// set, in batches of 32.
fn spread(train: bool, count: usize) -> ImageSet {
    let set: &ImageSet = if train { &cifar().train } else { &cifar().test };
    let step = set.len() / count;
    let indices: Vec<usize> = (0..count).map(|i| i * step).collect();
    set.select(&indices)
}

/// [`spread`] images, preprocessed as evaluation preprocesses them.
pub fn cifar_batches(train: bool, count: usize, side: usize) -> BatchLoader {
    BatchLoader::new(spread(train, count), LoaderConfig::eval(side)).expect("loader")
}

/// Training images for [`trained_tiny_model`]: enough for a model that tells classes apart.
const TRAINING_IMAGES: usize = 2048;

/// A tiny 32-px model after one epoch on [`TRAINING_IMAGES`] CIFAR-10 images, trained once per test
/// binary: agreement figures mean little on a random model, which predicts one class for everything.
pub fn trained_tiny_model() -> Vgg<B> {
    static TRAINED: OnceLock<Vgg<B>> = OnceLock::new();
    TRAINED
        .get_or_init(|| {
            type Train = burn::backend::Autodiff<B>;
            let config = tiny_config(32);
            let device = Default::default();
            let _random = RANDOM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Train::seed(&device, 0);
            let train_config = TrainConfig { epochs: 1, learning_rate: 0.02, ..TrainConfig::seed() };
            let train = BatchLoader::new(spread(true, TRAINING_IMAGES), LoaderConfig::train(32, 0)).unwrap();
            let val = cifar_batches(false, 64, 32);
            let (model, _) =
                vggq::train::train(config.init::<Train>(&device), &train, &val, &train_config, &device, None).unwrap();
            model.valid()
        })
        .clone()
}

pub fn images_tensor(batch: &data::Batch) -> Tensor<B, 4> {
    Tensor::<B, 1>::from_floats(batch.images.as_slice(), &Default::default()).reshape([batch.len(), 3, batch.side, batch.side])
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// An ONNX Runtime CPU session (one thread: tests run in parallel).
pub fn ort_session(path: &Path, side: usize) -> OnnxSession {
    if std::env::var_os(ORT_DYLIB_PATH).is_none() {
        panic!("{ORT_DYLIB_PATH} is not set: run through `cargo xtask test`, which sets it (and VGGQ_PYTHON)");
    }
    OnnxSession::open(path, side, Provider::Cpu, Some(1)).expect("ONNX Runtime loads the model")
}

/// The Python interpreter with onnx; its absence fails the test.
pub fn python() -> PathBuf {
    vggq_core::places::test_python()
}

/// `onnx.checker.check_model(full_check=True)` on `path`.
pub fn onnx_check(path: &Path) {
    let script = "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')";
    let output = Command::new(python()).args(["-c", script]).arg(path).output().expect("python runs");
    assert!(output.status.success(), "onnx checker rejected {}:\n{}", path.display(), String::from_utf8_lossy(&output.stderr));
}

/// Share of rows whose argmax agrees.
pub fn top1_agreement(a: &[f32], b: &[f32], classes: usize) -> f64 {
    let argmax = vggq::eval::metrics::argmax;
    let rows = a.len() / classes;
    let same = a.chunks(classes).zip(b.chunks(classes)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    same as f64 / rows as f64
}

/// Share of rows whose top-1 in `actual` is a top-1 of `reference` up to `tolerance`: the reference
/// scores it within `tolerance` of its own best. Quantized logits lie on a grid of one output step,
/// where a weakly trained model's top two often share a step or sit one apart; an implementation one
/// step off (ORT's int32 bias against fbgemm's float one) then "disagrees" on a choice the reference
/// itself does not make. `tolerance` 0 still counts exact ties as agreement.
pub fn top1_agreement_within(actual: &[f32], reference: &[f32], classes: usize, tolerance: f32) -> f64 {
    let argmax = vggq::eval::metrics::argmax;
    let rows = actual.len() / classes;
    let agreeing = actual
        .chunks(classes)
        .zip(reference.chunks(classes))
        .filter(|(a, r)| {
            let best = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            r[argmax(a)] >= best - tolerance
        })
        .count();
    agreeing as f64 / rows as f64
}

/// The tolerance of [`top1_agreement_within`] for a static model: one step of its output grid (and a half
/// step of room for float rounding, the grid's next value being a whole step further).
pub fn one_output_step(model: &QuantizedVgg) -> f32 {
    1.5 * model.classifier.last().and_then(|l| l.output).expect("a static output layer").scale
}

/// Distinct top-1 classes among the rows: agreement means little when a model always predicts one class.
pub fn distinct_top1(logits: &[f32], classes: usize) -> usize {
    let argmax = vggq::eval::metrics::argmax;
    logits.chunks(classes).map(argmax).collect::<std::collections::BTreeSet<_>>().len()
}

/// At least this many distinct predictions before an agreement figure counts.
pub const MIN_DISTINCT_TOP1: usize = 3;
