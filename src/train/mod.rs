//! Fine-tuning: cross-entropy, SGD with momentum and weight decay, a progress bar per epoch, validation
//! after each. Inside an epoch the host never waits for the device: losses and correct counts are
//! summed on the device and read at the end (the bar shows a loss read every
//! [`progress_read_interval`] steps), and the next batch is uploaded while a step runs. After each epoch
//! but the last, and inside an epoch at a progress read every so often, the state is saved
//! ([`checkpoint`]) for a killed run to resume from, and where a signal asks it to stop ([`stop`]).

mod checkpoint;
pub mod stop;

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, LearningRate, Optimizer, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, BatchLoader, CHANNELS, DEFAULT_BATCH_SIZE};
use crate::host_reads::{progress_read_interval, PROGRESS_READ_INTERVAL};
use crate::model::kernels::{self, SgdStep, VggBackend};
use crate::model::{TrainingBackend, Vgg};
use crate::progress::progress_bar;
use crate::score::{score_model, Score, ScoreSum};
use crate::upload::uploaded;

pub use checkpoint::{Checkpoint, CheckpointError, Checkpoints, UnfinishedEpoch, DEFAULT_INTERVAL};

/// The optimisation recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Seeds the initialisation, dropout, shuffling and flips.
    pub seed: u64,
}

impl TrainConfig {
    /// The seed's recipe: SGD lr 0.005, momentum 0.9, weight decay 5e-4, batch 32, 5 epochs.
    pub fn seed() -> Self {
        Self { epochs: 5, batch_size: DEFAULT_BATCH_SIZE, learning_rate: 0.005, momentum: 0.9, weight_decay: 5e-4, seed: 0 }
    }

    /// PyTorch's `torch.optim.SGD(momentum=m, weight_decay=wd)` for `model`'s parameters.
    pub fn optimizer<B: TrainingBackend>(&self) -> SgdOptimizer<B> {
        Sgd { momentum: self.momentum as f32, weight_decay: self.weight_decay as f32 }.into()
    }
}

/// The training's optimizer: [`Sgd`] for each of a model's parameters.
pub type SgdOptimizer<B> = OptimizerAdaptor<Sgd, Vgg<B>, B>;

/// PyTorch's `torch.optim.SGD` with momentum and weight decay (dampening 0, not Nesterov), as Burn's
/// `Sgd` computes it with those settings, each parameter's step one [`VggBackend::sgd_step`]: on the
/// CPU one pass in place, where Burn's makes five tensors (a full-size step spent 330 ms in it).
/// The state of a parameter is its velocity.
#[derive(Debug, Clone)]
pub struct Sgd {
    momentum: f32,
    weight_decay: f32,
}

impl<B: VggBackend> SimpleOptimizer<B> for Sgd {
    type State<const D: usize> = Tensor<B, D>;

    fn step<const D: usize>(
        &self,
        learning_rate: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        velocity: Option<Tensor<B, D>>,
    ) -> (Tensor<B, D>, Option<Tensor<B, D>>) {
        // f32 as Burn's scalar operations round them.
        let step = SgdStep { learning_rate: learning_rate as f32, momentum: self.momentum, weight_decay: self.weight_decay };
        let (param, velocity) = kernels::sgd_step(param, grad, velocity, step);
        (param, Some(velocity))
    }

    fn to_device<const D: usize>(velocity: Tensor<B, D>, device: &B::Device) -> Tensor<B, D> {
        velocity.to_device(device)
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train: Score,
    pub val: Score,
    /// Training images per second, data loading included, validation and checkpoints excluded.
    pub train_images_per_sec: f64,
}

impl std::fmt::Display for EpochReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {}: train loss {:.4} acc {:.2} % | val loss {:.4} acc {:.2} % | {:.1} img/s",
            self.epoch, self.train.loss, self.train.accuracy, self.val.loss, self.val.accuracy, self.train_images_per_sec
        )
    }
}

/// A training forward pass: the plain float model, or quantization-aware training's fake-quantized one.
pub trait TrainingForward<B: AutodiffBackend> {
    fn forward(&mut self, model: &Vgg<B>, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// What the pass keeps from one step to the next (QAT's observers), for a checkpoint.
    fn state(&self) -> ForwardState {
        ForwardState::default()
    }

    /// Puts back a [`state`](Self::state) that a checkpoint kept; false where it is not one of this pass's.
    fn restore(&mut self, state: ForwardState, _device: &B::Device) -> bool {
        state == ForwardState::default()
    }
}

/// The running ranges of a training forward pass's observers, in the pass's own order; `None` for one
/// that has not observed yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardState {
    pub observers: Vec<Option<ObservedRange>>,
}

/// An observer's running minimum and maximum, one value per channel (one for a per-tensor observer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedRange {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// The model's own forward pass.
pub struct FloatForward;

impl<B: TrainingBackend> TrainingForward<B> for FloatForward {
    fn forward(&mut self, model: &Vgg<B>, images: Tensor<B, 4>) -> Tensor<B, 2> {
        model.forward(images)
    }
}

/// One step of SGD on a batch: the training forward pass, the loss, its gradients and the optimizer's
/// update. Returns the updated model and the step's logits and loss (on the device, not read).
pub fn training_step<B: TrainingBackend, O: Optimizer<Vgg<B>, B>>(
    model: Vgg<B>,
    optimizer: &mut O,
    learning_rate: f64,
    images: Tensor<B, 4>,
    labels: Tensor<B, 1, Int>,
    forward: &mut impl TrainingForward<B>,
) -> (Vgg<B>, Tensor<B, 2>, Tensor<B, 1>) {
    let logits = forward.forward(&model, images);
    let loss = kernels::cross_entropy(logits.clone(), labels);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optimizer.step(learning_rate, model, grads), logits, loss)
}

/// One epoch of SGD over `batches` with the learning rate `learning_rate`, reading its progress as a
/// long epoch does (every [`PROGRESS_READ_INTERVAL`] steps); `bar` advances per batch. Returns the
/// trained model, its training score over the epoch and the epoch's wall time in seconds (the end of the
/// epoch waits for the device).
pub fn train_epoch<B: TrainingBackend, O: Optimizer<Vgg<B>, B>>(
    model: Vgg<B>,
    optimizer: &mut O,
    learning_rate: f64,
    batches: impl Iterator<Item = Batch>,
    forward: &mut impl TrainingForward<B>,
    device: &B::Device,
    bar: &ProgressBar,
) -> (Vgg<B>, Score, f64) {
    let epoch = EpochRun::from_the_start(batches, learning_rate, PROGRESS_READ_INTERVAL);
    match train_epoch_from(model, optimizer, epoch, forward, device, bar, |_| ControlFlow::Continue(())) {
        ControlFlow::Continue(trained) => trained,
        ControlFlow::Break(()) => unreachable!("an epoch whose progress reads never stop it runs to its end"),
    }
}

/// An epoch to train: its batches from where it starts, its learning rate, the steps between its
/// progress reads, and what its steps before that summed and took (a training resumed inside the epoch).
struct EpochRun<B: Backend, I> {
    batches: I,
    learning_rate: f64,
    read_interval: usize,
    /// Steps of the epoch already taken: the first of `batches` is the epoch's step `steps + 1`.
    steps: usize,
    sum: ScoreSum<B>,
    /// Training seconds the steps already taken spent.
    seconds: f64,
}

impl<B: Backend, I> EpochRun<B, I> {
    fn from_the_start(batches: I, learning_rate: f64, read_interval: usize) -> Self {
        EpochRun { batches, learning_rate, read_interval, steps: 0, sum: ScoreSum::default(), seconds: 0.0 }
    }

    /// The rest of an epoch a checkpoint was taken inside: `batches` are its batches after the
    /// `unfinished` steps.
    fn resumed(batches: I, learning_rate: f64, read_interval: usize, unfinished: UnfinishedEpoch, device: &B::Device) -> Self {
        let UnfinishedEpoch { steps, sum, seconds } = unfinished;
        EpochRun { batches, learning_rate, read_interval, steps, sum: ScoreSum::from_values(&sum, device), seconds }
    }
}

/// The training's state at a progress read inside an epoch: what a checkpoint there keeps.
struct ProgressRead<'a, B: TrainingBackend, O, F> {
    model: &'a Vgg<B>,
    optimizer: &'a O,
    forward: &'a F,
    /// Steps of the epoch taken.
    steps: usize,
    sum: &'a ScoreSum<B::InnerBackend>,
    /// Training seconds the epoch has spent.
    seconds: f64,
}

/// [`train_epoch`] for an epoch that may start inside itself, calling `at_read` at each progress read
/// (every `read_interval` steps of the epoch, where the host reads the loss and so has waited
/// for the device, and BatchNorm's running statistics are folded in: a checkpoint taken there, which
/// reads the state, queues nothing a run without it would not). Returns the trained model, its training
/// score over the whole epoch and the epoch's training seconds, or `Break` where `at_read` stopped the
/// epoch.
fn train_epoch_from<B: TrainingBackend, O: Optimizer<Vgg<B>, B>, F: TrainingForward<B>>(
    mut model: Vgg<B>,
    optimizer: &mut O,
    epoch: EpochRun<B::InnerBackend, impl Iterator<Item = Batch>>,
    forward: &mut F,
    device: &B::Device,
    bar: &ProgressBar,
    mut at_read: impl FnMut(ProgressRead<'_, B, O, F>) -> ControlFlow<()>,
) -> ControlFlow<(), (Vgg<B>, Score, f64)> {
    let started = Instant::now();
    let EpochRun { batches, learning_rate, read_interval, steps, mut sum, seconds: seconds_before } = epoch;
    // What `at_read` took (a checkpoint's reads and encoding), which is not training.
    let mut reading = 0.0;
    bar.set_position(steps as u64);
    bar.reset_eta();
    for (step, batch) in (steps..).zip(uploaded::<B, _>(batches, device)) {
        let (stepped, logits, loss) = training_step(model, optimizer, learning_rate, batch.images, batch.labels.clone(), forward);
        model = stepped;
        sum.add(logits.inner(), batch.labels.inner(), loss.inner(), batch.len);
        bar.inc(1);
        if let Some(signal) = stop::newly_requested() {
            bar.suspend(|| {
                stop::say(format_args!(
                    "{signal}: the training stops at its next progress read (every {read_interval} steps) or its \
                     epoch's end, where its state is saved (a training that ends first finishes its step); {signal} again \
                     stops at once"
                ))
            });
        }
        if (step + 1) % read_interval == 0 {
            // In every run, checkpoint or not: a checkpoint's record folds them in, and a GPU backend
            // that fuses its queue would otherwise run the fold here in one run and with the next step's
            // update in another.
            model.fold_running_statistics();
            bar.set_message(format!("loss {:.3}", sum.mean_loss()));
            let seconds = seconds_before + started.elapsed().as_secs_f64() - reading;
            let called = Instant::now();
            at_read(ProgressRead { model: &model, optimizer, forward, steps: step + 1, sum: &sum, seconds })?;
            reading += called.elapsed().as_secs_f64();
        }
    }
    // The score's reads wait for the device: the epoch's time includes its last steps.
    let score = sum.score();
    ControlFlow::Continue((model, score, seconds_before + started.elapsed().as_secs_f64() - reading))
}

/// Trains `model` for `config.epochs`, printing a bar per epoch and a summary line after each, resuming
/// from and saving to `checkpoints` where given.
pub fn train<B: TrainingBackend>(
    model: Vgg<B>,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    config: &TrainConfig,
    device: &B::Device,
    checkpoints: Option<&Checkpoints>,
) -> Result<(Vgg<B>, Vec<EpochReport>), CheckpointError> {
    train_with(model, train_batches, val_batches, config, device, &mut FloatForward, checkpoints)
}

/// [`train`] with another training forward pass (quantization-aware training inserts fake quantization);
/// validation still runs the plain float model.
///
/// With `checkpoints`, the state after each epoch but the last is saved there, and inside an epoch at a
/// progress read once the checkpoints' interval has passed since the last save (each written while the
/// training goes on, and waited for before this returns); a checkpoint an earlier run of the same
/// training left is resumed from: `model` must then be the one that run started from, drawn from the
/// backend's generator as it was (the resumed run draws again what the steps before the checkpoint
/// drew, and so goes on with the masks the run would have drawn next).
pub fn train_with<B: TrainingBackend, F: TrainingForward<B>>(
    mut model: Vgg<B>,
    train_batches: &BatchLoader,
    val_batches: &BatchLoader,
    config: &TrainConfig,
    device: &B::Device,
    forward: &mut F,
    checkpoints: Option<&Checkpoints>,
) -> Result<(Vgg<B>, Vec<EpochReport>), CheckpointError> {
    let mut optimizer = config.optimizer::<B>();
    let mut reports = Vec::with_capacity(config.epochs);
    let mut unfinished = None;
    if let Some(checkpoint) =
        checkpoints.map(|c| resume(&model, train_batches, config, forward, c, device)).transpose()?.flatten()
    {
        model = model.load_record(checkpoint.model);
        optimizer = optimizer.load_record(checkpoint.optimizer);
        reports = checkpoint.epochs;
        unfinished = checkpoint.unfinished;
    }
    let batch_count = train_batches.batch_count();
    let read_interval = progress_read_interval(batch_count);
    // A training that keeps checkpoints stops where a signal asks, at a place one can resume from.
    let listening = checkpoints.map(|_| {
        let listening = stop::Listening::start();
        println!("{}", stop::HOW_TO_STOP);
        listening
    });
    for epoch in reports.len() + 1..=config.epochs {
        let bar = progress_bar(batch_count, format!("epoch {epoch}/{}", config.epochs));
        let run = match unfinished.take() {
            Some(unfinished) => {
                let batches = train_batches.epoch_from(epoch as u64, unfinished.steps);
                EpochRun::resumed(batches, config.learning_rate, read_interval, unfinished, device)
            }
            None => EpochRun::from_the_start(train_batches.epoch(epoch as u64), config.learning_rate, read_interval),
        };
        let mut stopped = None;
        let epoch_run = train_epoch_from(model, &mut optimizer, run, forward, device, &bar, |read| {
            let stop = stop::requested();
            // The epoch's last step is followed by the epoch's own checkpoint.
            if let Some(checkpoints) = checkpoints.filter(|c| read.steps < batch_count && (stop.is_some() || c.is_due())) {
                let unfinished = UnfinishedEpoch { steps: read.steps, sum: read.sum.values(), seconds: read.seconds };
                let began = checkpoints.save(read.model, read.optimizer, read.forward.state(), &reports, Some(unfinished));
                if let Some(signal) = stop {
                    let place = place(epoch - 1, read.steps, batch_count, config.epochs);
                    stopped = Some(checkpoints.stopped(signal, place, began));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        bar.finish_and_clear();
        let ControlFlow::Continue((trained, train, seconds)) = epoch_run else {
            return Err(stopped.expect("only a stop, with its checkpoint, breaks an epoch"));
        };
        model = trained;
        let val = score_model(&model.valid(), val_batches, device, "validation");
        let report = EpochReport { epoch, train, val, train_images_per_sec: train.images as f64 / seconds };
        // Not `println!`: once a stop is asked for, the pipe this went to may be gone (Ctrl-C ends a `tee`).
        let _ = writeln!(std::io::stdout(), "{report}");
        reports.push(report);
        if let Some(checkpoints) = checkpoints.filter(|_| epoch < config.epochs) {
            let began = checkpoints.save(&model, &optimizer, forward.state(), &reports, None);
            if let Some(signal) = stop::requested() {
                return Err(checkpoints.stopped(signal, place(epoch, 0, batch_count, config.epochs), began));
            }
        }
    }
    // From here a signal ends vggq at once, and one that came since the last read is said to have.
    drop(listening);
    if let Some(checkpoints) = checkpoints {
        checkpoints.wait();
        if let Some(signal) = stop::requested() {
            stop::say(format_args!("{signal}: the training ended before its next progress read; its step goes on to its end"));
        }
    }
    Ok((model, reports))
}

/// Where a training is, after `finished` of its `epochs` and `steps` of the next one's `batch_count`:
/// "epoch 1 of 5", "step 50 of 1250 in epoch 2 of 5".
fn place(finished: usize, steps: usize, batch_count: usize, epochs: usize) -> String {
    match steps {
        0 => format!("epoch {finished} of {epochs}"),
        steps => format!("step {steps} of {batch_count} in epoch {} of {epochs}", finished + 1),
    }
}

/// The checkpoint `checkpoints` holds for this training, if any, with `forward`'s state put back and the
/// backend's generator drawn past the draws of the steps before it: its model and optimizer state are for
/// the caller to load (`model` is the one the training started from).
fn resume<B: TrainingBackend>(
    model: &Vgg<B>,
    train_batches: &BatchLoader,
    config: &TrainConfig,
    forward: &mut impl TrainingForward<B>,
    checkpoints: &Checkpoints,
    device: &B::Device,
) -> Result<Option<Checkpoint<B>>, CheckpointError> {
    let Some(mut checkpoint) = checkpoints.load::<B>(device)? else { return Ok(None) };
    let finished = checkpoint.epochs.len();
    let batch_count = train_batches.batch_count();
    let steps_into_next = checkpoint.unfinished.as_ref().map_or(0, |unfinished| unfinished.steps);
    let unfit = || CheckpointError::Unreadable {
        path: checkpoints.path().to_path_buf(),
        reason: format!(
            "it does not fit this training ({finished} of {} epochs and {steps_into_next} of the next one's \
             {batch_count} steps finished)",
            config.epochs
        ),
    };
    if finished >= config.epochs || steps_into_next >= batch_count {
        return Err(unfit());
    }
    let place = place(finished, steps_into_next, batch_count, config.epochs);
    println!("resuming after {place} from {} (an earlier run of this training stopped there)", checkpoints.path().display());
    // The draws of the steps before the checkpoint, in the order the run made them: Burn draws a
    // parameter when it is first read, so the first step's forward pass draws the initial parameters
    // between its dropout masks (its pass is run again, on zeros); every later step draws its masks alone.
    let mut steps =
        (0..finished).flat_map(|_| train_batches.batch_lengths()).chain(train_batches.batch_lengths().take(steps_into_next));
    if let Some(first) = steps.next() {
        let side = train_batches.config().side;
        forward.forward(model, Tensor::zeros([first, CHANNELS, side, side], device));
        // The pass left its BatchNorms' running statistics pending, and loading a record keeps pending
        // ones: folded in now, the checkpoint's statistics replace them.
        model.fold_running_statistics();
        for images in steps {
            model.draw_dropout_masks(images, device);
        }
        // The draws run before the next step, as the reads at the checkpoint make them run in a run that
        // does not stop (a GPU backend that fuses its queue, and takes a random operation's seed when it
        // runs, would otherwise cut and order it its own way).
        B::sync(device)
            .map_err(|error| CheckpointError::Device { path: checkpoints.path().to_path_buf(), reason: error.to_string() })?;
    }
    if !forward.restore(std::mem::take(&mut checkpoint.forward), device) {
        return Err(unfit());
    }
    for report in &checkpoint.epochs {
        println!("{report}");
    }
    Ok(Some(checkpoint))
}
