//! The ONNX protobuf types (`onnx.ModelProto` and friends), generated at build time by prost from the
//! vendored `onnx.proto` of onnx 1.23.2 (Apache-2.0).

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
