//! What this machine's CUDA can do, found the way burn-cuda will find it, so that choosing CUDA never
//! ends in a panic inside cudarc or cubecl.
//!
//! - The driver: the library cudarc loads (`cudarc::driver::sys::culib`, its own name candidates),
//!   initialised with `cuInit`, its CUDA version read with `cuDriverGetVersion` and checked against
//!   the CUDA API this binary binds (cudarc calls functions of that version), devices counted and
//!   described. The driver's build (580.159.03, say) comes from NVML, where it loads: the driver
//!   compiles the PTX that NVRTC writes, and its compiler is that build's.
//! - NVRTC: loaded by cudarc under its own name candidates; where none is on the library path, the
//!   toolkit's (`$CUDA_PATH`, `$CUDA_HOME`, `$CUDA_ROOT`, `/usr/local/cuda`, `/opt/cuda`) is loaded by
//!   its full path first, so cudarc's load by name finds it already loaded (the dynamic loader matches
//!   loaded libraries by their soname). Its version must not be newer than the driver's, which could
//!   not load the PTX it writes.
//! - The CUDA headers every kernel cubecl compiles includes; cubecl reads only `$CUDA_PATH`, so `main`
//!   exports it first thing when another variable or a default folder holds the toolkit.
//!
//! Symbols are called through `libloading` with C integer types rather than cudarc's enums, so a code
//! this cudarc does not know is a number in a message, not undefined behaviour.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vggq_core::places::CudaToolkit;

use super::shared_library::{panic_message, preload};

/// A CUDA version as the driver API encodes it: `1000 * major + 10 * minor` (13000 is 13.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CudaVersion(pub u32);

impl CudaVersion {
    /// The CUDA API this binary's cudarc binds: the toolkit's at build time, else cudarc's newest, or
    /// `$CUDARC_CUDA_VERSION` when the build set it.
    pub const BUILT_FOR: CudaVersion = CudaVersion(cudarc::driver::sys::CUDA_VERSION);

    pub fn major(self) -> u32 {
        self.0 / 1000
    }

    pub fn minor(self) -> u32 {
        self.0 % 1000 / 10
    }
}

impl std::fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// One CUDA device, as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub memory_bytes: u64,
    /// `major.minor`, e.g. `9.0` for Hopper.
    pub compute_capability: String,
}

impl std::fmt::Display for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = self.memory_bytes as f64 / f64::from(1u32 << 30);
        write!(f, "{}, {gib:.1} GiB, compute capability {}", self.name, self.compute_capability)
    }
}

/// Everything the probe found, and the first reason burn-cuda cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaProbe {
    /// The CUDA version the driver supports; `None` when no driver library loaded and initialised.
    pub driver: Option<CudaVersion>,
    /// The driver's build, as `nvidia-smi` shows it (NVML's `nvmlSystemGetDriverVersion`); `None` where
    /// NVML does not load or answer, or no driver did.
    #[serde(default)]
    pub driver_build: Option<String>,
    pub built_for: CudaVersion,
    pub gpus: Vec<Gpu>,
    /// NVRTC's version, when cudarc can load it.
    pub nvrtc: Option<CudaVersion>,
    /// The toolkit whose headers the kernels include.
    pub toolkit: Option<PathBuf>,
    /// Why the driver offers no CUDA device (no driver, no device, an error): `None` when ONNX Runtime's
    /// CUDA execution provider could use one.
    pub no_device: Option<String>,
    /// Why burn-cuda cannot run on this machine; `None` when nothing stands in its way.
    pub unusable: Option<String>,
}

impl CudaProbe {
    /// Probes the machine. Never panics: a library that lacks a symbol the probe calls is a reason,
    /// like any other.
    pub fn run() -> CudaProbe {
        let mut probe = CudaProbe {
            driver: None,
            driver_build: None,
            built_for: CudaVersion::BUILT_FOR,
            gpus: Vec::new(),
            nvrtc: None,
            toolkit: None,
            no_device: None,
            unusable: None,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe.check()));
        probe.unusable = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(panic) => Some(format!("probing CUDA failed: {}", panic_message(&*panic))),
        };
        if probe.gpus.is_empty() {
            probe.no_device = probe.unusable.clone();
        }
        probe
    }

    /// The checks in the order burn-cuda depends on them; the first that fails is the reason.
    fn check(&mut self) -> Result<(), String> {
        let driver = Driver::load()?;
        driver.init()?;
        let version = driver.version()?;
        self.driver = Some(version);
        self.driver_build = driver_build();
        self.gpus = driver.gpus()?;
        if version < self.built_for {
            return Err(format!(
                "the NVIDIA driver supports CUDA {version}, but this binary calls CUDA {} functions: update the driver, \
                 or rebuild with CUDARC_CUDA_VERSION={}",
                self.built_for, version.0
            ));
        }
        if self.gpus.is_empty() {
            return Err("the NVIDIA driver sees no CUDA device".into());
        }
        let toolkit = CudaToolkit::find().ok_or_else(|| {
            "no CUDA toolkit with include/cuda_runtime.h (the kernels include it): set CUDA_PATH, CUDA_HOME or \
             CUDA_ROOT to one; /usr/local/cuda and /opt/cuda were tried"
                .to_string()
        })?;
        self.toolkit = Some(toolkit.root.clone());
        let nvrtc = load_nvrtc(&toolkit)?;
        self.nvrtc = Some(nvrtc);
        if nvrtc > version {
            return Err(format!(
                "NVRTC {nvrtc} is newer than the driver's CUDA {version}, which cannot load the PTX it writes: \
                 update the driver or use a toolkit no newer than the driver"
            ));
        }
        if !cfg!(feature = "cuda") {
            return Err("this binary was built without the `cuda` feature (cargo build --release --features cuda)".into());
        }
        Ok(())
    }

    /// The driver, as messages and a run's arithmetic name it: its build where NVML gave it, and the
    /// CUDA version it supports; `None` where no driver loaded.
    pub fn driver_name(&self) -> Option<String> {
        let version = self.driver?;
        Some(match &self.driver_build {
            Some(build) => format!("driver {build} (CUDA {version})"),
            None => format!("driver CUDA {version}"),
        })
    }

    /// One line for the user: the GPU, or why there is none to use.
    pub fn summary(&self) -> String {
        let gpu = self.gpus.first().map(|gpu| gpu.to_string());
        let facts: Vec<String> = gpu.into_iter().chain(self.driver_name()).collect();
        match (&self.unusable, facts.is_empty()) {
            (None, _) => facts.join(", "),
            (Some(reason), true) => reason.clone(),
            (Some(reason), false) => format!("{} found, but {reason}", facts.join(", ")),
        }
    }
}

/// `CUresult` as a plain integer (0 is success).
type CuResult = c_int;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

/// The driver library cudarc uses.
struct Driver {
    library: &'static libloading::Library,
}

impl Driver {
    fn load() -> Result<Driver, String> {
        // SAFETY: loading the NVIDIA driver runs only its initialisers, as burn-cuda would.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            let names = cudarc::get_lib_name_candidates("cuda");
            return Err(format!("no NVIDIA driver: none of {} could be loaded", short_list(&names)));
        }
        // SAFETY: as above; cudarc keeps this library loaded for the life of the process.
        Ok(Driver { library: unsafe { cudarc::driver::sys::culib() } })
    }

    /// The symbol `name` of the driver, typed as the driver API declares it.
    fn symbol<F: Copy>(&self, name: &str) -> Result<F, String> {
        // SAFETY: every `F` below is the C signature the CUDA driver API documents for `name`.
        unsafe { self.library.get::<F>(name.as_bytes()) }
            .map(|symbol| *symbol)
            .map_err(|e| format!("the NVIDIA driver library lacks {name}: {e}"))
    }

    fn call(&self, what: &str, result: CuResult) -> Result<(), String> {
        if result == 0 {
            return Ok(());
        }
        let name = self
            .symbol::<unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult>("cuGetErrorName")
            .ok()
            .and_then(|get_name| {
                let mut text: *const c_char = std::ptr::null();
                // SAFETY: cuGetErrorName writes a pointer to a static string, or fails.
                (unsafe { get_name(result, &mut text) } == 0 && !text.is_null())
                    .then(|| unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("error {result}"));
        Err(format!("{what} failed: {name}"))
    }

    fn init(&self) -> Result<(), String> {
        let cu_init = self.symbol::<unsafe extern "C" fn(c_uint) -> CuResult>("cuInit")?;
        // SAFETY: cuInit(0) is the documented first call.
        self.call("initialising the NVIDIA driver (cuInit)", unsafe { cu_init(0) })
    }

    fn version(&self) -> Result<CudaVersion, String> {
        let get = self.symbol::<unsafe extern "C" fn(*mut c_int) -> CuResult>("cuDriverGetVersion")?;
        let mut version = 0;
        // SAFETY: writes one int.
        self.call("cuDriverGetVersion", unsafe { get(&mut version) })?;
        Ok(CudaVersion(version.max(0) as u32))
    }

    fn gpus(&self) -> Result<Vec<Gpu>, String> {
        let count_fn = self.symbol::<unsafe extern "C" fn(*mut c_int) -> CuResult>("cuDeviceGetCount")?;
        let get = self.symbol::<unsafe extern "C" fn(*mut c_int, c_int) -> CuResult>("cuDeviceGet")?;
        let name_fn = self.symbol::<unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult>("cuDeviceGetName")?;
        let memory_fn = self.symbol::<unsafe extern "C" fn(*mut usize, c_int) -> CuResult>("cuDeviceTotalMem_v2")?;
        let attribute = self.symbol::<unsafe extern "C" fn(*mut c_int, c_int, c_int) -> CuResult>("cuDeviceGetAttribute")?;
        let mut count = 0;
        // SAFETY: each call writes into the local it is given, sized as the API documents.
        unsafe {
            self.call("cuDeviceGetCount", count_fn(&mut count))?;
            (0..count)
                .map(|ordinal| {
                    let mut device = 0;
                    self.call("cuDeviceGet", get(&mut device, ordinal))?;
                    let mut name = [0 as c_char; 256];
                    self.call("cuDeviceGetName", name_fn(name.as_mut_ptr(), name.len() as c_int, device))?;
                    let mut memory = 0usize;
                    self.call("cuDeviceTotalMem", memory_fn(&mut memory, device))?;
                    let (mut major, mut minor) = (0, 0);
                    self.call(
                        "cuDeviceGetAttribute",
                        attribute(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
                    )?;
                    self.call(
                        "cuDeviceGetAttribute",
                        attribute(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
                    )?;
                    Ok(Gpu {
                        name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                        memory_bytes: memory as u64,
                        compute_capability: format!("{major}.{minor}"),
                    })
                })
                .collect()
        }
    }
}

/// The driver's build from NVML (`nvidia-smi`'s library), which ships with the driver; `None` where it
/// does not load or answer: the build is then unknown, not a reason against CUDA.
fn driver_build() -> Option<String> {
    /// NVML's `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`.
    const BUFFER: usize = 80;
    let name = if cfg!(windows) { "nvml.dll" } else { "libnvidia-ml.so.1" };
    // SAFETY: loading NVML runs only its initialisers; each symbol has the signature NVML documents,
    // and the version is written into a buffer of the size NVML asks for.
    unsafe {
        let library = libloading::Library::new(name).ok()?;
        let init = library.get::<unsafe extern "C" fn() -> c_int>(b"nvmlInit_v2").ok()?;
        let version = library.get::<unsafe extern "C" fn(*mut c_char, c_uint) -> c_int>(b"nvmlSystemGetDriverVersion").ok()?;
        let shutdown = library.get::<unsafe extern "C" fn() -> c_int>(b"nvmlShutdown").ok()?;
        if init() != 0 {
            return None;
        }
        let mut text = [0 as c_char; BUFFER];
        let answered = version(text.as_mut_ptr(), BUFFER as c_uint) == 0;
        shutdown();
        let build = CStr::from_ptr(text.as_ptr()).to_string_lossy().trim().to_owned();
        (answered && !build.is_empty()).then_some(build)
    }
}

/// Makes NVRTC loadable under cudarc's names (from the toolkit's library folders when the library path
/// has none) and returns its version.
fn load_nvrtc(toolkit: &CudaToolkit) -> Result<CudaVersion, String> {
    let names = cudarc::get_lib_name_candidates("nvrtc");
    // SAFETY: loading NVRTC runs only its initialisers, as burn-cuda would.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let found = toolkit
            .library_dirs()
            .iter()
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|path| path.is_file());
        let Some(path) = found else {
            return Err(format!(
                "NVRTC not found: none of {} is on the library path or in {}",
                short_list(&names),
                toolkit.library_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        preload(&path)?;
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(format!("{} loads, but not under a name cudarc looks for ({})", path.display(), short_list(&names)));
        }
    }
    // SAFETY: cudarc found the library just above; nvrtcVersion writes two ints.
    let library = unsafe { cudarc::nvrtc::sys::culib() };
    let version = unsafe { library.get::<unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int>(b"nvrtcVersion") }
        .map_err(|e| format!("the NVRTC library lacks nvrtcVersion: {e}"))?;
    let (mut major, mut minor) = (0, 0);
    if unsafe { version(&mut major, &mut minor) } != 0 {
        return Err("nvrtcVersion failed".into());
    }
    Ok(CudaVersion((major.max(0) * 1000 + minor.max(0) * 10) as u32))
}

/// Many names in a message: the first and every versioned soname (`.so.<n>`, in cudarc's order: the
/// bound CUDA major first, `libnvrtc.so.13` say, then older ones and `.so.1`), and how many others.
fn short_list(names: &[String]) -> String {
    let versioned = |n: &String| n.rsplit_once(".so.").is_some_and(|(_, v)| v.chars().all(|c| c.is_ascii_digit()));
    let shown: Vec<&String> = names.iter().take(1).chain(names.iter().skip(1).filter(|n| versioned(n))).collect();
    match names.len() - shown.len() {
        0 => names.join(", "),
        others => format!(
            "{} and the {others} other names cudarc tries",
            shown.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(unusable: Option<&str>, gpus: Vec<Gpu>) -> CudaProbe {
        CudaProbe {
            driver: (!gpus.is_empty()).then_some(CudaVersion(13000)),
            driver_build: None,
            built_for: CudaVersion(13000),
            gpus,
            nvrtc: None,
            toolkit: None,
            no_device: None,
            unusable: unusable.map(String::from),
        }
    }

    fn h200() -> Gpu {
        Gpu { name: "NVIDIA H200".into(), memory_bytes: 150_000_000_000, compute_capability: "9.0".into() }
    }

    #[test]
    fn versions_read_as_the_driver_api_encodes_them() {
        assert_eq!(CudaVersion(13000).to_string(), "13.0");
        assert_eq!(CudaVersion(12040).to_string(), "12.4");
        assert!(CudaVersion(13000) < CudaVersion(13040));
    }

    #[test]
    fn the_summary_names_the_gpu_and_what_stands_in_its_way() {
        assert_eq!(probe(None, vec![h200()]).summary(), "NVIDIA H200, 139.7 GiB, compute capability 9.0, driver CUDA 13.0");
        assert_eq!(
            probe(Some("no CUDA toolkit"), vec![h200()]).summary(),
            "NVIDIA H200, 139.7 GiB, compute capability 9.0, driver CUDA 13.0 found, but no CUDA toolkit"
        );
        assert_eq!(probe(Some("no NVIDIA driver"), vec![]).summary(), "no NVIDIA driver");
        let built = CudaProbe { driver_build: Some("580.159.03".into()), ..probe(None, vec![h200()]) };
        assert_eq!(built.summary(), "NVIDIA H200, 139.7 GiB, compute capability 9.0, driver 580.159.03 (CUDA 13.0)");
    }

    /// NVRTC's real soname is `libnvrtc.so.<major>` (13 for CUDA 13), the driver's `libcuda.so.1`: a
    /// message names every versioned name cudarc tries, not one of them.
    #[test]
    fn library_names_show_every_versioned_soname() {
        for library in ["nvrtc", "cuda"] {
            let names = cudarc::get_lib_name_candidates(library);
            let message = short_list(&names);
            assert!(message.starts_with(&format!("lib{library}.so, ")), "{message}");
            for name in names.iter().filter(|n| n.contains(".so.")) {
                assert!(message.contains(name.as_str()), "{message} lacks {name}");
            }
        }
    }
}
