//! The process's allocator: the system's, except that large blocks are kept when freed and handed out
//! again for the next request of the same layout, and glibc's heap keeps the pages of smaller ones
//! mapped ([`keep_heap_mapped`]).
//!
//! A training step allocates the same tensors every step, and glibc maps each block of 32 MiB or more
//! afresh (its largest `mmap` threshold) and unmaps it when freed, so every step faulted in and cleared
//! the same gigabytes again, page by page: at the full shapes a training of 128 images took 2.0 million
//! page faults and about 5 s of its 37-40 s of CPU time in the kernel. Kept blocks are reused with their
//! pages mapped (a full step 1.15x as fast, QAT's 1.27x; README, Speed). This decides where memory comes
//! from, never what a kernel computes with it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::{Mutex, MutexGuard};

/// Blocks this large or larger are kept when freed (glibc reuses smaller ones from its own heaps).
const LARGE: usize = 4 << 20;
/// How many freed blocks are kept at most.
const SLOTS: usize = 256;
/// How many bytes the kept blocks hold at most, together: what a training step at the full shapes
/// frees and allocates again (at 1 GiB a full step found a kept block for 63 % of its large requests,
/// at 1.5 GiB 82 %, at 2 GiB 96 %), paid for with as much more resident memory at most (a full-shape
/// training's peak went from 1.45 to 2.50 GiB).
const BUDGET: usize = 2 << 30;

/// Makes glibc's heaps, which serve the blocks below [`LARGE`] bytes, keep their freed memory mapped, and
/// glibc map the blocks of [`LARGE`] bytes or more apart (which [`BlockReuse`] keeps). By default glibc gives
/// the top of its heaps back to the system once more than its trim threshold is free there, and moves
/// its mapping threshold with the blocks freed: a smoke training step freed its gradients and gave their
/// pages back, and faulted them in again the next step (293,000 page faults in a 3 s `vggq bench-train
/// --profile smoke`, 25,000 with this; `perf` put the faults at 6 % of a step's samples, the kernel's
/// TLB shootdowns on top). The price is memory: the heaps' peak stays mapped, as [`BUDGET`] bytes of
/// large blocks do. Nothing elsewhere than glibc's malloc is changed (its trim threshold and the mapping
/// threshold are glibc's own knobs).
pub fn keep_heap_mapped() {
    // Free memory a heap keeps at its top (at most): all of a run's heap, in practice.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const TRIM_THRESHOLD: usize = 1 << 30;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (parameter, value) in [(libc::M_MMAP_THRESHOLD, LARGE), (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)] {
        // SAFETY: `mallopt` only sets glibc's malloc parameters, under its own lock.
        let taken = unsafe { libc::mallopt(parameter, value as libc::c_int) };
        // Constants glibc takes on every machine it runs on (a test holds them to it).
        assert_eq!(taken, 1, "glibc's mallopt refused {value} for parameter {parameter}");
    }
}

/// [`System`], keeping freed blocks of [`LARGE`] to [`BUDGET`] bytes for reuse: at most [`SLOTS`] of
/// them, [`BUDGET`] bytes in all, the least recently freed going back to the system to make room.
pub struct BlockReuse {
    kept: Mutex<Kept>,
}

/// The freed blocks kept.
struct Kept {
    blocks: [Option<Block>; SLOTS],
    bytes: usize,
    /// How many blocks have been kept so far: a block's `freed` is the count when it came.
    count: u64,
}

/// A freed block: where it is, the layout it was allocated with, and when it was freed.
#[derive(Clone, Copy)]
struct Block {
    address: usize,
    layout: Layout,
    freed: u64,
}

impl BlockReuse {
    pub const fn new() -> Self {
        BlockReuse { kept: Mutex::new(Kept { blocks: [None; SLOTS], bytes: 0, count: 0 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Only a panic under the lock poisons it, and only a broken invariant of `keep` would raise one:
        // the blocks are still each a `System` block of its layout, so go on with them.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A kept block of exactly `layout`, taken out of the kept ones (none below [`LARGE`] bytes).
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() < LARGE {
            return None;
        }
        let mut kept = self.lock();
        let block = kept.blocks.iter_mut().find(|slot| slot.is_some_and(|block| block.layout == layout))?.take()?;
        kept.bytes -= layout.size();
        Some(block.address as *mut u8)
    }

    /// Keeps a freed block of at most [`BUDGET`] bytes, first giving the least recently freed ones back
    /// to the system until it fits.
    fn keep(&self, address: *mut u8, layout: Layout) {
        let mut kept = self.lock();
        while kept.bytes + layout.size() > BUDGET || kept.blocks.iter().all(Option::is_some) {
            let oldest = kept.blocks.iter_mut().filter(|slot| slot.is_some()).min_by_key(|slot| slot.map(|block| block.freed));
            // Some block is kept here: the budget holds this one alone, and some slot is taken.
            let block = oldest.and_then(Option::take).expect("a kept block");
            kept.bytes -= block.layout.size();
            // SAFETY: a kept block is a `System` block of its layout that no one else frees.
            unsafe { System.dealloc(block.address as *mut u8, block.layout) };
        }
        let freed = kept.count;
        kept.count += 1;
        kept.bytes += layout.size();
        let slot = kept.blocks.iter_mut().find(|slot| slot.is_none()).expect("a free slot");
        *slot = Some(Block { address: address as usize, layout, freed });
    }
}

impl Default for BlockReuse {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BlockReuse {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for block in kept.blocks.iter_mut().filter_map(Option::take) {
            // SAFETY: a kept block is a `System` block of its layout that no one else frees.
            unsafe { System.dealloc(block.address as *mut u8, block.layout) };
        }
    }
}

// SAFETY: every block handed out is a `System` block of exactly the layout asked for (kept blocks are
// matched by layout), and every block freed goes back to `System` with that layout, now or once it is
// given back to make room.
unsafe impl GlobalAlloc for BlockReuse {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(block) => block,
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(block) => {
                // SAFETY: the block holds `layout.size()` bytes.
                unsafe { block.write_bytes(0, layout.size()) };
                block
            }
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if (LARGE..=BUDGET).contains(&layout.size()) {
            self.keep(block, layout);
        } else {
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A block handed out is a `System` block of its layout, so the system resizes it in place or by
        // remapping, as it would without us.
        unsafe { System.realloc(block, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large block's size, not a multiple of a page.
    const BLOCK: usize = LARGE + 100;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    fn kept_addresses(allocator: &BlockReuse) -> Vec<usize> {
        let mut addresses: Vec<_> = allocator.lock().blocks.iter().flatten().map(|block| block.address).collect();
        addresses.sort();
        addresses
    }

    /// glibc takes both settings (it refuses a mapping threshold above 32 MiB, half its largest heap).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_keeps_the_heap_mapped_as_asked() {
        keep_heap_mapped();
    }

    #[test]
    fn a_freed_large_block_serves_the_next_request_of_its_layout_zeroed_where_asked() {
        let allocator = BlockReuse::new();
        unsafe {
            let first = allocator.alloc(layout(BLOCK));
            first.write_bytes(7, BLOCK);
            allocator.dealloc(first, layout(BLOCK));
            // Another size or another alignment is not served from it.
            for other in [layout(BLOCK + 64), Layout::from_size_align(BLOCK, 128).unwrap()] {
                let block = allocator.alloc(other);
                assert_ne!(block, first);
                allocator.dealloc(block, other);
            }
            // The same memory, as it was left (a block fresh from the system would read zero)...
            let again = allocator.alloc(layout(BLOCK));
            assert_eq!(again, first);
            assert!(std::slice::from_raw_parts(again, BLOCK).iter().all(|&byte| byte == 7));
            allocator.dealloc(again, layout(BLOCK));
            // ... or cleared where zeroed memory is asked for.
            let zeroed = allocator.alloc_zeroed(layout(BLOCK));
            assert_eq!(zeroed, first);
            assert!(std::slice::from_raw_parts(zeroed, BLOCK).iter().all(|&byte| byte == 0));
            allocator.dealloc(zeroed, layout(BLOCK));
        }
    }

    #[test]
    fn small_blocks_are_not_kept_and_the_least_recently_freed_make_room() {
        // Blocks are mapped by the system and never touched: no memory is used for them.
        unsafe {
            let allocator = BlockReuse::new();
            let small = allocator.alloc(layout(LARGE - 1));
            allocator.dealloc(small, layout(LARGE - 1));
            assert!(kept_addresses(&allocator).is_empty());

            // One block more than the slots: the first freed goes back.
            let blocks: Vec<_> = (0..=SLOTS).map(|_| allocator.alloc(layout(BLOCK))).collect();
            blocks.iter().for_each(|&block| allocator.dealloc(block, layout(BLOCK)));
            let mut newest: Vec<_> = blocks[1..].iter().map(|&block| block as usize).collect();
            newest.sort();
            assert_eq!(kept_addresses(&allocator), newest);
            assert_eq!(allocator.lock().bytes, SLOTS * BLOCK);

            // Two blocks of more than half the budget: the second freed takes the first's place.
            let allocator = BlockReuse::new();
            let half = layout(BUDGET / 2 + 64);
            let (first, second) = (allocator.alloc(half), allocator.alloc(half));
            allocator.dealloc(first, half);
            allocator.dealloc(second, half);
            assert_eq!(kept_addresses(&allocator), vec![second as usize]);
            assert_eq!(allocator.lock().bytes, half.size());

            // A block past the budget is never kept, and leaves the kept ones as they are.
            let huge = layout(BUDGET + 64);
            let block = allocator.alloc(huge);
            assert!(!block.is_null());
            allocator.dealloc(block, huge);
            assert_eq!(kept_addresses(&allocator), vec![second as usize]);
        }
    }
}
