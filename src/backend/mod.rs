//! Which Burn backend runs the tensors: burn-cuda when the CUDA probe finds nothing in its way, burn-flex
//! on the CPU otherwise. The choice is one printed line and a record in the run's reports; a missing
//! CUDA is a reason (`--device auto`) or an error (`--device cuda`), never a panic.

pub mod autotune;
mod cuda_probe;
pub mod precision;

use crate::model::TrainingBackend;
use serde::{Deserialize, Serialize};
pub use vggq_core::DeviceRequest;

#[cfg(feature = "cuda")]
use cuda_probe::panic_message;
pub(crate) use cuda_probe::preload;
pub use cuda_probe::{CudaProbe, CudaVersion, Gpu};

/// Autodiff CPU backend.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// Makes the calling thread one of the workers of rayon's global pool, which burn-flex and our CPU
/// kernels run on; call it first thing in `main`. A training step is a hundred-odd parallel operations:
/// from inside the pool each starts and finishes on this thread, where from outside it is handed over
/// and this thread sleeps until woken (a smoke step took 29.2 ms that way, 21.7 this way).
pub fn join_cpu_pool() -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global()
}

/// cubecl reads the CUDA toolkit (the headers its kernels include) from `$CUDA_PATH` only: where that is
/// unset and `$CUDA_HOME`, `$CUDA_ROOT` or a default folder holds one (the toolkit the probe reports),
/// exports it. Call it first thing in `main`, while the process has one thread (setting a variable while
/// other threads may read the environment is undefined behaviour in C's `getenv`).
pub fn export_cuda_path() {
    if std::env::var_os("CUDA_PATH").is_none() {
        if let Some(toolkit) = vggq_core::places::CudaToolkit::find() {
            std::env::set_var("CUDA_PATH", toolkit.root);
        }
    }
}
/// Autodiff CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// The backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    /// The name golden tables and reports use: `cpu` or `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Runs `work` on this backend's default device.
    pub fn run<W: OnBackend>(self, work: W) -> Result<W::Output, BackendError> {
        match self {
            Backend::Cpu => Ok(work.run::<CpuBackend>(&Default::default())),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(work.run::<CudaBackend>(&Default::default())),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => Err(BackendError::NotBuilt),
        }
    }
}

/// Work generic over the autodiff backend, run by [`Backend::run`]: the one place that turns the choice
/// made at run time into a type.
pub trait OnBackend {
    type Output;
    fn run<B: TrainingBackend>(self, device: &B::Device) -> Self::Output;
}

/// The device a run chose, why, and what the probe saw: printed at the start, recorded in its reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub request: DeviceRequest,
    pub backend: Backend,
    /// One line: what was chosen and why.
    pub reason: String,
    /// What the CUDA probe found; `None` for `--device cpu`, which does not probe.
    pub probe: Option<CudaProbe>,
}

impl Selection {
    /// The GPU the run used, or found.
    pub fn gpu(&self) -> Option<&Gpu> {
        self.probe.as_ref().and_then(|probe| probe.gpus.first())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--device cuda` on a machine or binary that cannot run CUDA.
    #[error("--device cuda requested, but {0}")]
    CudaUnavailable(String),
    /// A CUDA run asked of a binary built without the `cuda` feature.
    #[error("this binary was built without the `cuda` feature (cargo build --release --features cuda)")]
    NotBuilt,
}

/// Chooses the backend for `request`, probing CUDA unless the CPU was asked for.
pub fn select(request: DeviceRequest) -> Result<Selection, BackendError> {
    let probe = match request {
        DeviceRequest::Cpu => {
            return Ok(Selection { request, backend: Backend::Cpu, reason: "CPU (burn-flex): --device cpu".into(), probe: None });
        }
        DeviceRequest::Auto | DeviceRequest::Cuda => CudaProbe::run(),
    };
    decide(request, probe, first_kernel)
}

/// The decision, given what the probe found and a way to run one kernel on burn-cuda.
fn decide(
    request: DeviceRequest,
    mut probe: CudaProbe,
    first_kernel: fn() -> Result<(), String>,
) -> Result<Selection, BackendError> {
    if probe.unusable.is_none() {
        if let Err(reason) = first_kernel() {
            probe.unusable = Some(reason);
        }
    }
    let summary = probe.summary();
    match (request, &probe.unusable) {
        (DeviceRequest::Cuda, Some(_)) => Err(BackendError::CudaUnavailable(summary)),
        (_, None) => {
            let reason = format!("CUDA (burn-cuda): --device {}: {summary}", vggq_core::flag_value(request));
            Ok(Selection { request, backend: Backend::Cuda, reason, probe: Some(probe) })
        }
        (_, Some(_)) => {
            let reason = format!("CPU (burn-flex): --device auto found no usable GPU: {summary}");
            Ok(Selection { request, backend: Backend::Cpu, reason, probe: Some(probe) })
        }
    }
}

/// Runs one small kernel on burn-cuda, the whole chain the probe checked piece by piece (driver,
/// device, NVRTC, headers, cubecl): a GPU that passes this trains. cubecl finds the toolkit the probe
/// found in `$CUDA_PATH` ([`export_cuda_path`]).
#[cfg(feature = "cuda")]
fn first_kernel() -> Result<(), String> {
    use burn::prelude::*;
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let x = Tensor::<burn::backend::Cuda, 1>::from_floats([1.0, 2.0, 3.0, 4.0], &Default::default());
        (x.clone() * x).sum().into_scalar().elem::<f32>()
    });
    std::panic::set_hook(quiet);
    match result {
        Ok(30.0) => Ok(()),
        Ok(sum) => Err(format!("burn-cuda's first kernel computed {sum} instead of 30")),
        Err(panic) => Err(format!("burn-cuda's first kernel failed: {}", panic_message(&*panic))),
    }
}

#[cfg(not(feature = "cuda"))]
fn first_kernel() -> Result<(), String> {
    Err(BackendError::NotBuilt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(unusable: Option<&str>) -> CudaProbe {
        CudaProbe {
            driver: Some(CudaVersion(13000)),
            built_for: CudaVersion(13000),
            gpus: vec![Gpu { name: "NVIDIA H200".into(), memory_bytes: 150_000_000_000, compute_capability: "9.0".into() }],
            nvrtc: Some(CudaVersion(13000)),
            toolkit: None,
            no_device: None,
            unusable: unusable.map(String::from),
        }
    }

    fn kernel_runs() -> Result<(), String> {
        Ok(())
    }

    fn kernel_fails() -> Result<(), String> {
        Err("burn-cuda's first kernel failed: CUDA_ERROR_UNSUPPORTED_PTX_VERSION".into())
    }

    #[test]
    fn cpu_request_gives_the_cpu_without_probing() {
        let selection = select(DeviceRequest::Cpu).unwrap();
        assert_eq!((selection.backend, selection.probe), (Backend::Cpu, None));
    }

    #[test]
    fn auto_takes_a_usable_gpu_and_says_which() {
        let selection = decide(DeviceRequest::Auto, probe(None), kernel_runs).unwrap();
        assert_eq!(selection.backend, Backend::Cuda);
        assert_eq!(
            selection.reason,
            "CUDA (burn-cuda): --device auto: NVIDIA H200, 139.7 GiB, compute capability 9.0, driver CUDA 13.0"
        );
    }

    #[test]
    fn auto_falls_back_to_the_cpu_with_the_reason() {
        let selection = decide(DeviceRequest::Auto, probe(Some("no CUDA toolkit")), kernel_runs).unwrap();
        assert_eq!(selection.backend, Backend::Cpu);
        assert!(selection.reason.ends_with("found, but no CUDA toolkit"), "{}", selection.reason);
        let selection = decide(DeviceRequest::Auto, probe(None), kernel_fails).unwrap();
        assert_eq!(selection.backend, Backend::Cpu);
        assert!(selection.reason.contains("UNSUPPORTED_PTX_VERSION"), "{}", selection.reason);
    }

    #[test]
    fn cuda_request_never_falls_back() {
        let error = decide(DeviceRequest::Cuda, probe(Some("no CUDA toolkit")), kernel_runs).unwrap_err().to_string();
        assert!(error.starts_with("--device cuda requested, but NVIDIA H200"), "{error}");
        let error = decide(DeviceRequest::Cuda, probe(None), kernel_fails).unwrap_err().to_string();
        assert!(error.contains("first kernel failed"), "{error}");
        assert_eq!(decide(DeviceRequest::Cuda, probe(None), kernel_runs).unwrap().backend, Backend::Cuda);
    }

    /// This machine's real probe: whatever it finds, it answers without panicking, and a binary without
    /// the `cuda` feature never chooses CUDA.
    #[test]
    fn the_real_probe_answers() {
        let selection = select(DeviceRequest::Auto).unwrap();
        if !cfg!(feature = "cuda") {
            assert_eq!(selection.backend, Backend::Cpu);
            assert!(selection.probe.unwrap().unusable.is_some());
        }
    }
}
