//! The pipeline's steps as library calls, shared by the `vggq` binary and the tests: the data of a run,
//! FP32 training, and the quantize flow (dynamic, static and QAT INT8, each scored, and their `.pth`
//! files).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use vggq_core::{flag_value, Init, QatMode, Variant};

use crate::data::{BatchLoader, Cifar10, DataError, ImageSet, LoaderConfig, Split};
use crate::model::{load_features, ModelError, TrainingBackend, Vgg};
use crate::profile::Profile;
use crate::progress::progress_bar;
use crate::quant::qat::{qat_recipe, train_qat};
use crate::quant::state_dict::{fp32_state_dict, quantized_state_dict};
use crate::quant::static_ptq::CalibrationTiming;
use crate::quant::{quantize_dynamic, quantize_static, Calibration, FloatVgg, QuantError, QuantizedVgg, SimulatedVgg};
use crate::score::{score_model, score_model_with, Score};
use crate::train::{train, CheckpointError, Checkpoints, EpochReport};

/// The three image sets of a run, batched as the profile says.
pub struct RunData {
    /// Shuffled and flipped per epoch.
    pub train: BatchLoader,
    pub val: BatchLoader,
    pub test: BatchLoader,
}

impl RunData {
    /// Splits CIFAR-10's training images 8:2 (seeded), keeps the profile's subset and limits, and
    /// batches everything. Data of other classes than the model's outputs is refused (a label past them
    /// would fail inside training).
    pub fn new(cifar: Cifar10, profile: &Profile) -> Result<Self, DataError> {
        if cifar.classes.len() != profile.model.classes {
            let path = cifar.fingerprint.origin.path().to_owned();
            return Err(DataError::ClassesForModel { path, classes: cifar.classes, model: profile.model.classes });
        }
        let data = &profile.data;
        let seed = data.split_seed;
        let mut split = Split::new(cifar.train.len(), seed);
        if let Some(total) = data.subset {
            split = split.subset(total, seed);
        }
        // The split's parts are in shuffled order: the first N training images are a seeded random N.
        split.train.truncate(data.train_images.unwrap_or(usize::MAX));
        let eval_set = |images: ImageSet| match data.eval_images {
            Some(count) => images.spread(count),
            None => images,
        };
        let side = profile.model.input_size;
        let batch_size = profile.train.batch_size;
        let batches = |images, config: LoaderConfig| BatchLoader::new(images, LoaderConfig { batch_size, ..config });
        Ok(Self {
            train: batches(cifar.train.select(&split.train), LoaderConfig::train(side, profile.train.seed))?,
            val: batches(eval_set(cifar.train.select(&split.val)), LoaderConfig::eval(side))?,
            test: batches(eval_set(cifar.test), LoaderConfig::eval(side))?,
        })
    }
}

/// What can go wrong in a pipeline step.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// torchvision's weights are needed (pretrained init) but were not given.
    #[error("the profile starts from torchvision's pretrained weights, and none were given")]
    NoPretrainedWeights,
    #[error("writing {path}: {source}")]
    Pth { path: PathBuf, source: vggq_pth::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// The profile's untrained model: seeded, with torchvision's features when the profile starts from them.
pub fn initial_model<B: TrainingBackend>(
    profile: &Profile,
    pretrained: Option<&Path>,
    device: &B::Device,
) -> Result<Vgg<B>, PipelineError> {
    B::seed(device, profile.train.seed);
    let model = profile.model.init::<B>(device);
    match profile.init {
        Init::Random => Ok(model),
        Init::Pretrained => {
            let path = pretrained.ok_or(PipelineError::NoPretrainedWeights)?;
            let model = load_features(model, &profile.model, path)?;
            println!("features initialised from {}", path.display());
            Ok(model)
        }
    }
}

/// What fine-tuning produced.
pub struct TrainedFp32<B: AutodiffBackend> {
    pub model: Vgg<B>,
    pub epochs: Vec<EpochReport>,
    pub test: Score,
}

/// Builds the profile's model, fine-tunes it (resuming from and saving to `checkpoints` where given), and
/// scores the result on the test set.
pub fn train_fp32<B: TrainingBackend>(
    profile: &Profile,
    data: &RunData,
    pretrained: Option<&Path>,
    device: &B::Device,
    checkpoints: Option<&Checkpoints>,
) -> Result<TrainedFp32<B>, PipelineError> {
    let model = initial_model::<B>(profile, pretrained, device)?;
    let (model, epochs) = train(model, &data.train, &data.val, &profile.train, device, checkpoints)?;
    let test = score_model(&model.valid(), &data.test, device, "test");
    Ok(TrainedFp32 { model, epochs, test })
}

/// How the INT8 variants are made beyond the profile (`vggq quantize`'s flags; `quant_report.json` records
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantizeSettings {
    /// Activation observer of static quantization.
    pub calibration: Calibration,
    pub qat_mode: QatMode,
}

impl QuantizeSettings {
    /// The user's recipe: FX's default static observer (fbgemm's histogram) and QAT from the FP32 recipe.
    pub const RECIPE: QuantizeSettings = QuantizeSettings { calibration: Calibration::Histogram, qat_mode: QatMode::Fp32match };

    /// Where these depart from [`Self::RECIPE`], a line each, as [`Profile::departures`] says its own.
    pub fn departures(&self) -> Vec<String> {
        let recipe = Self::RECIPE;
        [
            ("calibration", flag_value(self.calibration), flag_value(recipe.calibration)),
            ("qat-mode", flag_value(self.qat_mode), flag_value(recipe.qat_mode)),
        ]
        .into_iter()
        .filter(|(_, mine, recipe)| mine != recipe)
        .map(|(flag, mine, recipe)| format!("quantize --{flag} {mine} where the recipe has {recipe}"))
        .collect()
    }
}

/// A variant's accuracy on the run's validation and test images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VariantScores {
    pub val: Score,
    pub test: Score,
}

/// The four variants of a trained model, scored.
pub struct Quantized {
    pub float: FloatVgg,
    pub dynamic: QuantizedVgg,
    pub static_int8: QuantizedVgg,
    pub qat: QuantizedVgg,
    pub qat_mode: QatMode,
    /// In [`Variant::all`]'s order.
    pub scores: Vec<(Variant, VariantScores)>,
    pub calibration_timing: CalibrationTiming,
    pub qat_epochs: Vec<EpochReport>,
    pub qat_seconds: f64,
}

/// Quantizes `trained` three ways (dynamic PTQ, static PTQ calibrated on the profile's batches of the
/// unaugmented training split, QAT in `settings.qat_mode`) and scores every variant on `data`'s
/// validation and test images (the INT8 ones with their simulated integer forward passes). QAT resumes
/// from and saves to `checkpoints` where given.
pub fn quantize<B: TrainingBackend>(
    trained: Vgg<B>,
    profile: &Profile,
    data: &RunData,
    settings: QuantizeSettings,
    pretrained: Option<&Path>,
    device: &B::Device,
    checkpoints: Option<&Checkpoints>,
) -> Result<Quantized, PipelineError> {
    let float = FloatVgg::from_model(&trained.valid(), &profile.model);
    let scores =
        |label: &str, forward: &dyn Fn(burn::tensor::Tensor<B::InnerBackend, 4>) -> burn::tensor::Tensor<B::InnerBackend, 2>| {
            let scores = VariantScores {
                val: score_model_with::<B::InnerBackend>(&data.val, device, &format!("{label} val"), forward),
                test: score_model_with::<B::InnerBackend>(&data.test, device, &format!("{label} test"), forward),
            };
            println!("{label}: val acc {:.2} % | test acc {:.2} %", scores.val.accuracy, scores.test.accuracy);
            scores
        };
    let simulated = |label: &str, model: &QuantizedVgg| {
        let simulation = SimulatedVgg::<B::InnerBackend>::new(model, device);
        scores(label, &|x| simulation.forward(x))
    };
    let fp32_model = trained.valid();
    let fp32 = scores(Variant::Fp32.label(), &|x| fp32_model.forward(x));

    let dynamic = quantize_dynamic(&float);
    let dynamic_scores = simulated(Variant::DynamicInt8.label(), &dynamic);

    // As many as the training split has, where the profile asks for more (a limited run).
    let batches = profile.quant.calibration_batches.min(data.train.batch_count());
    let bar = progress_bar(batches, "calibration".into());
    let calibration_set = data.train.unaugmented().epoch(0).take(batches);
    let (static_int8, calibration_timing) =
        quantize_static::<B::InnerBackend>(&float, calibration_set, settings.calibration, device, &bar)?;
    bar.finish_and_clear();
    println!(
        "calibration: {} batches, forward {:.2} s, observers {:.2} s",
        calibration_timing.batches, calibration_timing.forward_seconds, calibration_timing.observer_seconds
    );
    let static_scores = simulated(Variant::StaticInt8.label(), &static_int8);

    let start = match settings.qat_mode {
        QatMode::Finetune => {
            // Seeded too: dropout draws from the backend's generator.
            B::seed(device, profile.train.seed);
            trained
        }
        QatMode::Fp32match => initial_model::<B>(profile, pretrained, device)?,
    };
    let started = Instant::now();
    let recipe = qat_recipe(settings.qat_mode, &profile.train);
    let (qat, qat_epochs) = train_qat(start, &profile.model, &data.train, &data.val, &recipe, device, checkpoints)?;
    let qat_seconds = started.elapsed().as_secs_f64();
    let qat_variant = Variant::Qat(settings.qat_mode);
    let qat_scores = simulated(qat_variant.label(), &qat);

    let scores = vec![
        (Variant::Fp32, fp32),
        (Variant::DynamicInt8, dynamic_scores),
        (Variant::StaticInt8, static_scores),
        (qat_variant, qat_scores),
    ];
    Ok(Quantized {
        float,
        dynamic,
        static_int8,
        qat,
        qat_mode: settings.qat_mode,
        scores,
        calibration_timing,
        qat_epochs,
        qat_seconds,
    })
}

impl Quantized {
    /// Writes each variant's `.pth` (`Variant::pth_file`) into `folder`; returns their paths in
    /// [`Variant::all`]'s order.
    pub fn write_pth_files(&self, folder: &Path) -> Result<Vec<PathBuf>, PipelineError> {
        let files = [
            (Variant::Fp32, fp32_state_dict(&self.float)?),
            (Variant::DynamicInt8, quantized_state_dict(&self.dynamic)?),
            (Variant::StaticInt8, quantized_state_dict(&self.static_int8)?),
            (Variant::Qat(self.qat_mode), quantized_state_dict(&self.qat)?),
        ];
        files
            .iter()
            .map(|(variant, state_dict)| {
                let path = folder.join(variant.pth_file());
                vggq_pth::write_file(&path, state_dict).map_err(|source| PipelineError::Pth { path: path.clone(), source })?;
                Ok(path)
            })
            .collect()
    }
}
