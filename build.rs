//! Compiles the vendored ONNX schema (`src/export/onnx/onnx.proto`) into Rust with prost. protox parses
//! the `.proto` in pure Rust, so building vggq never needs `protoc`. Also names the compiler for the
//! manifests vggq writes (`VGGQ_RUSTC`).

use std::path::PathBuf;

const ONNX_PROTO: &str = "src/export/onnx/onnx.proto";

fn main() {
    println!("cargo:rerun-if-changed={ONNX_PROTO}");
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
