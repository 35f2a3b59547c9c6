//! `C (+)= A * B^T` where the rows of `A` (`m x k`) and of `B` (`n x k`) both run along `k`: every entry a
//! dot product of two contiguous rows. Two GEMMs of a training step have this layout: a convolution's
//! weight gradient (output gradient times im2col, both along positions) and a Linear's input gradient
//! (output gradient times the weights, both along outputs). The `gemm` crate's microkernel wants one of
//! them transposed and ran them at 18-125 GFLOP/s (a Linear's 32 x 8192 input gradient at 18 on one
//! core); this kernel keeps 4 x 4 dot products in AVX-512 registers, 16 FMAs to 8 loads, over chunks of
//! `k` that stay in L1. Without AVX-512 the `gemm` crate runs them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::cpu::{matmul, Matrix, Operand};

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

/// `dst[i * dst_stride + j] (+)= sum over p < k of a[i][p] * b[j][p]` for `i < m`, `j < n`, on the calling
/// core; with `accumulate`, added to what `dst` holds.
#[allow(clippy::too_many_arguments)]
pub fn dot_products(dst: &mut [f32], dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows, accumulate: bool) {
    check(dst, dst_stride, m, n, k, a, b);
    #[cfg(target_arch = "x86_64")]
    if m > 0 && n > 0 && is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; every row read and entry written is in bounds (checked above).
        unsafe { dot_products_avx512(dst.as_mut_ptr(), dst_stride, m, n, k, a, b, accumulate) };
        return;
    }
    with_gemm(dst, dst_stride, m, n, k, a, b, accumulate);
}

/// The same product by the `gemm` crate's microkernel: faster where `k` is short (its fixed costs per
/// entry are lower), and what runs without AVX-512.
#[allow(clippy::too_many_arguments)]
pub fn with_gemm(dst: &mut [f32], dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows, accumulate: bool) {
    check(dst, dst_stride, m, n, k, a, b);
    let (lhs, rhs) = (Operand::rows(a.data, a.stride), Operand::transposed(b.data, b.stride));
    // SAFETY: `a` holds `m` rows and `b` `n` rows of `k` values (checked above); `matmul` checks dst.
    unsafe { matmul(Matrix::rows(dst, dst_stride), m, n, k, lhs, rhs, accumulate, gemm::Parallelism::None) };
}

/// Panics unless `a` holds `m` rows and `b` `n` rows of `k` values, and `dst` `m` rows of `n`.
fn check(dst: &[f32], dst_stride: usize, m: usize, n: usize, k: usize, a: Rows, b: Rows) {
    assert!(a.holds(m, k) && b.holds(n, k) && (m == 0 || n == 0 || (m - 1) * dst_stride + n <= dst.len()));
}

/// Values of `k` a tile takes at a time: its 8 rows' chunks (16 KiB) stay in L1 while it runs.
#[cfg(target_arch = "x86_64")]
const K_CHUNK: usize = 512;

/// # Safety
/// AVX-512F must be present, and the rows and entries in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_products_avx512(
    dst: *mut f32,
    dst_stride: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Rows,
    b: Rows,
    accumulate: bool,
) {
    for k0 in (0..k.max(1)).step_by(K_CHUNK) {
        let len = K_CHUNK.min(k - k0);
        // The first chunk writes unless asked to accumulate; the later ones add.
        let add = accumulate || k0 > 0;
        for j in (0..n).step_by(4) {
            for i in (0..m).step_by(4) {
                let tile = Tile {
                    a: a.data.as_ptr().add(i * a.stride + k0),
                    a_stride: a.stride,
                    b: b.data.as_ptr().add(j * b.stride + k0),
                    b_stride: b.stride,
                    len,
                    dst: dst.add(i * dst_stride + j),
                    dst_stride,
                    add,
                };
                match ((m - i).min(4), (n - j).min(4)) {
                    (4, 4) => tile.run::<4, 4>(),
                    (4, 3) => tile.run::<4, 3>(),
                    (4, 2) => tile.run::<4, 2>(),
                    (4, _) => tile.run::<4, 1>(),
                    (3, 4) => tile.run::<3, 4>(),
                    (3, 3) => tile.run::<3, 3>(),
                    (3, 2) => tile.run::<3, 2>(),
                    (3, _) => tile.run::<3, 1>(),
                    (2, 4) => tile.run::<2, 4>(),
                    (2, 3) => tile.run::<2, 3>(),
                    (2, 2) => tile.run::<2, 2>(),
                    (2, _) => tile.run::<2, 1>(),
                    (_, 4) => tile.run::<1, 4>(),
                    (_, 3) => tile.run::<1, 3>(),
                    (_, 2) => tile.run::<1, 2>(),
                    _ => tile.run::<1, 1>(),
                }
            }
        }
    }
}

/// Up to 4 x 4 entries of `dst` over one chunk of `k`.
#[cfg(target_arch = "x86_64")]
struct Tile {
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    b_stride: usize,
    len: usize,
    dst: *mut f32,
    dst_stride: usize,
    add: bool,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// # Safety
    /// AVX-512F must be present; `R` rows of `a`, `C` of `b` (`len` values each) and the `R x C` entries
    /// of `dst` in bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const R: usize, const C: usize>(&self) {
        let mut sums = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p < self.len {
            // The last step of a chunk whose length is not a multiple of 16 reads only what is left.
            let mask: __mmask16 = if self.len - p >= 16 { 0xffff } else { (1u16 << (self.len - p)) - 1 };
            // No closure here: one would not inherit this function's target features, and each load
            // would become a call.
            let mut bs = [_mm512_setzero_ps(); C];
            for (c, b) in bs.iter_mut().enumerate() {
                *b = _mm512_maskz_loadu_ps(mask, self.b.add(c * self.b_stride + p));
            }
            for (r, row) in sums.iter_mut().enumerate() {
                let a = _mm512_maskz_loadu_ps(mask, self.a.add(r * self.a_stride + p));
                for (sum, &b) in row.iter_mut().zip(&bs) {
                    *sum = _mm512_fmadd_ps(a, b, *sum);
                }
            }
            p += 16;
        }
        for (r, row) in sums.iter().enumerate() {
            for (c, &sum) in row.iter().enumerate() {
                let entry = self.dst.add(r * self.dst_stride + c);
                let value = _mm512_reduce_add_ps(sum);
                *entry = if self.add { *entry + value } else { value };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Product = fn(&mut [f32], usize, usize, usize, usize, Rows, Rows, bool);

    /// Every tile shape and a ragged `k` (two chunks and a remainder), with and without accumulating, both
    /// kernels, against the products summed in f64.
    #[test]
    fn dot_products_are_the_sums_of_products() {
        let (m, n, k) = (7, 6, 2 * K_CHUNK + 37);
        let value = |seed: usize| ((seed * 7919) % 1009) as f32 / 1009.0 - 0.5;
        let a: Vec<f32> = (0..m * (k + 3)).map(value).collect();
        let b: Vec<f32> = (0..n * (k + 5)).map(|i| value(i + 17)).collect();
        let (a, b) = (Rows { data: &a, stride: k + 3 }, Rows { data: &b, stride: k + 5 });
        let expected = |i: usize, j: usize| {
            (0..k).map(|p| f64::from(a.data[i * a.stride + p]) * f64::from(b.data[j * b.stride + p])).sum::<f64>()
        };
        for (kernel, accumulate) in
            [(dot_products as Product, false), (dot_products, true), (with_gemm, false), (with_gemm, true)]
        {
            let mut dst = vec![1.0f32; m * 9];
            kernel(&mut dst, 9, m, n, k, a, b, accumulate);
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
