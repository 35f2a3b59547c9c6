//! An ONNX Runtime session on the execution provider asked for, with the placement ORT chose for it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use super::cuda_libraries;
use super::placement::Placement;
use super::EvalError;
use crate::backend::CudaProbe;
use crate::data::{CHANNELS, MAX_CLASSES};
use crate::export::onnx::graph::{INPUT_NAME, OUTPUT_NAME};

pub use vggq_core::places::ORT_DYLIB_PATH;

/// cuDNN's convolution algorithms chosen by heuristics: ORT's default, EXHAUSTIVE, times every algorithm
/// on the first run and may choose others on the next machine or the next run.
const CUDA_CONV_ALGORITHM_SEARCH: ep::cuda::ConvAlgorithmSearch = ep::cuda::ConvAlgorithmSearch::Heuristic;
/// The CUDA provider in FP32: ORT turns TF32 on by default, which rounds convolutions and matmuls to
/// 10-bit mantissas (what vggq's own training arithmetic is is measured and recorded separately).
const CUDA_TF32: bool = false;

/// How ONNX Runtime's sessions were set up, recorded with their results (`metrics.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSettings {
    /// Intra-op threads (`None`: ORT's default, one per core).
    pub intra_op_threads: Option<usize>,
    /// The CUDA provider's `cudnn_conv_algo_search`.
    pub cuda_conv_algorithm_search: String,
    /// The CUDA provider's `use_tf32`.
    pub cuda_tf32: bool,
    /// The ONNX Runtime library that ran them, as it names its version (`ONNX Runtime 1.32.0
    /// (libonnxruntime.so.1.32.0)`); absent from evaluations before it was recorded.
    #[serde(default)]
    pub onnxruntime: Option<String>,
}

impl SessionSettings {
    /// The settings of this process's sessions (the library's version once it is loaded).
    pub fn new(intra_op_threads: Option<usize>) -> Self {
        SessionSettings {
            intra_op_threads,
            cuda_conv_algorithm_search: CUDA_CONV_ALGORITHM_SEARCH.to_string(),
            cuda_tf32: CUDA_TF32,
            onnxruntime: RUNTIME.get().cloned(),
        }
    }
}

/// The loaded library, as [`SessionSettings::onnxruntime`] names it.
static RUNTIME: OnceLock<String> = OnceLock::new();

/// `ONNX Runtime <version> (<file name>)`, the version as the library at `path` states it
/// (`OrtGetApiBase()->GetVersionString()`, which ort does not expose).
fn runtime_name(path: &Path) -> String {
    let file = path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned());
    // SAFETY: the library ort has loaded (loading it again finds that one), and the function every ONNX
    // Runtime exports for this, returning a static table whose version string lives as long as the library.
    let version = unsafe {
        libloading::Library::new(path).ok().and_then(|library| {
            let get_base = library.get::<unsafe extern "system" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase").ok()?;
            let base = get_base();
            (!base.is_null()).then(|| std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned())
        })
    };
    format!("ONNX Runtime {} ({file})", version.as_deref().unwrap_or("of unknown version"))
}

/// The execution provider a session is asked to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// CUDA first, the nodes it has no kernel for on the CPU; a CUDA provider that cannot register is an
    /// error ([`EvalError::CudaUnavailable`]), not a session on the CPU alone.
    Cuda,
    Cpu,
}

/// As tables and messages name it: `CUDA`, `CPU`.
impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        })
    }
}

/// A loaded model and where ORT placed its nodes.
pub struct OnnxSession {
    session: Session,
    side: usize,
    pub requested: Provider,
    /// Which provider ran each node of the optimized graph, from one profiled run.
    pub placement: Placement,
}

impl OnnxSession {
    /// Loads `path` (input `[N, 3, side, side]`) with every graph optimization on, asks for `provider`,
    /// then runs one image with ORT's profiler on to record which provider ran each node. `threads`
    /// bounds ORT's intra-op pool (its default is one thread per core).
    pub fn open(path: &Path, side: usize, provider: Provider, threads: Option<usize>) -> Result<Self, EvalError> {
        let profile_dir = tempfile::tempdir().map_err(EvalError::ProfileFolder)?;
        let mut builder = Session::builder(environment()?)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_profiling(profile_dir.path().join("ort_profile"))?;
        if let Some(threads) = threads {
            builder = builder.with_intra_threads(threads)?;
        }
        // The session's logger prints the errors ORT also returns, which reach the user in ours, naming the
        // model and the provider, and one that is none: a model ORT cannot load leaves its profiler nothing
        // to write ("Could not write a profile because no model was loaded"), printed before the real
        // error. It prints only fatal ones, unless `ORT_LOG` asks for ORT's own log.
        if std::env::var_os(ORT_LOG).is_none() {
            builder = builder.with_log_level(LogLevel::Fatal)?;
        }
        if provider == Provider::Cuda {
            cuda_ready()?;
            // A CUDA EP that cannot register (no GPU, a CPU-only library) is an error here rather than a
            // silent CPU session; nodes CUDA has no kernel for still fall back, and the profile shows them.
            let cuda = ep::CUDA::default().with_conv_algorithm_search(CUDA_CONV_ALGORITHM_SEARCH).with_tf32(CUDA_TF32);
            builder = builder
                .with_execution_providers([cuda.build().error_on_failure()])
                .map_err(|e| EvalError::CudaUnavailable(format!("ONNX Runtime could not register its CUDA provider: {e}")))?;
        }
        let session = builder.commit_from_file(path)?;
        require_outlet("input", INPUT_NAME, session.inputs())?;
        require_outlet("output", OUTPUT_NAME, session.outputs())?;
        let mut this = OnnxSession { session, side, requested: provider, placement: Placement::default() };
        this.run(&vec![0.0; CHANNELS * side * side], 1)?;
        let profile = PathBuf::from(this.session.end_profiling()?);
        this.placement = Placement::from_profile(&profile)?;
        Ok(this)
    }

    /// Logits `[batch, classes]` (row-major) of `batch` CHW images.
    pub fn run(&mut self, images: &[f32], batch: usize) -> Result<Vec<f32>, EvalError> {
        let input = TensorRef::from_array_view(([batch, CHANNELS, self.side, self.side], images))?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => input])?;
        let output =
            outputs.get(OUTPUT_NAME).ok_or_else(|| EvalError::Ort(format!("no `{OUTPUT_NAME}` in the outputs of a run")))?;
        let (shape, logits) = output.try_extract_tensor::<f32>()?;
        // Each prediction is a label, a u8 as the data's.
        if shape.len() != 2 || shape[0] != batch as i64 || !(1..=MAX_CLASSES as i64).contains(&shape[1]) {
            return Err(EvalError::OutputShape { shape: shape.to_vec(), batch });
        }
        Ok(logits.to_vec())
    }
}

/// `Ok` where `outlets` (a model's inputs or outputs) hold one named `name`.
fn require_outlet(role: &'static str, name: &'static str, outlets: &[ort::value::Outlet]) -> Result<(), EvalError> {
    if outlets.iter().any(|outlet| outlet.name() == name) {
        return Ok(());
    }
    let found: Vec<String> = outlets.iter().map(|outlet| format!("`{}`", outlet.name())).collect();
    Err(EvalError::Interface { role, expected: name, found: found.join(", ") })
}

/// What stands between this machine and ONNX Runtime's CUDA provider: a device the driver offers, then
/// the CUDA and cuDNN libraries (loaded here from beside ONNX Runtime, or found on the system).
fn cuda_ready() -> Result<(), EvalError> {
    static PROBE: OnceLock<CudaProbe> = OnceLock::new();
    if let Some(reason) = &PROBE.get_or_init(CudaProbe::run).no_device {
        return Err(EvalError::CudaUnavailable(reason.clone()));
    }
    cuda_libraries::prepare(&library_path()?).map_err(EvalError::CudaUnavailable)
}

/// `$ORT_DYLIB_PATH`, a file: the loader's own error for a path that names none says only "dlopen
/// failed".
fn library_path() -> Result<PathBuf, EvalError> {
    let path = std::env::var_os(ORT_DYLIB_PATH).map(PathBuf::from).ok_or(EvalError::MissingLibrary)?;
    if !path.is_file() {
        let message =
            format!("`{ORT_DYLIB_PATH}` names no file there (`cargo xtask setup` fetches ONNX Runtime and says where it is)");
        return Err(EvalError::Library { path, message });
    }
    // Absolute: ort looks for a relative path beside the executable first, which could load another
    // library than the one checked here and named in the records.
    Ok(std::path::absolute(&path).unwrap_or(path))
}

/// Loads ONNX Runtime (once per process) without opening a model and, where the CUDA provider must run
/// (`--device cuda`), checks what it stands on (a device, its libraries): a command that needs them
/// fails on a missing or broken one before it loads its data or changes its run, not after.
pub fn load_runtime(cuda_required: bool) -> Result<(), EvalError> {
    environment()?;
    if cuda_required {
        cuda_ready()?;
    }
    Ok(())
}

/// The variable ort reads for ONNX Runtime's log level (`verbose` to `fatal`; its errors when unset).
const ORT_LOG: &str = "ORT_LOG";

/// The process's one ONNX Runtime environment, from the library `$ORT_DYLIB_PATH` names. ort allows one
/// environment per process, ever, so it lives for the whole run.
fn environment() -> Result<&'static Environment, EvalError> {
    static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let path = library_path()?;
    let library_error = |message: String| EvalError::Library { path: path.clone(), message };
    let environment = ort::init_from(&path)
        .map_err(|e| library_error(e.to_string()))?
        .with_name("vggq")
        .build()
        .map_err(|e| library_error(e.to_string()))?;
    RUNTIME.get_or_init(|| runtime_name(&path));
    Ok(ENVIRONMENT.get_or_init(|| environment))
}
