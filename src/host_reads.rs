//! Reads of device values by the host. Each one makes the host wait for the device to finish everything
//! queued before it, so the training loops make them only at the ends of epochs (and, for the progress
//! bar, every [`PROGRESS_READ_INTERVAL`] steps). Every read in the library goes through here and is
//! counted per thread (the thread that drives the loop), so tests and benchmarks can say how many a
//! step makes.

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::TensorKind;

/// Steps between the loss readings the training progress bar shows.
pub const PROGRESS_READ_INTERVAL: usize = 50;

thread_local! {
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// Host reads this thread has made so far.
pub fn count() -> usize {
    READS.get()
}

fn counted() {
    READS.set(READS.get() + 1);
}

/// The single value of a one-element float or int tensor, as f64.
pub fn scalar<B: Backend, K: TensorKind<B> + burn::tensor::BasicOps<B>>(tensor: Tensor<B, 1, K>) -> f64
where
    K::Elem: burn::tensor::Element,
{
    counted();
    tensor.into_scalar().elem()
}

/// The values of a float tensor of any backend, row-major, as f32.
pub fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    counted();
    tensor.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data after convert")
}
