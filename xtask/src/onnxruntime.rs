//! The ONNX Runtime shared library the `vggq` binary loads at run time (`ort` with `load-dynamic`, so
//! nothing is downloaded when building). `$ORT_DYLIB_PATH` wins; otherwise the pinned PyPI wheel
//! (`onnxruntime-gpu` where an NVIDIA driver is present, else `onnxruntime`) is fetched with
//! `pip download --no-deps` into `<target>/onnxruntime/` and its shared libraries are extracted there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The ONNX Runtime release every path agrees on: the wheel PyPI has for CPython 3.11, and what the
/// Python venv's `onnxruntime` is (the baseline of the evaluation benchmark).
pub const VERSION: &str = "1.32.0";
/// Where the NVIDIA kernel driver announces itself.
const NVIDIA_DRIVER: &str = "/proc/driver/nvidia/version";
/// The variable the `vggq` binary reads.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// The library's name inside the wheel's `onnxruntime/capi/`.
const LIBRARY_PREFIX: &str = "libonnxruntime.so";

/// Returns the path of `libonnxruntime.so`, fetching it once if needed.
pub fn ensure(sh: &Shell) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_PATH) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{ORT_DYLIB_PATH}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let package = if Path::new(NVIDIA_DRIVER).exists() { "onnxruntime-gpu" } else { "onnxruntime" };
    let root = crate::target_dir(sh).join("onnxruntime").join(format!("{package}-{VERSION}"));
    let lib_dir = root.join("lib");
    // Written last, so an interrupted setup is redone rather than trusted.
    let complete = root.join(".complete");
    if complete.exists() {
        return find_library(&lib_dir);
    }
    eprintln!("fetching {package}=={VERSION} from PyPI into {}", root.display());
    let wheel_dir = root.join("wheel");
    let python = std::env::var("VGGQ_SYSTEM_PYTHON").unwrap_or_else(|_| "python3".into());
    let requirement = format!("{package}=={VERSION}");
    cmd!(sh, "{python} -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --dest {wheel_dir} {requirement}")
        .run()
        .with_context(|| {
            format!("could not fetch {requirement} (needs python3 with pip and PyPI); or set {ORT_DYLIB_PATH} to an existing libonnxruntime.so")
        })?;
    let wheel = sh
        .read_dir(&wheel_dir)?
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip left no wheel in {}", wheel_dir.display()))?;
    let unpacked = root.join("unpacked");
    cmd!(sh, "{python} -m zipfile -e {wheel} {unpacked}").run().context("unpacking the wheel")?;
    // The providers (`libonnxruntime_providers_*.so`) must sit beside the main library, which loads them;
    // the Python extension module is left behind.
    sh.create_dir(&lib_dir)?;
    for library in sh.read_dir(unpacked.join("onnxruntime/capi"))? {
        let name = library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("lib") && name.contains(".so") {
            sh.copy_file(&library, &lib_dir)?;
        }
    }
    sh.remove_path(&unpacked)?;
    let path = find_library(&lib_dir)?;
    sh.write_file(&complete, &requirement)?;
    Ok(path)
}

fn find_library(lib_dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(LIBRARY_PREFIX)))
        .with_context(|| format!("no {LIBRARY_PREFIX}* in {}", lib_dir.display()))
}
