//! Which Burn backend runs the tensors: burn-cuda when this machine can run it, burn-flex on the CPU
//! otherwise. A missing CUDA is a notice or an error, never a panic.

use std::path::PathBuf;

/// Autodiff CPU backend used for training when no GPU is chosen.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;
/// Autodiff CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// CUDA when libcuda, NVRTC and the CUDA headers are found (and the binary has the `cuda` feature),
    /// else the CPU.
    Auto,
    Cuda,
    Cpu,
}

/// The backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

/// A chosen backend with the one-line reason printed to the user.
#[derive(Debug, Clone)]
pub struct Selection {
    pub backend: Backend,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--device cuda` on a machine or binary that cannot run CUDA.
    #[error("--device cuda requested, but {0}")]
    CudaUnavailable(String),
}

/// Picks the backend for `request`, probing the CUDA runtime pieces burn-cuda loads at run time.
pub fn select(request: DeviceRequest) -> Result<Selection, BackendError> {
    let cpu = |why: String| Selection { backend: Backend::Cpu, reason: format!("using the CPU (burn-flex): {why}") };
    match request {
        DeviceRequest::Cpu => Ok(cpu("--device cpu".into())),
        DeviceRequest::Cuda => match cuda_missing() {
            None => Ok(Selection { backend: Backend::Cuda, reason: "using CUDA (burn-cuda): --device cuda".into() }),
            Some(why) => Err(BackendError::CudaUnavailable(why)),
        },
        DeviceRequest::Auto => Ok(match cuda_missing() {
            None => Selection { backend: Backend::Cuda, reason: "using CUDA (burn-cuda): libcuda, NVRTC and CUDA headers found".into() },
            Some(why) => cpu(why),
        }),
    }
}

/// Why CUDA cannot run here, or `None` when it can.
fn cuda_missing() -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some("this binary was built without the `cuda` feature (cargo build --features cuda)".into());
    }
    if !loadable(&["libcuda.so.1", "libcuda.so"]) {
        return Some("libcuda (the NVIDIA driver) was not found".into());
    }
    if !loadable(NVRTC_LIBRARIES) {
        return Some("NVRTC (libnvrtc.so) was not found on the library path".into());
    }
    match cuda_headers() {
        Some(_) => None,
        None => Some("the CUDA headers were not found (set CUDA_PATH to the toolkit; /usr/local/cuda is tried)".into()),
    }
}

/// The names cudarc tries for NVRTC, newest first.
const NVRTC_LIBRARIES: &[&str] = &["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"];

fn loadable(names: &[&str]) -> bool {
    // SAFETY: these are the NVIDIA libraries burn-cuda itself loads; opening them runs only their
    // initialisers, as burn-cuda would.
    names.iter().any(|name| unsafe { libloading::Library::new(name) }.is_ok())
}

/// `$CUDA_PATH/include/cuda.h`, with cubecl's default of `/usr/local/cuda`.
fn cuda_headers() -> Option<PathBuf> {
    let root = std::env::var_os("CUDA_PATH").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    let header = root.join("include").join("cuda.h");
    header.is_file().then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_request_always_gives_cpu() {
        assert_eq!(select(DeviceRequest::Cpu).unwrap().backend, Backend::Cpu);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_feature_auto_falls_back_and_cuda_is_a_clear_error() {
        let auto = select(DeviceRequest::Auto).unwrap();
        assert_eq!(auto.backend, Backend::Cpu);
        assert!(auto.reason.contains("without the `cuda` feature"), "{}", auto.reason);
        let error = select(DeviceRequest::Cuda).unwrap_err().to_string();
        assert!(error.contains("--device cuda requested"), "{error}");
    }
}
