//! A training's state, kept beside its step's record while the step runs: a run that is killed (a
//! reboot, a job's time limit; the full profile trains for hours on a CPU) resumes where its last
//! checkpoint was taken and ends with the bytes of a run that never stopped. A checkpoint is taken after
//! each epoch but the last, and inside an epoch at the first progress read once [`Checkpoints`]'
//! interval has passed since the last one (a CPU epoch of the full profile takes about an hour).
//!
//! The state is what the next step reads: the model (parameters and running statistics), SGD's
//! velocities, the training forward pass's own state (QAT's observers), the finished epochs' reports,
//! and inside an epoch the steps it took and their sums so far. The backend's random generator, which
//! Burn does not expose, is put back by drawing again what the steps before the checkpoint drew (the
//! first step's pass, then [`Vgg::draw_dropout_masks`] for every later step). A checkpoint carries its
//! step's key (the program, the configuration and the inputs), so only the same training resumes from it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, Record};
use serde::{Deserialize, Serialize};

use super::stop::StopSignal;
use super::{EpochReport, ForwardState, SgdOptimizer};
use crate::model::{TrainingBackend, Vgg};
use crate::score::ScoreSumValues;
use crate::steps::Step;

/// How long a training goes without a checkpoint inside an epoch, unless told otherwise: what a kill costs
/// at most, against a write of the model and its velocities (477 MB at the full profile) each time.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Where a training step keeps its checkpoint, the key that a checkpoint must carry to be resumed, and
/// how often one is taken inside an epoch.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    key: String,
    /// Inside an epoch, the time from one checkpoint (or the start) to the next.
    interval: Duration,
    last: Mutex<Instant>,
    /// The write in flight: the training goes on while the last state is written (2.4 s for the
    /// full profile's 477 MB on a 2-core VM's disk, synced).
    writing: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

/// A training's state where its checkpoint was taken.
pub struct Checkpoint<B: TrainingBackend> {
    pub epochs: Vec<EpochReport>,
    /// The epoch after them, where the checkpoint was taken inside it.
    pub unfinished: Option<UnfinishedEpoch>,
    pub model: <Vgg<B> as Module<B>>::Record,
    pub optimizer: <SgdOptimizer<B> as Optimizer<Vgg<B>, B>>::Record,
    pub forward: ForwardState,
}

/// How far an epoch had gone where a checkpoint was taken inside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnfinishedEpoch {
    /// Steps of the epoch taken.
    pub steps: usize,
    /// The training score's sums over those steps.
    pub sum: ScoreSumValues,
    /// Training seconds those steps spent.
    pub seconds: f64,
}

type Item<R, B> = <R as Record<B>>::Item<FullPrecisionSettings>;

/// The checkpoint's file.
#[derive(Serialize, Deserialize)]
struct CheckpointFile<M, O> {
    key: String,
    epochs: Vec<EpochReport>,
    unfinished: Option<UnfinishedEpoch>,
    forward: ForwardState,
    model: M,
    optimizer: O,
}

/// What a checkpoint is told apart by, read before the rest.
#[derive(Deserialize)]
struct KeyOf {
    key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A checkpoint of this training that cannot be resumed from: a person decides whether to start over.
    #[error("{path} cannot be resumed from ({reason}): remove it, or pass --force, to train from the start")]
    Unreadable { path: PathBuf, reason: String },
    /// The device failed while the training resumed.
    #[error("resuming from {path}: {reason}")]
    Device { path: PathBuf, reason: String },
    /// A signal asked the training to stop, and it did at a progress read or an epoch's end (after `place`),
    /// its state saved there unless the write failed (said as it failed).
    #[error("stopped on {signal} after {place}: {}", resuming_after_stop(*.saved, .path))]
    Stopped { signal: StopSignal, place: String, path: PathBuf, saved: bool },
}

/// Where the same command resumes after a stop, by whether the state at the stop was `saved` at `path`.
fn resuming_after_stop(saved: bool, path: &Path) -> String {
    match saved {
        true => format!("its state is saved in {}, and the same command (without --force) resumes from there", path.display()),
        false => {
            "its state could not be saved, and the same command (without --force) resumes from the checkpoint before, if any"
                .into()
        }
    }
}

impl Checkpoints {
    /// `step`'s checkpoints (the file goes when the step records that it finished). Where the step is
    /// not to resume (`start_over`: `--force`, or the step is up to date, and a run killed between its
    /// record and the file's removal left one), the checkpoint goes now.
    pub fn of(step: &Step, start_over: bool) -> Result<Self, CheckpointError> {
        let checkpoints = Self::new(step.checkpoint_path(), step.key().to_owned());
        if start_over {
            checkpoints.discard()?;
        }
        Ok(checkpoints)
    }

    /// Checkpoints at `path` under `key`, inside an epoch every [`DEFAULT_INTERVAL`].
    pub fn new(path: PathBuf, key: String) -> Self {
        Checkpoints { path, key, interval: DEFAULT_INTERVAL, last: Mutex::new(Instant::now()), writing: Mutex::new(None) }
    }

    /// The same, taken inside an epoch every `interval` (zero: at every progress read).
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether a checkpoint inside an epoch is due: the interval has passed since the last one.
    pub fn is_due(&self) -> bool {
        self.last.lock().expect("only the training's thread sets the clock").elapsed() >= self.interval
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the checkpoint, if any.
    fn discard(&self) -> Result<(), CheckpointError> {
        crate::atomic::remove_if_present(&self.path).map_err(|source| CheckpointError::Io { path: self.path.clone(), source })
    }

    /// The checkpoint an earlier run of this training left, if there is one and it carries this key:
    /// `Ok(None)` for none, or for another training's (another configuration, input or build of vggq),
    /// which is said and left to be replaced.
    pub fn load<B: TrainingBackend>(&self, device: &B::Device) -> Result<Option<Checkpoint<B>>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path: self.path.clone(), source }),
        };
        let unreadable =
            |error: rmp_serde::decode::Error| CheckpointError::Unreadable { path: self.path.clone(), reason: error.to_string() };
        // The key alone first: another build's checkpoint may be laid out otherwise.
        let KeyOf { key } = rmp_serde::from_slice(&bytes).map_err(unreadable)?;
        if key != self.key {
            println!(
                "{}: a checkpoint of another training (its configuration, inputs or vggq build differ): training from the start",
                self.path.display()
            );
            return Ok(None);
        }
        type File<B> =
            CheckpointFile<Item<<Vgg<B> as Module<B>>::Record, B>, Item<<SgdOptimizer<B> as Optimizer<Vgg<B>, B>>::Record, B>>;
        let file: File<B> = rmp_serde::from_slice(&bytes).map_err(unreadable)?;
        Ok(Some(Checkpoint {
            epochs: file.epochs,
            unfinished: file.unfinished,
            model: Record::from_item(file.model, device),
            optimizer: Record::from_item(file.optimizer, device),
            forward: file.forward,
        }))
    }

    /// Replaces the checkpoint with the state after `epochs` and, where given, the `unfinished` epoch's
    /// steps after them, once the previous write has finished. The
    /// state is read and encoded here, on the training's thread (a GPU backend's queue is the training's:
    /// reads from another thread would run it at times of their own), and written by a thread of its own
    /// while the training goes on, through the project's atomic write: a run killed while it writes keeps
    /// the previous checkpoint. A checkpoint that cannot be written is said, and the training goes on
    /// without it. Returns whether the write began.
    pub fn save<B: TrainingBackend>(
        &self,
        model: &Vgg<B>,
        optimizer: &SgdOptimizer<B>,
        forward: ForwardState,
        epochs: &[EpochReport],
        unfinished: Option<UnfinishedEpoch>,
    ) -> bool {
        self.wait();
        *self.last.lock().expect("only the training's thread sets the clock") = Instant::now();
        let file = CheckpointFile {
            key: self.key.clone(),
            epochs: epochs.to_vec(),
            unfinished,
            forward,
            model: model.clone().into_record().into_item::<FullPrecisionSettings>(),
            optimizer: optimizer.to_record().into_item::<FullPrecisionSettings>(),
        };
        let bytes = match rmp_serde::to_vec_named(&file) {
            Ok(bytes) => bytes,
            Err(error) => return self.not_written(&error.to_string()),
        };
        drop(file);
        let path = self.path.clone();
        match std::thread::Builder::new().name("vggq-checkpoint".into()).spawn(move || crate::atomic::write(&path, &bytes)) {
            Ok(writer) => {
                *self.writing.lock().expect("no writer panics holding the lock") = Some(writer);
                true
            }
            Err(error) => self.not_written(&error.to_string()),
        }
    }

    /// Waits for the write in flight, if any; one that failed is said. Returns whether it was written.
    pub fn wait(&self) -> bool {
        let writer = self.writing.lock().expect("no writer panics holding the lock").take();
        self.finish(writer)
    }

    /// The training stopped on `signal` after `place`, where a checkpoint's write began (`began`), once
    /// that write has finished.
    pub(super) fn stopped(&self, signal: StopSignal, place: String, began: bool) -> CheckpointError {
        let written = self.wait();
        CheckpointError::Stopped { signal, place, path: self.path.clone(), saved: began && written }
    }

    fn finish(&self, writer: Option<JoinHandle<std::io::Result<()>>>) -> bool {
        match writer.map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => true,
            Some(Ok(Err(error))) => self.not_written(&error.to_string()),
            Some(Err(_)) => self.not_written("its writer panicked"),
        }
    }

    fn not_written(&self, reason: &str) -> bool {
        super::stop::say(format_args!(
            "warning: {} was not written ({reason}); a run stopped from here resumes from the previous checkpoint, if any",
            self.path.display()
        ));
        false
    }
}

/// A write still in flight when the training ends early (an error) finishes, and is said if it failed,
/// before its folder is left.
impl Drop for Checkpoints {
    fn drop(&mut self) {
        let writer = self.writing.get_mut().map(Option::take).ok().flatten();
        self.finish(writer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::model::VggConfig;
    use crate::train::TrainConfig;
    use vggq_core::ProfileName;

    /// Another training's checkpoint is passed over, and one cut short is an error naming the file.
    #[test]
    fn only_this_trainings_whole_checkpoint_is_resumed() {
        let device = Default::default();
        let model = VggConfig::of_shape(ProfileName::Smoke.model_shape(), 10).init::<CpuBackend>(&device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.checkpoint.mpk");
        let of = |key: &str| Checkpoints::new(path.clone(), key.into());
        assert!(of("this").load::<CpuBackend>(&device).unwrap().is_none(), "no file, no checkpoint");
        let optimizer = TrainConfig::seed().optimizer::<CpuBackend>();
        let this = of("this");
        this.save(&model, &optimizer, ForwardState::default(), &[], None);
        this.wait();
        assert!(of("this").load::<CpuBackend>(&device).unwrap().is_some());
        assert!(of("another").load::<CpuBackend>(&device).unwrap().is_none(), "another training's");

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let error = of("this").load::<CpuBackend>(&device).err().expect("a checkpoint cut short").to_string();
        assert!(error.starts_with(&format!("{} cannot be resumed from (", path.display())), "{error}");
        of("this").discard().unwrap();
        assert!(!path.exists());
        of("this").discard().unwrap();
        // Another build's checkpoint, laid out otherwise: told apart by its key.
        let another = serde_json::json!({ "key": "another build", "model": [1, 2] });
        std::fs::write(&path, rmp_serde::to_vec_named(&another).unwrap()).unwrap();
        assert!(of("this").load::<CpuBackend>(&device).unwrap().is_none());
    }
}
