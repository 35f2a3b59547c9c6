//! A kernel's output whose memory each parallel task clears itself, just before it writes its part.
//!
//! `vec![0.0; len]` clears a whole output on the calling thread before the tasks start. At the smoke
//! shapes that `memset` was 7 % of the calling thread's samples in a training step (`perf`, 2-core Intel
//! Xeon), with the other core idle meanwhile, and an output larger than the caches left them cleared
//! and cold before the kernel wrote it again. Cleared part by part in the tasks, the clearing runs on
//! every core, each part in the cache the kernel writes it through. What a kernel computes is unchanged:
//! every part is cleared before it is handed to the kernel, as the whole output was.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A number whose bytes all zero are the number zero: what clearing writes.
///
/// # Safety
/// All-zero bytes must be a valid value of the type.
pub(super) unsafe trait Zero: Copy + Send + Sync {}

// SAFETY: all-zero bytes are +0.0 and 0.
unsafe impl Zero for f32 {}
unsafe impl Zero for u8 {}

/// An output of `len` values, not yet cleared: [`Fresh::parts`] or [`Fresh::par_chunks_mut`] split it
/// once into parts that are cleared when taken, and [`Fresh::into_vec`] gives the values once every part
/// has been.
pub(super) struct Fresh<T> {
    /// Capacity for `len` values and length 0, until [`Fresh::into_vec`].
    values: Vec<T>,
    len: usize,
    /// Values of the parts cleared so far.
    cleared: AtomicUsize,
    /// Whether the output has been split: a second split would hand out the same values again, and
    /// count them twice.
    split: bool,
}

/// A part of a [`Fresh`] output, not yet cleared.
pub(super) struct Part<'a, T> {
    values: &'a mut [MaybeUninit<T>],
    cleared: &'a AtomicUsize,
}

/// Values a task cleared, added to their output's count once, when the task is done with it (a first
/// version added once a part, thousands of 2 x 2 planes a call on one contended counter, and ran slower
/// than clearing on the calling thread).
struct Tally<'a> {
    values: usize,
    cleared: &'a AtomicUsize,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.cleared.fetch_add(self.values, Ordering::Relaxed);
    }
}

impl<'a, T: Zero> Part<'a, T> {
    /// The parts, every value zero, ready to be written.
    pub fn clear_each(parts: Vec<Self>) -> Vec<&'a mut [T]> {
        let mut tally = parts.first().map(|part| Tally { values: 0, cleared: part.cleared });
        parts.into_iter().map(|part| part.cleared_into(tally.as_mut().expect("a tally for the parts"))).collect()
    }

    /// The part in chunks of `chunk` values (the last may be shorter), in parallel, each cleared by the
    /// task that takes it.
    pub fn par_chunks_mut(self, chunk: usize) -> impl IndexedParallelIterator<Item = &'a mut [T]> {
        let cleared = self.cleared;
        self.values
            .par_chunks_mut(chunk)
            .map_init(move || Tally { values: 0, cleared }, move |tally, values| Part { values, cleared }.cleared_into(tally))
    }

    fn cleared_into(self, tally: &mut Tally<'_>) -> &'a mut [T] {
        // SAFETY: the part holds `len()` values, and all-zero bytes are a `T` (`Zero`).
        unsafe { self.values.as_mut_ptr().write_bytes(0, self.values.len()) };
        tally.values += self.values.len();
        // SAFETY: every value of the part was just written, and `MaybeUninit<T>` has `T`'s layout.
        unsafe { &mut *(self.values as *mut [MaybeUninit<T>] as *mut [T]) }
    }
}

impl<T: Zero> Fresh<T> {
    pub fn new(len: usize) -> Self {
        Fresh { values: Vec::with_capacity(len), len, cleared: AtomicUsize::new(0), split: false }
    }

    /// The output in parts of `chunk` values (the last may be shorter), in order.
    ///
    /// Panics if the output was split before, or if `chunk` is 0.
    pub fn parts(&mut self, chunk: usize) -> impl Iterator<Item = Part<'_, T>> {
        let (values, cleared) = self.split();
        values.chunks_mut(chunk).map(move |values| Part { values, cleared })
    }

    /// The output in chunks of `chunk` values (the last may be shorter), in parallel, each cleared by the
    /// task that takes it.
    ///
    /// Panics if the output was split before, or if `chunk` is 0.
    pub fn par_chunks_mut(&mut self, chunk: usize) -> impl IndexedParallelIterator<Item = &mut [T]> {
        let (values, cleared) = self.split();
        Part { values, cleared }.par_chunks_mut(chunk)
    }

    fn split(&mut self) -> (&mut [MaybeUninit<T>], &AtomicUsize) {
        assert!(!self.split, "an output is split once");
        self.split = true;
        (&mut self.values.spare_capacity_mut()[..self.len], &self.cleared)
    }

    /// The values, once every part has been cleared (and written).
    ///
    /// Panics if some part never was: a kernel that left part of its output unwritten.
    pub fn into_vec(mut self) -> Vec<T> {
        let cleared = self.cleared.into_inner();
        assert_eq!(cleared, self.len, "a kernel cleared {cleared} of its output's {} values", self.len);
        // SAFETY: the parts of the one split do not overlap and lie within the first `len` values, and
        // each was counted once it was cleared: `len` counted means all of them were.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_cleared_before_it_is_written() {
        let mut output = Fresh::<f32>::new(10);
        output.par_chunks_mut(4).enumerate().for_each(|(i, chunk)| {
            assert!(chunk.iter().all(|&v| v.to_bits() == 0));
            chunk[0] = i as f32 + 1.0;
        });
        assert_eq!(output.into_vec(), [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0]);

        let mut positions = Fresh::<u8>::new(7);
        let mut parts: Vec<Part<'_, u8>> = positions.parts(2).collect();
        let last = parts.pop().expect("four parts");
        for (i, part) in Part::clear_each(parts).into_iter().enumerate().rev() {
            part[0] = i as u8 + 1;
        }
        Part::clear_each(vec![last])[0][0] = 4;
        assert_eq!(positions.into_vec(), [1, 0, 2, 0, 3, 0, 4]);

        let mut rows = Fresh::<f32>::new(6);
        rows.parts(3).collect::<Vec<_>>().into_par_iter().for_each(|row| row.par_chunks_mut(2).for_each(|c| c[0] = 1.0));
        assert_eq!(rows.into_vec(), [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
        assert!(Fresh::<f32>::new(0).into_vec().is_empty());
    }

    #[test]
    #[should_panic(expected = "a kernel cleared 4 of its output's 10 values")]
    fn a_part_never_cleared_is_an_error() {
        let mut output = Fresh::<f32>::new(10);
        output.par_chunks_mut(4).take(1).for_each(|chunk| chunk.fill(1.0));
        output.into_vec();
    }

    #[test]
    #[should_panic(expected = "an output is split once")]
    fn an_output_is_split_once() {
        let mut output = Fresh::<f32>::new(10);
        output.par_chunks_mut(10).for_each(|chunk| chunk.fill(1.0));
        Part::clear_each(output.parts(10).collect())[0][0] = 2.0;
    }
}
