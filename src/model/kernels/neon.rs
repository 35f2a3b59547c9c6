//! What NEON lacks for the kernels' ragged edges: masked loads and stores. A vector's first `count`
//! lanes are read or written through a buffer where fewer than four remain, so that nothing past them
//! is touched; the lanes past them read as zeros, as the definitions have it.

use std::arch::aarch64::*;

/// Lanes in a NEON register of f32.
pub(super) const LANES: usize = 4;

/// The first `count` values from `from` in the first lanes, zeros in the rest.
///
/// # Safety
/// `from` must hold `count.min(4)` readable values (none is read where `count` is 0).
#[inline(always)]
pub(super) unsafe fn load_first(from: *const f32, count: usize) -> float32x4_t {
    unsafe {
        if count >= LANES {
            return vld1q_f32(from);
        }
        let mut lanes = [0.0f32; LANES];
        std::ptr::copy_nonoverlapping(from, lanes.as_mut_ptr(), count);
        vld1q_f32(lanes.as_ptr())
    }
}

/// The first `count` lanes of `value` to `to`.
///
/// # Safety
/// `to` must hold `count.min(4)` writable values (none is written where `count` is 0).
#[inline(always)]
pub(super) unsafe fn store_first(to: *mut f32, count: usize, value: float32x4_t) {
    unsafe {
        if count >= LANES {
            return vst1q_f32(to, value);
        }
        let mut lanes = [0.0f32; LANES];
        vst1q_f32(lanes.as_mut_ptr(), value);
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), to, count);
    }
}
