//! `C (+)= A * B^T` where the rows of `A` (`m x k`) and of `B` (`n x k`) both run along `k`: every entry a
//! dot product of two contiguous rows. Two GEMMs of a training step have this layout: a convolution's
//! weight gradient on wide blocks (output gradient times im2col, both along positions) and a Linear's
//! input gradient (output gradient times the weights, both along outputs). Tiles of dot products keep
//! their sums in registers over chunks of `k` that stay in L1.
//!
//! The arithmetic is fixed, whatever the vector width: each chunk of [`K_CHUNK`] values of `k` is summed
//! in [`LANES`] lanes, lane `l` one chain of fused multiply-adds over the chunk's values `l`, `l + 16`, ...
//! (zero past the chunk's end), the lanes then added in one tree (`l + l+8`, then `+4`, `+2`, `+1`), and
//! the chunk's sum added to the entry (or written, for the first chunk unless accumulating). AVX-512
//! holds a lane set in one register, AVX2 in two, NEON in four; [`sum_of_chunks`] is the definition the
//! tests hold each to, bit for bit.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::isa::{isa, Isa};
#[cfg(target_arch = "aarch64")]
use super::neon::{self, load_first};

/// Rows of a matrix: row `r` starts at `data[r * stride]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

impl Rows<'_> {
    /// Whether `count` rows of `len` values fit in `data`.
    fn holds(&self, count: usize, len: usize) -> bool {
        count == 0 || len == 0 || (count - 1) * self.stride + len <= self.data.len()
    }
}

/// Values of `k` a chunk sums before adding into the entry: a tile's 8 rows of a chunk (16 KiB) stay in
/// L1 while it runs.
pub const K_CHUNK: usize = 512;

/// Partial sums of a chunk.
pub const LANES: usize = 16;

/// `dst[i * dst_stride + j] (+)= sum over p < k of a[i][p] * b[j][p]` for `i < m`, `j < n`, on the calling
/// core; with `accumulate`, added to what `dst` holds.
#[allow(clippy::too_many_arguments)]
pub fn dot_products(dst: &mut [f32], dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows, accumulate: bool) {
    dot_products_on(isa(), dst, dst_stride, m, n, k, a, b, accumulate);
}

/// [`dot_products`] with the instruction set given.
#[allow(clippy::too_many_arguments)]
pub(super) fn dot_products_on(
    isa: Isa,
    dst: &mut [f32],
    dst_stride: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Rows,
    b: Rows,
    accumulate: bool,
) {
    assert!(a.holds(m, k) && b.holds(n, k) && (m == 0 || n == 0 || (m - 1) * dst_stride + n <= dst.len()));
    if m == 0 || n == 0 {
        return;
    }
    match isa {
        Isa::Scalar => sum_of_chunks(dst, dst_stride, m, n, k, a, b, accumulate),
        // SAFETY: the instruction set is present (`isa` never names one the CPU lacks); every row read
        // and entry written is in bounds (checked above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { tiles::<Avx512>(dst.as_mut_ptr(), dst_stride, m, n, k, a, b, accumulate) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { tiles::<Avx2>(dst.as_mut_ptr(), dst_stride, m, n, k, a, b, accumulate) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { tiles::<Neon>(dst.as_mut_ptr(), dst_stride, m, n, k, a, b, accumulate) },
        _ => unreachable!("no vector path on this architecture: {isa:?}"),
    }
}

/// The definition, one entry at a time: what every vector path must equal bit for bit.
#[allow(clippy::too_many_arguments)]
fn sum_of_chunks(dst: &mut [f32], dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows, accumulate: bool) {
    for i in 0..m {
        for j in 0..n {
            let (row_a, row_b) = (&a.data[i * a.stride..][..k], &b.data[j * b.stride..][..k]);
            let entry = &mut dst[i * dst_stride + j];
            for k0 in (0..k.max(1)).step_by(K_CHUNK) {
                let end = (k0 + K_CHUNK).min(k);
                let mut lanes = [0.0f32; LANES];
                for group in (k0..end).step_by(LANES) {
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        let p = group + l;
                        let (x, y) = if p < end { (row_a[p], row_b[p]) } else { (0.0, 0.0) };
                        *lane = x.mul_add(y, *lane);
                    }
                }
                let sum = lane_tree(lanes);
                *entry = if accumulate || k0 > 0 { *entry + sum } else { sum };
            }
        }
    }
}

/// The lanes added in the fixed tree: `l + l+8`, then `+4`, `+2`, `+1`.
fn lane_tree(mut lanes: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            lanes[l] += lanes[l + half];
        }
        half /= 2;
    }
    lanes[0]
}

/// A vector path: a set of [`LANES`] sums in its registers, and the tile size that fits them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
trait LaneSets {
    /// Rows (of `a` and of `b`) a tile takes at most.
    const TILE: usize;

    /// `sums[r][c]`, carried over `len` values of the rows `a + r * a_stride`, `b + c * b_stride`; each
    /// written as the sum of its lanes into `dst + r * dst_stride + c` (or added, with `add`).
    ///
    /// # Safety
    /// The instruction set must be present; the rows must hold `len` values and the entries be writable.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        len: usize,
        dst: *mut f32,
        dst_stride: usize,
        add: bool,
    );
}

/// Tiles of up to `P::TILE x P::TILE` entries over each chunk of `k`.
///
/// # Safety
/// As [`LaneSets::tile`], for `m` rows of `a`, `n` of `b` and the `m x n` entries of `dst`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<P: LaneSets>(dst: *mut f32, dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows, accumulate: bool) {
    for k0 in (0..k.max(1)).step_by(K_CHUNK) {
        let len = K_CHUNK.min(k - k0);
        // The first chunk writes unless asked to accumulate; the later ones add.
        let add = accumulate || k0 > 0;
        for j in (0..n).step_by(P::TILE) {
            for i in (0..m).step_by(P::TILE) {
                let (pa, pb) = (a.data.as_ptr().add(i * a.stride + k0), b.data.as_ptr().add(j * b.stride + k0));
                let entry = dst.add(i * dst_stride + j);
                macro_rules! run {
                    ($r:literal, $c:literal) => {
                        P::tile::<$r, $c>(pa, a.stride, pb, b.stride, len, entry, dst_stride, add)
                    };
                }
                match ((m - i).min(P::TILE), (n - j).min(P::TILE)) {
                    (4, 4) => run!(4, 4),
                    (4, 3) => run!(4, 3),
                    (4, 2) => run!(4, 2),
                    (4, _) => run!(4, 1),
                    (3, 4) => run!(3, 4),
                    (3, 3) => run!(3, 3),
                    (3, 2) => run!(3, 2),
                    (3, _) => run!(3, 1),
                    (2, 4) => run!(2, 4),
                    (2, 3) => run!(2, 3),
                    (2, 2) => run!(2, 2),
                    (2, _) => run!(2, 1),
                    (_, 4) => run!(1, 4),
                    (_, 3) => run!(1, 3),
                    (_, 2) => run!(1, 2),
                    _ => run!(1, 1),
                }
            }
        }
    }
}

/// `lane_tree` from `l + l+8` on: the eight sums `l + l+8`, then `+4`, `+2`, `+1`.
///
/// # Safety
/// AVX must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn tree_of_eight(sums: __m256) -> f32 {
    let fours = _mm_add_ps(_mm256_castps256_ps128(sums), _mm256_extractf128_ps(sums, 1));
    let twos = _mm_add_ps(fours, _mm_movehl_ps(fours, fours));
    _mm_cvtss_f32(_mm_add_ss(twos, _mm_shuffle_ps(twos, twos, 1)))
}

/// One lane set in one AVX-512 register; tiles of 4 x 4.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl LaneSets for Avx512 {
    const TILE: usize = 4;

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        len: usize,
        dst: *mut f32,
        dst_stride: usize,
        add: bool,
    ) {
        let mut sums = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p < len {
            // The last step of a chunk whose length is not a multiple of 16 reads only what is left
            // (the rest as zeros, as the definition has it).
            let mask: __mmask16 = if len - p >= LANES { 0xffff } else { (1u16 << (len - p)) - 1 };
            // No closure here: one would not inherit this function's target features, and each load
            // would become a call.
            let mut bs = [_mm512_setzero_ps(); C];
            for (c, value) in bs.iter_mut().enumerate() {
                *value = _mm512_maskz_loadu_ps(mask, b.add(c * b_stride + p));
            }
            for (r, row) in sums.iter_mut().enumerate() {
                let value = _mm512_maskz_loadu_ps(mask, a.add(r * a_stride + p));
                for (sum, &other) in row.iter_mut().zip(&bs) {
                    *sum = _mm512_fmadd_ps(value, other, *sum);
                }
            }
            p += LANES;
        }
        for (r, row) in sums.iter().enumerate() {
            for (c, &sum) in row.iter().enumerate() {
                let low = _mm512_castps512_ps256(sum);
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum), 1));
                let value = tree_of_eight(_mm256_add_ps(low, high));
                let entry = dst.add(r * dst_stride + c);
                *entry = if add { *entry + value } else { value };
            }
        }
    }
}

/// One lane set in two AVX2 registers (lanes 0-7, 8-15), each half a chunk's own pass; tiles of 3 x 3
/// (their 9 sums, 3 rows and 3 columns fill the 16 registers).
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl LaneSets for Avx2 {
    const TILE: usize = 3;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        len: usize,
        dst: *mut f32,
        dst_stride: usize,
        add: bool,
    ) {
        const LANE_MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut halves = [[[_mm256_setzero_ps(); C]; R]; 2];
        for (h, sums) in halves.iter_mut().enumerate() {
            let mut p = 8 * h;
            while p < len + 8 * h {
                // Lanes at or past the chunk's end read as zeros.
                let mask = _mm256_loadu_si256(LANE_MASK.as_ptr().add(8 - len.saturating_sub(p).min(8)).cast());
                let mut bs = [_mm256_setzero_ps(); C];
                for (c, value) in bs.iter_mut().enumerate() {
                    *value = _mm256_maskload_ps(b.wrapping_add(c * b_stride + p), mask);
                }
                for (r, row) in sums.iter_mut().enumerate() {
                    let value = _mm256_maskload_ps(a.wrapping_add(r * a_stride + p), mask);
                    for (sum, &other) in row.iter_mut().zip(&bs) {
                        *sum = _mm256_fmadd_ps(value, other, *sum);
                    }
                }
                p += LANES;
            }
        }
        for (r, (low, high)) in halves[0].iter().zip(&halves[1]).enumerate() {
            for (c, (&low, &high)) in low.iter().zip(high).enumerate() {
                let value = tree_of_eight(_mm256_add_ps(low, high));
                let entry = dst.add(r * dst_stride + c);
                *entry = if add { *entry + value } else { value };
            }
        }
    }
}

/// One lane set in four NEON registers (lanes 0-3, 4-7, 8-11, 12-15), each quarter a chunk's own pass;
/// tiles of 4 x 4 (a pass's 16 sums, 4 of `b` and one of `a` in 21 of the 32 registers).
#[cfg(target_arch = "aarch64")]
struct Neon;

#[cfg(target_arch = "aarch64")]
impl LaneSets for Neon {
    const TILE: usize = 4;

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        len: usize,
        dst: *mut f32,
        dst_stride: usize,
        add: bool,
    ) {
        // Each entry's lane set as its quarters.
        const QUARTERS: usize = LANES / neon::LANES;
        let mut sums = [[[vdupq_n_f32(0.0); QUARTERS]; C]; R];
        for q in 0..QUARTERS {
            let mut p = neon::LANES * q;
            while p < len + neon::LANES * q {
                // Lanes at or past the chunk's end read as zeros.
                let count = len.saturating_sub(p);
                let mut bs = [vdupq_n_f32(0.0); C];
                for (c, value) in bs.iter_mut().enumerate() {
                    *value = load_first(b.wrapping_add(c * b_stride + p), count);
                }
                for (r, row) in sums.iter_mut().enumerate() {
                    let value = load_first(a.wrapping_add(r * a_stride + p), count);
                    for (quarters, &other) in row.iter_mut().zip(&bs) {
                        quarters[q] = vfmaq_f32(quarters[q], value, other);
                    }
                }
                p += LANES;
            }
        }
        for (r, row) in sums.iter().enumerate() {
            for (c, quarters) in row.iter().enumerate() {
                // `lane_tree`: `l + l+8` (quarters 0 + 2 and 1 + 3), then `+4`, `+2`, `+1`.
                let fours = vaddq_f32(vaddq_f32(quarters[0], quarters[2]), vaddq_f32(quarters[1], quarters[3]));
                let twos = vadd_f32(vget_low_f32(fours), vget_high_f32(fours));
                let value = vget_lane_f32::<0>(twos) + vget_lane_f32::<1>(twos);
                let entry = dst.add(r * dst_stride + c);
                *entry = if add { *entry + value } else { value };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seed: usize) -> f32 {
        ((seed * 7919) % 1009) as f32 / 1009.0 - 0.5
    }

    /// Every path against the definition, bit for bit: every tile shape, a `k` of two chunks and a
    /// ragged rest (and one under a lane set), with and without accumulating.
    #[test]
    fn every_path_sums_the_same_chunks() {
        for (m, n, k) in [(7, 6, 2 * K_CHUNK + 37), (5, 9, 11), (1, 1, 0)] {
            let a: Vec<f32> = (0..m * (k + 3)).map(value).collect();
            let b: Vec<f32> = (0..n * (k + 5)).map(|i| value(i + 17)).collect();
            let (a, b) = (Rows { data: &a, stride: k + 3 }, Rows { data: &b, stride: k + 5 });
            for accumulate in [false, true] {
                let mut expected = vec![1.0f32; m * 11];
                sum_of_chunks(&mut expected, 11, m, n, k, a, b, accumulate);
                for &isa in Isa::available() {
                    let mut got = vec![1.0f32; m * 11];
                    dot_products_on(isa, &mut got, 11, m, n, k, a, b, accumulate);
                    let same = got.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{isa:?}: {m}x{n}x{k}, accumulate {accumulate}");
                }
            }
        }
    }

    /// The definition is the sums of products: against f64.
    #[test]
    fn dot_products_are_the_sums_of_products() {
        let (m, n, k) = (7, 6, 2 * K_CHUNK + 37);
        let a: Vec<f32> = (0..m * (k + 3)).map(value).collect();
        let b: Vec<f32> = (0..n * (k + 5)).map(|i| value(i + 17)).collect();
        let (a, b) = (Rows { data: &a, stride: k + 3 }, Rows { data: &b, stride: k + 5 });
        let expected = |i: usize, j: usize| {
            (0..k).map(|p| f64::from(a.data[i * a.stride + p]) * f64::from(b.data[j * b.stride + p])).sum::<f64>()
        };
        for accumulate in [false, true] {
            let mut dst = vec![1.0f32; m * 9];
            dot_products(&mut dst, 9, m, n, k, a, b, accumulate);
            for i in 0..m {
                for j in 0..9 {
                    let want = if j < n { expected(i, j) + if accumulate { 1.0 } else { 0.0 } } else { 1.0 };
                    let got = f64::from(dst[i * 9 + j]);
                    assert!((got - want).abs() < 1e-4, "({i}, {j}): {got} vs {want}");
                }
            }
        }
    }
}
