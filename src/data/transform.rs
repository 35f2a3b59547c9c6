//! The seed's torchvision preprocessing, reproduced: `Resize((S, S))` (PIL bilinear on u8 images),
//! optional `RandomHorizontalFlip`, `ToTensor()` and `Normalize(IMAGENET_MEAN, IMAGENET_STD)` into CHW f32.

use crate::data::image_set::{CHANNELS, SOURCE_SIDE};

/// ImageNet channel means, as the seed's `Normalize` uses them (the backbone's pretrained statistics).
pub const IMAGENET_MEAN: [f32; CHANNELS] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; CHANNELS] = [0.229, 0.224, 0.225];
/// Fixed-point precision of PIL's 8-bit resampling (`PRECISION_BITS` in Pillow's Resample.c).
const PRECISION_BITS: u32 = 22;
/// Half of one output level in fixed point: PIL starts every sum at it so that the final shift rounds.
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);
/// Support of the triangle (bilinear) filter at scale 1.
const BILINEAR_SUPPORT: f64 = 1.0;

/// PIL's fixed-point weights for resampling one axis from `in_size` to `out_size` samples.
#[derive(Debug, Clone)]
struct AxisWeights {
    /// Per output sample: first input sample and number of input samples used.
    bounds: Vec<(usize, usize)>,
    /// `bounds.len()` rows of `row_len` weights.
    weights: Vec<i32>,
    row_len: usize,
}

impl AxisWeights {
    /// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's Resample.c for the bilinear filter: half-pixel
    /// centres, support widened only when downscaling, weights normalised to sum 1, then rounded to fixed point.
    fn bilinear(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = BILINEAR_SUPPORT * filter_scale;
        let row_len = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * row_len];
        let mut row = vec![0f64; row_len];
        for (out_index, fixed) in weights.chunks_exact_mut(row_len).enumerate() {
            let center = (out_index as f64 + 0.5) * scale;
            // `as i64` truncates toward zero exactly like C's `(int)` cast that Pillow rounds with.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = end - first;
            row.fill(0.0);
            let mut total = 0.0;
            for (offset, weight) in row[..count].iter_mut().enumerate() {
                *weight = triangle(((first + offset) as f64 - center + 0.5) / filter_scale);
                total += *weight;
            }
            for (weight, fixed) in row.iter().zip(fixed.iter_mut()) {
                let normalised = if total != 0.0 { weight / total } else { *weight };
                let scaled = normalised * f64::from(1u32 << PRECISION_BITS);
                *fixed = if scaled < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            bounds.push((first, count));
        }
        AxisWeights { bounds, weights, row_len }
    }

    fn row(&self, out_index: usize) -> (usize, &[i32]) {
        let (first, count) = self.bounds[out_index];
        (first, &self.weights[out_index * self.row_len..][..count])
    }
}

fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

/// Pillow's `clip8`: drops the fixed-point fraction and saturates to u8.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, i32::from(u8::MAX)) as u8
}

/// Bilinear resize of square RGB u8 images from `SOURCE_SIDE` to `side`, identical to PIL's
/// `Image.resize((side, side), BILINEAR)`: horizontal pass, clamp to u8, vertical pass.
#[derive(Debug, Clone)]
pub struct BilinearResize {
    side: usize,
    /// `None` when `side == SOURCE_SIDE`: PIL then returns the image unchanged.
    weights: Option<AxisWeights>,
}

impl BilinearResize {
    pub fn new(side: usize) -> Self {
        let weights = (side != SOURCE_SIDE).then(|| AxisWeights::bilinear(SOURCE_SIDE, side));
        BilinearResize { side, weights }
    }

    pub fn side(&self) -> usize {
        self.side
    }

    /// Resizes one `SOURCE_SIDE`² HWC image to `side`² HWC.
    pub fn apply(&self, source: &[u8]) -> Vec<u8> {
        let Some(weights) = &self.weights else {
            return source.to_vec();
        };
        let side = self.side;
        // Both passes use the same weights: source and output are square.
        let mut horizontal = vec![0u8; SOURCE_SIDE * side * CHANNELS];
        for (source_row, out_row) in source.chunks_exact(SOURCE_SIDE * CHANNELS).zip(horizontal.chunks_exact_mut(side * CHANNELS))
        {
            for (x, out_pixel) in out_row.chunks_exact_mut(CHANNELS).enumerate() {
                let (first, row) = weights.row(x);
                for (channel, out) in out_pixel.iter_mut().enumerate() {
                    let sum = row.iter().enumerate().fold(ROUNDING, |sum, (offset, &w)| {
                        sum + i32::from(source_row[(first + offset) * CHANNELS + channel]) * w
                    });
                    *out = clip8(sum);
                }
            }
        }
        let row_bytes = side * CHANNELS;
        let mut resized = vec![0u8; side * row_bytes];
        for (y, out_row) in resized.chunks_exact_mut(row_bytes).enumerate() {
            let (first, column) = weights.row(y);
            for (index, out) in out_row.iter_mut().enumerate() {
                let sum = column
                    .iter()
                    .enumerate()
                    .fold(ROUNDING, |sum, (offset, &w)| sum + i32::from(horizontal[(first + offset) * row_bytes + index]) * w);
                *out = clip8(sum);
            }
        }
        resized
    }
}

/// The whole per-image preprocessing: resize to `side`, optional horizontal flip, `/255` and ImageNet
/// normalisation into CHW f32.
#[derive(Debug, Clone)]
pub struct Preprocess {
    resize: BilinearResize,
    /// `(u8 / 255 - mean) / std` for every channel and level, computed in f32 in torchvision's order so the
    /// lookup gives the same bits as `ToTensor` + `Normalize`.
    normalised: [[f32; 256]; CHANNELS],
}

impl Preprocess {
    pub fn new(side: usize) -> Self {
        let mut normalised = [[0f32; 256]; CHANNELS];
        for (channel, table) in normalised.iter_mut().enumerate() {
            for (level, value) in table.iter_mut().enumerate() {
                *value = (level as f32 / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel];
            }
        }
        Preprocess { resize: BilinearResize::new(side), normalised }
    }

    pub fn side(&self) -> usize {
        self.resize.side()
    }

    /// Floats written per image: `3 * side * side`.
    pub fn output_len(&self) -> usize {
        CHANNELS * self.side() * self.side()
    }

    /// Preprocesses one `SOURCE_SIDE`² HWC u8 image into `out` (`output_len()` floats, CHW).
    pub fn apply(&self, source: &[u8], flip: bool, out: &mut [f32]) {
        let side = self.side();
        let resized = self.resize.apply(source);
        for (channel, plane) in out.chunks_exact_mut(side * side).enumerate() {
            let table = &self.normalised[channel];
            for (out_row, resized_row) in plane.chunks_exact_mut(side).zip(resized.chunks_exact(side * CHANNELS)) {
                for (x, value) in out_row.iter_mut().enumerate() {
                    let source_x = if flip { side - 1 - x } else { x };
                    *value = table[usize::from(resized_row[source_x * CHANNELS + channel])];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_weights_sum_to_one_in_fixed_point() {
        let weights = AxisWeights::bilinear(32, 128);
        for x in 0..128 {
            let (_, row) = weights.row(x);
            let sum: i32 = row.iter().sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= 1, "output {x}: weights sum to {sum}");
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let source = vec![77u8; SOURCE_SIDE * SOURCE_SIDE * CHANNELS];
        assert!(BilinearResize::new(128).apply(&source).iter().all(|&v| v == 77));
        assert!(BilinearResize::new(20).apply(&source).iter().all(|&v| v == 77));
    }

    #[test]
    fn same_side_is_identity_and_flip_mirrors() {
        let source: Vec<u8> = (0..SOURCE_SIDE * SOURCE_SIDE * CHANNELS).map(|i| (i % 251) as u8).collect();
        let preprocess = Preprocess::new(SOURCE_SIDE);
        let (mut plain, mut flipped) = (vec![0f32; preprocess.output_len()], vec![0f32; preprocess.output_len()]);
        preprocess.apply(&source, false, &mut plain);
        preprocess.apply(&source, true, &mut flipped);
        let expected = (f32::from(source[3 * CHANNELS + 1]) / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
        // Channel 1, row 0, column 3.
        assert_eq!(plain[SOURCE_SIDE * SOURCE_SIDE + 3], expected);
        assert_eq!(flipped[SOURCE_SIDE * SOURCE_SIDE + SOURCE_SIDE - 1 - 3], expected);
    }
}
