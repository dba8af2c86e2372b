//! The f32 and f64 backward row sums (Σw·dy, Σw·dy·x̂), plain and pipelined with dx.

use super::*;

/// Raw pointers to element `i` of a row's γ and, if staged, its two gradient
/// accumulators.
type ParamPtrs = Option<(*const f32, Option<(*mut f32, *mut f32)>)>;

/// The accumulators of one row's f32 backward sums (AVX-512): Σw·dy and Σw·dy·x̂, each in
/// two f64 chains (low and high lanes). 64 values at a time are first summed in f32 —
/// four terms per lane, a few roundings of the element type — then widened once, which
/// keeps the lane-crossing conversions off the critical port. The plain and the
/// pipelined kernels, for any number of rows at a time, perform the same operations on
/// a row in the same order (bit-identical sums).
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

    /// (dy, x̂) of the 16 values at `x`, `dy`.
    ///
    /// # Safety
    /// `x` and `dy` must be valid for reading 16 values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn raw16(&self, x: *const f32, dy: *const f32) -> (__m512, __m512) {
        // SAFETY: 16 values readable at `x` and `dy` (the caller's contract).
        let (vx, vd) = unsafe { (_mm512_loadu_ps(x), _mm512_loadu_ps(dy)) };
        let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(vx, self.vm), self.va), self.vb);
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

    /// Adds the last values of the row (`x.len() < 64`) and reduces: (Σw·dy, Σw·dy·x̂).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    fn finish(&mut self, x: &[f32], dy: &[f32], mut p: Option<RowParam<'_, f32>>) -> (f64, f64) {
        let n = x.len();
        let base = ptrs(&mut p);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n, the length of the row, γ and its accumulators (checked
            // by the kernels that call `finish`); `p` is borrowed mutably here.
            unsafe {
                let (vd, xh) = self.raw16(x.as_ptr().add(i), dy.as_ptr().add(i));
                let vw = weigh(vd, xh, at(base, i));
                self.push(vw, _mm512_mul_ps(vw, xh));
            }
            i += 16;
        }
        let p = tail(p, i);
        let (r1, r2) = row_dsums_portable(&x[i..], &dy[i..], self.coef, p);
        let s = _mm512_add_pd(self.s[0], self.s[1]);
        let t = _mm512_add_pd(self.t[0], self.t[1]);
        (hsum512(s) + r1, hsum512(t) + r2)
    }
}

/// One row's 16 values (dy, x̂) → w·dy, staging dy·x̂ and dy first if `p` is staged.
///
/// # Safety
/// γ (and the accumulators) at `p` must be valid for reading (and writing) 16 values,
/// exclusively.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn weigh(vd: __m512, xh: __m512, p: ParamPtrs) -> __m512 {
    let Some((g, st)) = p else { return vd };
    // SAFETY: the caller's contract.
    unsafe {
        if let Some((sg, sb)) = st {
            _mm512_storeu_ps(sg, _mm512_fmadd_ps(vd, xh, _mm512_loadu_ps(sg)));
            _mm512_storeu_ps(sb, _mm512_add_ps(_mm512_loadu_ps(sb), vd));
        }
        _mm512_mul_ps(vd, _mm512_loadu_ps(g))
    }
}

/// Adds 64 columns of `R` rows sharing γ: each row sums its four blocks of 16 in f32
/// before one push; a staged γ gets the terms of all `R` rows summed in registers, then
/// one update of its accumulators per block of 16.
///
/// # Safety
/// Every `x[r]`, `dy[r]` must be valid for reading 64 values, γ (and the accumulators)
/// at `p` for reading (and writing) 64 values, exclusively; the caller must be compiled
/// with AVX-512 F/DQ and FMA (it is inlined into the `#[target_feature]` kernels: an
/// out-of-line call per 64 values kept the accumulators in memory).
#[inline(always)]
unsafe fn add64<const R: usize>(
    acc: &mut [DSums; R],
    x: [*const f32; R],
    dy: [*const f32; R],
    p: ParamPtrs,
) {
    // SAFETY: the caller runs with AVX-512 F (the contract).
    let z = unsafe { _mm512_setzero_ps() };
    let (mut ps, mut pt) = ([z; R], [z; R]);
    for k in 0..4 {
        let off = 16 * k;
        // SAFETY: all offsets below 64 (the caller's contract).
        unsafe {
            let (g, st) = match at(p, off) {
                Some((g, st)) => (Some(_mm512_loadu_ps(g)), st),
                None => (None, None),
            };
            let mut staged = st.map(|(sg, sb)| (_mm512_loadu_ps(sg), _mm512_loadu_ps(sb)));
            for r in 0..R {
                let (vd, xh) = acc[r].raw16(x[r].add(off), dy[r].add(off));
                if let Some((sg, sb)) = &mut staged {
                    *sg = _mm512_fmadd_ps(vd, xh, *sg);
                    *sb = _mm512_add_ps(*sb, vd);
                }
                let vw = g.map_or(vd, |g| _mm512_mul_ps(vd, g));
                if k == 0 {
                    (ps[r], pt[r]) = (vw, _mm512_mul_ps(vw, xh));
                } else {
                    ps[r] = _mm512_add_ps(ps[r], vw);
                    pt[r] = _mm512_fmadd_ps(vw, xh, pt[r]);
                }
            }
            if let (Some((a, b)), Some((sg, sb))) = (st, staged) {
                _mm512_storeu_ps(a, sg);
                _mm512_storeu_ps(b, sb);
            }
        }
    }
    for r in 0..R {
        // SAFETY: the caller runs with AVX-512 F and DQ (the contract).
        unsafe { acc[r].push(ps[r], pt[r]) };
    }
}

/// The base pointers of a row parameter.
fn ptrs(p: &mut Option<RowParam<'_, f32>>) -> ParamPtrs {
    p.as_mut().map(|(g, st)| {
        let st = st
            .as_mut()
            .map(|(sg, sb)| (sg.as_mut_ptr(), sb.as_mut_ptr()));
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

/// The values from `from` on of a row parameter.
fn tail<'a>(p: Option<RowParam<'a, f32>>, from: usize) -> Option<RowParam<'a, f32>> {
    p.map(|(g, st)| {
        (
            &g[from..],
            st.map(|(sg, sb)| (&mut sg[from..], &mut sb[from..])),
        )
    })
}

/// Asserts that rows, upstream gradients and the parameter all have length `n`.
fn check_rows<const R: usize>(n: usize, rows: &Rows<'_, f32, R>, p: &Option<RowParam<'_, f32>>) {
    for r in 0..R {
        assert!(
            rows.x[r].len() == n && rows.dy[r].len() == n,
            "rows of one length"
        );
    }
    if let Some((g, st)) = p {
        assert!(
            g.len() == n
                && st
                    .as_ref()
                    .is_none_or(|(sg, sb)| sg.len() == n && sb.len() == n),
            "parameters span the row"
        );
    }
}

/// The accumulators of `R` rows.
#[inline]
#[target_feature(enable = "avx512f")]
fn dsums_acc<const R: usize>(rows: &Rows<'_, f32, R>) -> [DSums; R] {
    let mut acc = [const { None }; R];
    for (a, &c) in acc.iter_mut().zip(&rows.c) {
        *a = Some(DSums::new(c));
    }
    acc.map(|a| a.expect("every row set"))
}

/// Each row's rest from `full` on, and the reduced sums. The accumulators are borrowed,
/// not moved: a by-value move copied them through memory with other access widths than
/// they were stored with, and the failed store forwarding waited for the store buffer
/// (full of dx) to drain, once per row.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,fma")]
fn dsums_finish<const R: usize>(
    acc: &mut [DSums; R],
    rows: &Rows<'_, f32, R>,
    full: usize,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let mut out = [(0.0, 0.0); R];
    for (r, a) in acc.iter_mut().enumerate() {
        let (x, dy) = (&rows.x[r][full..], &rows.dy[r][full..]);
        out[r] = a.finish(x, dy, tail(reborrow(&mut p), full));
    }
    out
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(in crate::kernels::reduce) fn dsums_f32_avx512<const R: usize>(
    rows: Rows<'_, f32, R>,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let n = rows.x[0].len();
    check_rows(n, &rows, &p);
    let mut acc = dsums_acc(&rows);
    let full = n - n % 64;
    let base = ptrs(&mut p);
    let mut i = 0;
    while i < full {
        // SAFETY: i + 64 ≤ n, the length of every row, γ and its accumulators (checked
        // above), which `p` borrows mutably for the loop.
        unsafe {
            let x = rows.x.map(|x| x.as_ptr().add(i));
            let dy = rows.dy.map(|d| d.as_ptr().add(i));
            add64(&mut acc, x, dy, at(base, i));
        }
        i += 64;
    }
    dsums_finish(&mut acc, &rows, full, p)
}

/// dx of the current rows (see `row_dx_portable`) with `dsums_f32_avx512` of the next
/// rows in the same loop.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(in crate::kernels::reduce) fn dx_then_dsums_f32_avx512<const R: usize>(
    cur: DxRows<'_, f32, R>,
    next: Rows<'_, f32, R>,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let n = next.x[0].len();
    check_rows(n, &next, &p);
    for r in 0..R {
        assert!(
            cur.x[r].len() == n && cur.dy[r].len() == n && cur.dx[r].len() == n,
            "rows of one length"
        );
    }
    assert!(
        cur.g.is_none_or(|g| g.len() == n),
        "parameters span the row"
    );
    let DxRows {
        x,
        dy,
        dx,
        c,
        g,
        stream,
    } = cur;
    let coef = c.map(|(c, m, a, b)| {
        (
            _mm512_set1_ps(c),
            _mm512_set1_ps(m),
            _mm512_set1_ps(a),
            _mm512_set1_ps(b),
        )
    });
    let (xp, dyp) = (x.map(|x| x.as_ptr()), dy.map(|d| d.as_ptr()));
    let dxp = dx.map(|d| d.as_mut_ptr());
    let g = g.map(|g| g.as_ptr());
    let mut out = [Aligned::new(dxp[0], n, stream); R];
    for (o, &p) in out.iter_mut().zip(&dxp) {
        *o = Aligned::new(p, n, stream);
    }
    let mut acc = dsums_acc(&next);
    let full = n - n % 64;
    let base = ptrs(&mut p);
    // The R rows after `next` (`Rows::ahead`): R·64 values of each per step.
    let ahead = next.ahead;
    let ax = next.x[R - 1].as_ptr().wrapping_add(n);
    let ad = next.dy[R - 1].as_ptr().wrapping_add(n);
    let mut i = 0;
    while i < full {
        // SAFETY: i + 64 ≤ n and every body block j + 64 ≤ n, the length of every row, γ
        // and accumulator (checked above); the dx rows are borrowed mutably, `p` for the
        // loop.
        unsafe {
            // The next rows' loads first: a load behind a store to an address 4 KiB
            // apart (rows of whole pages) would wait on it (4K aliasing).
            let nx = next.x.map(|x| x.as_ptr().add(i));
            let ndy = next.dy.map(|d| d.as_ptr().add(i));
            add64(&mut acc, nx, ndy, at(base, i));
            for k in 0..2 * R {
                prefetch2(ax.wrapping_add(R * i + 32 * k), ahead);
                prefetch2(ad.wrapping_add(R * i + 32 * k), ahead);
            }
            for r in 0..R {
                if let Some(j) = out[r].body(64) {
                    for j in [j, j + 16, j + 32, j + 48] {
                        dx16((xp[r], dyp[r], dxp[r]), coef[r], g, j, 0xffff, stream);
                    }
                }
            }
        }
        i += 64;
    }
    for r in 0..R {
        for (j, mask) in out[r].rest() {
            // SAFETY: the lanes of `mask` from `j` lie in the row (`Aligned::rest`).
            unsafe { dx16((xp[r], dyp[r], dxp[r]), coef[r], g, j, mask, stream) };
        }
    }
    out[0].fence();
    dsums_finish(&mut acc, &next, full, p)
}

#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels::reduce) fn dsums_f32_avx2(
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
    let (r1, r2) = row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
    (
        hsum256(_mm256_add_pd(s0, s1)) + r1,
        hsum256(_mm256_add_pd(t0, t1)) + r2,
    )
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(in crate::kernels::reduce) fn dsums_f64_avx512(
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
    let (r1, r2) = row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
    (hsum512(s0) + r1, hsum512(t0) + r2)
}

#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels::reduce) fn dsums_f64_avx2(
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
    let (r1, r2) = row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
    (hsum256(s0) + r1, hsum256(t0) + r2)
}
