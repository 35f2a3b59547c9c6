//! The backend a run chooses for its `--device` request, from what the CUDA and wgpu probes find, and the
//! one line that says why.

use serde::{Deserialize, Serialize};

use super::autotune::AutotuneCache;
use super::{Adapter, BackendError, BackendKind, CudaProbe, CudaVersion, DeviceRequest, Gpu, WgpuProbe};

/// The device a run chose, why, and what the probes saw: printed at the start, recorded in its reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub request: DeviceRequest,
    pub backend: BackendKind,
    /// One line: what was chosen and why.
    pub reason: String,
    /// What the CUDA probe found; `None` where the request does not probe CUDA (`cpu`, `wgpu`).
    pub probe: Option<CudaProbe>,
    /// What wgpu offers; `None` where the request did not look (`cpu`, `cuda`, and `auto` with CUDA).
    #[serde(default)]
    pub wgpu: Option<WgpuProbe>,
}

impl Selection {
    /// The CUDA GPU the run used, or found.
    pub fn gpu(&self) -> Option<&Gpu> {
        self.probe.as_ref().and_then(|probe| probe.gpus.first())
    }

    /// What a run prints first: the choice and why, and on a GPU why its first steps are slow.
    pub fn announcement(&self) -> String {
        let mut text = format!("device: {}", self.reason);
        if self.backend.is_gpu() {
            text = format!("{text}\n{}", super::autotune::first_steps_note(self.backend));
        }
        text
    }

    /// The wgpu adapter the run trains on.
    pub fn adapter(&self) -> Option<&Adapter> {
        (self.backend == BackendKind::Wgpu).then(|| self.wgpu.as_ref().and_then(|wgpu| wgpu.chosen.as_ref())).flatten()
    }

    /// What fixes a GPU run's arithmetic, in words: the GPU and what compiles its kernels (CUDA's name and
    /// compute capability, NVRTC, which writes the kernels' PTX, and the driver, which compiles that PTX
    /// for the GPU, named by its build where NVML tells it (two builds may compile alike PTX otherwise:
    /// the device machines have had 580.159.03 and .04) and the CUDA version it supports; or wgpu's adapter and
    /// driver) and its kernels: each operation's default, or those a build with the `autotune` feature
    /// chose by timing, named by its cache's digest at the end of the run. A rerun
    /// that reuses a cache and tunes nothing new leaves it unchanged (cubecl writes an entry, with its
    /// timings, only when it tunes), so runs alike in this ran the same kernels; a run that tuned afresh
    /// has another digest even where it chose alike. `None` on the CPU, whose arithmetic is the same on
    /// every machine.
    pub fn arithmetic(&self, autotune: Option<&AutotuneCache>) -> Option<String> {
        let hardware = match self.backend {
            BackendKind::Cpu => return None,
            BackendKind::Cuda => {
                let probe = self.probe.as_ref();
                let version = |found: Option<CudaVersion>| found.map_or_else(|| "unknown".to_string(), |v| v.to_string());
                let compilers = format!(
                    "NVRTC {}, {}",
                    version(probe.and_then(|p| p.nvrtc)),
                    probe.and_then(CudaProbe::driver_name).unwrap_or_else(|| "driver CUDA unknown".to_string())
                );
                self.gpu().map_or_else(
                    || format!("a CUDA GPU ({compilers})"),
                    |gpu| format!("{} (compute capability {}, {compilers})", gpu.name, gpu.compute_capability),
                )
            }
            BackendKind::Wgpu => self
                .adapter()
                .map_or_else(|| "a wgpu adapter".to_string(), |adapter| format!("{} ({})", adapter.name, adapter.driver)),
        };
        let kernels = match autotune.filter(|cache| cache.tuned) {
            None => "default kernels".to_string(),
            Some(cache) => {
                let digest = cache.sha256.as_deref().map_or("empty", |digest| &digest[..digest.len().min(16)]);
                format!("kernels chosen by timing (autotune cache {digest})")
            }
        };
        Some(format!("{hardware}, {kernels}"))
    }
}

/// Chooses the backend for `request`: CUDA is probed for `auto` and `cuda`, wgpu for `wgpu` and for an
/// `auto` that found no usable CUDA.
pub fn select(request: DeviceRequest) -> Result<Selection, BackendError> {
    let cuda = matches!(request, DeviceRequest::Auto | DeviceRequest::Cuda).then(probe_cuda);
    let cuda_usable = cuda.as_ref().is_some_and(|probe| probe.unusable.is_none());
    let wgpu = (request == DeviceRequest::Wgpu || (request == DeviceRequest::Auto && !cuda_usable)).then(WgpuProbe::run);
    decide(request, cuda, wgpu)
}

/// The decision, given what the probes found.
fn decide(request: DeviceRequest, cuda: Option<CudaProbe>, wgpu: Option<WgpuProbe>) -> Result<Selection, BackendError> {
    let flag = vggq_core::flag_value(request);
    let selection = |backend, reason| Selection { request, backend, reason, probe: cuda.clone(), wgpu: wgpu.clone() };
    let cuda_found = cuda.as_ref().map(CudaProbe::summary).unwrap_or_default();
    let cuda_usable = cuda.as_ref().is_some_and(|probe| probe.unusable.is_none());
    let wgpu_found = wgpu.as_ref().map(WgpuProbe::summary).unwrap_or_default();
    let wgpu_usable = wgpu.as_ref().is_some_and(|probe| probe.unusable.is_none());
    let wgpu_gpu = wgpu_usable && wgpu.as_ref().and_then(|probe| probe.chosen.as_ref()).is_some_and(|a| !a.is_cpu());
    match request {
        DeviceRequest::Cpu => Ok(selection(BackendKind::Cpu, "CPU (burn-flex): --device cpu".into())),
        DeviceRequest::Cuda if !cuda_usable => Err(BackendError::CudaUnavailable(cuda_found)),
        DeviceRequest::Wgpu if !wgpu_usable => Err(BackendError::WgpuUnavailable(wgpu_found)),
        DeviceRequest::Cuda => Ok(selection(BackendKind::Cuda, format!("CUDA (burn-cuda): --device {flag}: {cuda_found}"))),
        DeviceRequest::Wgpu => Ok(selection(BackendKind::Wgpu, format!("wgpu (burn-wgpu): --device {flag}: {wgpu_found}"))),
        DeviceRequest::Auto if cuda_usable => {
            Ok(selection(BackendKind::Cuda, format!("CUDA (burn-cuda): --device {flag}: {cuda_found}")))
        }
        DeviceRequest::Auto if wgpu_gpu => Ok(selection(
            BackendKind::Wgpu,
            format!("wgpu (burn-wgpu): --device {flag}: {wgpu_found} (no usable CUDA: {cuda_found})"),
        )),
        DeviceRequest::Auto => {
            let wgpu_reason = match wgpu.as_ref().and_then(|probe| probe.chosen.as_ref()) {
                Some(adapter) if wgpu_usable => format!("wgpu's adapter {adapter} is the CPU, slower than burn-flex"),
                _ => wgpu_found,
            };
            Ok(selection(
                BackendKind::Cpu,
                format!("CPU (burn-flex): --device {flag} found no usable GPU: {cuda_found}; {wgpu_reason}"),
            ))
        }
    }
}

/// What [`select`] finds of CUDA: the probe, and burn-cuda's first kernel run where the probe found
/// nothing in its way. Alone where only CUDA changes a choice (ONNX Runtime's providers).
pub fn probe_cuda() -> CudaProbe {
    let mut probe = CudaProbe::run();
    if probe.unusable.is_none() {
        if let Err(reason) = first_cuda_kernel() {
            probe.unusable = Some(reason);
        }
    }
    probe
}

/// Runs one small kernel on burn-cuda, the whole chain the probe checked piece by piece (driver,
/// device, NVRTC, headers, cubecl): a GPU that passes this trains. cubecl finds the toolkit the probe
/// found in `$CUDA_PATH` (`export_cuda_path`).
#[cfg(feature = "cuda")]
fn first_cuda_kernel() -> Result<(), String> {
    first_kernel::<cubecl::cuda::CudaRuntime>("burn-cuda")
}

#[cfg(not(feature = "cuda"))]
fn first_cuda_kernel() -> Result<(), String> {
    Err(BackendError::NotBuilt(BackendKind::Cuda.name()).to_string())
}

/// Squares four numbers on runtime `R`'s default device and sums them on the host: compiles, launches
/// and reads back one kernel, with any panic on the way (a driver, compiler or runtime that does not
/// work) turned into the reason. On burn-cubecl's backend without fusion: the same runtime and compiler
/// as the fused backend that trains, where fusion's stream runtime would compile the builders of all
/// its fused kernels into the library for this one.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(super) fn first_kernel<R: burn_cubecl::CubeRuntime>(backend: &str) -> Result<(), String> {
    use burn::prelude::*;
    let result = super::shared_library::catch_quietly(|| {
        let x = Tensor::<burn_cubecl::CubeBackend<R, f32, i32, u32>, 1>::from_floats([1.0, 2.0, 3.0, 4.0], &Default::default());
        (x.clone() * x).into_data().iter::<f32>().sum::<f32>()
    });
    match result {
        Ok(30.0) => Ok(()),
        Ok(sum) => Err(format!("{backend}'s first kernel computed {sum} instead of 30")),
        Err(panic) => Err(format!("{backend}'s first kernel failed: {panic}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuda(unusable: Option<&str>) -> Option<CudaProbe> {
        Some(CudaProbe {
            driver: Some(CudaVersion(13000)),
            driver_build: None,
            built_for: CudaVersion(13000),
            gpus: vec![Gpu { name: "NVIDIA H200".into(), memory_bytes: 150_000_000_000, compute_capability: "9.0".into() }],
            nvrtc: Some(CudaVersion(13000)),
            toolkit: None,
            no_device: None,
            unusable: unusable.map(String::from),
        })
    }

    fn adapter(name: &str, device_type: &str) -> Adapter {
        Adapter { name: name.into(), device_type: device_type.into(), api: "Vulkan".into(), driver: "Mesa 22.3.6".into() }
    }

    fn wgpu(chosen: Adapter, unusable: Option<&str>) -> Option<WgpuProbe> {
        Some(WgpuProbe { adapters: vec![chosen.clone()], chosen: Some(chosen), unusable: unusable.map(String::from) })
    }

    fn lavapipe() -> Adapter {
        adapter("llvmpipe (LLVM 15.0.6, 256 bits)", "Cpu")
    }

    #[test]
    fn cpu_request_gives_the_cpu_without_probing() {
        let selection = select(DeviceRequest::Cpu).unwrap();
        assert_eq!((selection.backend, selection.probe, selection.wgpu), (BackendKind::Cpu, None, None));
    }

    #[test]
    fn auto_takes_a_usable_cuda_gpu_and_says_which() {
        let selection = decide(DeviceRequest::Auto, cuda(None), None).unwrap();
        assert_eq!(selection.backend, BackendKind::Cuda);
        assert_eq!(
            selection.reason,
            "CUDA (burn-cuda): --device auto: NVIDIA H200, 139.7 GiB, compute capability 9.0, driver CUDA 13.0"
        );
    }

    #[test]
    fn auto_takes_a_wgpu_gpu_where_cuda_cannot_run() {
        let radeon = adapter("AMD Radeon RX 7900 XTX (RADV NAVI31)", "DiscreteGpu");
        let selection = decide(DeviceRequest::Auto, cuda(Some("no NVIDIA driver")), wgpu(radeon.clone(), None)).unwrap();
        assert_eq!(selection.backend, BackendKind::Wgpu);
        assert_eq!(selection.adapter(), Some(&radeon));
        assert!(selection.reason.starts_with("wgpu (burn-wgpu): --device auto: AMD Radeon"), "{}", selection.reason);
        assert!(
            selection.reason.ends_with(
                "(no usable CUDA: NVIDIA H200, 139.7 GiB, compute capability 9.0, driver CUDA 13.0 found, but no NVIDIA driver)"
            ),
            "{}",
            selection.reason
        );
    }

    #[test]
    fn auto_falls_back_to_the_cpu_with_both_reasons() {
        let selection = decide(DeviceRequest::Auto, cuda(Some("no CUDA toolkit")), wgpu(lavapipe(), None)).unwrap();
        assert_eq!(selection.backend, BackendKind::Cpu);
        assert_eq!(selection.adapter(), None);
        assert!(selection.reason.contains("found, but no CUDA toolkit; wgpu's adapter llvmpipe"), "{}", selection.reason);
        assert!(selection.reason.ends_with("is the CPU, slower than burn-flex"), "{}", selection.reason);
        let no_vulkan = WgpuProbe { adapters: vec![], chosen: None, unusable: Some("wgpu found no adapter".into()) };
        let selection = decide(DeviceRequest::Auto, cuda(Some("no CUDA toolkit")), Some(no_vulkan)).unwrap();
        assert!(selection.reason.ends_with("no CUDA toolkit; wgpu found no adapter"), "{}", selection.reason);
    }

    #[test]
    fn the_arithmetic_names_the_gpu_and_the_kernel_choice() {
        let h200 = decide(DeviceRequest::Cuda, cuda(None), None).unwrap();
        let cache = |tuned| AutotuneCache { tuned, folder: "autotune".into(), sha256: Some("0123456789abcdef0123".into()) };
        let gpu = "NVIDIA H200 (compute capability 9.0, NVRTC 13.0, driver CUDA 13.0)";
        assert_eq!(h200.arithmetic(None).unwrap(), format!("{gpu}, default kernels"));
        assert_eq!(h200.arithmetic(Some(&cache(false))).unwrap(), format!("{gpu}, default kernels"));
        assert_eq!(
            h200.arithmetic(Some(&cache(true))).unwrap(),
            format!("{gpu}, kernels chosen by timing (autotune cache 0123456789abcdef)")
        );
        // Another NVRTC writes other PTX for the same kernels.
        let mut newer_nvrtc = cuda(None).unwrap();
        newer_nvrtc.nvrtc = Some(CudaVersion(13020));
        let newer = decide(DeviceRequest::Cuda, Some(newer_nvrtc), None).unwrap();
        assert_eq!(
            newer.arithmetic(None).unwrap(),
            "NVIDIA H200 (compute capability 9.0, NVRTC 13.2, driver CUDA 13.0), default kernels"
        );
        // Another driver build compiles the PTX; where NVML names it, so does the arithmetic.
        let mut built = cuda(None).unwrap();
        built.driver_build = Some("580.159.04".into());
        assert_eq!(
            decide(DeviceRequest::Cuda, Some(built), None).unwrap().arithmetic(None).unwrap(),
            "NVIDIA H200 (compute capability 9.0, NVRTC 13.0, driver 580.159.04 (CUDA 13.0)), default kernels"
        );
        let lavapipe = decide(DeviceRequest::Wgpu, None, wgpu(lavapipe(), None)).unwrap();
        assert_eq!(lavapipe.arithmetic(None).unwrap(), "llvmpipe (LLVM 15.0.6, 256 bits) (Mesa 22.3.6), default kernels");
        assert_eq!(select(DeviceRequest::Cpu).unwrap().arithmetic(Some(&cache(true))), None);
    }

    #[test]
    fn requests_for_a_gpu_never_fall_back() {
        let error = decide(DeviceRequest::Cuda, cuda(Some("no CUDA toolkit")), None).unwrap_err().to_string();
        assert!(error.starts_with("--device cuda requested, but NVIDIA H200"), "{error}");
        assert_eq!(decide(DeviceRequest::Cuda, cuda(None), None).unwrap().backend, BackendKind::Cuda);
        let error = decide(DeviceRequest::Wgpu, None, wgpu(lavapipe(), Some("its first kernel failed"))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--device wgpu requested, but llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan, Mesa 22.3.6) found, but its first kernel failed"
        );
    }

    /// `--device wgpu` takes the default adapter whatever its type: lavapipe is how CI runs the GPU path.
    #[test]
    fn a_wgpu_request_takes_a_cpu_adapter() {
        let selection = decide(DeviceRequest::Wgpu, None, wgpu(lavapipe(), None)).unwrap();
        assert_eq!((selection.backend, selection.adapter()), (BackendKind::Wgpu, Some(&lavapipe())));
        assert_eq!(
            selection.reason,
            "wgpu (burn-wgpu): --device wgpu: llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan, Mesa 22.3.6)"
        );
    }
}
