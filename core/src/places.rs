//! Where things live on this machine: the download cache, the team's `../shared` folder, the CUDA
//! toolkit, the Vulkan loader.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable naming the ONNX Runtime shared library (`cargo xtask setup` unpacks one and
/// sets it for everything it runs).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The environment variable naming the pinned venv's Python that the tests use as their reference
/// (`cargo xtask test` sets it).
pub const PYTHON_VARIABLE: &str = "VGGQ_PYTHON";

/// The tests' Python (`$VGGQ_PYTHON`): a test that needs it fails, not skips, where it is unset.
///
/// Panics, naming the variable and how to set it, where it is unset.
pub fn test_python() -> PathBuf {
    std::env::var_os(PYTHON_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{PYTHON_VARIABLE} is not set: run through `cargo xtask test`, which sets it"))
}

/// Downloads (CIFAR-10, torchvision's weights) and the test suite's Python venv are kept here between
/// runs: `$VGGQ_CACHE`, else `$XDG_CACHE_HOME/vggq`, else `~/.cache/vggq`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VGGQ_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache"))
        .join("vggq")
}

/// The environment variable naming the team's shared folder (`cargo xtask test` sets it for the tests).
pub const SHARED_VARIABLE: &str = "VGGQ_SHARED";

/// The team's read-only fixtures, data and baselines: `$VGGQ_SHARED`, else `../shared` beside the
/// checkout.
pub fn shared_dir() -> PathBuf {
    std::env::var_os(SHARED_VARIABLE).map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared"))
}

/// The team's copy of CIFAR-10 (all 60,000 images as JPEG, ImageFolder layout) in [`shared_dir`]: the
/// data of the golden runs, the tests and the benchmarks.
pub fn shared_cifar10_jpeg() -> PathBuf {
    shared_dir().join("data/cifar10-jpeg.tar.gz")
}

/// PyTorch's throughput baseline in [`shared_dir`], which the benchmarks run beside vggq's.
pub fn shared_torch_bench() -> PathBuf {
    shared_dir().join("bench/torch_train_bench.py")
}

/// The checkout this crate was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("vggq-core sits inside the workspace").to_path_buf()
}

/// The libraries ONNX Runtime's CUDA execution provider loads beside the NVIDIA driver (ort's
/// `CUDA_DYLIBS` then `CUDNN_DYLIBS`, which a test of vggq holds this to): `cargo xtask setup` makes
/// them loadable, `vggq eval` checks them before asking for the provider.
pub const CUDA_PROVIDER_LIBRARIES: [&str; 14] = [
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libnvrtc.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
];

/// The [`CUDA_PROVIDER_LIBRARIES`] that are neither files in `beside` (where one is given: libraries
/// unpacked there, off the loader's path until preloaded) nor loadable by name, as the provider will
/// load them.
pub fn missing_cuda_provider_libraries(beside: Option<&Path>) -> Vec<&'static str> {
    CUDA_PROVIDER_LIBRARIES
        .iter()
        .copied()
        .filter(|name| !beside.is_some_and(|folder| folder.join(name).is_file()))
        // SAFETY: CUDA and cuDNN libraries; loading runs their initialisers, as the provider would.
        .filter(|name| unsafe { libloading::Library::new(*name) }.is_err())
        .collect()
}

/// The library wgpu reaches Vulkan devices through on Linux: the GPU vendor's driver, or Mesa's (lavapipe
/// runs on the CPU), provides the devices behind it.
pub const VULKAN_LOADER: &str = "libvulkan.so.1";

/// Whether wgpu has a graphics API to find adapters through here: Metal on macOS, DX12 on Windows, the
/// Vulkan loader elsewhere.
pub fn has_wgpu_api() -> bool {
    // SAFETY: the system's Vulkan loader; loading runs its initialisers, as wgpu would.
    cfg!(any(target_os = "macos", target_os = "windows")) || unsafe { libloading::Library::new(VULKAN_LOADER) }.is_ok()
}

/// The variables that may name the CUDA toolkit, in the order they are honoured. cubecl reads only
/// `CUDA_PATH`; cudarc's build and NVIDIA's own tools know the others.
pub const CUDA_TOOLKIT_VARIABLES: [&str; 3] = ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"];
/// Where toolkits are installed when no variable names one (cubecl's defaults).
pub const CUDA_TOOLKIT_DEFAULTS: [&str; 2] = ["/usr/local/cuda", "/opt/cuda"];
/// The header every kernel burn-cuda compiles includes: a toolkit without it cannot compile them.
const CUDA_RUNTIME_HEADER: &str = "include/cuda_runtime.h";

/// A CUDA toolkit: its root and what named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaToolkit {
    pub root: PathBuf,
    /// `CUDA_PATH`, `CUDA_HOME`, `CUDA_ROOT`, or `default` for a well-known folder.
    pub named_by: String,
}

impl CudaToolkit {
    /// The first toolkit with CUDA's runtime headers, from this process's environment.
    pub fn find() -> Option<CudaToolkit> {
        Self::find_with(|name| std::env::var_os(name), &CUDA_TOOLKIT_DEFAULTS.map(Path::new))
    }

    /// The first toolkit with CUDA's runtime headers among the folders `variable` names and `defaults`.
    pub fn find_with(variable: impl Fn(&str) -> Option<OsString>, defaults: &[&Path]) -> Option<CudaToolkit> {
        let named = CUDA_TOOLKIT_VARIABLES
            .iter()
            .filter_map(|&name| variable(name).map(|root| CudaToolkit { root: root.into(), named_by: name.to_string() }));
        let default = defaults.iter().map(|root| CudaToolkit { root: root.to_path_buf(), named_by: "default".to_string() });
        named.chain(default).find(|toolkit| toolkit.root.join(CUDA_RUNTIME_HEADER).is_file())
    }

    /// The toolkit's library folders, where NVRTC lives.
    pub fn library_dirs(&self) -> Vec<PathBuf> {
        ["lib64", "lib", "targets/x86_64-linux/lib"].iter().map(|dir| self.root.join(dir)).filter(|dir| dir.is_dir()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolkit_at(dir: &Path) {
        std::fs::create_dir_all(dir.join("include")).unwrap();
        std::fs::write(dir.join(CUDA_RUNTIME_HEADER), "").unwrap();
    }

    #[test]
    fn variables_are_honoured_in_order_and_need_the_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (home, root, default) = (dir.path().join("home"), dir.path().join("root"), dir.path().join("default"));
        toolkit_at(&root);
        toolkit_at(&default);
        std::fs::create_dir_all(&home).unwrap(); // named, but without headers
        let env = |name: &str| match name {
            "CUDA_HOME" => Some(home.clone().into_os_string()),
            "CUDA_ROOT" => Some(root.clone().into_os_string()),
            _ => None,
        };
        let found = CudaToolkit::find_with(env, &[default.as_path()]).unwrap();
        assert_eq!(found, CudaToolkit { root: root.clone(), named_by: "CUDA_ROOT".into() });
        let found = CudaToolkit::find_with(|_| None, &[default.as_path()]).unwrap();
        assert_eq!(found.named_by, "default");
        assert_eq!(CudaToolkit::find_with(|_| None, &[home.as_path()]), None);
    }
}
