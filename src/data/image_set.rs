//! A set of same-sized RGB images with their labels, kept as one contiguous u8 buffer.

/// Side of every CIFAR-10 image, in pixels.
pub const SOURCE_SIDE: usize = 32;
/// RGB.
pub const CHANNELS: usize = 3;
/// Bytes of one source image in HWC layout.
pub const IMAGE_BYTES: usize = SOURCE_SIDE * SOURCE_SIDE * CHANNELS;

/// Images of `SOURCE_SIDE`x`SOURCE_SIDE` pixels, u8 HWC (row-major, RGB interleaved), with one u8 label each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageSet {
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl ImageSet {
    /// `pixels` holds `labels.len()` images of `IMAGE_BYTES` each.
    pub(crate) fn new(pixels: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), labels.len() * IMAGE_BYTES, "pixel buffer does not match label count");
        ImageSet { pixels, labels }
    }

    /// `count` images of seeded uniform noise with seeded labels among `classes`: what benchmarks feed
    /// the real loader and loops.
    pub fn random(count: usize, classes: u8, seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        // Not a decision of the pipeline, so not one of `seed::Purpose`'s streams.
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let pixels = (0..count * IMAGE_BYTES).map(|_| random.random::<u8>()).collect();
        let labels = (0..count).map(|_| random.random_range(0..classes)).collect();
        ImageSet { pixels, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The HWC pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * IMAGE_BYTES..(index + 1) * IMAGE_BYTES]
    }

    pub fn label(&self, index: usize) -> u8 {
        self.labels[index]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All images back to back, `len() * IMAGE_BYTES` bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// A new set of the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        for &index in indices {
            pixels.extend_from_slice(self.image(index));
        }
        ImageSet { pixels, labels: indices.iter().map(|&i| self.labels[i]).collect() }
    }

    /// At most `count` images evenly spread over the set, in order (all of them when it holds no more):
    /// a small evaluation set that still has every class of a set sorted by class.
    pub fn spread(&self, count: usize) -> ImageSet {
        let len = self.len();
        if count >= len {
            return self.clone();
        }
        let indices: Vec<usize> = (0..count).map(|i| i * len / count).collect();
        self.select(&indices)
    }

    /// Appends `other`'s images after this set's.
    pub(crate) fn extend(&mut self, other: ImageSet) {
        self.pixels.extend(other.pixels);
        self.labels.extend(other.labels);
    }
}
