//! Batches as tensors on the device. The loader's buffers become the tensors' (no copy), and one batch is
//! uploaded ahead: while the device runs a step, the next batch is already on its way.

use burn::prelude::*;

use crate::data::Batch;

/// A batch on the device.
pub struct DeviceBatch<B: Backend> {
    /// `[N, 3, side, side]`.
    pub images: Tensor<B, 4>,
    /// `[N]` class indices.
    pub labels: Tensor<B, 1, Int>,
    /// N, known without asking the device.
    pub len: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Moves `batch` onto `device`, taking over its buffers.
    pub fn new(batch: Batch, device: &B::Device) -> Self {
        let (shape, len) = (batch.shape(), batch.len());
        DeviceBatch {
            images: Tensor::from_data(TensorData::new(batch.images, shape), device),
            labels: Tensor::from_data(TensorData::new(batch.labels, [len]), device),
            len,
        }
    }
}

/// `batches` uploaded to `device`, one ahead of the consumer.
pub fn uploaded<B: Backend, I: Iterator<Item = Batch>>(batches: I, device: &B::Device) -> Uploaded<B, I> {
    Uploaded { batches, ahead: None, device: device.clone() }
}

pub struct Uploaded<B: Backend, I> {
    batches: I,
    ahead: Option<DeviceBatch<B>>,
    device: B::Device,
}

impl<B: Backend, I: Iterator<Item = Batch>> Iterator for Uploaded<B, I> {
    type Item = DeviceBatch<B>;

    fn next(&mut self) -> Option<DeviceBatch<B>> {
        let current = match self.ahead.take() {
            Some(batch) => batch,
            None => DeviceBatch::new(self.batches.next()?, &self.device),
        };
        self.ahead = self.batches.next().map(|batch| DeviceBatch::new(batch, &self.device));
        Some(current)
    }
}
