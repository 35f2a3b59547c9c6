//! Reads of device values by the host. Each one makes the host wait for the device to finish everything
//! queued before it, so the training loops make them only at the ends of epochs (and, for the progress
//! bar, every [`progress_read_interval`] steps). Every read in the library goes through here and is
//! counted per thread (the thread that drives the loop), so tests and benchmarks can say how many a
//! step makes.

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::TensorKind;

/// Steps between the loss readings the training progress bar shows, in an epoch of at least
/// [`PROGRESS_READS_PER_EPOCH`] times as many.
pub const PROGRESS_READ_INTERVAL: usize = 50;
/// Progress reads an epoch of that many steps or more makes at least.
const PROGRESS_READS_PER_EPOCH: usize = 4;

/// Steps between the progress reads of an epoch of `steps` steps (where a training's checkpoints are
/// taken and a stop asked for comes): every [`PROGRESS_READ_INTERVAL`], and in a shorter epoch every
/// quarter of it, which would otherwise show no loss and stop only at its end. From the epoch's steps
/// alone: on a GPU a read cuts the queue a backend fuses, so where reads fall may be part of what a training
/// computes.
pub fn progress_read_interval(steps: usize) -> usize {
    (steps / PROGRESS_READS_PER_EPOCH).clamp(1, PROGRESS_READ_INTERVAL)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_epochs_read_every_quarter_and_the_profiles_every_50_steps() {
        // The smoke and full profiles' epochs (250 and 1250 steps): where their reads fall is part of
        // their GPU golden runs.
        assert_eq!([250, 1250].map(progress_read_interval), [50, 50]);
        assert_eq!([200, 199, 13, 7, 4, 3, 1, 0].map(progress_read_interval), [50, 49, 3, 1, 1, 1, 1, 1]);
    }
}
