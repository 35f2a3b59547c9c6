//! vggq: VGG11-BN on CIFAR-10 with Burn: data -> model -> train -> quant -> export -> eval -> report.
//!
//! The modules follow the pipeline: [`data`] -> [`model`] -> [`train`] -> [`quant`] -> [`export`] ->
//! [`eval`] -> [`report`] and [`package`]; [`pipeline`] holds the steps as library calls. [`profile`]
//! is the recipe, [`backend`] picks the device. Shared by the loops: [`upload`] (batches to the device),
//! [`score`] (loss and accuracy), [`progress`] (bars), [`host_reads`] (every read of the device, counted).
//!
//! These docs are for the project's developers: they are read with the private items, as the `docs`
//! stage of `cargo xtask test` builds them.

// A public item's docs link to the private items that hold its facts (one home for each fact).
#![allow(rustdoc::private_intra_doc_links)]

pub mod backend;
pub mod data;
pub mod eval;
pub mod export;
pub mod host_reads;
pub mod model;
pub mod package;
pub mod pipeline;
pub mod profile;
pub mod progress;
pub mod quant;
pub mod report;
pub mod score;
pub mod steps;
pub mod throughput;
pub mod train;
pub mod upload;

/// Files that appear whole or not at all (one implementation, shared with the `.pth` writer).
pub use vggq_core::atomic;

/// The Burn release this build uses, for reports and provenance (as Cargo.lock has it: `build.rs`).
pub const BURN_VERSION: &str = env!("VGGQ_BURN_VERSION");
/// The `ort` crate release this build uses, for reports and provenance (likewise).
pub const ORT_CRATE_VERSION: &str = env!("VGGQ_ORT_VERSION");
