//! cubecl's caches for a GPU run, and how its kernels are chosen. A build without the `autotune`
//! feature (the default) runs each operation's default kernel, the first its hardware supports: nothing
//! is timed, so every run on a GPU takes the same kernels, and a new machine compiles one kernel per
//! operation and shape. A build with it times the candidates for each shape and keeps the fastest
//! ([`TUNED`]); the autotune cache (those choices) is then a folder of the run: a rerun with the same
//! binary and GPU, or a run given the folder a golden table was recorded with, reuses them instead of
//! timing again (and perhaps choosing others); its logger writes the choices to [`AUTOTUNE_LOG`] in the
//! same folder. CUDA's compiled kernels are the machine's ([`kernel_cache`]): on the first H200 run, NVRTC
//! compiling every candidate autotune timed kept the first training step busy for minutes on one core,
//! and a kernel's code depends only on cubecl's version and the kernel (cubecl keys each by a hash of
//! both), never on a run's results, so every later run on the machine loads them instead. cubecl reads
//! its configuration once, at its first kernel, so [`use_caches`] runs before anything touches a GPU. A
//! CPU-only build has no cubecl runtime, and nothing to point.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackendKind;
use crate::steps::FoldersMade;

/// The log of the kernels cubecl chose, in the cache's folder.
pub const AUTOTUNE_LOG: &str = "autotune.log";

/// Whether this build times candidate GPU kernels (the `autotune` feature) instead of running each
/// operation's default.
pub const TUNED: bool = cfg!(feature = "autotune");

/// Where a run's autotune cache is and what it held at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutotuneCache {
    /// Whether the run timed its GPU kernels ([`reads_cache`]); without, the cache stays empty.
    pub tuned: bool,
    /// Relative to the run folder where it lies inside it, else absolute ([`AutotuneCache::read`]).
    pub folder: PathBuf,
    /// SHA-256 over the folder's files (their names and bytes, in name order); `None` while empty (a CPU
    /// run, or a GPU run that tuned nothing).
    pub sha256: Option<String>,
}

/// What can go wrong pointing cubecl at a cache.
#[derive(Debug, thiserror::Error)]
pub enum AutotuneError {
    #[error("creating the autotune cache {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    /// Said before any work, in every build: a build that tunes would fail there only once it times.
    #[error("the autotune cache {path} is a file: name a folder (or one to be made)")]
    NotAFolder { path: PathBuf },
    /// A cache that exists but cannot be read whole has no digest to record: a digest of what could be
    /// read would name kernels the run may not have chosen.
    #[error("reading the autotune cache at {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// What a GPU run on `backend` prints first: how its kernels are chosen, and why its first steps are slow.
/// cubecl keeps CUDA's compiled kernels ([`kernel_cache`]); the WGSL it writes for wgpu is compiled
/// again by each process (its on-disk cache is for SPIR-V, which Burn's `wgpu` feature does not use).
pub fn first_steps_note(backend: BackendKind) -> String {
    let first_steps = if TUNED {
        "kernels chosen by timing (the `autotune` feature): the first steps of each shape compile and time \
         every candidate (minutes on a machine new to this build)"
    } else {
        "each operation's default kernel (a build without `autotune`): the first steps of each shape compile it"
    };
    let kept = match backend {
        BackendKind::Cuda => format!("compiled kernels are kept in {} for later runs", kernel_cache().display()),
        _ => "wgpu compiles them again in each process".to_string(),
    };
    format!("{first_steps}; {kept}")
}

/// The machine's cache of compiled GPU kernels (cubecl's PTX cache), under vggq's cache folder.
pub fn kernel_cache() -> PathBuf {
    vggq_core::places::cache_dir().join("cubecl-kernels")
}

/// Points cubecl's compiled-kernel cache at [`kernel_cache`] and, in a build that tunes ([`TUNED`]) where
/// `autotune` names a folder, its autotune cache and the log of the kernels it chose there; without one,
/// autotune keeps cubecl's own cache (under `target/`). The folder is made now, so that one that cannot
/// be is said before any work (cubecl would go on without its cache), and is removed again where the
/// command leaves it empty: held until the command ends, the folders made ([`FoldersMade`]); a CPU run,
/// known only later (the CUDA probe runs a kernel), writes nothing there but the log, which cubecl makes
/// (empty) when a probe starts a GPU runtime and which goes with the folder while empty. A build that
/// does not tune leaves the folder alone. A path that is a file is refused by every build.
pub fn use_caches(autotune: Option<&Path>) -> Result<FoldersMade, AutotuneError> {
    if let Some(file) = autotune.filter(|path| path.exists() && !path.is_dir()) {
        return Err(AutotuneError::NotAFolder { path: file.to_path_buf() });
    }
    let autotune = autotune.filter(|_| TUNED);
    let made = match autotune {
        Some(folder) => FoldersMade::make(folder)
            .map_err(|source| AutotuneError::Folder { path: folder.to_path_buf(), source })?
            .with_placeholder(folder.join(AUTOTUNE_LOG)),
        None => FoldersMade::default(),
    };
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        use cubecl::config::cache::CacheConfig;
        use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
        // Once per process: a second call (a test, say) keeps the first folders.
        static CONFIGURED: std::sync::Once = std::sync::Once::new();
        CONFIGURED.call_once(|| {
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            config.compilation.cache = Some(CacheConfig::File(kernel_cache()));
            if let Some(folder) = autotune {
                config.autotune.cache = CacheConfig::File(folder.to_path_buf());
                config.autotune.logger.file = Some(folder.join(AUTOTUNE_LOG));
                config.autotune.logger.append = true;
            }
            CubeClRuntimeConfig::set(config);
        });
    }
    Ok(made)
}

/// `folder`, the autotune cache of the run in `run`, by its place in the run where it lies inside
/// (`autotune`), else as an absolute path: both paths are resolved first (links and `..` too, where they
/// exist; else made absolute), so that `./run`, `run/autotune`, `/abs/run` and `a/../run` agree. What the
/// train report records and the steps' keys hold ([`in_step_key`]), so that a moved run, or a step run
/// from another working folder, is the same run.
fn place_in_run(run: &Path, folder: &Path) -> PathBuf {
    let absolute =
        |path: &Path| std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf());
    let folder = absolute(folder);
    match folder.strip_prefix(absolute(run)) {
        Ok(inside) => inside.to_path_buf(),
        Err(_) => folder,
    }
}

/// Whether a run on `backend` times its kernels with the autotune cache: a build that tunes, on a GPU
/// backend. Any other run puts nothing in the cache and reads nothing from it.
pub fn reads_cache(backend: BackendKind) -> bool {
    TUNED && backend.is_gpu()
}

/// The cache `folder` as a step of the run in `run` is keyed by: its place in the run where the run
/// reads it ([`reads_cache`]), else nothing, so that another folder is the same step, not one to redo.
pub fn in_step_key(run: &Path, folder: &Path, backend: BackendKind) -> Option<PathBuf> {
    reads_cache(backend).then(|| place_in_run(run, folder))
}

impl AutotuneCache {
    /// `folder`, the cache of the run in `run`, as it is now; recorded by its place in the run where it
    /// lies inside (`autotune`), else as an absolute path, so that later steps find it from any working
    /// folder and in a moved run ([`AutotuneCache::folder_in`]). `tuned`: whether the run timed its
    /// kernels ([`reads_cache`]); only then is the folder read, since only then did cubecl use it (a
    /// folder given to a build that does not tune, a shared cache say, says nothing of its kernels).
    pub fn read(run: &Path, folder: &Path, tuned: bool) -> Result<Self, AutotuneError> {
        let sha256 = if tuned { digest(folder)? } else { None };
        Ok(AutotuneCache { tuned, folder: place_in_run(run, folder), sha256 })
    }

    /// Where the cache is, for the run now in `run`.
    pub fn folder_in(&self, run: &Path) -> PathBuf {
        run.join(&self.folder)
    }
}

/// SHA-256 over the files under `folder`: each one's path below it, then its bytes, in path order; `None`
/// where there are none, or no folder (a run that never pointed cubecl at one).
fn digest(folder: &Path) -> Result<Option<String>, AutotuneError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AutotuneError::Read { path, source }
    };
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir == folder => return Ok(None),
            entries => entries.map_err(unreadable(&dir))?,
        };
        for entry in entries {
            let path = entry.map_err(unreadable(&dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.strip_prefix(folder).unwrap_or(&file).to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).map_err(unreadable(&file))?);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only where cubecl reads the cache does its folder make another step: a CPU run's, or a run of a
    /// build that does not tune, is the same step whichever folder it is given.
    #[test]
    fn a_step_is_keyed_by_a_cache_it_reads() {
        let (run, folder) = (Path::new("run"), Path::new("run/autotune"));
        assert!(!reads_cache(BackendKind::Cpu));
        assert_eq!(in_step_key(run, folder, BackendKind::Cpu), None);
        for gpu in [BackendKind::Cuda, BackendKind::Wgpu] {
            assert_eq!(reads_cache(gpu), TUNED);
            assert_eq!(in_step_key(run, folder, gpu), TUNED.then(|| PathBuf::from("autotune")));
        }
    }

    #[test]
    fn the_digest_follows_names_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let read = || AutotuneCache::read(dir.path(), dir.path(), true).unwrap();
        assert_eq!(read().sha256, None);
        assert_eq!(AutotuneCache::read(dir.path(), &dir.path().join("never-made"), true).unwrap().sha256, None);
        std::fs::create_dir_all(dir.path().join("0.10.0/device-0")).unwrap();
        std::fs::write(dir.path().join("0.10.0/device-0/matmul.json.log"), "choice a").unwrap();
        let first = read().sha256.unwrap();
        // A build that does not tune neither used nor reads the folder.
        let untuned = AutotuneCache::read(dir.path(), dir.path(), false).unwrap();
        assert_eq!((untuned.tuned, untuned.sha256), (false, None));
        std::fs::write(dir.path().join("0.10.0/device-0/matmul.json.log"), "choice b").unwrap();
        let second = read().sha256.unwrap();
        assert_ne!(first, second);
        std::fs::write(dir.path().join("0.10.0/device-0/matmul.json.log"), "choice a").unwrap();
        assert_eq!(read().sha256.unwrap(), first);
        // A file that cannot be read (here a link to nothing: the test may run as root, whom permissions
        // do not stop) is an error, not a cache without it.
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("0.10.0/device-0/conv.json.log")).unwrap();
        let error = AutotuneCache::read(dir.path(), dir.path(), true).unwrap_err().to_string();
        assert!(error.contains("conv.json.log"), "{error}");
    }

    /// A run's cache is found from its record whichever folder a later step runs in, and in a moved run;
    /// one outside the run by its absolute path.
    #[test]
    fn the_cache_is_recorded_by_its_place_in_the_run() {
        let run = Path::new("artifacts/smoke");
        let inside = AutotuneCache::read(run, &run.join("autotune"), TUNED).unwrap();
        assert_eq!(inside.folder, Path::new("autotune"));
        assert_eq!(inside.folder_in(Path::new("../moved")), Path::new("../moved/autotune"));
        let outside = AutotuneCache::read(run, Path::new("shared-cache"), TUNED).unwrap();
        assert!(outside.folder.is_absolute() && outside.folder.ends_with("shared-cache"), "{outside:?}");
        assert_eq!(outside.folder_in(Path::new("../moved")), outside.folder);
        let here = std::env::current_dir().unwrap();
        for (run, folder) in [("./run", "run/autotune"), ("run", "./run/autotune"), (".", "autotune")] {
            assert_eq!(place_in_run(Path::new(run), Path::new(folder)), Path::new("autotune"), "{run} {folder}");
        }
        assert_eq!(place_in_run(&here.join("run"), Path::new("run/autotune")), Path::new("autotune"));
        // Where the folders exist, `..` and links resolve: the same run, however it is reached.
        let dir = tempfile::tempdir().unwrap();
        let (run, other) = (dir.path().join("run"), dir.path().join("other"));
        std::fs::create_dir_all(run.join("autotune")).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&run, dir.path().join("link")).unwrap();
        for spelt in [other.join("../run"), dir.path().join("link")] {
            assert_eq!(place_in_run(&spelt, &run.join("autotune")), Path::new("autotune"), "{}", spelt.display());
        }
    }
}
