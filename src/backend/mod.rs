//! Which Burn backend runs the tensors: burn-cuda when the CUDA probe finds nothing in its way, burn-wgpu
//! where asked for (or, for `--device auto`, where wgpu offers a real GPU), burn-flex on the CPU
//! otherwise. The choice is one printed line and a record in the run's reports ([`selection`]); a
//! missing GPU is a reason (`--device auto`) or an error (`--device cuda|wgpu`), never a panic.

pub mod autotune;
mod block_reuse;
pub mod conv_agreement;
mod cuda_probe;
pub mod precision;
mod selection;
pub(crate) mod shared_library;
mod startup;
pub mod step_agreement;
mod wgpu_probe;

use crate::model::TrainingBackend;
use serde::{Deserialize, Serialize};
pub use vggq_core::DeviceRequest;

pub use block_reuse::{keep_heap_mapped, BlockReuse};
pub use cuda_probe::{CudaProbe, CudaVersion, Gpu};
pub use selection::{probe_cuda, select, Selection};
pub use startup::{disable_device_select_without_display, export_cuda_path, join_cpu_pool};
pub use wgpu_probe::{Adapter, WgpuProbe};

/// Autodiff CPU backend.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// Autodiff CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// Autodiff wgpu backend (Vulkan, Metal, DX12).
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Autodiff<burn::backend::Wgpu>;

/// The kind of backend a run uses (the type is chosen at run time, so this names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl BackendKind {
    /// The name golden tables and reports use: `cpu`, `cuda` or `wgpu`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether it is a CubeCL backend: kernels compiled at run time.
    pub fn is_gpu(self) -> bool {
        self != BackendKind::Cpu
    }

    /// Runs `work` on this backend's default device.
    pub fn run<W: OnBackend>(self, work: W) -> Result<W::Output, BackendError> {
        match self {
            BackendKind::Cpu => Ok(work.run::<CpuBackend>(&Default::default())),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(work.run::<CudaBackend>(&Default::default())),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(BackendError::NotBuilt(BackendKind::Cuda.name())),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Ok(work.run::<WgpuBackend>(&Default::default())),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu => Err(BackendError::NotBuilt(BackendKind::Wgpu.name())),
        }
    }
}

/// Work generic over the autodiff backend, run by [`BackendKind::run`]: the one place that turns the
/// choice made at run time into a type.
pub trait OnBackend {
    type Output;
    fn run<B: TrainingBackend>(self, device: &B::Device) -> Self::Output;
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--device cuda` on a machine or binary that cannot run CUDA.
    #[error("--device cuda requested, but {0}")]
    CudaUnavailable(String),
    /// `--device wgpu` on a machine or binary where wgpu finds no adapter that runs.
    #[error("--device wgpu requested, but {0}")]
    WgpuUnavailable(String),
    /// A run on a backend this binary was built without (the feature is the backend's name).
    #[error("this binary was built without the `{0}` feature (cargo build --release --features {0})")]
    NotBuilt(&'static str),
}
