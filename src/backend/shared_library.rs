//! Shared libraries loaded ahead of the code that loads them by name: the dynamic loader matches a
//! library already loaded by its soname, so a later load by name (cudarc's NVRTC, ONNX Runtime's CUDA
//! provider) finds the one loaded here by its full path.

use std::path::Path;

/// Loads `path` for the rest of the process: later loads by its soname find this one.
pub(crate) fn preload(path: &Path) -> Result<(), String> {
    // SAFETY: a CUDA library from the toolkit or ONNX Runtime's wheels; loading runs its initialisers.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| format!("loading {}: {e}", path.display()))?;
    std::mem::forget(library);
    Ok(())
}

/// Runs `work` with panics caught and not printed: a library that panics where it could have returned an
/// error (wgpu finding no adapter, a GPU runtime that cannot compile) gives its message as the error.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn catch_quietly<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let printing = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(printing);
    result.map_err(|panic| panic_message(&*panic))
}

/// The text of a panic payload (a library that panics where it could have returned an error).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
