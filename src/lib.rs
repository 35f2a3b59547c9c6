//! vggq: VGG11-BN on CIFAR-10 with Burn, from data to trained model (and, in later stages, quantized
//! variants written as PyTorch `.pth` and ONNX).
//!
//! The modules follow the pipeline: [`data`] -> [`model`] -> [`train`]; [`backend`] picks the device and
//! [`profile`] holds the recipe.

pub mod atomic;
pub mod backend;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod package;
pub mod pipeline;
pub mod profile;
pub mod quant;
pub mod report;
pub mod steps;
pub mod train;
pub mod throughput;


/// The Burn release this build uses, for reports and provenance.
pub const BURN_VERSION: &str = "0.21.0";
/// The `ort` crate release this build uses, for reports and provenance.
pub const ORT_CRATE_VERSION: &str = "2.0.0-rc.15";

/// Where downloads (CIFAR-10, torchvision weights) are kept between runs: `$VGGQ_CACHE`, else
/// `$XDG_CACHE_HOME/vggq`, else `~/.cache/vggq`.
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("VGGQ_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache"))
        .join("vggq")
}
