//! What `main` sets up for the backends while the process still has one thread: rayon's pool, which
//! burn-flex and our CPU kernels run on, and the environment cubecl's CUDA runtime reads.

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
