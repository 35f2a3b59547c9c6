//! Reads of device values by the host. Each one makes the host wait for the device to finish everything
//! queued before it, so the training loops make them only at the ends of epochs (and, for the progress
//! bar, every [`PROGRESS_READ_INTERVAL`] steps). Every read in the library goes through here and is
//! counted, so tests and benchmarks can say how many a step makes.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use burn::tensor::TensorKind;

/// Steps between the loss readings the training progress bar shows.
pub const PROGRESS_READ_INTERVAL: usize = 50;

static READS: AtomicUsize = AtomicUsize::new(0);

/// Host reads made by this process so far.
pub fn count() -> usize {
    READS.load(Ordering::Relaxed)
}

/// The single value of a one-element float or int tensor, as f64.
pub fn scalar<B: Backend, K: TensorKind<B> + burn::tensor::BasicOps<B>>(tensor: Tensor<B, 1, K>) -> f64
where
    K::Elem: burn::tensor::Element,
{
    READS.fetch_add(1, Ordering::Relaxed);
    tensor.into_scalar().elem()
}

/// The values of a float tensor of any backend, row-major, as f32.
pub fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    READS.fetch_add(1, Ordering::Relaxed);
    tensor.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data after convert")
}
