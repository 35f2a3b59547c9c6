//! The CUDA probe's decisions on fake driver, NVRTC and toolkit layouts: `vggq device --json` run with a
//! stand-in `libcuda` and `libnvrtc` (tests/device/fake_cuda.c, built here with the C compiler) that
//! answer what each case needs. Whatever the probe finds, it answers without panicking, names what
//! stands in the way, and a CPU build never chooses CUDA.

use std::path::{Path, PathBuf};
use std::process::Command;

use vggq::backend::{BackendKind, Selection};

/// A machine layout: a folder for the driver (put on the library path) and a toolkit folder.
struct Layout {
    _dir: tempfile::TempDir,
    driver: PathBuf,
    toolkit: PathBuf,
}

fn compile(define: &str, soname: &str, out: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/device/fake_cuda.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", &format!("-D{define}"), &format!("-Wl,-soname,{soname}"), "-o"])
        .arg(out)
        .arg(source)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "building {}", out.display());
}

/// `driver`: whether a libcuda is there; `nvrtc_in_toolkit`: whether the toolkit's lib64 has NVRTC;
/// `headers`: whether the toolkit has CUDA's runtime headers.
fn layout(driver: bool, nvrtc_in_toolkit: bool, headers: bool) -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let (driver_dir, toolkit) = (dir.path().join("driver"), dir.path().join("toolkit"));
    std::fs::create_dir_all(&driver_dir).unwrap();
    std::fs::create_dir_all(toolkit.join("lib64")).unwrap();
    if driver {
        compile("FAKE_DRIVER", "libcuda.so.1", &driver_dir.join("libcuda.so.1"));
        std::os::unix::fs::symlink("libcuda.so.1", driver_dir.join("libcuda.so")).unwrap();
    }
    if nvrtc_in_toolkit {
        compile("FAKE_NVRTC", "libnvrtc.so.13", &toolkit.join("lib64/libnvrtc.so.13"));
    }
    if headers {
        std::fs::create_dir_all(toolkit.join("include")).unwrap();
        std::fs::write(toolkit.join("include/cuda_runtime.h"), "").unwrap();
    }
    Layout { _dir: dir, driver: driver_dir, toolkit }
}

/// `vggq device --json` on `layout` with the fake's answers in `fake`.
fn probe(layout: &Layout, fake: &[(&str, String)]) -> Selection {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vggq"));
    command
        .args(["device", "--json"])
        .env("LD_LIBRARY_PATH", &layout.driver)
        .env("CUDA_HOME", &layout.toolkit)
        .env_remove("CUDA_PATH")
        .env_remove("CUDA_ROOT");
    for (name, value) in fake {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "vggq device failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn reason(selection: &Selection) -> String {
    selection.probe.as_ref().and_then(|p| p.unusable.clone()).unwrap_or_default()
}

/// The CUDA version this binary binds (cudarc's), as the driver API encodes it.
fn built_for(layout: &Layout) -> u32 {
    probe(layout, &[]).probe.unwrap().built_for.0
}

#[test]
fn no_driver_means_the_cpu_and_says_so() {
    let selection = probe(&layout(false, true, true), &[]);
    assert_eq!(selection.backend, BackendKind::Cpu);
    assert!(reason(&selection).starts_with("no NVIDIA driver: none of libcuda.so"), "{}", reason(&selection));
    assert!(selection.reason.starts_with("CPU (burn-flex): --device auto found no usable GPU"), "{}", selection.reason);
}

#[test]
fn a_driver_without_devices_is_named() {
    let selection = probe(&layout(true, true, true), &[("FAKE_CUINIT_RESULT", "100".into())]);
    assert_eq!(selection.backend, BackendKind::Cpu);
    assert_eq!(reason(&selection), "initialising the NVIDIA driver (cuInit) failed: CUDA_ERROR_NO_DEVICE");
    assert_eq!(
        selection.probe.unwrap().no_device.as_deref(),
        Some("initialising the NVIDIA driver (cuInit) failed: CUDA_ERROR_NO_DEVICE")
    );
}

#[test]
fn a_driver_older_than_the_binary_is_named_with_the_gpu() {
    let layout = layout(true, true, true);
    let binary = built_for(&layout);
    let old = binary - 10;
    let selection = probe(&layout, &[("FAKE_CUDA_VERSION", old.to_string())]);
    assert_eq!(selection.backend, BackendKind::Cpu);
    let probe = selection.probe.clone().unwrap();
    assert_eq!(probe.gpus[0].name, "Fake GPU");
    assert_eq!((probe.gpus[0].memory_bytes, probe.gpus[0].compute_capability.as_str()), (80 << 30, "9.0"));
    assert!(reason(&selection).contains(&format!("rebuild with CUDARC_CUDA_VERSION={old}")), "{}", reason(&selection));
    assert!(selection.reason.contains("Fake GPU, 80.0 GiB, compute capability 9.0"), "{}", selection.reason);
    assert!(probe.no_device.is_none(), "ONNX Runtime could still use the device");
}

#[test]
fn nvrtc_is_found_in_the_toolkit_that_cuda_home_names() {
    let layout = layout(true, true, true);
    let selection =
        probe(&layout, &[("FAKE_CUDA_VERSION", built_for(&layout).to_string()), ("FAKE_NVRTC_VERSION", "13000".into())]);
    let probe = selection.probe.clone().unwrap();
    assert_eq!(probe.toolkit.as_deref(), Some(layout.toolkit.as_path()));
    assert_eq!(probe.nvrtc.map(|v| v.0), Some(13000), "loaded from $CUDA_HOME/lib64 under cudarc's name");
    if cfg!(feature = "cuda") {
        // The fake driver cannot run a kernel: the first kernel is what fails.
        assert!(reason(&selection).contains("first kernel"), "{}", reason(&selection));
    } else {
        assert!(reason(&selection).contains("built without the `cuda` feature"), "{}", reason(&selection));
    }
    assert_eq!(selection.backend, BackendKind::Cpu);
}

#[test]
fn nvrtc_newer_than_the_driver_is_named() {
    let layout = layout(true, true, true);
    let driver = built_for(&layout);
    let selection =
        probe(&layout, &[("FAKE_CUDA_VERSION", driver.to_string()), ("FAKE_NVRTC_VERSION", (driver + 10).to_string())]);
    assert!(reason(&selection).contains("is newer than the driver's"), "{}", reason(&selection));
}

#[test]
fn missing_headers_and_missing_nvrtc_are_named() {
    let no_headers = layout(true, true, false);
    let version = built_for(&no_headers).to_string();
    let selection = probe(&no_headers, &[("FAKE_CUDA_VERSION", version.clone())]);
    assert!(reason(&selection).starts_with("no CUDA toolkit with include/cuda_runtime.h"), "{}", reason(&selection));
    let no_nvrtc = layout(true, false, true);
    let selection = probe(&no_nvrtc, &[("FAKE_CUDA_VERSION", version)]);
    assert!(reason(&selection).starts_with("NVRTC not found: none of libnvrtc.so"), "{}", reason(&selection));
}
