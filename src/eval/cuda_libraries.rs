//! The libraries ONNX Runtime's CUDA execution provider needs beside the NVIDIA driver: the CUDA 13
//! runtime, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN 9 (`vggq_core::places::CUDA_PROVIDER_LIBRARIES`, the
//! list `cargo xtask setup` checks too; a test holds it to `ort::ep::cuda::CUDA_DYLIBS` and `CUDNN_DYLIBS`). Python's `onnxruntime.preload_dlls()` loads them from NVIDIA's wheels; here
//! `cargo xtask setup` unpacks those wheels into the folder of `libonnxruntime.so`, and [`prepare`]
//! loads every library it finds there by its full path. The dynamic loader then matches the provider's
//! own requests, by soname, to the libraries already loaded; whatever is not in that folder is looked
//! for on the system's library path, so a system CUDA 13 / cuDNN 9 serves as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vggq_core::places::missing_cuda_provider_libraries;

/// Loads the libraries in the folder of `ort_library` (once per folder and process) and checks that
/// every library the CUDA provider needs can be loaded. The error names the missing ones.
pub fn prepare(ort_library: &Path) -> Result<(), String> {
    static PREPARED: Mutex<BTreeMap<PathBuf, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let folder = ort_library.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut prepared = PREPARED.lock().expect("the prepared folders");
    prepared.entry(folder.clone()).or_insert_with(|| prepare_folder(&folder)).clone()
}

fn prepare_folder(folder: &Path) -> Result<(), String> {
    let unloadable = preload_folder(folder)?.unloadable;
    let missing = missing_cuda_provider_libraries(None);
    if missing.is_empty() {
        return Ok(());
    }
    let why = if unloadable.is_empty() { String::new() } else { format!(" ({})", unloadable.join("; ")) };
    Err(format!(
        "ONNX Runtime's CUDA provider needs {}, found neither in {} nor on the library path{why}: run \
         `cargo xtask setup` on this machine (it fetches them where an NVIDIA driver is present), or install \
         CUDA 13 and cuDNN 9",
        missing.join(", "),
        folder.display()
    ))
}

/// What [`preload_folder`] did.
#[derive(Debug, Default)]
pub struct Preloaded {
    pub loaded: Vec<PathBuf>,
    /// Libraries that would not load, with the loader's reason.
    pub unloadable: Vec<String>,
}

/// Loads every shared library in `folder` but ONNX Runtime's own (it loads its providers itself), for
/// the rest of the process. A library that needs another of the folder's loads once that one has.
pub fn preload_folder(folder: &Path) -> Result<Preloaded, String> {
    let unreadable = |e: std::io::Error| format!("reading {}: {e}", folder.display());
    let mut pending = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if (name.ends_with(".so") || name.contains(".so.")) && !name.starts_with("libonnxruntime") {
            pending.push(path);
        }
    }
    pending.sort();
    let mut preloaded = Preloaded::default();
    loop {
        let before = pending.len();
        let mut failures = Vec::new();
        pending.retain(|path| match crate::backend::shared_library::preload(path) {
            Ok(()) => {
                preloaded.loaded.push(path.clone());
                false
            }
            Err(error) => {
                failures.push(error);
                true
            }
        });
        if pending.is_empty() || pending.len() == before {
            preloaded.unloadable = failures;
            return Ok(preloaded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `lib<name>.so.<major>` with that soname, linked to `needs`, in `folder`.
    fn fake_library(folder: &Path, name: &str, needs: &[&str]) -> PathBuf {
        let source = folder.join(format!("{name}.c"));
        std::fs::write(&source, format!("int {name}_version(void) {{ return 13; }}\n")).unwrap();
        let file = folder.join(format!("lib{name}.so.13"));
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&file)
            .arg(format!("-Wl,-soname,lib{name}.so.13"))
            .arg(&source)
            .arg(format!("-L{}", folder.display()))
            .args(needs.iter().map(|n| format!("-l:lib{n}.so.13")))
            .status()
            .expect("a C compiler (cc)");
        assert!(status.success());
        file
    }

    #[test]
    fn libraries_load_in_dependency_order_and_then_by_soname() {
        let dir = tempfile::tempdir().unwrap();
        // `vggqtestb` links to `vggqtesta`, which is not on the library path: it loads only after it.
        fake_library(dir.path(), "vggqtesta", &[]);
        fake_library(dir.path(), "vggqtestb", &["vggqtesta"]);
        std::fs::write(dir.path().join("libonnxruntime.so.1.32.0"), b"not loaded by the preloader").unwrap();
        // SAFETY: a library made above.
        assert!(unsafe { libloading::Library::new("libvggqtestb.so.13") }.is_err(), "not on the library path");
        let preloaded = preload_folder(dir.path()).unwrap();
        assert_eq!(preloaded.loaded.len(), 2, "{preloaded:?}");
        assert!(preloaded.unloadable.is_empty(), "{preloaded:?}");
        // SAFETY: as above.
        assert!(unsafe { libloading::Library::new("libvggqtestb.so.13") }.is_ok(), "found by soname once loaded");
    }

    #[test]
    fn the_list_is_the_one_ort_preloads() {
        let ort: Vec<&str> = ort::ep::cuda::CUDA_DYLIBS.iter().chain(ort::ep::cuda::CUDNN_DYLIBS).copied().collect();
        assert_eq!(vggq_core::places::CUDA_PROVIDER_LIBRARIES.to_vec(), ort);
    }

    /// Each folder is prepared on its own: a first answer is not reused for another folder.
    #[test]
    fn each_folder_gets_its_own_answer() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first_answer = prepare(&first.path().join("libonnxruntime.so")).err().unwrap_or_default();
        assert!(!first_answer.contains("reading"), "{first_answer}");
        // A folder that does not exist: its own error, not the first folder's answer.
        let error = prepare(&second.path().join("sub/libonnxruntime.so")).unwrap_err();
        assert!(error.contains("reading") && error.contains("sub"), "{error}");
    }

    /// On a machine without CUDA 13 and cuDNN 9 (CI), the error names what is missing.
    #[test]
    fn a_missing_cuda_library_is_named() {
        let missing = missing_cuda_provider_libraries(None);
        let dir = tempfile::tempdir().unwrap();
        let result = prepare(&dir.path().join("libonnxruntime.so"));
        match missing.first() {
            Some(first) => {
                let error = result.unwrap_err();
                assert!(error.contains(first) && error.contains("cargo xtask setup"), "{error}");
            }
            None => assert_eq!(result, Ok(())),
        }
    }
}
