//! Mesa's lavapipe: a Vulkan driver that runs on the CPU, through which `cargo xtask test` runs the GPU
//! code path (burn-wgpu, cubecl's kernels) on machines without a GPU, CI's among them.

use anyhow::{bail, Result};
use vggq_core::places::has_wgpu_api;
use xshell::{cmd, Shell};

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
    let as_root = cmd!(sh, "id -u").read().is_ok_and(|uid| uid.trim() == "0");
    if !as_root || cmd!(sh, "apt-get --version").quiet().ignore_stdout().run().is_err() {
        bail!(
            "the GPU code path's tests run on Mesa's lavapipe (Vulkan on the CPU), which is missing: install {} \
             (Debian and Ubuntu: sudo apt-get install -y {})",
            packages.join(" and "),
            packages.join(" ")
        );
    }
    println!("installing Mesa's lavapipe for the GPU code path's tests: apt-get install -y {}", packages.join(" "));
    let _quiet = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    // A fresh machine's package lists may be empty: update them once if the install cannot find a package.
    if cmd!(sh, "apt-get install -y {packages...}").run().is_err() {
        cmd!(sh, "apt-get update").run()?;
        cmd!(sh, "apt-get install -y {packages...}").run()?;
    }
    if !installed() {
        bail!("{} installed, but no lavapipe driver in {DRIVER_MANIFESTS} or no Vulkan loader", packages.join(" and "));
    }
    Ok(())
}
