//! What the `vggq` library and binary, `cargo xtask` and the tests share, in a crate light enough for
//! xtask to depend on (no Burn, no ONNX Runtime):
//!
//! - [`names`]: the values of `--profile`, `--device`, `--init` and `--qat-mode`, and the four model
//!   variants with every name a variant goes by (files, labels, keys);
//! - [`places`]: where things live on this machine (the cache, `../shared`, the CUDA toolkit);
//! - [`limits`]: caps on images, batches and epochs that any profile takes;
//! - [`atomic`]: files that appear whole or not at all;
//! - [`interrupted`]: a run killed once its checkpoint is written, for the resume checks;
//! - [`rounds`]: benchmarks in alternating rounds, summarised by medians and spreads;
//! - [`run_folder`]: the names of the files a run folder holds;
//! - [`signals`]: the signals that end a run early, which vggq and xtask act on before they end.

pub mod atomic;
pub mod interrupted;
pub mod limits;
pub mod names;
pub mod places;
pub mod rounds;
pub mod run_folder;
pub mod signals;

pub use limits::Limits;
pub use names::{flag_value, DeviceRequest, Init, ModelShape, ProfileName, QatMode, Variant, DEFAULT_BATCH_SIZE};
