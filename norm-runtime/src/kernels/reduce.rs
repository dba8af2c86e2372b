//! The row kernels with explicit SIMD: the compiler does not vectorize an f32 → f64
//! widening reduction, and these loops carry the statistics and backward passes.
//!
//! * [`RowReduce::row_sums`]: Σ(x − h) and Σ(x − h)² of a line.
//! * [`RowReduce::row_dsums`]: Σw·dy and Σw·dy·x̂ with x̂ = (x − m)·a + b (computed in the
//!   element type, as the portable kernels do), with an optional γ along the line (w = γ)
//!   whose gradient sums Σdy·x̂ and Σdy are accumulated per element on the way.
//! * Software-pipelined pairs of rows: [`RowReduce::affine_then_sums`] (forward) and
//!   [`RowReduce::dx_then_dsums`] (backward) write the elementwise pass of one row in the same
//!   loop that reduces the next, so the stores of one overlap the loads of the other.
//!
//! Accumulation is in f64; lane sums reduce in a fixed order, so a level's result is
//! deterministic, and the plain and the pipelined kernels of a level share their accumulator
//! type, so their sums are bit-identical. Levels differ from each other only by rounding
//! (FMA, lane order).

use super::simd::{level, Level};

/// Accumulators of a row's γ-gradient sums in the element type, one slot per element:
/// dy·x̂ is added into the first, dy into the second. The caller flushes them into f64
/// every few rows, so each f32 partial sums only a handful of terms.
pub type Stage<'a, T> = (&'a mut [T], &'a mut [T]);

/// γ along a row (the weight of the backward sums) and, optionally, the staging
/// accumulators of its gradient sums.
pub type RowParam<'a, T> = (&'a [T], Option<Stage<'a, T>>);

/// Portable reference of [`RowReduce::row_sums`].
#[inline(always)]
pub(crate) fn row_sums_portable<T: crate::Float>(x: &[T], shift: f64) -> (f64, f64) {
    let (mut s, mut q) = (0.0, 0.0);
    for &v in x {
        let d = v.to_acc() - shift;
        s += d;
        q += d * d;
    }
    (s, q)
}

/// Portable reference of [`RowReduce::row_dsums`].
#[inline(always)]
pub(crate) fn row_dsums_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    c: (T, T, T),
    p: Option<RowParam<'_, T>>,
) -> (f64, f64) {
    row_dsums_weighted(x, dy, c, stage_portable(x, dy, c, p))
}

/// Adds a row's γ-gradient terms into its staging accumulators (if any), in the element
/// type; returns γ.
#[inline(always)]
pub(crate) fn stage_portable<'a, T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    p: Option<RowParam<'a, T>>,
) -> Option<&'a [T]> {
    let (g, stage) = p?;
    if let Some((sg, sb)) = stage {
        for (((&v, &d), sg), sb) in x.iter().zip(dy).zip(sg.iter_mut()).zip(sb.iter_mut()) {
            *sg = *sg + d * ((v - m) * a + b);
            *sb = *sb + d;
        }
    }
    Some(g)
}

/// The γ-gradient sums of a row straight into f64: dg[i] += dy[i]·x̂[i], db[i] += dy[i].
#[inline(always)]
pub(crate) fn row_dparams_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    dg: &mut [f64],
    db: &mut [f64],
) {
    for (((&v, &d), dg), db) in x.iter().zip(dy).zip(dg.iter_mut()).zip(db.iter_mut()) {
        let d = d.to_acc();
        *dg += d * ((v - m) * a + b).to_acc();
        *db += d;
    }
}

/// Σw·dy and Σw·dy·x̂ of a row (w = 1 when absent), portable.
#[inline(always)]
pub(crate) fn row_dsums_weighted<T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    w: Option<&[T]>,
) -> (f64, f64) {
    let (mut s1, mut s2) = (0.0, 0.0);
    for i in 0..x.len() {
        let d = dy[i].to_acc() * w.map_or(1.0, |w| w[i].to_acc());
        s1 += d;
        s2 += d * ((x[i] - m) * a + b).to_acc();
    }
    (s1, s2)
}

/// dx = dy·(c·γ) + ((x − m)·a + b) over a row (γ = 1 when absent), in the element type.
#[inline(always)]
pub(crate) fn row_dx_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    out: &mut [T],
    (c, m, a, b): (T, T, T, T),
    g: Option<&[T]>,
) {
    match g {
        Some(g) => {
            for (((o, &v), &d), &g) in out.iter_mut().zip(x).zip(dy).zip(g) {
                *o = d * (c * g) + ((v - m) * a + b);
            }
        }
        None => {
            for ((o, &v), &d) in out.iter_mut().zip(x).zip(dy) {
                *o = d * c + ((v - m) * a + b);
            }
        }
    }
}

/// Element types with SIMD row reductions.
pub trait RowReduce: Sized + Copy {
    /// Σ(x − shift) and Σ(x − shift)².
    fn row_sums(x: &[Self], shift: f64) -> (f64, f64);
    /// Σw·dy and Σw·dy·((x − m)·a + b), where w is γ along the row when `p` is given (and 1
    /// otherwise); with staging accumulators, dy·x̂ and dy are also added into them.
    fn row_dsums(
        x: &[Self],
        dy: &[Self],
        c: (Self, Self, Self),
        p: Option<RowParam<'_, Self>>,
    ) -> (f64, f64);
    /// Software pipelining of two rows: writes y = ((x − m)·a + b)·γ + β for the current row
    /// and returns the shifted sums of the `next` row (all rows of one length), with exactly
    /// the arithmetic of the separate passes, so results are bit-identical. `None` where no
    /// pipelined kernel exists for the type and level (the caller then runs the two passes).
    fn affine_then_sums(
        _x: &[Self],
        _y: &mut [Self],
        _c: (Self, Self, Self),
        _p: Option<(&[Self], Option<&[Self]>)>,
        _next: &[Self],
        _shift: f64,
    ) -> Option<(f64, f64)> {
        None
    }
    /// Software pipelining of two rows in the backward pass: writes
    /// dx = dy·(c·γ) + ((x − m)·a + b) for the current row (`g`: its γ, if along the row) and
    /// returns [`row_dsums`](RowReduce::row_dsums) of the `next` row (`next_c`: its (m, a, b),
    /// `p`: its γ and gradient accumulators), with exactly the arithmetic of the separate
    /// passes. The default runs the two passes one after the other.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn dx_then_dsums(
        x: &[Self],
        dy: &[Self],
        dx: &mut [Self],
        c: (Self, Self, Self, Self),
        g: Option<&[Self]>,
        next: (&[Self], &[Self]),
        next_c: (Self, Self, Self),
        p: Option<RowParam<'_, Self>>,
    ) -> (f64, f64)
    where
        Self: crate::Float,
    {
        row_dx_portable(x, dy, dx, c, g);
        Self::row_dsums(next.0, next.1, next_c, p)
    }
}

impl RowReduce for f32 {
    #[inline(always)]
    fn row_sums(x: &[f32], shift: f64) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::sums_f32_avx512(x, shift) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::sums_f32_avx2(x, shift) },
            _ => row_sums_portable(x, shift),
        }
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f32],
        dy: &[f32],
        c: (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::dsums_f32_avx512(x, dy, c, p) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::dsums_f32_avx2(x, dy, c, p) },
            _ => row_dsums_portable(x, dy, c, p),
        }
    }
    #[inline(always)]
    fn dx_then_dsums(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        c: (f32, f32, f32, f32),
        g: Option<&[f32]>,
        next: (&[f32], &[f32]),
        next_c: (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe {
                x86::dx_then_dsums_f32_avx512(x, dy, dx, c, g, next, next_c, p)
            },
            _ => {
                row_dx_portable(x, dy, dx, c, g);
                Self::row_dsums(next.0, next.1, next_c, p)
            }
        }
    }
    #[inline(always)]
    fn affine_then_sums(
        x: &[f32],
        y: &mut [f32],
        c: (f32, f32, f32),
        p: Option<(&[f32], Option<&[f32]>)>,
        next: &[f32],
        shift: f64,
    ) -> Option<(f64, f64)> {
        match level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                // SAFETY: `level()` never exceeds the features detected at run time.
                let sums = unsafe { x86::affine_then_sums_f32_avx512(x, y, c, p, next, shift) };
                Some(sums)
            }
            _ => None,
        }
    }
}

impl RowReduce for f64 {
    #[inline(always)]
    fn row_sums(x: &[f64], shift: f64) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::sums_f64_avx512(x, shift) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::sums_f64_avx2(x, shift) },
            _ => row_sums_portable(x, shift),
        }
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f64],
        dy: &[f64],
        c: (f64, f64, f64),
        p: Option<RowParam<'_, f64>>,
    ) -> (f64, f64) {
        // f64 rows: the staging loop is plain f64 arithmetic the compiler vectorizes.
        let w = stage_portable(x, dy, c, p);
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::dsums_f64_avx512(x, dy, c, w) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::dsums_f64_avx2(x, dy, c, w) },
            _ => row_dsums_weighted(x, dy, c, w),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{
        row_dsums_portable, row_dsums_weighted, row_dx_portable, row_sums_portable,
        stage_portable, RowParam,
    };

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

        /// Adds 32 values (`v0`, `v1`: 16 each). Eight independent chains: the add latency,
        /// not memory, would otherwise bound the loop.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        fn add32(&mut self, v0: __m512, v1: __m512) {
            let (a, b) = widen16(v0, self.h);
            let (c, d) = widen16(v1, self.h);
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
            // SAFETY: `c` holds 32 f32 = 128 bytes: two unaligned 64-byte loads in bounds.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(c.as_ptr()),
                    _mm512_loadu_ps(c.as_ptr().add(16)),
                )
            };
            acc.add32(v0, v1);
        }
        acc.finish(chunks.remainder(), shift)
    }

    /// `sums_f32_avx512` over `next` with the affine pass over (`x`, `y`) in the same loop.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn affine_then_sums_f32_avx512(
        x: &[f32],
        y: &mut [f32],
        (m, a, b): (f32, f32, f32),
        p: Option<(&[f32], Option<&[f32]>)>,
        next: &[f32],
        shift: f64,
    ) -> (f64, f64) {
        let n = next.len();
        assert!(x.len() == n && y.len() == n, "rows of one length");
        if let Some((g, bt)) = p {
            assert!(
                g.len() == n && bt.is_none_or(|bt| bt.len() == n),
                "parameters span the row"
            );
        }
        let (vm, va, vb) = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
        let mut acc = Sums16x2::new(shift);
        let full = n - n % 32;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 32 ≤ n, the length of `next`, `x`, `y` (and γ, β: asserted above):
            // unaligned 64-byte loads and stores in bounds.
            unsafe {
                let (v0, v1) = (
                    _mm512_loadu_ps(next.as_ptr().add(i)),
                    _mm512_loadu_ps(next.as_ptr().add(i + 16)),
                );
                for half in [0, 16] {
                    let mut v = _mm512_sub_ps(_mm512_loadu_ps(x.as_ptr().add(i + half)), vm);
                    v = _mm512_add_ps(_mm512_mul_ps(v, va), vb);
                    if let Some((g, bt)) = p {
                        v = _mm512_mul_ps(v, _mm512_loadu_ps(g.as_ptr().add(i + half)));
                        if let Some(bt) = bt {
                            v = _mm512_add_ps(v, _mm512_loadu_ps(bt.as_ptr().add(i + half)));
                        }
                    }
                    _mm512_storeu_ps(y.as_mut_ptr().add(i + half), v);
                }
                acc.add32(v0, v1);
            }
            i += 32;
        }
        // The rest of the affine pass, element by element as the portable kernel computes it.
        for k in full..n {
            let mut v = (x[k] - m) * a + b;
            if let Some((g, bt)) = p {
                v *= g[k];
                if let Some(bt) = bt {
                    // The same operations, in the same order, as the portable kernel.
                    v += bt[k];
                }
            }
            y[k] = v;
        }
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

    /// Raw pointers to element `i` of a row's γ and, if staged, its two gradient
    /// accumulators.
    type ParamPtrs = Option<(*const f32, Option<(*mut f32, *mut f32)>)>;

    /// The accumulators of the f32 backward sums (AVX-512): Σw·dy and Σw·dy·x̂, each in two
    /// f64 chains (low and high lanes). 64 values at a time are first summed in f32 —
    /// four terms per lane, a few roundings of the element type — then widened once, which
    /// keeps the lane-crossing conversions off the critical port. One type for the plain and
    /// the pipelined reduction, so both perform the same operations in the same order
    /// (bit-identical sums).
    struct DSums {
        coef: (f32, f32, f32),
        vm: __m512,
        va: __m512,
        vb: __m512,
        s: [__m512d; 2],
        t: [__m512d; 2],
    }

    impl DSums {
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn new((m, a, b): (f32, f32, f32)) -> Self {
            let z = _mm512_setzero_pd();
            DSums {
                coef: (m, a, b),
                vm: _mm512_set1_ps(m),
                va: _mm512_set1_ps(a),
                vb: _mm512_set1_ps(b),
                s: [z; 2],
                t: [z; 2],
            }
        }

        /// The 16 values at `x`, `dy`: (w·dy, x̂). With `p`, w = γ, and a staged γ gets
        /// dy·x̂ and dy added into its accumulators.
        ///
        /// # Safety
        /// `x`, `dy` (and γ) must be valid for reading 16 values, the accumulators for reading
        /// and writing 16 values, and nothing else may access them meanwhile.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        unsafe fn terms16(&self, x: *const f32, dy: *const f32, p: ParamPtrs) -> (__m512, __m512) {
            // SAFETY: 16 values readable at `x` and `dy` (the caller's contract).
            let (vx, mut vd) = unsafe { (_mm512_loadu_ps(x), _mm512_loadu_ps(dy)) };
            let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(vx, self.vm), self.va), self.vb);
            if let Some((g, stage)) = p {
                // SAFETY: 16 values readable at `g`, readable and writable (exclusively) at
                // the accumulators (the caller's contract).
                unsafe {
                    if let Some((sg, sb)) = stage {
                        _mm512_storeu_ps(sg, _mm512_fmadd_ps(vd, xh, _mm512_loadu_ps(sg)));
                        _mm512_storeu_ps(sb, _mm512_add_ps(_mm512_loadu_ps(sb), vd));
                    }
                    vd = _mm512_mul_ps(vd, _mm512_loadu_ps(g));
                }
            }
            (vd, xh)
        }

        /// Widens f32 partial sums of w·dy (`ps`) and w·dy·x̂ (`pt`) into the chains.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn push(&mut self, ps: __m512, pt: __m512) {
            let lo = |v: __m512| _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = |v: __m512| _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v));
            self.s[0] = _mm512_add_pd(self.s[0], lo(ps));
            self.s[1] = _mm512_add_pd(self.s[1], hi(ps));
            self.t[0] = _mm512_add_pd(self.t[0], lo(pt));
            self.t[1] = _mm512_add_pd(self.t[1], hi(pt));
        }

        /// Adds 64 values.
        ///
        /// # Safety
        /// As [`terms16`](Self::terms16), for 64 values.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        unsafe fn add64(&mut self, x: *const f32, dy: *const f32, p: ParamPtrs) {
            // SAFETY: the caller's contract covers the four blocks of 16.
            let [(d0, h0), (d1, h1), (d2, h2), (d3, h3)] =
                [0, 16, 32, 48].map(|k| unsafe { self.terms16(x.add(k), dy.add(k), at(p, k)) });
            let ps = _mm512_add_ps(_mm512_add_ps(d0, d1), _mm512_add_ps(d2, d3));
            let pt = _mm512_add_ps(
                _mm512_fmadd_ps(d1, h1, _mm512_mul_ps(d0, h0)),
                _mm512_fmadd_ps(d3, h3, _mm512_mul_ps(d2, h2)),
            );
            self.push(ps, pt);
        }

        /// Adds the last values of the row (`x.len() < 64`) and reduces: (Σw·dy, Σw·dy·x̂).
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        fn finish(mut self, x: &[f32], dy: &[f32], mut p: Option<RowParam<'_, f32>>) -> (f64, f64) {
            let n = x.len();
            let base = ptrs(&mut p);
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: i + 16 ≤ n, the length of the rows, γ and its accumulators
                // (checked by the kernels that call `finish`); `p` is borrowed mutably here.
                let (d, h) = unsafe { self.terms16(x.as_ptr().add(i), dy.as_ptr().add(i), at(base, i)) };
                self.push(d, _mm512_mul_ps(d, h));
                i += 16;
            }
            let p = p.map(|(g, st)| (&g[i..], st.map(|(sg, sb)| (&mut sg[i..], &mut sb[i..]))));
            let (r1, r2) = row_dsums_portable(&x[i..], &dy[i..], self.coef, p);
            let s = _mm512_add_pd(self.s[0], self.s[1]);
            let t = _mm512_add_pd(self.t[0], self.t[1]);
            (hsum512(s) + r1, hsum512(t) + r2)
        }
    }

    /// The base pointers of a row parameter.
    fn ptrs(p: &mut Option<RowParam<'_, f32>>) -> ParamPtrs {
        p.as_mut().map(|(g, st)| {
            let st = st.as_mut().map(|(sg, sb)| (sg.as_mut_ptr(), sb.as_mut_ptr()));
            (g.as_ptr(), st)
        })
    }

    /// The pointers `i` elements further (`wrapping_add`: only dereferenced in bounds).
    #[inline(always)]
    fn at(p: ParamPtrs, i: usize) -> ParamPtrs {
        p.map(|(g, st)| {
            let st = st.map(|(sg, sb)| (sg.wrapping_add(i), sb.wrapping_add(i)));
            (g.wrapping_add(i), st)
        })
    }

    /// The last `n − from` values of a row parameter.
    fn tail<'a>(p: Option<RowParam<'a, f32>>, from: usize) -> Option<RowParam<'a, f32>> {
        p.map(|(g, st)| (&g[from..], st.map(|(sg, sb)| (&mut sg[from..], &mut sb[from..]))))
    }

    /// Asserts that a row, its upstream gradient and its parameter have length `n`.
    fn check_row(n: usize, x: &[f32], dy: &[f32], p: &Option<RowParam<'_, f32>>) {
        assert!(x.len() == n && dy.len() == n, "rows of one length");
        if let Some((g, st)) = p {
            assert!(
                g.len() == n && st.as_ref().is_none_or(|(sg, sb)| sg.len() == n && sb.len() == n),
                "parameters span the row"
            );
        }
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dsums_f32_avx512(
        x: &[f32],
        dy: &[f32],
        c: (f32, f32, f32),
        mut p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let n = x.len();
        check_row(n, x, dy, &p);
        let mut acc = DSums::new(c);
        let full = n - n % 64;
        let base = ptrs(&mut p);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 64 ≤ n, the length of `x`, `dy`, γ and its accumulators (checked
            // above), which `p` borrows mutably for the loop.
            unsafe { acc.add64(x.as_ptr().add(i), dy.as_ptr().add(i), at(base, i)) };
            i += 64;
        }
        acc.finish(&x[full..], &dy[full..], tail(p, full))
    }

    /// dx of the current row (see `row_dx_portable`) with `dsums_f32_avx512` of the next row
    /// in the same loop.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dx_then_dsums_f32_avx512(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        (c, m, a, b): (f32, f32, f32, f32),
        g: Option<&[f32]>,
        (nx, ndy): (&[f32], &[f32]),
        next_c: (f32, f32, f32),
        mut p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let n = nx.len();
        check_row(n, nx, ndy, &p);
        assert!(
            x.len() == n && dy.len() == n && dx.len() == n && g.is_none_or(|g| g.len() == n),
            "rows of one length"
        );
        let (vc, vm, va, vb) = (
            _mm512_set1_ps(c),
            _mm512_set1_ps(m),
            _mm512_set1_ps(a),
            _mm512_set1_ps(b),
        );
        let mut acc = DSums::new(next_c);
        let full = n - n % 64;
        let base = ptrs(&mut p);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 64 ≤ n, the length of every row, γ and accumulator (checked above):
            // unaligned loads and stores in bounds; `p` is borrowed mutably for the loop.
            unsafe {
                // The next row's loads first: a load behind a store to an address 4 KiB
                // apart (rows of whole pages) would wait on it (4K aliasing).
                acc.add64(nx.as_ptr().add(i), ndy.as_ptr().add(i), at(base, i));
                for j in [i, i + 16, i + 32, i + 48] {
                    let v = _mm512_loadu_ps(x.as_ptr().add(j));
                    let d = _mm512_loadu_ps(dy.as_ptr().add(j));
                    let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb);
                    let cg = match g {
                        Some(g) => _mm512_mul_ps(vc, _mm512_loadu_ps(g.as_ptr().add(j))),
                        None => vc,
                    };
                    _mm512_storeu_ps(dx.as_mut_ptr().add(j), _mm512_add_ps(_mm512_mul_ps(d, cg), xh));
                }
            }
            i += 64;
        }
        // The rest of dx exactly as the portable kernel computes it.
        let g = g.map(|g| &g[full..]);
        row_dx_portable(&x[full..], &dy[full..], &mut dx[full..], (c, m, a, b), g);
        acc.finish(&nx[full..], &ndy[full..], tail(p, full))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dsums_f32_avx2(
        x: &[f32],
        dy: &[f32],
        (m, a, b): (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let w = stage_portable(x, dy, (m, a, b), p);
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f32]>::len));
        let (vm, va, vb) = (_mm256_set1_ps(m), _mm256_set1_ps(a), _mm256_set1_ps(b));
        let (mut s0, mut s1, mut t0, mut t1) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        let full = n - n % 8;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 ≤ n ≤ the length of `x`, `dy` (and `w`): 32-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm256_mul_ps(vd, unsafe { _mm256_loadu_ps(w.as_ptr().add(i)) });
            }
            let xh = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(vx, vm), va), vb);
            let dl = _mm256_cvtps_pd(_mm256_castps256_ps128(vd));
            let dh = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(vd));
            let xl = _mm256_cvtps_pd(_mm256_castps256_ps128(xh));
            let xhh = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xh));
            s0 = _mm256_add_pd(s0, dl);
            s1 = _mm256_add_pd(s1, dh);
            t0 = _mm256_fmadd_pd(dl, xl, t0);
            t1 = _mm256_fmadd_pd(dh, xhh, t1);
            i += 8;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (
            hsum256(_mm256_add_pd(s0, s1)) + r1,
            hsum256(_mm256_add_pd(t0, t1)) + r2,
        )
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dsums_f64_avx512(
        x: &[f64],
        dy: &[f64],
        (m, a, b): (f64, f64, f64),
        w: Option<&[f64]>,
    ) -> (f64, f64) {
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f64]>::len));
        let (vm, va, vb) = (_mm512_set1_pd(m), _mm512_set1_pd(a), _mm512_set1_pd(b));
        let (mut s0, mut t0) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let full = n - n % 8;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 ≤ n ≤ the length of `x`, `dy` (and `w`): 64-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm512_loadu_pd(x.as_ptr().add(i)),
                    _mm512_loadu_pd(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm512_mul_pd(vd, unsafe { _mm512_loadu_pd(w.as_ptr().add(i)) });
            }
            let xh = _mm512_add_pd(_mm512_mul_pd(_mm512_sub_pd(vx, vm), va), vb);
            s0 = _mm512_add_pd(s0, vd);
            t0 = _mm512_fmadd_pd(vd, xh, t0);
            i += 8;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (hsum512(s0) + r1, hsum512(t0) + r2)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dsums_f64_avx2(
        x: &[f64],
        dy: &[f64],
        (m, a, b): (f64, f64, f64),
        w: Option<&[f64]>,
    ) -> (f64, f64) {
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f64]>::len));
        let (vm, va, vb) = (_mm256_set1_pd(m), _mm256_set1_pd(a), _mm256_set1_pd(b));
        let (mut s0, mut t0) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let full = n - n % 4;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 4 ≤ n ≤ the length of `x`, `dy` (and `w`): 32-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm256_loadu_pd(x.as_ptr().add(i)),
                    _mm256_loadu_pd(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm256_mul_pd(vd, unsafe { _mm256_loadu_pd(w.as_ptr().add(i)) });
            }
            let xh = _mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(vx, vm), va), vb);
            s0 = _mm256_add_pd(s0, vd);
            t0 = _mm256_fmadd_pd(vd, xh, t0);
            i += 4;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (hsum256(s0) + r1, hsum256(t0) + r2)
    }
}
