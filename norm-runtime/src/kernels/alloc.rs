//! Output buffers: zero-filled arrays whose large interiors the OS backs with transparent
//! huge pages where a program has to ask for them (Linux with THP in `madvise` mode).
//!
//! A large zeroed `Vec` comes straight from `mmap` (glibc serves blocks of 32 MiB and more
//! that way and unmaps them on free), so its pages are mapped on first write, one 4 KiB
//! fault at a time: for a 32 MiB output that is 8192 faults per call, a large part of a
//! framework op's cost around normkit's kernels. Advising the buffer's 2 MiB-aligned
//! interior with `MADV_HUGEPAGE` before anything writes it lets the kernel map it in 2 MiB
//! pages, 512 times fewer faults. Elsewhere (other OSes, small buffers) the buffer is an
//! ordinary zeroed `Vec`.
//!
//! `NORMKIT_NO_HUGEPAGES=1` in the environment turns the advice off (read once), so one
//! benchmark binary measures both.

use ndarray::{Array, Dimension};

use crate::Float;

/// The huge page size the advice is aligned to (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Buffers below this many bytes are left alone: the advice pays off on buffers spanning
/// several huge pages, which are also the ones glibc maps fresh on every call.
const MIN_ADVISED: usize = 4 * HUGE_PAGE;

/// `n` zeros in a `Vec`, with the huge-page advice given before the first write.
pub fn zeroed_vec<T: Float>(n: usize) -> Vec<T> {
    // For f32/f64 this is `calloc`: a fresh mapping, not yet touched.
    let v = vec![T::zero(); n];
    advise_huge(v.as_ptr() as usize, std::mem::size_of_val(v.as_slice()));
    v
}

/// A zero-filled array of `shape` (standard layout) on an advised buffer: the drop-in
/// replacement of `Array::zeros` for outputs a call hands back to its caller.
pub fn zeros<T: Float, D: Dimension>(dim: D) -> Array<T, D> {
    let n = dim.size();
    Array::from_shape_vec(dim, zeroed_vec(n)).expect("the buffer has the shape's size")
}

/// Whether the advice is on (`NORMKIT_NO_HUGEPAGES` unset or `0`).
#[cfg(target_os = "linux")]
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NORMKIT_NO_HUGEPAGES").map_or(true, |v| v == "0"))
}

#[cfg(target_os = "linux")]
fn advise_huge(addr: usize, bytes: usize) {
    if bytes < MIN_ADVISED || !enabled() {
        return;
    }
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return;
    }
    // SAFETY: `[start, end)` lies inside the live allocation `[addr, addr + bytes)` (start is
    // rounded up and end down to the huge page size), and both are page aligned as madvise
    // requires. MADV_HUGEPAGE changes only how the kernel backs the pages, never their
    // contents, so the Vec's values and Rust's view of the memory are unchanged. The result is
    // ignored on purpose: on a kernel without THP the call fails and the buffer stays as it was.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_addr: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zero_and_shaped() {
        for n in [0usize, 7, 3 << 20, (9 << 20) + 5] {
            let a: Array<f32, _> = zeros(ndarray::Ix2(2, n));
            assert_eq!(a.shape(), &[2, n]);
            assert!(a.iter().all(|&v| v == 0.0));
            assert!(a.is_standard_layout());
        }
        let d: ndarray::ArrayD<f64> = zeros(ndarray::IxDyn(&[3, 1 << 20]));
        assert_eq!(d.len(), 3 << 20);
        assert!(d.iter().all(|&v| v == 0.0));
    }
}
