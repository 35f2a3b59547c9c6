//! Mesa's lavapipe: a Vulkan driver that runs on the CPU, through which `cargo xtask test` runs the GPU
//! code path (burn-wgpu, cubecl's kernels) on machines without a GPU, CI's among them.

use anyhow::{bail, Result};
use vggq_core::places::has_wgpu_api;
use xshell::Shell;

/// Debian's packages that provide it: Mesa's Vulkan drivers and the loader.
const PACKAGES: [&str; 2] = ["mesa-vulkan-drivers", "libvulkan1"];
/// Where Mesa declares its drivers to the loader; lavapipe's file is `lvp_icd.<arch>.json`.
const DRIVER_MANIFESTS: &str = "/usr/share/vulkan/icd.d";

fn installed() -> bool {
    let lavapipe = std::fs::read_dir(DRIVER_MANIFESTS)
        .map(|entries| entries.flatten().any(|entry| entry.file_name().to_string_lossy().starts_with("lvp_icd")))
        .unwrap_or(false);
    lavapipe && has_wgpu_api()
}

/// Installs lavapipe with apt-get where it is missing (CI runs as root); elsewhere fails with what to
/// install.
pub fn ensure(sh: &Shell) -> Result<()> {
    if installed() {
        return Ok(());
    }
    let packages = PACKAGES;
    if !crate::debian::install(sh, &packages, "for the GPU code path's tests (Mesa's lavapipe)")? {
        bail!(
            "the GPU code path's tests run on Mesa's lavapipe (Vulkan on the CPU), which is missing: install {} \
             (Debian and Ubuntu: sudo apt-get install -y {})",
            packages.join(" and "),
            packages.join(" ")
        );
    }
    if !installed() {
        bail!("{} installed, but no lavapipe driver in {DRIVER_MANIFESTS} or no Vulkan loader", packages.join(" and "));
    }
    Ok(())
}
