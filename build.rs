//! Compiles the vendored ONNX schema (`src/export/onnx/onnx.proto`) into Rust with prost. protox parses
//! the `.proto` in pure Rust, so building vggq never needs `protoc`.

use std::path::PathBuf;

const ONNX_PROTO: &str = "src/export/onnx/onnx.proto";

fn main() {
    println!("cargo:rerun-if-changed={ONNX_PROTO}");
    let descriptors = protox::compile([ONNX_PROTO], ["src/export/onnx"]).expect("vendored onnx.proto parses");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    prost_build::Config::new().out_dir(&out_dir).compile_fds(descriptors).expect("prost generates the ONNX types");
}
