//! Integration tests of `vggq-pth`: byte-level agreement with the PyTorch reference files,
//! round trips, hostile input, layouts, the inspect listing, and loading our files in real PyTorch.

mod hostile;
mod inspect;
mod interop;
mod layout;
mod reference;
mod roundtrip;
mod synth;
mod util;
