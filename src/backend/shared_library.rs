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

/// The text of a panic payload (a library that panics where it could have returned an error).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
