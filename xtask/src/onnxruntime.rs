//! The ONNX Runtime shared library the `vggq` binary loads at run time (`ort` with `load-dynamic`, so
//! nothing is downloaded when building), and on a machine with an NVIDIA driver the CUDA and cuDNN
//! libraries its CUDA execution provider needs.
//!
//! `$ORT_DYLIB_PATH` wins. Otherwise the pinned PyPI wheel (`onnxruntime-gpu` where an NVIDIA driver is
//! present, else `onnxruntime`) is fetched with `pip download --require-hashes` into
//! `<target>/onnxruntime/<package>-<version>/` and its libraries are unpacked into `lib/` there. For
//! the GPU wheel, every library the CUDA provider loads (`vggq_core::places::CUDA_PROVIDER_LIBRARIES`,
//! the list `vggq eval` checks: CUDA 13, NVRTC and every cuDNN 9 part) is looked for in `lib/` and then
//! by name, as the dynamic loader will, on every setup: a system CUDA 13 / cuDNN 9 that has them all is
//! used as it is; otherwise the wheels of the GPU wheel's `cuda` and `cudnn` extras ([`CUDA_LIBRARIES_LOCK`])
//! are fetched and every library in them is unpacked into the same `lib/`, where `vggq` preloads them
//! before it registers the CUDA provider.
//!
//! Every wheel is pinned with the SHA-256 of each of its files on PyPI (`xtask/locks/`), so that what
//! vggq loads into its process is the file that was reviewed, whatever index or mirror pip reads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// A pinned ONNX Runtime wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    pub package: &'static str,
    pub version: &'static str,
    /// Its pin with the SHA-256 of every file of the release (a pip requirements file, under the
    /// workspace root).
    pub lock: &'static str,
}

impl Wheel {
    pub fn requirement(self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// The CPU build: the newest `onnxruntime` on PyPI, the same release the test venv pins
/// (`scripts/requirements-interop.txt`) for the Python baseline.
pub const CPU_WHEEL: Wheel = Wheel { package: "onnxruntime", version: "1.32.0", lock: "xtask/locks/onnxruntime.txt" };
/// The CUDA 13 build: the newest `onnxruntime-gpu` on PyPI (it trails `onnxruntime`; the `ort` crate's
/// `api-22` feature is below both).
pub const GPU_WHEEL: Wheel = Wheel { package: "onnxruntime-gpu", version: "1.31.1", lock: "xtask/locks/onnxruntime-gpu.txt" };
/// The wheels of the GPU wheel's `cuda` and `cudnn` extras (the CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC,
/// nvJitLink and cuDNN), each pinned with its files' SHA-256: what pip resolved for them on PyPI.
pub const CUDA_LIBRARIES_LOCK: &str = "xtask/locks/onnxruntime-gpu-cuda.txt";
/// The GPU wheel's extras whose wheels [`CUDA_LIBRARIES_LOCK`] pins.
pub const GPU_EXTRAS: [&str; 2] = ["cuda", "cudnn"];
/// Where the NVIDIA kernel driver announces itself.
const NVIDIA_DRIVER: &str = "/proc/driver/nvidia/version";
use vggq_core::places::missing_cuda_provider_libraries;
pub use vggq_core::places::ORT_DYLIB_PATH;
/// How this system names shared libraries, for the ones in the wheels.
const LIBRARY_NAMES: LibraryNames =
    LibraryNames { prefix: std::env::consts::DLL_PREFIX, extension: std::env::consts::DLL_EXTENSION };
/// Libraries of NVIDIA's wheels that ONNX Runtime never uses and that must not be loaded beside it:
/// NVBLAS (a BLAS interposer that announces itself on stderr when loaded) and cuFFTW (FFTW's API).
const UNUSED_CUDA_LIBRARIES: [&str; 2] = ["libnvblas.so", "libcufftw.so"];

/// The ONNX Runtime a run uses.
pub struct OnnxRuntime {
    /// `libonnxruntime.so`, for `$ORT_DYLIB_PATH`.
    pub library: PathBuf,
}

/// Returns ONNX Runtime, fetching it (and the CUDA provider's libraries) once if needed.
pub fn ensure(sh: &Shell) -> Result<OnnxRuntime> {
    ensure_wheel(sh, if Path::new(NVIDIA_DRIVER).exists() { GPU_WHEEL } else { CPU_WHEEL })
}

/// ONNX Runtime's CPU build, on any machine: the release the Python baseline's venv pins, for
/// benchmarks of the CPU provider beside it.
pub fn ensure_cpu(sh: &Shell) -> Result<OnnxRuntime> {
    ensure_wheel(sh, CPU_WHEEL)
}

/// `$ORT_DYLIB_PATH`, else `wheel`'s library (with the CUDA provider's for the GPU wheel).
fn ensure_wheel(sh: &Shell, wheel: Wheel) -> Result<OnnxRuntime> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_PATH) {
        // Relative to the folder xtask was started in; `vggq` runs in the workspace root.
        let path = std::path::absolute(PathBuf::from(path)).with_context(|| format!("{ORT_DYLIB_PATH} names no path"))?;
        if !path.is_file() {
            bail!("{ORT_DYLIB_PATH}={} is not a file", path.display());
        }
        return Ok(OnnxRuntime { library: path });
    }
    let lib_dir = wheel_libraries(sh, wheel)?;
    if wheel == GPU_WHEEL {
        // Checked on every setup (a system library may have gone since the last), with the list
        // `vggq eval` checks before asking for the provider.
        let missing = missing_cuda_provider_libraries(Some(&lib_dir));
        if missing.is_empty() {
            eprintln!("the CUDA provider's libraries all load, from {} or the system's", lib_dir.display());
        } else {
            fetch_provider_libraries(sh, &missing, &lib_dir)?;
        }
    }
    Ok(OnnxRuntime { library: find_library(&lib_dir)? })
}

/// The shared libraries of `wheel` (no CUDA or cuDNN), fetched once with `pip download` into
/// `<target>/onnxruntime/<package>-<version>/lib/`; returns that folder.
pub fn wheel_libraries(sh: &Shell, wheel: Wheel) -> Result<PathBuf> {
    let root = crate::target_dir().join("onnxruntime").join(format!("{}-{}", wheel.package, wheel.version));
    let lib_dir = root.join("lib");
    // Written last, so an interrupted fetch is redone rather than trusted.
    let complete = root.join(".wheel-complete");
    if complete.exists() {
        return Ok(lib_dir);
    }
    if root.exists() {
        sh.remove_path(&root)?;
    }
    eprintln!("fetching {} from PyPI into {}", wheel.requirement(), root.display());
    let downloads = root.join("downloads");
    pip_download(sh, &downloads, wheel.lock).with_context(|| {
        format!("fetching {} failed; or set {ORT_DYLIB_PATH} to an existing libonnxruntime.so", wheel.requirement())
    })?;
    let unpacked = unpack_all(sh, &downloads, &root.join("unpacked"))?;
    sh.create_dir(&lib_dir)?;
    copy_libraries(sh, &unpacked.join("onnxruntime/capi"), &lib_dir, |name| LIBRARY_NAMES.is_onnxruntime_part(name))?;
    sh.remove_path(&downloads)?;
    sh.remove_path(&unpacked)?;
    find_library(&lib_dir)?;
    sh.write_file(&complete, wheel.requirement())?;
    Ok(lib_dir)
}

/// Makes the CUDA provider's `missing` libraries loadable: unpacks the wheels of the GPU wheel's extras
/// ([`CUDA_LIBRARIES_LOCK`]) into `lib_dir`, beside ONNX Runtime, where `vggq eval` preloads them.
fn fetch_provider_libraries(sh: &Shell, missing: &[&str], lib_dir: &Path) -> Result<()> {
    let root = lib_dir.parent().expect("lib/ sits in the wheel's folder");
    eprintln!(
        "the CUDA provider needs {} (not installed here): fetching the wheels of {CUDA_LIBRARIES_LOCK}",
        missing.join(", ")
    );
    let downloads = root.join("cuda-downloads");
    pip_download(sh, &downloads, CUDA_LIBRARIES_LOCK)?;
    let wheels: Vec<String> =
        wheel_files(sh, &downloads)?.iter().filter_map(|w| w.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    let unpacked = unpack_all(sh, &downloads, &root.join("cuda-unpacked"))?;
    // NVIDIA's wheels keep their libraries in `nvidia/<component>/lib/` (or `nvidia/cu13/lib/`).
    for lib in find_dirs_named(&unpacked, "lib")? {
        copy_libraries(sh, &lib, lib_dir, |name| !UNUSED_CUDA_LIBRARIES.iter().any(|unused| name.starts_with(unused)))?;
    }
    sh.remove_path(&downloads)?;
    sh.remove_path(&unpacked)?;
    let still_missing = missing_cuda_provider_libraries(Some(lib_dir));
    if !still_missing.is_empty() {
        bail!("after unpacking {}, the CUDA provider still cannot find {}", wheels.join(", "), still_missing.join(", "));
    }
    Ok(())
}

/// `pip download` of the binary wheels `lock` pins (a path under the workspace root) into `dest`, each
/// refused unless its SHA-256 is one the lock gives. The lock lists every wheel needed, dependencies
/// included, so pip resolves nothing beyond it.
fn pip_download(sh: &Shell, dest: &Path, lock: &str) -> Result<()> {
    let python = crate::python::system_python();
    let lock = sh.current_dir().join(lock);
    cmd!(sh, "{python} -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: --dest {dest} -r {lock}")
        .run()
        .with_context(|| format!("could not fetch the wheels {} pins (needs python3 with pip, and PyPI)", lock.display()))
}

fn wheel_files(sh: &Shell, dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(sh.read_dir(dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "whl")).collect())
}

/// Unpacks every wheel in `downloads` into `dest`; returns `dest`.
fn unpack_all(sh: &Shell, downloads: &Path, dest: &Path) -> Result<PathBuf> {
    let python = crate::python::system_python();
    let wheels = wheel_files(sh, downloads)?;
    if wheels.is_empty() {
        bail!("pip left no wheel in {}", downloads.display());
    }
    for wheel in wheels {
        cmd!(sh, "{python} -m zipfile -e {wheel} {dest}").run().with_context(|| format!("unpacking {}", wheel.display()))?;
    }
    Ok(dest.to_path_buf())
}

/// How an operating system names shared libraries: `lib` and `so` on Linux, `lib` and `dylib` on macOS.
struct LibraryNames {
    prefix: &'static str,
    extension: &'static str,
}

impl LibraryNames {
    /// A shared library: `libx.so`, `libx.so.1` (Linux's versioned names), `libx.1.dylib`.
    fn is_library(&self, name: &str) -> bool {
        let extension = self.extension;
        name.ends_with(&format!(".{extension}")) || name.contains(&format!(".{extension}."))
    }

    /// ONNX Runtime itself (`libonnxruntime.so.1.32.0`, `libonnxruntime.1.32.0.dylib`), not a provider's
    /// library beside it.
    fn is_onnxruntime(&self, name: &str) -> bool {
        self.is_library(name) && name.starts_with(&format!("{}onnxruntime.", self.prefix))
    }

    /// ONNX Runtime or a provider's library of its own (`libonnxruntime_providers_shared.so`); not the
    /// Python module's (`onnxruntime_pybind11_state.so`).
    fn is_onnxruntime_part(&self, name: &str) -> bool {
        self.is_library(name) && name.starts_with(&format!("{}onnxruntime", self.prefix))
    }
}

/// Copies the shared libraries in `from` that `keep` accepts into `to`, each first beside `to` (where
/// nothing loads every library it finds) and renamed into it once whole: setup and `vggq eval` take a
/// library in `to` for present by its name, so an interrupted copy (cuDNN's run to 1 GB) must leave none.
fn copy_libraries(sh: &Shell, from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    let beside = to.parent().context("a library folder has a parent")?;
    for library in sh.read_dir(from)? {
        let name = library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if library.is_file() && LIBRARY_NAMES.is_library(&name) && keep(&name) {
            let partial = beside.join(format!("{name}.partial"));
            std::fs::copy(&library, &partial)
                .with_context(|| format!("copying {} to {}", library.display(), partial.display()))?;
            std::fs::rename(&partial, to.join(&name)).with_context(|| format!("renaming {}", partial.display()))?;
        }
    }
    Ok(())
}

/// Every folder under `root` called `name`.
fn find_dirs_named(root: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == name) {
                    found.push(path.clone());
                }
                pending.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn find_library(lib_dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| LIBRARY_NAMES.is_onnxruntime(&n.to_string_lossy())))
        .with_context(|| format!("no {}onnxruntime.*{} in {}", LIBRARY_NAMES.prefix, LIBRARY_NAMES.extension, lib_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::lock_pins;

    /// The Python baseline's venv pins the CPU wheel's release: `bench onnx` compares the two.
    #[test]
    fn the_venv_pins_the_cpu_wheels_release() {
        let venv = lock_pins(crate::python::INTEROP_LOCK);
        assert!(venv.iter().any(|(pin, _)| *pin == CPU_WHEEL.requirement()), "{}", crate::python::INTEROP_LOCK);
    }

    /// The shared libraries in `onnxruntime/capi/` of the 1.32.0 wheels for Linux x86-64, macOS arm64 and
    /// Windows x64 (`python -m pip download --platform ...`, 2026-12-02), and ONNX Runtime's own among
    /// them, by each system's names.
    const CAPI_LIBRARIES: [(LibraryNames, &[&str], &str); 3] = [
        (
            LibraryNames { prefix: "lib", extension: "so" },
            &[
                "libonnxruntime.so.1.32.0",
                "libonnxruntime_providers_shared.so",
                "onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so",
            ],
            "libonnxruntime.so.1.32.0",
        ),
        (
            LibraryNames { prefix: "lib", extension: "dylib" },
            &["libonnxruntime.1.32.0.dylib", "onnxruntime_pybind11_state.so"],
            "libonnxruntime.1.32.0.dylib",
        ),
        (
            LibraryNames { prefix: "", extension: "dll" },
            &["onnxruntime.dll", "onnxruntime_providers_shared.dll", "onnxruntime_pybind11_state.pyd"],
            "onnxruntime.dll",
        ),
    ];

    #[test]
    fn each_systems_wheel_gives_onnxruntime_and_its_providers_library_not_pythons() {
        for (names, files, onnxruntime) in CAPI_LIBRARIES {
            let found: Vec<&str> = files.iter().copied().filter(|f| names.is_onnxruntime(f)).collect();
            assert_eq!(found, [onnxruntime], "{}", names.extension);
            let copied: Vec<&str> = files.iter().copied().filter(|f| names.is_onnxruntime_part(f)).collect();
            let providers = files.iter().filter(|f| f.contains("providers"));
            assert_eq!(copied, [onnxruntime].into_iter().chain(providers.copied()).collect::<Vec<_>>(), "{}", names.extension);
        }
        let cuda = LibraryNames { prefix: "lib", extension: "so" };
        assert!(cuda.is_library("libcudnn_ops.so.9") && cuda.is_library("libnvrtc.so") && !cuda.is_library("libsomething.sox"));
    }

    /// A lock whose hashes are not PyPI's makes `pip_download` fail, with nothing left behind. Needs PyPI,
    /// as `cargo xtask setup` does.
    #[test]
    fn a_wheel_not_matching_its_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_pins(CPU_WHEEL.lock);
        let forged: String =
            lock.iter().map(|(pin, hashes)| format!("{pin} --hash=sha256:{}\n", "0".repeat(hashes[0].len()))).collect();
        let forged_lock = dir.path().join("forged.txt");
        std::fs::write(&forged_lock, forged).unwrap();
        let sh = Shell::new().unwrap();
        let dest = dir.path().join("downloads");
        assert!(pip_download(&sh, &dest, forged_lock.to_str().unwrap()).is_err(), "a wheel not matching its lock is refused");
        assert!(wheel_files(&sh, &dest).map_or(true, |wheels| wheels.is_empty()));
    }

    /// The CUDA libraries' lock holds the CUDA 13 and cuDNN 9 libraries the CUDA provider loads, cuBLAS
    /// through cuDNN.
    #[test]
    fn the_cuda_lock_has_cuda_13_and_cudnn_9() {
        let pins = lock_pins(CUDA_LIBRARIES_LOCK);
        let version = |name: &str| {
            pins.iter().find_map(|(pin, _)| pin.strip_prefix(name).and_then(|rest| rest.strip_prefix("=="))).map(String::from)
        };
        for needed in
            ["nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cufft", "nvidia-curand", "nvidia-cudnn-cu13", "nvidia-cublas"]
        {
            assert!(version(needed).is_some(), "{needed} is not in {CUDA_LIBRARIES_LOCK}");
        }
        assert!(version("nvidia-cuda-runtime").is_some_and(|v| v.starts_with("13.")), "CUDA 13 runtime");
        assert!(version("nvidia-cudnn-cu13").is_some_and(|v| v.starts_with("9.")), "cuDNN 9");
    }
}
