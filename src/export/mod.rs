//! Writing models for other runtimes: [`onnx`].

pub mod onnx;
