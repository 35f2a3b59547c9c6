//! Up-to-date checks for pipeline steps: a step's outputs are keyed by a hash of the program, its
//! configuration and its input files, so a rerun skips what is current, an interrupted run resumes at
//! the first step that did not finish, a rebuilt `vggq` redoes everything, and `--force` redoes.
//! [`RunFolderLock`] keeps a second `vggq` from writing into a run folder while one does.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{file_digest, DataError, DigestAlgorithm};
use vggq_core::run_folder::{checkpoint_in_run, every_run_file, REPORT_OUTPUTS, RUN_FOLDERS, STEPS_FOLDER};

/// The run folder's lock, beside the stamps; it names the process that holds it.
const LOCK_FILE: &str = "writer.lock";

/// One step of the pipeline: what it reads, how it is configured, what it writes.
pub struct Step {
    name: String,
    /// The inputs inside `folder` and their digests.
    inputs: Vec<(String, String)>,
    /// The step's output folder: outputs are recorded relative to it, so that a moved run folder, or
    /// one named another way (`run`, `./run`, `/abs/run`), is still up to date.
    folder: PathBuf,
    stamp: PathBuf,
    key: String,
    outputs: Vec<PathBuf>,
}

/// What a finished step leaves behind: its key, the digests of the inputs it read from its folder, and
/// of its outputs, each named relative to the folder.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Stamp {
    key: String,
    /// What a later step checks its folder against ([`require_current`]); a stamp from before they were
    /// recorded has none.
    #[serde(default)]
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Digest(#[from] DataError),
    /// A stamp, or the run folder's lock, could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// What should be the run folder's step records (`.steps`) is something else.
    #[error("{path} is not a folder, and vggq keeps a run's step records there: move it out of the run folder")]
    RecordsNotAFolder { path: PathBuf },
    /// Another process holds the run folder's lock.
    #[error("{folder} is being written by another vggq ({holder}): let it finish first")]
    Busy { folder: PathBuf, holder: String },
    /// The run folder cannot be made or written, found before any work is done.
    #[error("vggq cannot write in {folder}: {source}")]
    NotWritable { folder: PathBuf, source: std::io::Error },
    /// An earlier step's output is gone ([`require_current`]).
    #[error("{file} is missing: run `vggq {step}` again")]
    OutputMissing { file: PathBuf, step: String },
    /// An earlier step's output is not the bytes it wrote.
    #[error("{file} has changed since `vggq {step}` wrote it: run `vggq {step}` again")]
    OutputChanged { file: PathBuf, step: String },
    /// An earlier step read another version of a file of the folder than the one there now.
    #[error(
        "`vggq {step}` ran on another {input} than the one there now (an earlier step ran again since): run `vggq {step}` again"
    )]
    InputChanged { input: PathBuf, step: String },
    /// An earlier step left no stamp: it did not finish, an older vggq ran it, or the folder is a copy of a
    /// package's files without its records.
    #[error(
        "{folder} has no record that `vggq {step}` finished there (in its `.steps` folder): run `vggq {step}`; a copy \
         of a package without its records can still be checked with `vggq verify`, and its ONNX files evaluated with \
         `vggq eval FILE...`"
    )]
    Unrecorded { folder: PathBuf, step: String },
    /// A folder with no step records holds files of the kind `vggq report` writes, which a step starting
    /// there would remove ([`Step::starting`]).
    #[error(
        "{folder} holds {files}, which no vggq step recorded there (it has no `.steps` records), and a run there \
         would remove them: give another folder, or move them out"
    )]
    OthersFiles { folder: PathBuf, files: String },

    /// A folder that is no run's yet holds what no step of a run writes ([`refuse_foreign_entries`]).
    #[error(
        "{folder} holds {entries}, which no step of a run writes: `vggq report` would refuse to package the run beside \
         them, once it had trained; give another folder, or move them out"
    )]
    ForeignEntries { folder: PathBuf, entries: String },
}

/// Held while a command writes into a run folder: two runs writing one folder would mix their files
/// (and remove each other's temporary files, see `vggq_core::atomic`). An advisory lock of the
/// operating system's (`flock`), so a killed run leaves none behind. A file system without such locks
/// (Lustre mounted without `flock`, some FUSE file systems) gets a warning and no guard: the run is
/// worth more than the guard.
#[derive(Debug)]
pub struct RunFolderLock {
    file: File,
    path: PathBuf,
}

/// The holder's name goes with the lock: a finished run's folder does not name a process long gone (nor
/// the path of the binary that wrote it). A command that failed before it wrote anything (its data
/// missing, say) leaves no folder it made behind.
impl Drop for RunFolderLock {
    fn drop(&mut self) {
        // Best effort: a lock that cannot be cleared is still released when the file closes.
        let _ = self.file.set_len(0);
        let made = {
            let mut listed = MADE_FOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            listed.iter().position(|(lock, _)| lock == &self.path).map(|index| listed.swap_remove(index).1)
        };
        if let Some(made) = made {
            remove_if_unwritten(&self.path, &made);
        }
    }
}

/// The locks this process holds on folders it made, each with the folders [`RunFolderLock::take`] made
/// for it (`.steps`, the run folder, its parents), innermost first: a lock's `Drop` removes them where
/// nothing was written, and a stop signal that ends vggq at once (before a training listens for it, or a
/// second one), which skips every `Drop`, has [`remove_unwritten_folders`] do the same.
static MADE_FOLDERS: std::sync::Mutex<Vec<(PathBuf, Vec<PathBuf>)>> = std::sync::Mutex::new(Vec::new());

/// Removes the folders this process made for its run folder locks and its outputs ([`FoldersMade`]) and
/// has written nothing into, as a command that fails does: for a process about to end without unwinding
/// (a stop signal's end).
pub fn remove_unwritten_folders() {
    for (lock, made) in MADE_FOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        remove_if_unwritten(lock, made);
    }
    for (_, made) in output_folders().iter() {
        made.remove_unwritten();
    }
}

/// Removes the lock file at `lock` and the folders `made` for it, where `.steps` holds nothing else.
fn remove_if_unwritten(lock: &Path, made: &[PathBuf]) {
    let stamps = lock.parent().expect("the lock lives in .steps");
    if !holds_only(stamps, LOCK_FILE) {
        return;
    }
    // Removed while held: a vggq that opened it meanwhile finds, once it has the lock, that the file
    // is no longer the folder's, and takes the folder's anew (`take`).
    let _ = std::fs::remove_file(lock);
    for folder in made {
        // Only an empty folder goes.
        let _ = std::fs::remove_dir(folder);
    }
}

/// Refuses a run folder that holds files of the kind `vggq report` writes but no record of any step:
/// they are not vggq's (a person's notes, a package copied without its records), and a step starting
/// there would remove them. [`Step::starting`] checks it, and `train` first thing, before it reads the
/// data.
pub fn refuse_others_report_files(folder: &Path) -> Result<(), StepError> {
    let present: Vec<&str> = REPORT_OUTPUTS.into_iter().filter(|file| folder.join(file).exists()).collect();
    if present.is_empty() || holds_records(folder) {
        return Ok(());
    }
    Err(StepError::OthersFiles { folder: folder.to_path_buf(), files: present.join(", ") })
}

/// Refuses to start a run (`train` does, first thing) in a folder that holds no step's record and
/// something no step of a run writes (a person's notes, the data itself): `vggq report` refuses to
/// package a run beside it, which it would say only once the run has trained. A folder that is a run's
/// is left to `report`, which knows the files its steps wrote.
pub fn refuse_foreign_entries(folder: &Path) -> Result<(), StepError> {
    if holds_records(folder) {
        return Ok(());
    }
    let run_files = every_run_file();
    let ours = |name: &str| run_files.iter().any(|file| file == name || vggq_core::atomic::is_temp_of(name, file));
    let Ok(entries) = std::fs::read_dir(folder) else { return Ok(()) };
    let mut foreign: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                (!RUN_FOLDERS.contains(&name.as_str())).then(|| format!("{name}/"))
            } else {
                (!ours(&name)).then_some(name)
            }
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(StepError::ForeignEntries { folder: folder.to_path_buf(), entries: foreign.join(", ") })
}

/// Whether the run folder `folder` holds a record of a step (a stamp, or a checkpoint of one that
/// stopped): its lock alone is no record.
fn holds_records(folder: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder.join(STEPS_FOLDER)) else { return false };
    entries.filter_map(Result::ok).any(|entry| entry.file_name() != LOCK_FILE)
}

/// The run folder a file at `path` would lie in, if any: the nearest folder holding it that is a run's
/// (`train` recorded its step there, or a checkpoint of one that stopped; an evaluation's record alone
/// is not, as an older vggq left one beside a report written outside a run), found from the deepest of
/// its folders that exists, resolved (links, `..`), so that no spelling of the path escapes it.
pub fn run_folder_holding(path: &Path) -> Option<PathBuf> {
    let existing = path
        .ancestors()
        .skip(1)
        .map(|folder| if folder.as_os_str().is_empty() { Path::new(".") } else { folder })
        .find(|folder| folder.exists())?;
    let is_run = |folder: &Path| folder.join(record_in_run("train")).exists() || folder.join(checkpoint_in_run("train")).exists();
    std::fs::canonicalize(existing).ok()?.ancestors().find(|folder| is_run(folder)).map(Path::to_path_buf)
}

/// Where `step` keeps its record, relative to the run folder: in [`STEPS_FOLDER`], beside its lock.
fn record_in_run(step: &str) -> PathBuf {
    PathBuf::from(STEPS_FOLDER).join(format!("{step}.json"))
}

/// The folders `create_dir_all(folder)` would make, innermost first: `folder` and its parents, up to the
/// first that is there.
fn missing_folders(folder: &Path) -> Vec<PathBuf> {
    folder.ancestors().take_while(|path| !path.as_os_str().is_empty() && !path.exists()).map(Path::to_path_buf).collect()
}

/// Folders a command made for its outputs (a report's, an autotune cache), innermost first, and the
/// placeholders in them: removed when dropped, or when a stop signal ends vggq at once
/// ([`remove_unwritten_folders`]), where still empty, as a command that failed, or wrote nothing there (a
/// CPU run's autotune cache), leaves nothing it made; kept where anything is in them. A run folder's own
/// are its lock's ([`RunFolderLock`]).
#[derive(Debug, Default)]
pub struct FoldersMade {
    /// Its entry in [`OUTPUT_FOLDERS`]; none where nothing was made.
    id: Option<u64>,
}

/// What a [`FoldersMade`] lists.
struct MadeForOutputs {
    /// Innermost first.
    folders: Vec<PathBuf>,
    /// Files another made in them before anything was written: removed while empty.
    placeholders: Vec<PathBuf>,
}

/// The output folders each [`FoldersMade`] of this process lists, by its id: what its `Drop` removes where
/// unwritten, and a stop signal's end, which skips every `Drop`, too ([`remove_unwritten_folders`]).
static OUTPUT_FOLDERS: std::sync::Mutex<Vec<(u64, MadeForOutputs)>> = std::sync::Mutex::new(Vec::new());

impl FoldersMade {
    /// Makes `folder` and whichever of its parents are missing.
    pub fn make(folder: &Path) -> std::io::Result<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Listed first, so that a failure partway removes what it made.
        let made = MadeForOutputs { folders: missing_folders(folder), placeholders: Vec::new() };
        output_folders().push((id, made));
        let made = FoldersMade { id: Some(id) };
        std::fs::create_dir_all(folder)?;
        Ok(made)
    }

    /// Also removes `file` where it is empty: one a library makes there before it writes anything, or
    /// anything at all (cubecl's autotune log, made as soon as a GPU runtime starts: a probe's too, in a
    /// run that then takes the CPU), which says nothing while empty and would keep the folder.
    pub fn with_placeholder(self, file: PathBuf) -> Self {
        if let Some((_, made)) = output_folders().iter_mut().find(|(id, _)| Some(*id) == self.id) {
            made.placeholders.push(file);
        }
        self
    }
}

impl Drop for FoldersMade {
    fn drop(&mut self) {
        let made = {
            let mut listed = output_folders();
            listed.iter().position(|(id, _)| Some(*id) == self.id).map(|index| listed.swap_remove(index).1)
        };
        if let Some(made) = made {
            made.remove_unwritten();
        }
    }
}

impl MadeForOutputs {
    fn remove_unwritten(&self) {
        for file in &self.placeholders {
            if std::fs::metadata(file).is_ok_and(|metadata| metadata.is_file() && metadata.len() == 0) {
                let _ = std::fs::remove_file(file);
            }
        }
        for folder in &self.folders {
            // Only an empty folder goes; the first that stays keeps its parents.
            if std::fs::remove_dir(folder).is_err() {
                return;
            }
        }
    }
}

/// [`OUTPUT_FOLDERS`], whatever a panic left it.
fn output_folders() -> std::sync::MutexGuard<'static, Vec<(u64, MadeForOutputs)>> {
    OUTPUT_FOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `folder` holds `name` and nothing else.
fn holds_only(folder: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else { return false };
    let names: Vec<_> = entries.filter_map(|entry| entry.ok().map(|entry| entry.file_name())).collect();
    names.len() == 1 && names[0] == name
}

/// Whether the open `file` is still the one at `path` (a released lock's file may have been removed, and
/// another made there, between this process's open and its lock).
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(there)) => (open.dev(), open.ino()) == (there.dev(), there.ino()),
        _ => false,
    }
}

/// Tries to take a lock whose file keeps being removed under it before giving up.
const LOCK_ATTEMPTS: usize = 10;
/// A lock held only shared is [`RunFolderLock::writer`]'s, for the moment its look takes: it is waited
/// for this long at a time, at most this many times (200 ms in all).
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
const PROBE_WAITS: usize = 40;

/// `file.try_lock()`, waiting out [`RunFolderLock::writer`]'s looks: a lock held only shared is no writer's,
/// and a command starting just as another looked would otherwise be refused as busy.
fn try_lock_past_looks(file: &File) -> Result<(), TryLockError> {
    for _ in 0..PROBE_WAITS {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if file.try_lock_shared().is_ok() => {
                let _ = file.unlock();
                std::thread::sleep(PROBE_WAIT);
            }
            other => return other,
        }
    }
    file.try_lock()
}

impl RunFolderLock {
    /// Takes `folder`'s lock (making the folder where it is not there yet), or fails at once naming the
    /// process that has it, or saying that the folder cannot be written: before a step's work, not at its
    /// first output.
    pub fn take(folder: &Path) -> Result<Self, StepError> {
        // A file's parent given as `m.json`'s: the working folder.
        let folder = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
        let stamps = folder.join(STEPS_FOLDER);
        // Present (a dangling link included) and not a folder.
        if stamps.symlink_metadata().is_ok() && !stamps.is_dir() {
            return Err(StepError::RecordsNotAFolder { path: stamps });
        }
        let not_writable = |source| StepError::NotWritable { folder: folder.to_path_buf(), source };
        // Innermost first: `.steps`, the run folder, and any of its parents that are not there yet.
        let made = missing_folders(&stamps);
        let path = stamps.join(LOCK_FILE);
        for _ in 0..LOCK_ATTEMPTS {
            std::fs::create_dir_all(&stamps).map_err(not_writable)?;
            // Outputs go into the folder itself (an unnamed file: nothing is left, whatever happens).
            match tempfile::tempfile_in(folder) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(not_writable)?,
            };
            let file = match File::options().read(true).write(true).create(true).truncate(false).open(&path) {
                // Removed with the folders a released lock made.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(not_writable)?,
            };
            match try_lock_past_looks(&file) {
                Ok(()) if !is_at(&file, &path) => continue,
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StepError::Busy { folder: folder.to_path_buf(), holder: holder(&path) })
                }
                Err(TryLockError::Error(error)) => {
                    eprintln!(
                        "warning: {} cannot be locked ({error}): nothing stops a second vggq writing this folder",
                        path.display()
                    );
                    return Ok(Self::held(file, path, made));
                }
            }
            let lock = Self::held(file, path, made);
            // Lossy: the lock file names the command for a person; a path that is not UTF-8 must not panic.
            let command: Vec<String> = std::env::args_os().map(|arg| arg.to_string_lossy().into_owned()).collect();
            let io_error = |source| StepError::Io { path: lock.path.clone(), source };
            let mut file = &lock.file;
            file.set_len(0).map_err(io_error)?;
            writeln!(file, "process {}: {}", std::process::id(), command.join(" ")).map_err(io_error)?;
            return Ok(lock);
        }
        let gone =
            std::io::Error::other(format!("its lock {} was removed {LOCK_ATTEMPTS} times as it was taken", path.display()));
        Err(not_writable(gone))
    }

    /// The lock on `path`, open as `file`, listed with the folders `made` for it where there are any.
    fn held(file: File, path: PathBuf, made: Vec<PathBuf>) -> Self {
        if !made.is_empty() {
            MADE_FOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((path.clone(), made));
        }
        Self { file, path }
    }

    /// The process writing `folder`, if one holds its lock: a step that finds an earlier one's output
    /// missing says so, rather than that the step never ran. Takes nothing and makes nothing.
    pub fn writer(folder: &Path) -> Option<String> {
        let path = folder.join(STEPS_FOLDER).join(LOCK_FILE);
        let file = File::open(&path).ok()?;
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)).then(|| holder(&path))
    }
}

/// Who holds the lock at `path`, as it wrote there.
fn holder(path: &Path) -> String {
    let holder = std::fs::read_to_string(path).unwrap_or_default();
    if holder.trim().is_empty() {
        "a process that has not said which".into()
    } else {
        holder.trim().into()
    }
}

impl Step {
    /// `config` is anything that changes the outputs (profile, backend, flags); `inputs` are files the step
    /// reads; `outputs` the files it writes (all inside or beside `out`).
    pub fn new(
        name: &str,
        out: &Path,
        config: &impl Serialize,
        inputs: &[&Path],
        outputs: Vec<PathBuf>,
    ) -> Result<Self, StepError> {
        let mut hasher = Sha256::new();
        hasher.update(name.as_bytes());
        // New code may compute other outputs: the running executable is an input of every step (a key
        // without it would call a rebuilt vggq's step up to date).
        let program = std::env::current_exe()
            .map_err(|source| StepError::Io { path: PathBuf::from("the running vggq executable"), source })?;
        hasher.update(file_digest(&program, DigestAlgorithm::Sha256)?.hex.as_bytes());
        hasher.update(serde_json::to_vec(config).expect("step configurations are plain data"));
        let mut inside = Vec::new();
        for input in inputs {
            let digest = file_digest(input, DigestAlgorithm::Sha256)?.hex;
            hasher.update(digest.as_bytes());
            if let Ok(name) = input.strip_prefix(out) {
                inside.push((name.display().to_string(), digest));
            }
        }
        Ok(Self {
            name: name.to_string(),
            inputs: inside,
            folder: out.to_path_buf(),
            stamp: out.join(record_in_run(name)),
            key: hex::encode(hasher.finalize()),
            outputs,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the step's inputs, configuration and program hash to: a checkpoint carries it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where the step keeps its work in progress while it runs (a training's checkpoint), beside its record.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.folder.join(checkpoint_in_run(&self.name))
    }

    /// True when the last run of this step had the same key and its outputs are still as it left them.
    pub fn is_up_to_date(&self) -> Result<bool, StepError> {
        let Ok(text) = std::fs::read_to_string(&self.stamp) else { return Ok(false) };
        let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else { return Ok(false) };
        if stamp.key != self.key || self.outputs.iter().any(|output| !output.is_file()) {
            return Ok(false);
        }
        Ok(stamp == self.current_stamp()?)
    }

    /// Marks the run unfinished before the step changes its outputs: what `vggq report` wrote goes (the
    /// package's manifest and checksums, the report and its charts; it writes them again), so that a run
    /// trained again keeps neither the manifest nor the figures of the model it replaces. Such files in a
    /// folder with no step's record are not vggq's, and are refused ([`refuse_others_report_files`]).
    /// Returns the files it removed, in [`REPORT_OUTPUTS`]' order.
    pub fn starting(&self) -> Result<Vec<&'static str>, StepError> {
        refuse_others_report_files(&self.folder)?;
        let mut removed = Vec::new();
        for file in REPORT_OUTPUTS {
            let path = self.folder.join(file);
            if path.exists() {
                crate::atomic::remove_if_present(&path).map_err(|source| StepError::Io { path, source })?;
                removed.push(file);
            }
        }
        Ok(removed)
    }

    /// Records that the step finished: call after every output is in place. Its checkpoint goes: a
    /// finished step is redone from the start.
    pub fn record(&self) -> Result<(), StepError> {
        let folder = self.stamp.parent().expect("stamps live in a folder");
        std::fs::create_dir_all(folder).map_err(|source| StepError::Io { path: folder.to_path_buf(), source })?;
        let json = serde_json::to_vec_pretty(&self.current_stamp()?).expect("a stamp is plain data");
        crate::atomic::write(&self.stamp, &json).map_err(|source| StepError::Io { path: self.stamp.clone(), source })?;
        let checkpoint = self.checkpoint_path();
        crate::atomic::remove_if_present(&checkpoint).map_err(|source| StepError::Io { path: checkpoint, source })
    }

    fn current_stamp(&self) -> Result<Stamp, StepError> {
        let outputs = self
            .outputs
            .iter()
            .map(|output| {
                let name = output.strip_prefix(&self.folder).unwrap_or(output).display().to_string();
                Ok((name, file_digest(output, DigestAlgorithm::Sha256)?.hex))
            })
            .collect::<Result<_, StepError>>()?;
        Ok(Stamp { key: self.key.clone(), inputs: self.inputs.clone(), outputs })
    }
}

/// Checks that each of `steps` (earlier steps of the pipeline, in order) finished in `folder`, that its
/// outputs are still the bytes it wrote, and that the inputs it read from the folder are still there as it
/// read them: so that a step builds on, and a report vouches for, files that belong together (not `.pth`
/// files of an earlier training beside a new model, nor an ONNX file cut short since it was measured).
pub fn require_current(folder: &Path, steps: &[&str]) -> Result<(), StepError> {
    // One step's outputs are the next one's inputs: each file is hashed once (`None`: not a file).
    let mut digests: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut digest_of = |file: &Path| -> Result<Option<String>, StepError> {
        if let Some(digest) = digests.get(file) {
            return Ok(digest.clone());
        }
        let digest = if file.is_file() { Some(file_digest(file, DigestAlgorithm::Sha256)?.hex) } else { None };
        digests.insert(file.to_path_buf(), digest.clone());
        Ok(digest)
    };
    for &step in steps {
        let path = folder.join(record_in_run(step));
        let unrecorded = || StepError::Unrecorded { folder: folder.to_path_buf(), step: step.to_string() };
        // A record that is missing is a step not run; one that cannot be read, a problem to name.
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => unrecorded(),
            _ => StepError::Io { path: path.clone(), source },
        })?;
        let stamp: Stamp = serde_json::from_str(&text).map_err(|_| unrecorded())?;
        let step = step.to_string();
        for (name, digest) in &stamp.outputs {
            let file = folder.join(name);
            match digest_of(&file)? {
                None => return Err(StepError::OutputMissing { file, step }),
                Some(actual) if &actual != digest => return Err(StepError::OutputChanged { file, step }),
                Some(_) => {}
            }
        }
        for (name, digest) in &stamp.inputs {
            let input = folder.join(name);
            if digest_of(&input)?.as_ref() != Some(digest) {
                return Err(StepError::InputChanged { input, step });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vggq_core::run_folder::{MANIFEST_FILE, REPORT_FILE};

    #[test]
    fn a_step_is_current_until_its_config_input_or_output_changes() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.bin");
        let output = dir.path().join("output.bin");
        std::fs::write(&input, b"in").unwrap();
        let step = |config: u32| Step::new("demo", dir.path(), &config, &[&input], vec![output.clone()]).unwrap();

        assert!(!step(1).is_up_to_date().unwrap(), "never ran");
        std::fs::write(&output, b"out").unwrap();
        step(1).record().unwrap();
        assert!(step(1).is_up_to_date().unwrap());
        assert!(!step(2).is_up_to_date().unwrap(), "other configuration");

        std::fs::write(&output, b"tampered").unwrap();
        assert!(!step(1).is_up_to_date().unwrap(), "output changed since");
        std::fs::write(&output, b"out").unwrap();
        std::fs::write(&input, b"new input").unwrap();
        assert!(!step(1).is_up_to_date().unwrap(), "input changed");
    }

    /// Report files in a folder with no step's record are someone else's: a step starting there refuses
    /// to remove them (the run folder's lock is no record). Once a step is recorded, they are the run's.
    #[test]
    fn a_step_starting_removes_only_a_runs_own_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let (notes, manifest) = (dir.path().join(REPORT_FILE), dir.path().join(MANIFEST_FILE));
        std::fs::write(&notes, b"notes").unwrap();
        std::fs::write(&manifest, b"{}").unwrap();
        let step = Step::new("demo", dir.path(), &(), &[], vec![]).unwrap();
        let lock = RunFolderLock::take(dir.path()).unwrap();
        let error = step.starting().unwrap_err();
        assert!(matches!(&error, StepError::OthersFiles { files, .. } if files == "manifest.json, report.md"), "{error}");
        assert!(notes.is_file() && manifest.is_file());
        step.record().unwrap();
        assert_eq!(step.starting().unwrap(), [MANIFEST_FILE, REPORT_FILE]);
        assert!(!notes.exists() && !manifest.exists());
        assert_eq!(step.starting().unwrap(), Vec::<&str>::new());
        drop(lock);
    }

    #[test]
    fn a_later_step_requires_the_earlier_ones_files_as_they_left_them() {
        let dir = tempfile::tempdir().unwrap();
        let (model, pth) = (dir.path().join("model.bin"), dir.path().join("variant.bin"));
        let current = || require_current(dir.path(), &["first", "second"]);
        assert!(matches!(current(), Err(StepError::Unrecorded { step, .. }) if step == "first"));
        std::fs::write(&model, b"model").unwrap();
        Step::new("first", dir.path(), &(), &[], vec![model.clone()]).unwrap().record().unwrap();
        std::fs::write(&pth, b"variant").unwrap();
        Step::new("second", dir.path(), &(), &[&model], vec![pth.clone()]).unwrap().record().unwrap();
        current().unwrap();

        std::fs::write(&pth, b"variant cut").unwrap();
        assert!(matches!(current(), Err(StepError::OutputChanged { step, .. }) if step == "second"));
        std::fs::remove_file(&pth).unwrap();
        assert!(matches!(current(), Err(StepError::OutputMissing { step, .. }) if step == "second"));
        std::fs::write(&pth, b"variant").unwrap();
        // The first step ran again: the second one's files were made from the model before.
        std::fs::write(&model, b"model, trained again").unwrap();
        Step::new("first", dir.path(), &(), &[], vec![model.clone()]).unwrap().record().unwrap();
        assert!(matches!(current(), Err(StepError::InputChanged { step, .. }) if step == "second"));
    }

    #[test]
    fn a_moved_run_folder_is_still_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let step = |folder: &Path| Step::new("demo", folder, &1, &[], vec![folder.join("output.bin")]).unwrap();
        let first = dir.path().join("run");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("output.bin"), b"out").unwrap();
        step(&first).record().unwrap();
        let moved = dir.path().join("moved");
        std::fs::rename(&first, &moved).unwrap();
        assert!(step(&moved).is_up_to_date().unwrap());
        assert!(step(&moved.join(".")).is_up_to_date().unwrap(), "the same folder, spelt another way");
    }

    #[test]
    fn a_run_folder_has_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let holder = format!("process {}:", std::process::id());
        let held = RunFolderLock::take(dir.path()).unwrap();
        let error = RunFolderLock::take(dir.path()).unwrap_err().to_string();
        assert!(error.contains(&format!("another vggq ({holder}")), "{error}");
        assert!(RunFolderLock::writer(dir.path()).is_some_and(|writer| writer.starts_with(&holder)));
        drop(held);
        let stamps = dir.path().join(STEPS_FOLDER);
        assert!(!stamps.exists(), "a lock released with nothing written beside it left its folder");
        assert_eq!(RunFolderLock::writer(dir.path()), None);
        // Beside a step's record, the lock file stays, naming no holder.
        let held = RunFolderLock::take(dir.path()).unwrap();
        std::fs::write(stamps.join("demo.json"), b"{}").unwrap();
        drop(held);
        assert_eq!(std::fs::read_to_string(stamps.join(LOCK_FILE)).unwrap(), "", "a released lock names no holder");
        assert_eq!(RunFolderLock::writer(dir.path()), None);
        // A look at who writes (a shared lock, held a moment) does not make a starting writer fail as busy.
        let looking = File::open(stamps.join(LOCK_FILE)).unwrap();
        looking.try_lock_shared().unwrap();
        let look_ends = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(looking);
        });
        drop(RunFolderLock::take(dir.path()).expect("a writer starting while another process looks"));
        look_ends.join().unwrap();
        RunFolderLock::take(dir.path()).unwrap();
        // Parents made for a run folder go with it.
        let nested = dir.path().join("a/b/run");
        drop(RunFolderLock::take(&nested).unwrap());
        assert!(!dir.path().join("a").exists(), "a lock released with nothing written left the folders it made");
    }

    /// A process ended at once by a stop signal (no `Drop` runs) removes the run folders it made and has
    /// not written into, as one that fails does; one it has written into stays. (This test's locks alone:
    /// [`remove_unwritten_folders`] would also remove the folders of tests running beside it.)
    #[test]
    fn an_ending_process_removes_the_folders_it_made_and_left_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (unwritten, written) = (dir.path().join("a/run"), dir.path().join("b/run"));
        let held = [RunFolderLock::take(&unwritten).unwrap(), RunFolderLock::take(&written).unwrap()];
        std::fs::write(written.join(STEPS_FOLDER).join("train.json"), b"{}").unwrap();
        let registered: Vec<(PathBuf, Vec<PathBuf>)> =
            MADE_FOLDERS.lock().unwrap().iter().filter(|(lock, _)| lock.starts_with(dir.path())).cloned().collect();
        assert_eq!(registered.len(), 2, "{registered:?}");
        for (lock, made) in &registered {
            remove_if_unwritten(lock, made);
        }
        assert!(!dir.path().join("a").exists(), "the unwritten run folder and its parent stayed");
        assert!(written.join(STEPS_FOLDER).join(LOCK_FILE).is_file(), "a written run folder lost its lock");
        drop(held);
        assert!(!MADE_FOLDERS.lock().unwrap().iter().any(|(lock, _)| lock.starts_with(dir.path())), "released locks stay listed");
    }

    /// Folders made for outputs go again where nothing was written in them (a CPU run's autotune cache,
    /// a failed evaluation's report folder), and stay, parents too, where anything was; folders that were
    /// there before are never removed.
    #[test]
    fn folders_made_for_outputs_stay_only_where_written() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("there");
        std::fs::create_dir(&there).unwrap();
        drop(FoldersMade::make(&there.join("a/b/c")).unwrap());
        assert_eq!(std::fs::read_dir(&there).unwrap().count(), 0, "an unwritten folder or its parents stayed");
        assert!(there.is_dir(), "a folder made before was removed");
        let made = FoldersMade::make(&there.join("a/b/c")).unwrap();
        std::fs::write(there.join("a/b/kept.json"), b"{}").unwrap();
        drop(made);
        assert!(!there.join("a/b/c").exists(), "the empty folder stayed");
        assert!(there.join("a/b/kept.json").is_file(), "a written folder was removed");
        // A folder that cannot be made (a file stands in its path) is an error.
        std::fs::write(there.join("file"), b"").unwrap();
        assert!(FoldersMade::make(&there.join("file/new")).is_err());
    }

    /// A placeholder (cubecl's autotune log) goes with its folder while empty, in a folder that was there
    /// before too, and keeps it once written; a stop signal's end ([`remove_unwritten_folders`], which
    /// skips `Drop`) removes the same. (This test's entries alone: the whole list's would also remove
    /// the folders of tests running beside it.)
    #[test]
    fn empty_placeholders_go_with_their_folders_on_drop_and_on_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (unwritten, written, before) = (dir.path().join("a/cache"), dir.path().join("b/cache"), dir.path().join("before"));
        std::fs::create_dir(&before).unwrap();
        let held: Vec<FoldersMade> = [&unwritten, &written, &before]
            .into_iter()
            .map(|folder| FoldersMade::make(folder).unwrap().with_placeholder(folder.join("autotune.log")))
            .collect();
        for folder in [&unwritten, &written, &before] {
            std::fs::write(folder.join("autotune.log"), b"").unwrap();
        }
        std::fs::write(written.join("autotune.log"), b"chose a kernel\n").unwrap();
        let ids: Vec<Option<u64>> = held.iter().map(|made| made.id).collect();
        for (_, made) in output_folders().iter().filter(|(id, _)| ids.contains(&Some(*id))) {
            made.remove_unwritten();
        }
        assert!(!dir.path().join("a").exists(), "the unwritten folder, its empty log or its parent stayed");
        assert!(written.join("autotune.log").is_file(), "a written log was removed");
        assert!(before.is_dir() && !before.join("autotune.log").exists(), "a folder made before went, or its empty log stayed");
        drop(held);
        assert!(!output_folders().iter().any(|(id, _)| ids.contains(&Some(*id))), "dropped folders stay listed");
        assert!(written.join("autotune.log").is_file(), "a written log was removed on drop");
    }

    /// A file where the step records go is named, not reported as the OS's "File exists".
    #[test]
    fn a_file_in_place_of_the_step_records_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join(STEPS_FOLDER);
        let refused = format!(
            "{} is not a folder, and vggq keeps a run's step records there: move it out of the run folder",
            records.display()
        );
        std::fs::write(&records, b"").unwrap();
        assert_eq!(RunFolderLock::take(dir.path()).unwrap_err().to_string(), refused);
        std::fs::remove_file(&records).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), &records).unwrap();
        assert_eq!(RunFolderLock::take(dir.path()).unwrap_err().to_string(), refused, "a dangling link");
    }
}
