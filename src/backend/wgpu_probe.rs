//! What wgpu offers on this machine, found the way burn-wgpu will use it, so that choosing wgpu never
//! ends in a panic inside wgpu or cubecl: the adapters wgpu enumerates for the platform's graphics API
//! (Vulkan on Linux, Metal on macOS, DX12 on Windows), the one a wgpu run trains on (cubecl's default
//! device: wgpu's high-performance choice, or the one `CUBECL_WGPU_DEFAULT_DEVICE` names, such as
//! `DiscreteGpu(1)`), and one kernel run on it.

use serde::{Deserialize, Serialize};

/// One adapter, as its driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adapter {
    pub name: String,
    /// wgpu's device type: `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// The graphics API: `Vulkan`, `Metal`, `Dx12` or `Gl`.
    pub api: String,
    /// The driver and its version (`Mesa 22.3.6 (LLVM 15.0.6)` for lavapipe).
    pub driver: String,
}

impl Adapter {
    /// A rasteriser in software on the CPU, such as Mesa's lavapipe: it runs the GPU code path, slower
    /// than burn-flex runs the CPU's.
    pub fn is_cpu(&self) -> bool {
        self.device_type == "Cpu"
    }
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}, {})", self.name, self.device_type, self.api, self.driver)
    }
}

/// Everything the probe found, and why a wgpu run cannot train here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgpuProbe {
    /// Every adapter wgpu sees for the graphics API.
    pub adapters: Vec<Adapter>,
    /// The adapter a wgpu run trains on.
    pub chosen: Option<Adapter>,
    /// Why burn-wgpu cannot run on this machine; `None` when its first kernel ran.
    pub unusable: Option<String>,
}

impl WgpuProbe {
    /// Probes the machine, once per process: the probe sets up cubecl's runtime on the default device,
    /// which the run then uses, and cubecl sets a device up only once.
    pub fn run() -> WgpuProbe {
        static PROBE: std::sync::OnceLock<WgpuProbe> = std::sync::OnceLock::new();
        PROBE.get_or_init(probe).clone()
    }

    /// One line: the adapter, and what stands in its way.
    pub fn summary(&self) -> String {
        match (&self.chosen, &self.unusable) {
            (Some(adapter), None) => adapter.to_string(),
            (Some(adapter), Some(reason)) => format!("{adapter} found, but {reason}"),
            (None, reason) => reason.clone().unwrap_or_else(|| "wgpu chose no adapter".into()),
        }
    }
}

#[cfg(feature = "wgpu")]
fn probe() -> WgpuProbe {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, RuntimeOptions, WgpuDevice};

    let describe = |info: wgpu::AdapterInfo| Adapter {
        name: info.name,
        device_type: format!("{:?}", info.device_type),
        api: format!("{:?}", info.backend),
        driver: [info.driver, info.driver_info].into_iter().filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" "),
    };
    let mut probe = WgpuProbe { adapters: Vec::new(), chosen: None, unusable: None };
    let setup = super::shared_library::catch_quietly(|| {
        init_setup::<AutoGraphicsApi>(&WgpuDevice::DefaultDevice, RuntimeOptions::default())
    });
    match setup {
        Ok(setup) => {
            let adapters = cubecl::future::block_on(setup.instance.enumerate_adapters(setup.backend.into()));
            probe.adapters = adapters.iter().map(|adapter| describe(adapter.get_info())).collect();
            probe.chosen = Some(describe(setup.adapter.get_info()));
            probe.unusable = super::selection::first_kernel::<cubecl::wgpu::WgpuRuntime>("burn-wgpu").err();
        }
        Err(panic) => {
            probe.unusable = Some(format!(
                "wgpu found no adapter that runs ({panic}): install a Vulkan driver (the GPU vendor's, or Mesa's \
                 mesa-vulkan-drivers and libvulkan1 for lavapipe on the CPU)"
            ));
        }
    }
    probe
}

#[cfg(not(feature = "wgpu"))]
fn probe() -> WgpuProbe {
    let unusable = super::BackendError::NotBuilt(super::BackendKind::Wgpu.name()).to_string();
    WgpuProbe { adapters: Vec::new(), chosen: None, unusable: Some(unusable) }
}
