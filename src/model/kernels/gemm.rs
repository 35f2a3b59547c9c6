//! Our GEMM: `C = A * B` or `C += A * B` for f32 matrices of any strides, in which every entry of `C`
//! is one chain of fused multiply-adds along `k`, in order, from the entry's starting value (zero, or
//! what `C` holds): `c = fma(a[i][k-1], b[k-1][j], ... fma(a[i][0], b[0][j], c) ...)`.
//!
//! Blocking, threads and the vector width decide which entries are computed together and when, never an
//! entry's arithmetic: a tile loads its entries, carries their chains through a block of `k` in
//! registers and stores them, and the next block of `k` loads them again. So the product is the same
//! bytes with AVX-512 (tiles of 8 x 32), AVX2 (6 x 16), NEON (8 x 12) or no vectors at all
//! (`f32::mul_add`, 4 x 8), on any core count, whatever the caches; the tests hold every path to the
//! chains written out.
//!
//! The layout is BLIS's: `A` is packed into panels of one tile's height, interleaved along `k` so a
//! tile broadcasts its values from one stream, in blocks of `mc x kc` (once for the whole product, or
//! once for many, [`PackedA`]); a block of `B` (`kc x nc`) into panels of one tile's width, which a tile
//! reads from L1, or all of `B` ahead ([`Panels`]). `A` is packed even where its rows are contiguous along `k`: tiles broadcasting from
//! its rows in place, one stream a row, ran the full shapes' eight convolutions, forward and backward,
//! 1.05x slower on a Zen 3 EPYC with AVX2 (the smoke shapes', whose weights serve few columns, 0.97x).

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::isa::{isa, Isa};
#[cfg(target_arch = "aarch64")]
use super::neon::{load_first, store_first, LANES};

/// How a product is cut into blocks. Fixed sizes, never the caches a machine reports; and since a
/// block only decides when an entry's chain goes on, not its arithmetic, any blocking gives the same
/// bytes (the tests try several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Blocking {
    /// Rows of `A` a packed block holds (a multiple of every tile height).
    pub mc: usize,
    /// Steps of `k` a block holds: a tile's panel of `B` (`kc x 32` floats, 32 KiB) is read from L1, and
    /// its entries are loaded and stored once per `kc` steps.
    pub kc: usize,
    /// Columns of `B` a packed block holds (rounded down to whole panels of a tile's width): `kc x nc` floats, 512 KiB,
    /// stay in L2 while every block of `A` passes them.
    pub nc: usize,
}

/// The blocking products use (`kc` measured at the full shapes' convolutions, forward: 128 steps 858 ms,
/// 256 steps 850, 384 steps 839; smoke: 3.95, 3.93, 4.0-4.2 ms).
pub(super) const BLOCKING: Blocking = Blocking { mc: 96, kc: 256, nc: 512 };

/// A matrix read by the product: entry `(i, j)` is `data[i * row_stride + j * column_stride]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix with its rows `row_stride` apart.
    pub fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Operand { data, row_stride, column_stride: 1 }
    }

    /// The transpose of a row-major matrix whose rows are `row_stride` apart.
    pub fn transposed(data: &'a [f32], row_stride: usize) -> Self {
        Operand { data, row_stride: 1, column_stride: row_stride }
    }

    #[cfg(test)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.column_stride]
    }

    /// Whether every entry of a `rows x columns` matrix lies in `data`.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        rows == 0 || columns == 0 || (rows - 1) * self.row_stride + (columns - 1) * self.column_stride < self.data.len()
    }

    /// The `count` values from entry `(i, j)` on along a row (`along_rows`: down a column), as one slice
    /// where they are contiguous.
    fn run(&self, i: usize, j: usize, count: usize, along_rows: bool) -> Option<&'a [f32]> {
        let stride = if along_rows { self.row_stride } else { self.column_stride };
        (stride == 1).then(|| &self.data[i * self.row_stride + j * self.column_stride..][..count])
    }
}

/// `B` (`k x n`) packed ahead of a product for the tiles of one instruction set, all of `k` at once: panel
/// `q`, a tile's width of columns, holds at `q * k * width + p * width + c` the entry `(p, q * width + c)`,
/// zero past the last column. That is [`pack_b`]'s layout for one block of all of `k`, so any block of
/// `k` of a panel is one run of it, as a tile reads it. A convolution writes its im2col so, where packing
/// the im2col's rows block by block took a second pass (the smoke shapes' 13 forward convolutions on one
/// core of an Intel Xeon with AVX-512: 13.1-13.7 ms against 14.1-15.2).
#[derive(Clone, Copy)]
pub struct Panels<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
    width: usize,
}

impl<'a> Panels<'a> {
    /// The width of `isa`'s panels (its tiles').
    pub fn width(isa: Isa) -> usize {
        Tiles::of(isa).width()
    }

    /// Floats the panels of a `k x n` matrix take at `width`.
    pub fn len(k: usize, n: usize, width: usize) -> usize {
        n.div_ceil(width) * width * k
    }

    /// Writes `B`'s steps `p0..p0 + steps` into `out`, the panels of `k` steps at `width`, zero past the
    /// last column: step `p0 + s`'s `n` entries are `rows[s * row_stride..][..n]`. One copy of a panel's
    /// width per panel and step, a fixed size for each path's.
    #[allow(clippy::too_many_arguments)]
    pub fn spread_steps(
        out: &mut [f32],
        k: usize,
        width: usize,
        p0: usize,
        steps: usize,
        n: usize,
        rows: &[f32],
        row_stride: usize,
    ) {
        let spread = match width {
            SCALAR_WIDTH => spread_steps::<SCALAR_WIDTH>,
            NEON_WIDTH => spread_steps::<NEON_WIDTH>,
            AVX2_WIDTH => spread_steps::<AVX2_WIDTH>,
            AVX512_WIDTH => spread_steps::<AVX512_WIDTH>,
            _ => unreachable!("no path has panels {width} wide"),
        };
        spread(out, k, p0, steps, n, rows, row_stride);
    }

    /// `data`, `Panels::len(k, n, width)` floats or more, as the panels of a `k x n` matrix.
    ///
    /// Panics where `data` is shorter.
    pub fn new(data: &'a [f32], k: usize, n: usize, width: usize) -> Self {
        assert!(data.len() >= Self::len(k, n, width), "panels of {k} x {n} in {} floats", data.len());
        Panels { data, k, n, width }
    }
}

/// [`Panels::spread_steps`] at the width `W`.
fn spread_steps<const W: usize>(out: &mut [f32], k: usize, p0: usize, steps: usize, n: usize, rows: &[f32], row_stride: usize) {
    for s in 0..steps {
        let mut chunks = rows[s * row_stride..][..n].chunks_exact(W);
        for (q, chunk) in chunks.by_ref().enumerate() {
            let panel: &mut [f32; W] = (&mut out[(q * k + p0 + s) * W..][..W]).try_into().expect("W floats");
            *panel = chunk.try_into().expect("W floats");
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let panel = &mut out[(n / W * k + p0 + s) * W..][..W];
            panel[..rest.len()].copy_from_slice(rest);
            panel[rest.len()..].fill(0.0);
        }
    }
}

/// The product's `B`: a matrix packed a block at a time as the product goes, or panels packed ahead.
#[derive(Clone, Copy)]
pub enum BOperand<'a> {
    Matrix(Operand<'a>),
    Panels(Panels<'a>),
}

/// The destination: row-major, its rows `row_stride` apart.
pub struct Matrix<'a> {
    data: &'a mut [f32],
    row_stride: usize,
}

impl<'a> Matrix<'a> {
    pub fn rows(data: &'a mut [f32], row_stride: usize) -> Self {
        Matrix { data, row_stride }
    }
}

/// Tasks a product on every core is split into, where its columns allow.
const TASKS: usize = 8;
/// Columns a task takes at least (rounded up to whole panels of a tile's width).
const MIN_TASK_COLUMNS: usize = 64;

/// Where a product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cores {
    /// Rayon's pool: blocks of columns are its tasks.
    All,
    /// The calling thread alone (a caller that already runs one task per core).
    Calling,
}

/// `dst (m x n) = [dst +] a (m x k) * b (k x n)`, each entry one chain of fused multiply-adds along `k`
/// from its starting value: `dst`'s where `accumulate`, else zero.
///
/// Panics unless `a`, `b` and `dst` hold the entries their sizes name.
#[allow(clippy::too_many_arguments)]
pub fn matmul(dst: Matrix, m: usize, n: usize, k: usize, a: Operand, b: Operand, accumulate: bool, cores: Cores) {
    matmul_packed(dst, n, &PackedA::new(isa(), a, m, k, cores), BOperand::Matrix(b), accumulate, cores);
}

/// `A` made ready for the products of one instruction set: packed, for the `mc x kc` blocks in order
/// (`k` outer), into panels of a tile's height, `k`-major. Made once, it serves products with any number
/// of `B`s (a convolution's weights against each block of its im2col). Its buffer is the thread's
/// [`PACKED_A`], taken while it lives and given back when it drops.
pub struct PackedA {
    tiles: Tiles,
    blocking: Blocking,
    m: usize,
    k: usize,
    /// The packed blocks, as `pack_a` writes them (the buffer may be longer).
    data: Vec<f32>,
}

impl PackedA {
    /// `a` (`m x k`) ready for the tiles of `isa`, its blocks packed on `cores`.
    ///
    /// Panics unless `a` holds `m x k` entries.
    pub fn new(isa: Isa, a: Operand, m: usize, k: usize, cores: Cores) -> Self {
        Self::blocked(isa, a, m, k, BLOCKING, cores)
    }

    /// [`PackedA::new`] for products blocked as `blocking` says.
    fn blocked(isa: Isa, a: Operand, m: usize, k: usize, blocking: Blocking, cores: Cores) -> Self {
        assert!(a.holds(m, k), "an operand smaller than {m} x {k}");
        let tiles = Tiles::of(isa);
        let height = tiles.height();
        let packed_len = m.div_ceil(height) * height * k;
        // `pack_a` writes every float of the blocks, so what the buffer held before need not be cleared.
        let mut data = PACKED_A.with_borrow_mut(std::mem::take);
        if data.len() < packed_len {
            data.resize(packed_len, 0.0);
        }
        // Each block with its part of the buffer, in order.
        let mut blocks = Vec::new();
        let mut rest = &mut data[..packed_len];
        for k0 in (0..k).step_by(blocking.kc) {
            let kc = blocking.kc.min(k - k0);
            for i0 in (0..m).step_by(blocking.mc) {
                let mc = blocking.mc.min(m - i0);
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(mc.div_ceil(height) * height * kc);
                blocks.push((i0, mc, k0, kc, part));
                rest = tail;
            }
        }
        let pack = |(i0, mc, k0, kc, part): (usize, usize, usize, usize, &mut [f32])| pack_a(tiles, a, i0, mc, k0, kc, part);
        match cores {
            // A convolution's weights are packed on the calling thread before its tasks start: in
            // parallel, the other cores share it (3 % of the calling thread's samples at the smoke shapes).
            Cores::All => blocks.into_par_iter().for_each(pack),
            Cores::Calling => blocks.into_iter().for_each(pack),
        }
        PackedA { tiles, blocking, m, k, data }
    }

    /// The block of `mc` rows and `kc` steps `offset` floats into the packing: its length, and for the
    /// panel of a tile's height from row `i` of the block, where it starts.
    fn panels(&self, offset: usize, mc: usize, kc: usize) -> (usize, impl Fn(usize) -> *const f32 + '_) {
        let height = self.tiles.height();
        let len = mc.div_ceil(height) * height * kc;
        (len, move |i: usize| self.data[offset + i * kc..offset + len].as_ptr())
    }
}

impl Drop for PackedA {
    /// The buffer goes back to the thread's [`PACKED_A`] where it is the larger.
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        PACKED_A.with_borrow_mut(|kept| {
            if data.capacity() > kept.capacity() {
                *kept = data;
            }
        });
    }
}

/// [`matmul`] with `A` packed ahead, and `B` where given as [`Panels`]; `dst` is `a.m x n` and `b`
/// `a.k x n`.
///
/// Panics unless `b` and `dst` hold the entries their sizes name, and panels are `A`'s tiles' width.
pub fn matmul_packed(dst: Matrix, n: usize, a: &PackedA, b: BOperand, accumulate: bool, cores: Cores) {
    let (m, k, width) = (a.m, a.k, a.tiles.width());
    match b {
        BOperand::Matrix(b) => assert!(b.holds(k, n), "an operand smaller than {k} x {n}"),
        BOperand::Panels(b) => assert!(
            b.k == k && b.n >= n && b.width == width,
            "panels of {} x {} at width {} for a product of {k} x {n} at width {width}",
            b.k,
            b.n,
            b.width
        ),
    }
    assert!(dst.row_stride >= n && (m == 0 || n == 0 || dst.data.len() >= (m - 1) * dst.row_stride + n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Empty chains: their starting values.
        if !accumulate {
            dst.data.chunks_mut(dst.row_stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let c = Destination { data: dst.data.as_mut_ptr(), row_stride: dst.row_stride };
    let block = |columns: std::ops::Range<usize>| {
        // SAFETY: each call writes only the columns it is given, within `dst` (checked above).
        unsafe { column_block(c, columns, a, b, accumulate) }
    };
    // Blocks of columns start on a panel's edge: at most `nc` columns, a whole number of panels.
    let nc = a.blocking.nc / width * width;
    match cores {
        Cores::All => {
            // As many blocks as `TASKS` while each keeps `MIN_TASK_COLUMNS`.
            let size = n.div_ceil(TASKS).next_multiple_of(MIN_TASK_COLUMNS).min(nc).next_multiple_of(width);
            let blocks: Vec<_> = (0..n).step_by(size).map(|j| j..(j + size).min(n)).collect();
            blocks.into_par_iter().for_each(block);
        }
        Cores::Calling => (0..n).step_by(nc).for_each(|j| block(j..(j + nc).min(n))),
    }
}

/// The destination as a pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct Destination {
    data: *mut f32,
    row_stride: usize,
}

// SAFETY: tasks write disjoint entries (their own columns).
unsafe impl Send for Destination {}
unsafe impl Sync for Destination {}

/// A path's tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tiles {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Tiles {
    fn of(isa: Isa) -> Self {
        match isa {
            Isa::Scalar => Tiles::Scalar,
            Isa::Avx2 => Tiles::Avx2,
            Isa::Avx512 => Tiles::Avx512,
            Isa::Neon => Tiles::Neon,
        }
    }

    fn height(self) -> usize {
        match self {
            Tiles::Scalar => SCALAR_HEIGHT,
            Tiles::Avx2 => 6,
            Tiles::Avx512 => 8,
            Tiles::Neon => NEON_HEIGHT,
        }
    }

    fn width(self) -> usize {
        match self {
            Tiles::Scalar => SCALAR_WIDTH,
            Tiles::Avx2 => AVX2_WIDTH,
            Tiles::Avx512 => AVX512_WIDTH,
            Tiles::Neon => NEON_WIDTH,
        }
    }
}

thread_local! {
    /// Each thread's buffer for [`PackedA`], kept from one product to the next (a weight gradient packs
    /// its output gradient once for each block of columns).
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each core's packed block of `B`, kept from one product to the next.
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `columns` of the product, every row and all of `k`, on the calling thread.
///
/// # Safety
/// `c` must hold `a.m` rows reaching the last of `columns`, which no other thread writes meanwhile;
/// `columns` must start on a panel's edge.
unsafe fn column_block(c: Destination, columns: std::ops::Range<usize>, a: &PackedA, b: BOperand, accumulate: bool) {
    let (tiles, blocking) = (a.tiles, a.blocking);
    let (height, width, m, k) = (tiles.height(), tiles.width(), a.m, a.k);
    PACKED_B.with_borrow_mut(|packed_b| {
        if let BOperand::Matrix(_) = b {
            packed_b.resize(Panels::len(blocking.kc, columns.len(), width), 0.0);
        }
        let mut offset = 0;
        for k0 in (0..k).step_by(blocking.kc) {
            let kc = blocking.kc.min(k - k0);
            let nc = columns.len();
            // This block of `k` of the columns' panels, each `kc * width` floats, `panel_stride` apart.
            let (b_panels, panel_stride): (&[f32], usize) = match b {
                BOperand::Matrix(b) => {
                    pack_b(tiles, b, k0, kc, columns.start, nc, packed_b);
                    (packed_b, kc * width)
                }
                BOperand::Panels(b) => (&b.data[(columns.start / width * k + k0) * width..], k * width),
            };
            // Where this block of `k` starts a chain: from zero, unless asked to go on from `dst`.
            let load = accumulate || k0 > 0;
            for i0 in (0..m).step_by(blocking.mc) {
                let mc = blocking.mc.min(m - i0);
                let (len, panel_a) = a.panels(offset, mc, kc);
                offset += len;
                for (panel_b, j) in (0..nc).step_by(width).enumerate() {
                    let cols = width.min(nc - j);
                    let b_panel = b_panels[panel_b * panel_stride..].as_ptr();
                    for i in (0..mc).step_by(height) {
                        let rows = height.min(mc - i);
                        let tile = c.data.add((i0 + i) * c.row_stride + columns.start + j);
                        let tile = Tile { kc, a: panel_a(i), b: b_panel, c: tile, c_stride: c.row_stride, cols, load };
                        // SAFETY: the panels hold `kc` steps of the tile's rows (`B` of a whole tile);
                        // the tile's `rows x cols` entries lie in `c` (the caller's promise).
                        unsafe { run_tile(tiles, rows, tile) };
                    }
                }
            }
        }
    });
}

/// `A`'s rows `i0..i0 + mc`, steps `k0..k0 + kc`, as panels of a tile's height: panel `q` holds at
/// `q * kc * height + p * height + r` the entry `(i0 + q * height + r, k0 + p)`, zero past the last row.
fn pack_a(tiles: Tiles, a: Operand, i0: usize, mc: usize, k0: usize, kc: usize, packed: &mut [f32]) {
    let height = tiles.height();
    for (q, panel) in packed.chunks_exact_mut(height * kc).enumerate() {
        let (first, rows) = (i0 + q * height, height.min(mc - q * height));
        if a.row_stride == 1 {
            // Down a column, the rows are contiguous: one copy per step.
            for (p, row) in panel.chunks_exact_mut(height).enumerate() {
                row[..rows].copy_from_slice(&a.data[first + (k0 + p) * a.column_stride..][..rows]);
                row[rows..].fill(0.0);
            }
        } else {
            // Panel row `p` is `A`'s column `k0 + p` down the panel's rows; each row is contiguous along
            // `k` where `A` is row-major.
            interleave(
                tiles,
                panel,
                height,
                rows,
                kc,
                |r| a.run(first + r, k0, kc, false),
                |r, p| a.data[(first + r) * a.row_stride + (k0 + p) * a.column_stride],
            );
        }
    }
}

/// `B`'s steps `k0..k0 + kc`, columns `j0..j0 + nc`, as panels of a tile's width: panel `q` holds at
/// `q * kc * width + p * width + c` the entry `(k0 + p, j0 + q * width + c)`, zero past the last column.
fn pack_b(tiles: Tiles, b: Operand, k0: usize, kc: usize, j0: usize, nc: usize, packed: &mut [f32]) {
    let width = tiles.width();
    let packed = &mut packed[..Panels::len(kc, nc, width)];
    if b.column_stride == 1 {
        // Along a row, the columns are contiguous: one copy per panel and step.
        Panels::spread_steps(packed, kc, width, 0, kc, nc, &b.data[k0 * b.row_stride + j0..], b.row_stride);
        return;
    }
    for (q, panel) in packed.chunks_exact_mut(width * kc).enumerate() {
        let (first, cols) = (j0 + q * width, width.min(nc - q * width));
        // Panel row `p` is `B`'s row `k0 + p` across the panel's columns; each column is contiguous down
        // `k` where `B` is a transpose.
        interleave(
            tiles,
            panel,
            width,
            cols,
            kc,
            |c| b.run(k0, first + c, kc, true),
            |c, p| b.data[(k0 + p) * b.row_stride + (first + c) * b.column_stride],
        );
    }
}

/// Fills `panel` (`steps` rows of `lanes` values) with `lanes` sequences of `steps` values: sequence
/// `s` into lane `s` of every row, zero in lanes from `count` on. `run(s)` gives a sequence as one
/// contiguous slice where it is one (then transposed in registers, 8 x 8 at a time with AVX, 4 x 4 with
/// NEON), `at(s, p)` its values one by one.
fn interleave<'a>(
    tiles: Tiles,
    panel: &mut [f32],
    lanes: usize,
    count: usize,
    steps: usize,
    run: impl Fn(usize) -> Option<&'a [f32]>,
    at: impl Fn(usize, usize) -> f32,
) {
    if count < lanes {
        panel.fill(0.0);
    }
    let transposed = match tiles {
        Tiles::Scalar => 0,
        // SAFETY: AVX is present (every x86 vector path has it), NEON on every aarch64 CPU.
        #[cfg(target_arch = "x86_64")]
        Tiles::Avx2 | Tiles::Avx512 => unsafe { interleave_in_registers::<8>(panel, lanes, count, steps, &run, transpose8) },
        #[cfg(target_arch = "aarch64")]
        Tiles::Neon => unsafe { interleave_in_registers::<4>(panel, lanes, count, steps, &run, transpose4) },
        _ => unreachable!("no vector path on this architecture: {tiles:?}"),
    };
    for s in transposed..count {
        match run(s) {
            Some(sequence) => sequence.iter().enumerate().for_each(|(p, &value)| panel[p * lanes + s] = value),
            None => (0..steps).for_each(|p| panel[p * lanes + s] = at(s, p)),
        }
    }
}

/// Values `p..p + N` of `N` sequences, written across: `out[q * stride + s]` for step `p + q` of
/// sequence `s`, `q` and `s` below `N`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Transpose = unsafe fn(sequences: &[&[f32]], p: usize, out: &mut [f32], stride: usize);

/// The first sequences of [`interleave`], `N` at a time while `N` in a row are contiguous, transposed
/// `N x N` in registers by `transpose`; returns how many it wrote.
///
/// # Safety
/// The CPU must have `transpose`'s instructions.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn interleave_in_registers<'a, const N: usize>(
    panel: &mut [f32],
    lanes: usize,
    count: usize,
    steps: usize,
    run: impl Fn(usize) -> Option<&'a [f32]>,
    transpose: Transpose,
) -> usize {
    let mut s = 0;
    // On the stack: collected into a `Vec`, the `N` slices were an allocation and a free each time, 2 %
    // of a smoke step's weight gradients (`perf`, the 2-core Intel Xeon).
    let mut sequences: [&[f32]; N] = [&[]; N];
    'groups: while s + N <= count {
        for (offset, sequence) in sequences.iter_mut().enumerate() {
            let Some(contiguous) = run(s + offset) else { break 'groups };
            *sequence = contiguous;
        }
        let mut p = 0;
        while p + N <= steps {
            // SAFETY: the caller's promise for the instructions; each sequence holds `steps` values, and
            // the panel `steps` rows of `lanes >= s + N`.
            unsafe { transpose(&sequences, p, &mut panel[p * lanes + s..], lanes) };
            p += N;
        }
        for (offset, sequence) in sequences.iter().enumerate() {
            for (q, &value) in sequence.iter().enumerate().skip(p) {
                panel[q * lanes + s + offset] = value;
            }
        }
        s += N;
    }
    s
}

/// [`Transpose`] of 4 x 4 in NEON registers.
///
/// # Safety
/// Each sequence must hold `p + 4` values.
#[cfg(target_arch = "aarch64")]
unsafe fn transpose4(sequences: &[&[f32]], p: usize, out: &mut [f32], stride: usize) {
    assert!(sequences.len() == 4 && out.len() >= 3 * stride + 4);
    // SAFETY: NEON is on every aarch64 CPU; the loads and stores are of the slices checked above.
    unsafe {
        let r: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(sequences[i][p..p + 4].as_ptr()));
        // Rows paired lane by lane (steps 0 and 2, then 1 and 3), then those pairs paired.
        let (t0, t1) = (vtrn1q_f32(r[0], r[1]), vtrn2q_f32(r[0], r[1]));
        let (t2, t3) = (vtrn1q_f32(r[2], r[3]), vtrn2q_f32(r[2], r[3]));
        let pairs = |x: float32x4_t| vreinterpretq_f64_f32(x);
        let columns = [
            vreinterpretq_f32_f64(vtrn1q_f64(pairs(t0), pairs(t2))),
            vreinterpretq_f32_f64(vtrn1q_f64(pairs(t1), pairs(t3))),
            vreinterpretq_f32_f64(vtrn2q_f64(pairs(t0), pairs(t2))),
            vreinterpretq_f32_f64(vtrn2q_f64(pairs(t1), pairs(t3))),
        ];
        for (q, column) in columns.into_iter().enumerate() {
            vst1q_f32(out[q * stride..][..4].as_mut_ptr(), column);
        }
    }
}

/// [`Transpose`] of 8 x 8 in AVX registers.
///
/// # Safety
/// AVX must be present; each sequence must hold `p + 8` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8(sequences: &[&[f32]], p: usize, out: &mut [f32], stride: usize) {
    assert!(sequences.len() == 8 && out.len() >= 7 * stride + 8);
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(sequences[i][p..p + 8].as_ptr()));
    let (t0, t1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
    let (t2, t3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
    let (t4, t5) = (_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]));
    let (t6, t7) = (_mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7]));
    let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
    let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
    let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
    let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
    let columns = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (q, column) in columns.into_iter().enumerate() {
        _mm256_storeu_ps(out[q * stride..][..8].as_mut_ptr(), column);
    }
}

/// One tile's work: `rows x cols` entries of `c` (rows `c_stride` apart) carried `kc` steps along their
/// chains, from what `c` holds where `load`, else from zero. `A`'s panel is packed (step `p` of row `r`
/// at `a + p * height + r`), and so is `B`'s (step `p` at `b + p * width`).
#[derive(Clone, Copy)]
struct Tile {
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    c_stride: usize,
    cols: usize,
    load: bool,
}

impl Tile {
    /// Row `r`'s value at step `p`, from `A`'s panel.
    ///
    /// # Safety
    /// The panel must hold row `r` at step `p`.
    #[inline(always)]
    unsafe fn a(&self, height: usize, r: usize, p: usize) -> f32 {
        unsafe { *self.a.add(p * height + r) }
    }
}

/// `tile` of `rows` rows on the path `tiles`.
///
/// # Safety
/// The CPU must have `tiles`' instructions; the panels must hold `kc` steps of the tile's rows (`B` of a
/// whole tile), and its `rows x cols` entries of `c` must be writable.
unsafe fn run_tile(tiles: Tiles, rows: usize, tile: Tile) {
    macro_rules! by_rows {
        ($kernel:ident, $($r:literal)+) => {
            match rows {
                $($r => $kernel::<$r>(tile),)+
                _ => unreachable!("a tile of {rows} rows"),
            }
        };
    }
    unsafe {
        match tiles {
            Tiles::Scalar => by_rows!(tile_scalar, 1 2 3 4),
            #[cfg(target_arch = "x86_64")]
            Tiles::Avx512 => by_rows!(tile_avx512, 1 2 3 4 5 6 7 8),
            #[cfg(target_arch = "x86_64")]
            Tiles::Avx2 => by_rows!(tile_avx2, 1 2 3 4 5 6),
            #[cfg(target_arch = "aarch64")]
            Tiles::Neon => by_rows!(tile_neon, 1 2 3 4 5 6 7 8),
            _ => unreachable!("no vector path on this architecture: {tiles:?}"),
        }
    }
}

/// The scalar path's tile.
const SCALAR_HEIGHT: usize = 4;
const SCALAR_WIDTH: usize = 8;

/// # Safety
/// See [`run_tile`]. The packed panels are `SCALAR_HEIGHT` rows and `SCALAR_WIDTH` columns wide.
unsafe fn tile_scalar<const R: usize>(t: Tile) {
    let mut sums = [[0.0f32; SCALAR_WIDTH]; R];
    if t.load {
        for (r, row) in sums.iter_mut().enumerate() {
            for (j, sum) in row.iter_mut().enumerate().take(t.cols) {
                *sum = *t.c.add(r * t.c_stride + j);
            }
        }
    }
    for p in 0..t.kc {
        for (r, row) in sums.iter_mut().enumerate() {
            let value = t.a(SCALAR_HEIGHT, r, p);
            for (j, sum) in row.iter_mut().enumerate() {
                *sum = value.mul_add(*t.b.add(p * SCALAR_WIDTH + j), *sum);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (j, &sum) in row.iter().enumerate().take(t.cols) {
            *t.c.add(r * t.c_stride + j) = sum;
        }
    }
}

/// The lanes of a 16-wide vector that `cols` (counted from its first lane) covers.
#[cfg(target_arch = "x86_64")]
fn mask16(cols: usize) -> __mmask16 {
    match cols {
        0 => 0,
        1..=15 => (1u16 << cols) - 1,
        _ => 0xffff,
    }
}

/// The AVX-512 path's panels' width.
const AVX512_WIDTH: usize = 32;

/// # Safety
/// AVX-512F; see [`run_tile`]. The packed panels are 8 rows and 32 columns wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const R: usize>(t: Tile) {
    const HEIGHT: usize = 8;
    const WIDTH: usize = AVX512_WIDTH;
    let masks = [mask16(t.cols), mask16(t.cols.saturating_sub(16))];
    let mut sums = [[_mm512_setzero_ps(); 2]; R];
    if t.load {
        for (r, row) in sums.iter_mut().enumerate() {
            for (h, sum) in row.iter_mut().enumerate() {
                // A masked-off half is never read: its address may lie past `c`.
                *sum = _mm512_maskz_loadu_ps(masks[h], t.c.wrapping_add(r * t.c_stride + 16 * h));
            }
        }
    }
    for p in 0..t.kc {
        let b0 = _mm512_loadu_ps(t.b.add(p * WIDTH));
        let b1 = _mm512_loadu_ps(t.b.add(p * WIDTH + 16));
        for (r, row) in sums.iter_mut().enumerate() {
            let value = _mm512_set1_ps(t.a(HEIGHT, r, p));
            row[0] = _mm512_fmadd_ps(value, b0, row[0]);
            row[1] = _mm512_fmadd_ps(value, b1, row[1]);
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (h, &sum) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(t.c.wrapping_add(r * t.c_stride + 16 * h), masks[h], sum);
        }
    }
}

/// `_mm256_maskload_ps`'s mask for the first `cols` of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask8(cols: usize) -> __m256i {
    const LANES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    // SAFETY: 8 of the 16 values from offset 0..=8.
    unsafe { _mm256_loadu_si256(LANES.as_ptr().add(8 - cols.min(8)).cast()) }
}

/// The AVX2 path's panels' width.
const AVX2_WIDTH: usize = 16;

/// # Safety
/// AVX2 and FMA; see [`run_tile`]. The packed panels are 6 rows and 16 columns wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(t: Tile) {
    const HEIGHT: usize = 6;
    const WIDTH: usize = AVX2_WIDTH;
    // A whole tile's entries move with plain loads and stores: AMD's CPUs run the masked ones as many
    // micro-ops, which on a Zen 3 EPYC took about 15 % of the tile's samples (perf) at the full shapes.
    let whole = t.cols == WIDTH;
    let masks = [mask8(t.cols), mask8(t.cols.saturating_sub(8))];
    let mut sums = [[_mm256_setzero_ps(); 2]; R];
    if t.load {
        for (r, row) in sums.iter_mut().enumerate() {
            for (h, sum) in row.iter_mut().enumerate() {
                let at = t.c.wrapping_add(r * t.c_stride + 8 * h);
                *sum = if whole { _mm256_loadu_ps(at) } else { _mm256_maskload_ps(at, masks[h]) };
            }
        }
    }
    for p in 0..t.kc {
        let b0 = _mm256_loadu_ps(t.b.add(p * WIDTH));
        let b1 = _mm256_loadu_ps(t.b.add(p * WIDTH + 8));
        for (r, row) in sums.iter_mut().enumerate() {
            let value = _mm256_set1_ps(t.a(HEIGHT, r, p));
            row[0] = _mm256_fmadd_ps(value, b0, row[0]);
            row[1] = _mm256_fmadd_ps(value, b1, row[1]);
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (h, &sum) in row.iter().enumerate() {
            let at = t.c.wrapping_add(r * t.c_stride + 8 * h);
            if whole {
                _mm256_storeu_ps(at, sum);
            } else {
                _mm256_maskstore_ps(at, masks[h], sum);
            }
        }
    }
}

/// The NEON path's tile: 8 rows of 12 columns, their 24 registers of sums beside 3 of `B` (of 32).
const NEON_HEIGHT: usize = 8;
const NEON_WIDTH: usize = 12;

/// # Safety
/// NEON; see [`run_tile`]. The packed panels are 8 rows and 12 columns wide.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn tile_neon<const R: usize>(t: Tile) {
    const QUARTERS: usize = NEON_WIDTH / LANES;
    // How many of each register's lanes lie in the tile's columns.
    let counts: [usize; QUARTERS] = std::array::from_fn(|q| t.cols.saturating_sub(LANES * q));
    let mut sums = [[vdupq_n_f32(0.0); QUARTERS]; R];
    if t.load {
        for (r, row) in sums.iter_mut().enumerate() {
            for (q, sum) in row.iter_mut().enumerate() {
                // A register wholly past the columns is never read: its address may lie past `c`.
                *sum = load_first(t.c.wrapping_add(r * t.c_stride + LANES * q), counts[q]);
            }
        }
    }
    for p in 0..t.kc {
        let b = t.b.add(p * NEON_WIDTH);
        let bs = [vld1q_f32(b), vld1q_f32(b.add(LANES)), vld1q_f32(b.add(2 * LANES))];
        for (r, row) in sums.iter_mut().enumerate() {
            let value = t.a(NEON_HEIGHT, r, p);
            for (sum, &other) in row.iter_mut().zip(&bs) {
                *sum = vfmaq_n_f32(*sum, other, value);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (q, &sum) in row.iter().enumerate() {
            store_first(t.c.wrapping_add(r * t.c_stride + LANES * q), counts[q], sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i + seed) * 7919) % 1013) as f32 / 1013.0 - 0.49).collect()
    }

    /// The definition, one entry at a time: what every path must equal bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn chains(dst: &mut [f32], stride: usize, m: usize, n: usize, k: usize, a: Operand, b: Operand, accumulate: bool) {
        for i in 0..m {
            for (j, entry) in dst[i * stride..][..n].iter_mut().enumerate() {
                let start = if accumulate { *entry } else { 0.0 };
                *entry = (0..k).fold(start, |c, p| a.at(i, p).mul_add(b.at(p, j), c));
            }
        }
    }

    /// Blocks as a machine with other caches might have cut them: small, ragged against the tiles' `k`.
    const OTHER_BLOCKING: Blocking = Blocking { mc: 24, kc: 5, nc: 64 };

    /// Every path against the chains written out, bit for bit: ragged tiles and blocks in both
    /// directions, `k` over several blocks, both layouts of each operand and `B` as panels, accumulating
    /// or not, one core or all, another blocking.
    #[test]
    fn every_path_computes_the_same_chains() {
        let (mc, kc, nc) = (BLOCKING.mc, BLOCKING.kc, BLOCKING.nc);
        for (m, n, k) in [(1, 1, 1), (13, 33, 7), (25, 70, 2 * kc + 5), (mc + 7, nc + 19, kc + 9), (3, 5, 0), (17, 9, 23)] {
            for (transpose_a, transpose_b, accumulate) in
                [(false, false, false), (true, false, true), (false, true, true), (true, true, false)]
            {
                let (a_data, b_data) = (values(m * k + 3, 1), values(k * n + 5, 2));
                let a = if transpose_a { Operand::transposed(&a_data, m) } else { Operand::rows(&a_data, k) };
                let b = if transpose_b { Operand::transposed(&b_data, k) } else { Operand::rows(&b_data, n) };
                let stride = n + 3;
                let start = values(m * stride, 3);
                let mut expected = start.clone();
                chains(&mut expected, stride, m, n, k, a, b, accumulate);
                for &isa in Isa::available() {
                    // `B` as panels packed ahead, as `pack_b` packs one block of all of `k`.
                    let width = Panels::width(isa);
                    let mut panels = vec![f32::NAN; Panels::len(k, n, width)];
                    if k > 0 {
                        pack_b(Tiles::of(isa), b, 0, k, 0, n, &mut panels);
                    }
                    let operands = [BOperand::Matrix(b), BOperand::Panels(Panels::new(&panels, k, n, width))];
                    for (cores, blocking) in
                        [(Cores::All, BLOCKING), (Cores::Calling, BLOCKING), (Cores::Calling, OTHER_BLOCKING)]
                    {
                        for (operand, b) in operands.iter().enumerate() {
                            let mut got = start.clone();
                            let packed = PackedA::blocked(isa, a, m, k, blocking, cores);
                            matmul_packed(Matrix::rows(&mut got, stride), n, &packed, *b, accumulate, cores);
                            let same = got.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(
                                same,
                                "{isa:?} {cores:?} {blocking:?} operand {operand}: {m}x{n}x{k} transposed {transpose_a}/{transpose_b}, accumulate {accumulate}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The chains are the sums: against f64 products.
    #[test]
    fn the_chains_are_the_products() {
        let (m, n, k) = (5, 7, 300);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let mut dst = vec![0.0; m * n];
        matmul(Matrix::rows(&mut dst, n), m, n, k, Operand::rows(&a, k), Operand::rows(&b, n), false, Cores::All);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
                assert!((f64::from(dst[i * n + j]) - want).abs() < 1e-4, "({i}, {j})");
            }
        }
    }
}
