//! `vggq train`: data -> model -> fine-tuning, into `<out>/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::record::{BurnRecord, FullPrecisionSettings, NamedMpkFileRecorder, Record};
use serde::Serialize;
use vggq::backend::autotune::AutotuneCache;
use vggq::backend::precision::{self, Precision};
use vggq::backend::{self, BackendKind, CpuBackend, DeviceRequest, OnBackend, Selection};
use vggq::data::{self, DataSource, DigestAlgorithm, ImageCounts};
use vggq::model::{CpuFacts, TrainingBackend};
use vggq::model::{WeightsFile, VGG11_BN_IMAGENET1K_V1};
use vggq::pipeline::{train_fp32, RunData, TrainedFp32};
use vggq::profile::{Init, Limits, Profile, ProfileName};
use vggq::score::Score;
use vggq::steps::{self, RunFolderLock, Step};
use vggq::throughput::seconds_per_training_step;
use vggq::train::{Checkpoints, EpochReport, DEFAULT_INTERVAL};

use super::run_dir::{default_run_folder, is_skipped, start, AUTOTUNE_FOLDER, MODEL_FILE, TRAIN_REPORT_FILE};

#[derive(clap::Args)]
pub struct Args {
    /// The recipe: `full` (the seed's) or `smoke` (minutes on 2 CPU cores).
    #[arg(long, value_enum, default_value = "full")]
    profile: ProfileName,
    /// `auto` trains on CUDA when the probe finds a usable GPU, else on a GPU wgpu offers (not a CPU
    /// adapter such as lavapipe), else on the CPU, and says why; `cuda` never falls back. The full
    /// profile on a CPU takes hours: `auto` refuses it, `cpu` runs it (a run limited to minutes' work,
    /// under 100 training steps' worth, runs on either).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
    /// Overrides the profile's initialisation.
    #[arg(long, value_enum)]
    init: Option<Init>,
    /// Overrides the training seed (initialisation, dropout, order, flips; the split keeps its own), to
    /// measure the spread of a recipe over seeds.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    limits: Limits,
    /// CIFAR-10 on disk: the official binary archive (`cifar-10-binary.tar.gz`) or its extracted folder, or
    /// an ImageFolder tree (`train/<class>/*`, `test/<class>/*`) as a folder or `.tar.gz`. Without it the
    /// official archive is downloaded (and verified) into the cache. Also read from `$VGGQ_DATA`.
    #[arg(long, env = super::DATA_VARIABLE, value_parser = super::non_empty_path())]
    data: Option<PathBuf>,
    /// torchvision's `vgg11_bn-6002323d.pth` on disk; without it, it is downloaded (and verified) into
    /// the cache when a `pretrained` training is to run (not for one found up to date). Also read from
    /// `$VGGQ_WEIGHTS`.
    #[arg(long, env = super::WEIGHTS_VARIABLE, value_parser = super::non_empty_path())]
    weights: Option<PathBuf>,
    /// Output folder; default `artifacts/<profile>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// cubecl's autotune cache for a GPU run of a build with the `autotune` feature: the kernels it chose
    /// by timing, reused where it holds them (give a golden table's run's to replay its choices). A build
    /// without it times nothing and neither creates nor reads the folder; nor does a CPU run read it; and
    /// neither redoes a run given another folder (a path that is a file is refused by any run, as a
    /// mistake). Default: `<out>/autotune`.
    #[arg(long)]
    autotune_cache: Option<PathBuf>,
    /// Train from the start even when the outputs of an identical earlier run are in place, or the
    /// checkpoint of one that stopped mid-way (without it, such a run resumes where its last checkpoint
    /// was taken, and ends with the bytes it would have written).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    checkpoint_interval: CheckpointInterval,
}

/// How often a training saves its state inside an epoch.
#[derive(clap::Args)]
pub(super) struct CheckpointInterval {
    /// Minutes between checkpoints inside an epoch, each taken at the first progress read (every 50
    /// steps, or every quarter of an epoch shorter than 200) after them (one is also taken after each
    /// epoch but the last): a killed run resumes from the last, and so loses about this much training
    /// and up to 50 steps; each writes the model and SGD's velocities (477 MB at the full profile). 0: at
    /// every progress read. Ctrl-C, SIGTERM or SIGHUP takes one at the next progress read and stops there.
    #[arg(long = "checkpoint-minutes", default_value_t = DEFAULT_INTERVAL.as_secs() / 60)]
    minutes: u64,
}

impl CheckpointInterval {
    pub(super) fn duration(&self) -> Duration {
        Duration::from_secs(self.minutes.saturating_mul(60))
    }
}

/// What `train_report.json` records.
#[derive(Serialize)]
struct TrainReport<'a> {
    profile: &'a Profile,
    device: &'a Selection,
    /// The arithmetic of the backend's matmuls and convolutions at the run's shapes, measured.
    precision: Precision,
    /// What the CPU kernels ran with (threads, instruction set, blocking).
    cpu: CpuFacts,
    /// cubecl's autotune cache after training (empty on the CPU and without the `autotune` feature).
    autotune: AutotuneCache,
    /// The ImageNet weights a `pretrained` run started from.
    imagenet_weights: Option<&'a WeightsFile>,
    dataset: String,
    data_images: ImageCounts,
    classes: Vec<String>,
    epochs: Vec<EpochReport>,
    test: Score,
}

pub fn run(args: Args) -> Result<()> {
    let mut profile = Profile::named(args.profile).limited(&args.limits);
    profile.init = args.init.unwrap_or(profile.init);
    profile.train.seed = args.seed.unwrap_or(profile.train.seed);
    let out = args.out.clone().unwrap_or_else(|| default_run_folder(profile.name));
    if out.exists() && !out.is_dir() {
        bail!("--out {} is not a folder", out.display());
    }
    // Made (and found writable) before hours of training, not at its end, and before anything is
    // written there (the autotune cache's folder).
    let _writing = RunFolderLock::take(&out)?;
    steps::refuse_others_report_files(&out)?;
    steps::refuse_foreign_entries(&out)?;
    if let Some(data) = &args.data {
        super::refuse_writing_into_data("--out", &out, data)?;
    }
    // The data by its content, whatever its form (archive, folder, download): read first, so that data
    // that is missing, or an archive cut short or damaged, is said before anything else is printed (a
    // damaged image is found where the images are decoded, below).
    let data_source = DataSource::local_or_download(args.data.clone());
    let data_digest = super::data_digest(&data_source)?;
    // Before anything touches a GPU: cubecl reads where its cache is once.
    let autotune = args.autotune_cache.clone().unwrap_or_else(|| out.join(AUTOTUNE_FOLDER));
    let _cache_folders = backend::autotune::use_caches(Some(&autotune))?;
    let selection = backend::select(args.device)?;
    println!("{}", selection.announcement());
    println!("profile:\n{}", profile.to_json());
    // Timing takes three steps at the full shapes: worth it ahead of hours, not of minutes' work, which
    // `auto` runs on the CPU as it finds it.
    if profile.name == ProfileName::Full
        && selection.backend == BackendKind::Cpu
        && work_in_steps(&profile) >= TIMED_AHEAD_MIN_STEPS
    {
        println!("timing three training steps of the {} profile on this CPU, for how long the run would take", profile.name());
        let duration = cpu_duration(&profile);
        if selection.request == DeviceRequest::Auto {
            bail!("{duration}: --device auto does not choose that; pass --device cpu to train on the CPU anyway");
        }
        println!("{duration}");
    }
    let weights = match profile.init {
        Init::Pretrained => Some(PretrainedWeightsSource::new(args.weights)?),
        Init::Random => {
            note_unread_weights(args.weights.as_deref(), "a `random` run starts from no weights");
            None
        }
    };
    let inputs: Vec<&Path> = weights.iter().filter_map(PretrainedWeightsSource::input).collect();
    let step = Step::new(
        "train",
        &out,
        // The data by its content, the autotune cache by its place in the run where it is read: a renamed
        // archive or a moved run is the same training.
        &(
            &profile,
            selection.backend,
            selection.adapter(),
            data::content_of(&data_digest),
            backend::autotune::in_step_key(&out, &autotune, selection.backend),
            weights.as_ref().and_then(PretrainedWeightsSource::published),
        ),
        &inputs,
        vec![out.join(MODEL_FILE), out.join(TRAIN_REPORT_FILE)],
    )?;
    let skipped = is_skipped(&step, args.force, &out)?;
    let checkpoints = Checkpoints::of(&step, args.force || skipped)?.every(args.checkpoint_interval.duration());
    if skipped {
        return Ok(());
    }
    println!("data: {data_source}");
    let inputs = TrainingInputs::read(&profile, &data_source, weights)?;
    println!("dataset: {}", inputs.dataset);
    let data = &inputs.data;
    println!("images: train {} | val {} | test {}", data.train.len(), data.val.len(), data.test.len());
    if let Some(departure) = inputs.data_images.departure_from_cifar10() {
        println!("note: {departure}: this run's reports will say that it is not the {} profile's recipe", profile.name());
    }
    start(&step, &out)?;
    selection.backend.run(Training {
        profile: &profile,
        inputs,
        out,
        selection: &selection,
        autotune: &autotune,
        checkpoints: &checkpoints,
    })??;
    step.record()?;
    Ok(())
}

/// Says that `given` ImageNet weights (`--weights`, or `$VGGQ_WEIGHTS`) go unread, and `why`: a path
/// that is silently passed over reads as used.
pub(super) fn note_unread_weights(given: Option<&Path>, why: &str) {
    if let Some(weights) = given {
        println!("note: --weights (or ${}) {} is not read: {why}", super::WEIGHTS_VARIABLE, weights.display());
    }
}

/// What a training step (`train`, or `quantize` for QAT) reads before it changes its run: the data,
/// refused where it does not fit the model, and the ImageNet weights, fetched and tried. A refusal
/// leaves the run as it was.
pub(super) struct TrainingInputs {
    pub(super) data: RunData,
    /// The data's fingerprint, image counts and class names, for the reports.
    pub(super) dataset: String,
    pub(super) data_images: ImageCounts,
    pub(super) classes: Vec<String>,
    /// The ImageNet weights a `pretrained` run starts from.
    pub(super) weights: Option<WeightsFile>,
}

impl TrainingInputs {
    pub(super) fn read(profile: &Profile, source: &DataSource, weights: Option<PretrainedWeightsSource>) -> Result<Self> {
        let cifar = super::load_data(source)?;
        let (dataset, data_images, classes) = (cifar.fingerprint.to_string(), cifar.image_counts(), cifar.classes.clone());
        let data = RunData::new(cifar, profile)?;
        let weights = weights
            .map(|source| {
                let given = source.input().map(Path::to_path_buf);
                let checked = source.fetch().and_then(|weights| {
                    vggq::model::check_features(&profile.model, &weights.path)?;
                    Ok(weights)
                });
                match given {
                    Some(path) => super::naming_variable(checked, super::WEIGHTS_VARIABLE, &path),
                    None => checked,
                }
            })
            .transpose()?;
        Ok(Self { data, dataset, data_images, classes, weights })
    }

    /// The weights' file, for the pipeline.
    pub(super) fn weights_path(&self) -> Option<&Path> {
        self.weights.as_ref().map(|weights| weights.path.as_path())
    }
}

/// The least work, in training steps ([`work_in_steps`]), a full-profile CPU run times ahead
/// (`cpu_duration`, three steps) and `--device auto` refuses: below it, the run takes minutes, and the
/// timing would add more than about 3 % to it.
const TIMED_AHEAD_MIN_STEPS: f64 = 100.0;

/// The steps of FP32 and QAT (fp32match) training the profile takes: each trains the profile's epochs.
fn training_steps(profile: &Profile) -> usize {
    2 * profile.train.epochs * profile.data.train_count().div_ceil(profile.train.batch_size)
}

/// The profile's whole work in training steps: both trainings validate after each epoch, and the FP32
/// model and the variants are tested, an evaluation image costing about a third of a training image.
fn work_in_steps(profile: &Profile) -> f64 {
    let (val, test) = profile.data.eval_counts();
    let eval_images = 2 * profile.train.epochs * val + 8 * test;
    training_steps(profile) as f64 + eval_images as f64 / profile.train.batch_size as f64 / 3.0
}

/// How long the profile would train on this machine's CPU, from two real training steps timed here.
fn cpu_duration(profile: &Profile) -> String {
    let batch = profile.train.batch_size;
    let seconds_per_step = seconds_per_training_step::<CpuBackend>(&profile.model, batch, &Default::default());
    let (steps, seconds) = (training_steps(profile), seconds_per_step * work_in_steps(profile));
    format!(
        "the {} profile on this CPU takes about {:.1} hours ({:.1} s per training step of {batch} images, measured now; \
         {steps} steps of FP32 and QAT training, and their evaluations)",
        profile.name(),
        seconds / 3600.0,
        seconds_per_step
    )
}

/// Where a pretrained run's ImageNet weights come from: a file given with `--weights`, or torchvision's
/// published checkpoint, fetched into the cache only when a step is to run.
pub(super) enum PretrainedWeightsSource {
    Given(PathBuf),
    /// `VGG11_BN_IMAGENET1K_V1`.
    Torchvision,
}

impl PretrainedWeightsSource {
    /// The file given, which must be there (it is hashed into the step's key before it is read), else
    /// torchvision's.
    pub(super) fn new(given: Option<PathBuf>) -> Result<Self> {
        match given {
            Some(path) => Self::require_file(&path).map(|()| Self::Given(path)),
            None => Ok(Self::Torchvision),
        }
    }

    /// Fails where the given `path` names no file.
    fn require_file(path: &Path) -> Result<()> {
        let found = match path.is_file() {
            true => Ok(()),
            false => Err(anyhow::anyhow!("--weights {} names no file", path.display())),
        };
        super::naming_variable(found, super::WEIGHTS_VARIABLE, path)
    }

    /// Where QAT (fp32match) of the run at `run` gets its ImageNet weights: `given`, else the file its
    /// training was given (or torchvision's download, where that file is gone and was torchvision's by
    /// its digest), else torchvision's; refused unless they are the weights its training started from
    /// (`trained_from`, recorded by builds since they were), as the recipe has it.
    pub(super) fn for_qat_of(run: &Path, trained_from: Option<&WeightsFile>, given: Option<PathBuf>) -> Result<Self> {
        let Some(trained_from) = trained_from else { return Self::new(given) };
        let published = VGG11_BN_IMAGENET1K_V1.expected.digest;
        let (run, recorded) = (run.display(), &trained_from.sha256);
        let path = match given {
            Some(path) => path,
            None if trained_from.downloaded_from.is_some() => return Ok(Self::Torchvision),
            None if trained_from.path.is_file() => trained_from.path.clone(),
            None if recorded.starts_with(published) => return Ok(Self::Torchvision),
            None => bail!(
                "{run} was trained from the ImageNet weights {}, which are not there now: pass --weights with that \
                 file (SHA-256 {recorded})",
                trained_from.path.display()
            ),
        };
        Self::require_file(&path)?;
        let sha256 = data::file_digest(&path, DigestAlgorithm::Sha256).context("reading the ImageNet weights")?.hex;
        if sha256 != *recorded {
            bail!(
                "{run} was trained from the ImageNet weights {} (SHA-256 {recorded}), but {} is {sha256}: QAT \
                 (fp32match) starts from the weights training started from",
                trained_from.path.display(),
                path.display()
            );
        }
        Ok(Self::Given(path))
    }

    /// A given file, which a step's key holds by its content (an input of the step).
    pub(super) fn input(&self) -> Option<&Path> {
        match self {
            Self::Given(path) => Some(path),
            Self::Torchvision => None,
        }
    }

    /// torchvision's checkpoint as a step's key holds it: by the address and digest its download is
    /// checked against, so that a step found up to date needs neither the file nor the network (a moved
    /// run, a cleared cache, a machine offline).
    pub(super) fn published(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Given(_) => None,
            Self::Torchvision => Some((VGG11_BN_IMAGENET1K_V1.url, VGG11_BN_IMAGENET1K_V1.expected.digest)),
        }
    }

    /// The weights' file: the given one, or torchvision's, downloaded (and verified) into the cache
    /// where it is not there yet; with its SHA-256, for the reports.
    pub(super) fn fetch(self) -> Result<WeightsFile> {
        match self {
            Self::Given(path) => {
                // Absolute: recorded, a relative path would not say which file it was.
                let path = std::path::absolute(&path).unwrap_or(path);
                let sha256 = data::file_digest(&path, DigestAlgorithm::Sha256).context("reading the ImageNet weights")?.hex;
                let published = VGG11_BN_IMAGENET1K_V1;
                if !sha256.starts_with(published.expected.digest) {
                    println!(
                        "ImageNet weights: {} is not torchvision's {} (its SHA-256 begins {}, not {}); starting from it as given",
                        path.display(),
                        published.file_name,
                        &sha256[..published.expected.digest.len()],
                        published.expected.digest
                    );
                }
                Ok(WeightsFile { path, sha256, downloaded_from: None })
            }
            Self::Torchvision => {
                let weights = VGG11_BN_IMAGENET1K_V1;
                let path = vggq_core::places::cache_dir().join(weights.file_name);
                let verified = data::download_verified(weights.url, &path, &weights.expected)
                    .with_context(|| format!("fetching torchvision's weights (or pass --weights {})", weights.file_name))?;
                Ok(WeightsFile { path, sha256: verified.digest.hex, downloaded_from: Some(weights.url.to_string()) })
            }
        }
    }
}

/// The training a run does, generic over the backend it chose.
struct Training<'a> {
    profile: &'a Profile,
    inputs: TrainingInputs,
    out: PathBuf,
    selection: &'a Selection,
    autotune: &'a Path,
    checkpoints: &'a Checkpoints,
}

impl OnBackend for Training<'_> {
    type Output = Result<()>;

    fn run<B: TrainingBackend>(self, device: &B::Device) -> Result<()> {
        let (profile, inputs) = (self.profile, self.inputs);
        // The CPU's kernels are the training's on the CPU alone (elsewhere the CPU prepares the batches;
        // the report records its facts either way).
        if self.selection.backend == BackendKind::Cpu {
            println!("cpu: {}", CpuFacts::here());
        }
        let precision = precision::measure::<B::InnerBackend>(&profile.model, profile.train.batch_size, device);
        println!(
            "precision: matmul {:?}, conv {:?} (measured at the run's first Linear and conv)",
            precision.matmul, precision.conv
        );
        let TrainedFp32 { model, epochs, test } =
            train_fp32::<B>(profile, &inputs.data, inputs.weights_path(), device, Some(self.checkpoints))?;
        println!("test: loss {:.4} acc {:.2} % ({} images)", test.loss, test.accuracy, test.images);

        save_model(model, &self.out.join(MODEL_FILE))?;
        let cpu = CpuFacts::here();
        let autotune = AutotuneCache::read(&self.out, self.autotune, backend::autotune::reads_cache(self.selection.backend))?;
        let report = TrainReport {
            profile,
            device: self.selection,
            precision,
            cpu,
            autotune,
            imagenet_weights: inputs.weights.as_ref(),
            dataset: inputs.dataset,
            data_images: inputs.data_images,
            classes: inputs.classes,
            epochs,
            test,
        };
        let report_path = self.out.join(TRAIN_REPORT_FILE);
        vggq::atomic::write(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", report_path.display()))?;
        println!("wrote {}", self.out.display());
        Ok(())
    }
}

/// The trained FP32 model as a Burn record at `target` (`.mpk`), through the project's atomic write:
/// byte for byte what Burn's `NamedMpkFileRecorder` writes and `quantize` loads (its metadata names that
/// recorder), without the recorder's own file handling, which picks the file name itself.
fn save_model<B: TrainingBackend>(model: vggq::model::Vgg<B>, target: &Path) -> Result<()> {
    let record = model.valid().with_numbered_ids().into_record().into_item::<FullPrecisionSettings>();
    let record = BurnRecord::<_, B::InnerBackend>::new::<NamedMpkFileRecorder<FullPrecisionSettings>>(record);
    vggq::atomic::write_with(target, |out| anyhow::Ok(rmp_serde::encode::write_named(out, &record)?))
        .with_context(|| format!("writing {}", target.display()))
}
