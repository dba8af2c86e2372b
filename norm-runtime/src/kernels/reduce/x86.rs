//! The AVX-512 and AVX2+FMA kernels (x86-64): the shared vector helpers, the row sums
//! and the pipelined forward here; the backward row sums in `rows`, the column kernels
//! in `cols`.

use std::arch::x86_64::*;

use super::{
    col_dsums_portable, col_sums_portable, reborrow, row_dsums_portable, row_dsums_weighted,
    row_sums_portable, stage_portable, DxRows, RowParam, Rows,
};

/// Prefetches into L2 the two cache lines at `p`, `p + 16` if `ahead` (nothing is read:
/// a prefetch never faults, whatever the address).
#[inline(always)]
fn prefetch2(p: *const f32, ahead: bool) {
    if ahead {
        // SAFETY: SSE, part of the x86-64 baseline; a prefetch accesses no memory
        // architecturally and never faults.
        unsafe {
            _mm_prefetch::<_MM_HINT_T1>(p.cast());
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(16).cast());
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn hsum512(v: __m512d) -> f64 {
    _mm512_reduce_add_pd(v)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256d) -> f64 {
    let lo = _mm256_castpd256_pd128(v);
    let hi = _mm256_extractf128_pd::<1>(v);
    let s = _mm_add_pd(lo, hi);
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// 16 f32 → two vectors of 8 f64, shifted by `h`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn widen16(v: __m512, h: __m512d) -> (__m512d, __m512d) {
    (
        _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), h),
        _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v)), h),
    )
}

/// The eight accumulator chains of the f32 shifted sums (AVX-512): four for Σd, four
/// for Σd². One type for the plain and the pipelined reduction, so both perform the same
/// operations in the same order (bit-identical sums).
struct Sums16x2 {
    h: __m512d,
    s: [__m512d; 4],
    q: [__m512d; 4],
}

impl Sums16x2 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(shift: f64) -> Self {
        let z = _mm512_setzero_pd();
        Sums16x2 {
            h: _mm512_set1_pd(shift),
            s: [z; 4],
            q: [z; 4],
        }
    }

    /// Adds the 32 values at `p`. Eight independent chains: the add latency, not memory,
    /// would otherwise bound the loop. Halves are loaded as 256-bit vectors and widened
    /// from there (no lane extraction).
    ///
    /// # Safety
    /// `p` must be valid for reading 32 values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    unsafe fn add32(&mut self, p: *const f32) {
        // SAFETY: 32 values readable at `p` (the caller's contract).
        let [a, b, c, d] = [0, 8, 16, 24]
            .map(|k| unsafe { _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p.add(k))), self.h) });
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            self.s[k] = _mm512_add_pd(self.s[k], v);
            self.q[k] = _mm512_fmadd_pd(v, v, self.q[k]);
        }
    }

    /// Adds the last `rest.len() < 32` values and reduces: (Σd, Σd²).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    fn finish(mut self, mut rest: &[f32], shift: f64) -> (f64, f64) {
        if rest.len() >= 16 {
            // SAFETY: `rest` holds at least 16 f32: one unaligned 64-byte load in bounds.
            let v = unsafe { _mm512_loadu_ps(rest.as_ptr()) };
            let (a, b) = widen16(v, self.h);
            for (k, v) in [a, b].into_iter().enumerate() {
                self.s[k] = _mm512_add_pd(self.s[k], v);
                self.q[k] = _mm512_fmadd_pd(v, v, self.q[k]);
            }
            rest = &rest[16..];
        }
        let (rs, rq) = row_sums_portable(rest, shift);
        let [s0, s1, s2, s3] = self.s;
        let [q0, q1, q2, q3] = self.q;
        let s = _mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3));
        let q = _mm512_add_pd(_mm512_add_pd(q0, q1), _mm512_add_pd(q2, q3));
        (hsum512(s) + rs, hsum512(q) + rq)
    }
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) fn sums_f32_avx512(x: &[f32], shift: f64) -> (f64, f64) {
    let mut acc = Sums16x2::new(shift);
    let mut chunks = x.chunks_exact(32);
    for c in &mut chunks {
        // SAFETY: `c` holds 32 f32.
        unsafe { acc.add32(c.as_ptr()) };
    }
    acc.finish(chunks.remainder(), shift)
}

/// The elements before the first 64-byte boundary at or after `p` (at most `n`). The
/// elementwise passes start their full vectors there: an unaligned 64-byte store
/// straddles two cache lines, and a pass whose stores all do runs ~20 % slower when its
/// output streams from the last-level cache (`Vec` buffers start 16 bytes past a line).
#[inline(always)]
fn head16(p: *const f32, n: usize) -> usize {
    // f32 pointers are 4-byte aligned: the offset is below 16 elements.
    p.align_offset(64).min(n)
}

/// The mask of the first `k` of 16 lanes.
#[inline(always)]
fn lanes(k: usize) -> __mmask16 {
    if k >= 16 {
        0xffff
    } else {
        ((1u32 << k) - 1) as __mmask16
    }
}

/// Loads the lanes of `mask` at `p` (zero elsewhere); a full mask is a plain load.
///
/// # Safety
/// The lanes of `mask` at `p` must be readable.
#[inline(always)]
unsafe fn load16(p: *const f32, mask: __mmask16) -> __m512 {
    // SAFETY: the caller's contract; masked-off lanes are not accessed (no fault).
    unsafe {
        if mask == 0xffff {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }
}

/// Stores the lanes of `mask` of `v` at `p`. A full mask is a plain store, or with
/// `stream` at a 64-byte boundary a non-temporal one (which [`Aligned::fence`] orders).
///
/// # Safety
/// The lanes of `mask` at `p` must be writable, exclusively.
#[inline(always)]
unsafe fn store16(p: *mut f32, v: __m512, mask: __mmask16, stream: bool) {
    // SAFETY: the caller's contract; masked-off lanes are not written; the streaming
    // store's alignment is checked.
    unsafe {
        if mask != 0xffff {
            _mm512_mask_storeu_ps(p, mask, v)
        } else if stream && (p as usize).is_multiple_of(64) {
            _mm512_stream_ps(p, v)
        } else {
            _mm512_storeu_ps(p, v)
        }
    }
}

/// The blocks of an elementwise pass over `n` contiguous values whose vector stores
/// start at 64-byte boundaries: full body blocks, taken one at a time alongside the loop
/// of another pass ([`Aligned::body`]), then the head before the first boundary and the
/// values after the last block as masked vectors ([`Aligned::rest`]). With `stream`, the
/// full vectors are non-temporal stores: they skip the read for ownership and leave the
/// cache to the pass's inputs (see `simd::streams`).
#[derive(Clone, Copy)]
struct Aligned {
    /// Values before the first boundary.
    head: usize,
    /// Values of the pass.
    n: usize,
    /// The start of the next body block.
    next: usize,
    /// Whether full vectors are streamed.
    stream: bool,
}

impl Aligned {
    #[inline(always)]
    fn new(out: *const f32, n: usize, stream: bool) -> Self {
        let head = head16(out, n);
        Aligned {
            head,
            n,
            next: head,
            stream,
        }
    }

    /// The start of the next body block of `len` values (a multiple of 16), if it lies
    /// in the pass.
    #[inline(always)]
    fn body(&mut self, len: usize) -> Option<usize> {
        let i = self.next;
        (i + len <= self.n).then(|| {
            self.next = i + len;
            i
        })
    }

    /// The head and the values after the last body block, as (start, lanes) vectors.
    #[inline(always)]
    fn rest(&self) -> impl Iterator<Item = (usize, __mmask16)> {
        let head = (self.head > 0).then_some((0, lanes(self.head)));
        let n = self.n;
        let tail = (self.next..n).step_by(16).map(move |i| (i, lanes(n - i)));
        head.into_iter().chain(tail)
    }

    /// Orders the pass's streaming stores before anything that follows (a reader on
    /// another thread, after the task's join): required after non-temporal stores.
    #[inline(always)]
    fn fence(&self) {
        if self.stream {
            // SAFETY: SSE, part of the x86-64 baseline; `sfence` touches no memory.
            unsafe { _mm_sfence() };
        }
    }
}

/// y = ((x − m)·a + b)·γ + β on the lanes of `mask` from `i`: the portable kernel's
/// operations, lane by lane.
///
/// # Safety
/// The lanes of `mask` from `i` must lie in `x`, `y` (and γ, β); `y` written by no one
/// else.
#[inline(always)]
unsafe fn affine16(
    x: *const f32,
    y: *mut f32,
    (vm, va, vb): (__m512, __m512, __m512),
    p: Option<(*const f32, Option<*const f32>)>,
    i: usize,
    mask: __mmask16,
    stream: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut v = _mm512_sub_ps(load16(x.add(i), mask), vm);
        v = _mm512_add_ps(_mm512_mul_ps(v, va), vb);
        if let Some((g, bt)) = p {
            v = _mm512_mul_ps(v, load16(g.add(i), mask));
            if let Some(bt) = bt {
                v = _mm512_add_ps(v, load16(bt.add(i), mask));
            }
        }
        store16(y.add(i), v, mask, stream);
    }
}

/// dx = dy·(c·γ) + ((x − m)·a + b) on the lanes of `mask` from `i`: the portable
/// kernel's operations, lane by lane.
///
/// # Safety
/// The lanes of `mask` from `i` must lie in `x`, `dy`, `dx` (and γ); `dx` written by no
/// one else.
#[inline(always)]
unsafe fn dx16(
    (x, dy, dx): (*const f32, *const f32, *mut f32),
    (vc, vm, va, vb): (__m512, __m512, __m512, __m512),
    g: Option<*const f32>,
    i: usize,
    mask: __mmask16,
    stream: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let v = load16(x.add(i), mask);
        let d = load16(dy.add(i), mask);
        let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb);
        let k = g.map_or(vc, |g| _mm512_mul_ps(vc, load16(g.add(i), mask)));
        store16(
            dx.add(i),
            _mm512_add_ps(_mm512_mul_ps(d, k), xh),
            mask,
            stream,
        );
    }
}

/// `sums_f32_avx512` over `next` with the affine pass over (`x`, `y`) in the same loop.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) fn affine_then_sums_f32_avx512(
    x: &[f32],
    y: &mut [f32],
    (m, a, b): (f32, f32, f32),
    p: Option<(&[f32], Option<&[f32]>)>,
    (next, ahead): (&[f32], bool),
    shift: f64,
    stream: bool,
) -> (f64, f64) {
    let n = next.len();
    assert!(x.len() == n && y.len() == n, "rows of one length");
    if let Some((g, bt)) = p {
        assert!(
            g.len() == n && bt.is_none_or(|bt| bt.len() == n),
            "parameters span the row"
        );
    }
    let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
    let p = p.map(|(g, bt)| (g.as_ptr(), bt.map(|bt| bt.as_ptr())));
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut acc = Sums16x2::new(shift);
    // The row after `next`: prefetched along the loop when the caller says it is the
    // next call's (`ahead`).
    let after = next.as_ptr().wrapping_add(n);
    let mut out = Aligned::new(yp, n, stream);
    let full = n - n % 32;
    let mut i = 0;
    while i < full {
        // SAFETY: i + 32 ≤ n and the body block j + 32 ≤ n, the length of `next`, `x`,
        // `y` (and γ, β: asserted above); `y` is borrowed mutably.
        unsafe {
            // The next row's loads first: a load behind a store to an address 4 KiB
            // apart (rows of whole pages) would wait on it (4K aliasing).
            acc.add32(next.as_ptr().add(i));
            prefetch2(after.wrapping_add(i), ahead);
            if let Some(j) = out.body(32) {
                affine16(xp, yp, k, p, j, 0xffff, stream);
                affine16(xp, yp, k, p, j + 16, 0xffff, stream);
            }
        }
        i += 32;
    }
    for (j, mask) in out.rest() {
        // SAFETY: the lanes of `mask` from `j` lie in the row (`Aligned::rest`).
        unsafe { affine16(xp, yp, k, p, j, mask, stream) };
    }
    out.fence();
    // The rest of the sums, exactly as `sums_f32_avx512` finishes.
    acc.finish(&next[full..], shift)
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn sums_f32_avx2(x: &[f32], shift: f64) -> (f64, f64) {
    let h = _mm256_set1_pd(shift);
    let (mut s0, mut s1, mut q0, mut q1) = (
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
    );
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 f32 = 32 bytes; `loadu` has no alignment requirement.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), h);
        let hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)), h);
        s0 = _mm256_add_pd(s0, lo);
        s1 = _mm256_add_pd(s1, hi);
        q0 = _mm256_fmadd_pd(lo, lo, q0);
        q1 = _mm256_fmadd_pd(hi, hi, q1);
    }
    let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
    (
        hsum256(_mm256_add_pd(s0, s1)) + rs,
        hsum256(_mm256_add_pd(q0, q1)) + rq,
    )
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) fn sums_f64_avx512(x: &[f64], shift: f64) -> (f64, f64) {
    let h = _mm512_set1_pd(shift);
    let (mut s0, mut s1, mut q0, mut q1) = (
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
    );
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 f64 = 128 bytes: two unaligned 64-byte loads in bounds.
        let (a, b) = unsafe {
            (
                _mm512_loadu_pd(c.as_ptr()),
                _mm512_loadu_pd(c.as_ptr().add(8)),
            )
        };
        let (a, b) = (_mm512_sub_pd(a, h), _mm512_sub_pd(b, h));
        s0 = _mm512_add_pd(s0, a);
        s1 = _mm512_add_pd(s1, b);
        q0 = _mm512_fmadd_pd(a, a, q0);
        q1 = _mm512_fmadd_pd(b, b, q1);
    }
    let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
    (
        hsum512(_mm512_add_pd(s0, s1)) + rs,
        hsum512(_mm512_add_pd(q0, q1)) + rq,
    )
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn sums_f64_avx2(x: &[f64], shift: f64) -> (f64, f64) {
    let h = _mm256_set1_pd(shift);
    let (mut s0, mut s1, mut q0, mut q1) = (
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
    );
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 f64 = 64 bytes: two unaligned 32-byte loads in bounds.
        let (a, b) = unsafe {
            (
                _mm256_loadu_pd(c.as_ptr()),
                _mm256_loadu_pd(c.as_ptr().add(4)),
            )
        };
        let (a, b) = (_mm256_sub_pd(a, h), _mm256_sub_pd(b, h));
        s0 = _mm256_add_pd(s0, a);
        s1 = _mm256_add_pd(s1, b);
        q0 = _mm256_fmadd_pd(a, a, q0);
        q1 = _mm256_fmadd_pd(b, b, q1);
    }
    let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
    (
        hsum256(_mm256_add_pd(s0, s1)) + rs,
        hsum256(_mm256_add_pd(q0, q1)) + rq,
    )
}

mod cols;
mod rows;

pub(super) use cols::{col_dsums_f32_avx512, col_run_f32_avx512, col_sums_f32_avx512};
pub(super) use rows::{
    dsums_f32_avx2, dsums_f32_avx512, dsums_f64_avx2, dsums_f64_avx512, dx_then_dsums_f32_avx512,
};
