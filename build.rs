//! Compiles the vendored ONNX schema (`src/export/onnx/onnx.proto`) into Rust with prost. protox parses
//! the `.proto` in pure Rust, so building vggq never needs `protoc`. Also names the compiler and the
//! Burn and `ort` releases for the manifests vggq writes (`VGGQ_RUSTC`, `VGGQ_BURN_VERSION`,
//! `VGGQ_ORT_VERSION`).

use std::path::PathBuf;

const ONNX_PROTO: &str = "src/export/onnx/onnx.proto";
/// The workspace's lock file: the releases this build links.
const LOCK_FILE: &str = "Cargo.lock";

fn main() {
    println!("cargo:rerun-if-changed={ONNX_PROTO}");
    println!("cargo:rerun-if-changed={LOCK_FILE}");
    let lock = std::fs::read_to_string(LOCK_FILE).expect("the workspace's Cargo.lock is readable");
    for (package, variable) in [("burn", "VGGQ_BURN_VERSION"), ("ort", "VGGQ_ORT_VERSION")] {
        println!("cargo:rustc-env={variable}={}", locked_version(&lock, package));
    }
    // The compiler building vggq, for the manifests it writes (`rustc 1.95.0 (59807616e 2026-04-14)`):
    // cargo's, which may not be the `rustc` first on the PATH.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = std::process::Command::new(rustc).arg("--version").output().expect("cargo's rustc runs");
    let version =
        if version.status.success() { String::from_utf8_lossy(&version.stdout).trim().to_string() } else { "unknown".into() };
    println!("cargo:rustc-env=VGGQ_RUSTC={version}");
    let descriptors = protox::compile([ONNX_PROTO], ["src/export/onnx"]).expect("vendored onnx.proto parses");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    prost_build::Config::new().out_dir(&out_dir).compile_fds(descriptors).expect("prost generates the ONNX types");
}

/// The one version of `package` that `lock` (a Cargo.lock) holds: each `[[package]]` names itself on one
/// line and its version on the next.
fn locked_version(lock: &str, package: &str) -> String {
    let name = format!("name = \"{package}\"");
    let mut versions: Vec<&str> = lock
        .lines()
        .zip(lock.lines().skip(1))
        .filter(|(line, _)| *line == name)
        .filter_map(|(_, next)| next.strip_prefix("version = \"")?.strip_suffix('"'))
        .collect();
    versions.dedup();
    match versions[..] {
        [version] => version.to_string(),
        _ => panic!("{LOCK_FILE} should hold one version of {package}, it holds {versions:?}"),
    }
}
