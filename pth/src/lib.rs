//! PyTorch `.pth` state_dict files, written byte for byte as `torch.save(model.state_dict())` writes
//! them (PyTorch 2.15), quantized tensors included, and read back with a restricted unpickler.
//!
//! - [`tensor`]: the plain data of a state_dict ([`StateDict`], [`Value`], [`Tensor`], [`QTensor`]).
//! - [`write_file`] / [`write_to`]: streaming, deterministic, atomic writer.
//! - [`read_pth`] / [`read_state_dict`]: the reader, which never executes anything from the file.
//! - [`layout`]: the entries and `_metadata` PyTorch produces for VGG11-BN in each variant, and
//!   [`layout::validate`].
//! - [`inspect::render`]: a text listing of a file (keys, dtypes, shapes, qschemes, zip entries).

mod error;
pub mod inspect;
pub mod layout;
mod pickle;
mod read;
pub mod tensor;
mod write;
pub mod zip;

pub use error::{Error, Result};
pub use pickle::read::{ALLOWED_GLOBALS, MAX_MEMO_INDEX, MAX_NESTING, MAX_PICKLE_BYTES, MAX_STACK_LEN, MAX_STRING_BYTES};
pub use read::{read_pth, read_state_dict, PthFile, MAX_DIMS};
pub use tensor::{DType, PackedLinearParams, QScheme, QTensor, Quantizer, Signature, StateDict, Tensor, TensorSignature, Value};
pub use write::{write_file, write_to};
