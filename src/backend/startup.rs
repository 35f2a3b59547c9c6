//! What `main` sets up for the backends while the process still has one thread: rayon's pool, which
//! burn-flex and our CPU kernels run on, and the environment cubecl's CUDA runtime and Mesa's Vulkan
//! layers read.

/// Makes the calling thread one of the workers of rayon's global pool, which burn-flex and our CPU
/// kernels run on; call it first thing in `main`. A training step is a hundred-odd parallel operations:
/// from inside the pool each starts and finishes on this thread, where from outside it is handed over
/// and this thread sleeps until woken (a smoke step took 29.2 ms that way, 21.7 this way).
pub fn join_cpu_pool() -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global()
}

/// cubecl reads the CUDA toolkit (the headers its kernels include) from `$CUDA_PATH` only: where that is
/// unset and `$CUDA_HOME`, `$CUDA_ROOT` or a default folder holds one (the toolkit the probe reports),
/// exports it. Call it first thing in `main`, while the process has one thread (setting a variable while
/// other threads may read the environment is undefined behaviour in C's `getenv`).
pub fn export_cuda_path() {
    if std::env::var_os("CUDA_PATH").is_none() {
        if let Some(toolkit) = vggq_core::places::CudaToolkit::find() {
            std::env::set_var("CUDA_PATH", toolkit.root);
        }
    }
}

/// Mesa's Vulkan drivers install an implicit layer, `VK_LAYER_MESA_device_select`, that puts the GPU
/// driving the display first by asking the Wayland compositor and the X server. With no display session
/// (a server, a container, CI) libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment" four times per run, though nothing failed. With no session there is no display GPU to
/// find (the layer would only put the boot VGA device first, which matters with two GPUs of one type),
/// and wgpu's choice (a discrete GPU before an integrated one before lavapipe) or
/// `CUBECL_WGPU_DEFAULT_DEVICE` picks the adapter, so there the layer is turned off with its own switch
/// (`NODEVICE_SELECT=1`); an explicit choice (`MESA_VK_DEVICE_SELECT`, `NODEVICE_SELECT`) is left alone.
/// Call it first thing in `main`, while the process has one thread (see [`export_cuda_path`]).
pub fn disable_device_select_without_display() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    // libwayland's test before it prints: no socket handed over, and no absolute runtime folder to find
    // one in. A display name alone is a session that may be reached otherwise: the layer stays.
    let runtime_folder = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|dir| std::path::Path::new(&dir).is_absolute());
    let wayland = runtime_folder || set("WAYLAND_SOCKET") || set("WAYLAND_DISPLAY");
    let explicit = set("NODEVICE_SELECT") || set("MESA_VK_DEVICE_SELECT");
    if !wayland && !set("DISPLAY") && !explicit {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}
