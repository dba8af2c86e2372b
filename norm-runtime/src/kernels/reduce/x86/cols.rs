//! The column kernels (channels-last): sums, backward sums and the elementwise runs with
//! per-column coefficients in registers.

use super::*;

/// The elementwise passes over a run of `lines` contiguous lines of `w = 16·V` columns
/// from `start`, coefficients in registers: y = (x − m)·a + b, and with `DX`,
/// dx = dy·c + ((x − m)·a + b) — the portable kernels' operations, lane by lane.
/// `k` = (m, a, b, c). The run is walked as one flat range whose full vectors start at
/// 64-byte boundaries of the output ([`Aligned`]): the vector at flat offset `h + 16·t`
/// (`h` the head) holds columns `(h + 16·t + lane) mod w`, so the coefficients are
/// loaded once per run, rotated by `h`.
///
/// # Safety
/// As `RowReduce::col_affine`.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn col_run<const V: usize, const DX: bool>(
    x: &[f32],
    dy: &[f32],
    out: *mut f32,
    out_len: usize,
    (start, lines): (usize, usize),
    (m, a, b, c): (&[f32], &[f32], &[f32], &[f32]),
    stream: bool,
) {
    let w = 16 * V;
    assert!(
        m.len() == w && a.len() == w && b.len() == w && c.len() == w,
        "one coefficient per column"
    );
    let n = lines * w;
    let end = start.checked_add(n);
    let fits = |len: usize| end.is_some_and(|e| e <= len);
    assert!(
        fits(x.len()) && fits(out_len) && (!DX || fits(dy.len())),
        "run out of bounds"
    );
    // SAFETY: `start + n` ≤ every length (asserted): the offsets below stay in bounds.
    let (xp, dyp, op) = unsafe {
        (
            x.as_ptr().add(start),
            dy.as_ptr().add(start),
            out.add(start),
        )
    };
    let mut walk = Aligned::new(op, n, stream);
    let h = walk.head;
    let zs = _mm512_setzero_ps();
    // The coefficients of the vectors from offset h + 16·v (rotated) and from 0 (plain).
    let mut rot = [[zs; 4]; 4];
    let mut plain = [zs; 4];
    for (j, arr) in [m, a, b, c].into_iter().enumerate() {
        let mut twice = [0.0f32; 2 * 64];
        for (i, t) in twice[..2 * w].iter_mut().enumerate() {
            *t = arr[i % w];
        }
        for (v, r) in rot.iter_mut().take(V).enumerate() {
            // SAFETY: h + 16v + 16 ≤ 15 + 16·V ≤ 2w values of `twice`.
            r[j] = unsafe { _mm512_loadu_ps(twice.as_ptr().add(h + 16 * v)) };
        }
        // SAFETY: 16 ≤ w values of `arr`.
        plain[j] = unsafe { _mm512_loadu_ps(arr.as_ptr()) };
    }
    let ptrs = (xp, dyp, op);
    while let Some(i) = walk.body(w) {
        for (v, &k) in rot.iter().take(V).enumerate() {
            // SAFETY: a body block of the run (`Aligned::body`).
            unsafe { col16::<DX>(ptrs, i + 16 * v, k, 0xffff, stream) };
        }
    }
    for (i, mask) in walk.rest() {
        let k = if i < h { plain } else { rot[(i - h) / 16 % V] };
        // SAFETY: the lanes of `mask` from `i` lie in the run (`Aligned::rest`).
        unsafe { col16::<DX>(ptrs, i, k, mask, stream) };
    }
    walk.fence();
}

/// One vector of `col_run`: the lanes of `mask` from `i`, coefficients (m, a, b, c).
///
/// # Safety
/// The lanes of `mask` from `i` must lie in the run at `x`, `dy` (read with `DX`) and
/// `out` (written by no one else).
#[inline(always)]
unsafe fn col16<const DX: bool>(
    (x, dy, out): (*const f32, *const f32, *mut f32),
    i: usize,
    [vm, va, vb, vc]: [__m512; 4],
    mask: __mmask16,
    stream: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let v = load16(x.add(i), mask);
        let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb);
        let y = if DX {
            _mm512_add_ps(_mm512_mul_ps(load16(dy.add(i), mask), vc), xh)
        } else {
            xh
        };
        store16(out.add(i), y, mask, stream);
    }
}

/// `col_run` for the widths it has (16, 32, 48, 64); false otherwise.
///
/// # Safety
/// As `RowReduce::col_affine`.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(in crate::kernels::reduce) unsafe fn col_run_f32_avx512<const DX: bool>(
    x: &[f32],
    dy: &[f32],
    out: *mut f32,
    out_len: usize,
    run: (usize, usize),
    k: (&[f32], &[f32], &[f32], &[f32]),
    stream: bool,
) -> bool {
    match k.0.len() {
        // SAFETY: the caller's contract (as for every arm below).
        16 => unsafe { col_run::<1, DX>(x, dy, out, out_len, run, k, stream) },
        // SAFETY: as above.
        32 => unsafe { col_run::<2, DX>(x, dy, out, out_len, run, k, stream) },
        // SAFETY: as above.
        48 => unsafe { col_run::<3, DX>(x, dy, out, out_len, run, k, stream) },
        // SAFETY: as above.
        64 => unsafe { col_run::<4, DX>(x, dy, out, out_len, run, k, stream) },
        _ => return false,
    }
    true
}

/// Lines per flush of the f32 partial column sums of the backward pass.
const COL_FLUSH: usize = 8;

/// Checks that every line `o..o + w` lies in `len` values (one comparison per line).
#[inline(always)]
fn line_in(o: usize, w: usize, len: usize) {
    assert!(
        o.checked_add(w).is_some_and(|e| e <= len),
        "line out of bounds"
    );
}

/// `col_sums` of the `16·V` columns from `c0`, accumulators in registers for the whole
/// run of lines, exact f64 differences as the portable kernel.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,fma")]
fn col_sums_block<const V: usize, I: Iterator<Item = usize>>(
    x: &[f32],
    lines: I,
    c0: usize,
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let w = 16 * V;
    let (shift, sum, sq) = (
        &shift[c0..c0 + w],
        &mut sum[c0..c0 + w],
        &mut sq[c0..c0 + w],
    );
    let z = _mm512_setzero_pd();
    let mut h = [z; 8];
    for (k, v) in h.iter_mut().take(2 * V).enumerate() {
        // SAFETY: 8 f64 at 8k < w = shift.len().
        *v = unsafe { _mm512_loadu_pd(shift.as_ptr().add(8 * k)) };
    }
    let (mut s, mut q) = ([z; 8], [z; 8]);
    for o in lines {
        line_in(o + c0, w, x.len());
        for v in 0..V {
            // SAFETY: o + c0 + w ≤ x.len() (checked above), 16v + 16 ≤ w.
            let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(o + c0 + 16 * v)) };
            let lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xv)), h[2 * v]);
            let hi = _mm512_sub_pd(
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(xv)),
                h[2 * v + 1],
            );
            s[2 * v] = _mm512_add_pd(s[2 * v], lo);
            s[2 * v + 1] = _mm512_add_pd(s[2 * v + 1], hi);
            q[2 * v] = _mm512_fmadd_pd(lo, lo, q[2 * v]);
            q[2 * v + 1] = _mm512_fmadd_pd(hi, hi, q[2 * v + 1]);
        }
    }
    for k in 0..2 * V {
        // SAFETY: 8 f64 at 8k < w = sum.len() = sq.len().
        unsafe {
            let (ps, pq) = (sum.as_mut_ptr().add(8 * k), sq.as_mut_ptr().add(8 * k));
            _mm512_storeu_pd(ps, _mm512_add_pd(_mm512_loadu_pd(ps), s[k]));
            _mm512_storeu_pd(pq, _mm512_add_pd(_mm512_loadu_pd(pq), q[k]));
        }
    }
}

/// `col_sums`: blocks of 64 columns, then of 16, then the rest per line.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(in crate::kernels::reduce) fn col_sums_f32_avx512<I: Iterator<Item = usize> + Clone>(
    x: &[f32],
    lines: I,
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let w = shift.len();
    assert!(
        sum.len() == w && sq.len() == w,
        "one accumulator per column"
    );
    let mut c0 = 0;
    while c0 + 64 <= w {
        col_sums_block::<4, I>(x, lines.clone(), c0, shift, sum, sq);
        c0 += 64;
    }
    while c0 + 16 <= w {
        col_sums_block::<1, I>(x, lines.clone(), c0, shift, sum, sq);
        c0 += 16;
    }
    if c0 < w {
        for o in lines {
            let (h, s, q) = (&shift[c0..], &mut sum[c0..], &mut sq[c0..]);
            col_sums_portable(&x[o + c0..o + w], h, s, q);
        }
    }
}

/// `col_dsums` of the `16·V` columns from `c0`: f32 partial sums over up to
/// [`COL_FLUSH`] lines, then added into the f64 accumulators.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,fma")]
fn col_dsums_block<const V: usize, I: Iterator<Item = usize>>(
    (x, dy): (&[f32], &[f32]),
    lines: I,
    c0: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let w = 16 * V;
    let (m, a, b) = (&m[c0..c0 + w], &a[c0..c0 + w], &b[c0..c0 + w]);
    let (sg, sgx) = (&mut sg[c0..c0 + w], &mut sgx[c0..c0 + w]);
    let zs = _mm512_setzero_ps();
    let mut coef = [(zs, zs, zs); 4];
    for (v, k) in coef.iter_mut().take(V).enumerate() {
        // SAFETY: 16 values at 16v < w = m.len() = a.len() = b.len().
        *k = unsafe {
            (
                _mm512_loadu_ps(m.as_ptr().add(16 * v)),
                _mm512_loadu_ps(a.as_ptr().add(16 * v)),
                _mm512_loadu_ps(b.as_ptr().add(16 * v)),
            )
        };
    }
    let flush = |ps: &mut [__m512; 4], pt: &mut [__m512; 4], sg: &mut [f64], sgx: &mut [f64]| {
        for v in 0..V {
            for (half, acc) in [(0, &mut *sg), (1, &mut *sgx)] {
                let p = if half == 0 { ps[v] } else { pt[v] };
                let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(p));
                let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(p));
                // SAFETY: 16 f64 at 16v < w = acc.len().
                unsafe {
                    let q = acc.as_mut_ptr().add(16 * v);
                    _mm512_storeu_pd(q, _mm512_add_pd(_mm512_loadu_pd(q), lo));
                    _mm512_storeu_pd(q.add(8), _mm512_add_pd(_mm512_loadu_pd(q.add(8)), hi));
                }
            }
            ps[v] = _mm512_setzero_ps();
            pt[v] = _mm512_setzero_ps();
        }
    };
    let (mut ps, mut pt) = ([zs; 4], [zs; 4]);
    let mut n = 0;
    for o in lines {
        line_in(o + c0, w, x.len().min(dy.len()));
        for v in 0..V {
            let (vm, va, vb) = coef[v];
            // SAFETY: o + c0 + w ≤ the length of `x` and `dy` (checked above), 16v + 16 ≤ w.
            let (xv, d) = unsafe {
                (
                    _mm512_loadu_ps(x.as_ptr().add(o + c0 + 16 * v)),
                    _mm512_loadu_ps(dy.as_ptr().add(o + c0 + 16 * v)),
                )
            };
            let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(xv, vm), va), vb);
            ps[v] = _mm512_add_ps(ps[v], d);
            pt[v] = _mm512_fmadd_ps(d, xh, pt[v]);
        }
        n += 1;
        if n == COL_FLUSH {
            flush(&mut ps, &mut pt, sg, sgx);
            n = 0;
        }
    }
    if n > 0 {
        flush(&mut ps, &mut pt, sg, sgx);
    }
}

/// `col_dsums`: blocks of 64 columns, then of 16, then the rest per line.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(in crate::kernels::reduce) fn col_dsums_f32_avx512<I: Iterator<Item = usize> + Clone>(
    x: &[f32],
    dy: &[f32],
    lines: I,
    c: (&[f32], &[f32], &[f32]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let w = c.0.len();
    assert!(
        c.1.len() == w && c.2.len() == w && sg.len() == w && sgx.len() == w,
        "one coefficient and accumulator per column"
    );
    let mut c0 = 0;
    while c0 + 64 <= w {
        col_dsums_block::<4, I>((x, dy), lines.clone(), c0, c, sg, sgx);
        c0 += 64;
    }
    while c0 + 16 <= w {
        col_dsums_block::<1, I>((x, dy), lines.clone(), c0, c, sg, sgx);
        c0 += 16;
    }
    if c0 < w {
        let (m, a, b) = (&c.0[c0..], &c.1[c0..], &c.2[c0..]);
        for o in lines {
            let (xs, ds) = (&x[o + c0..o + w], &dy[o + c0..o + w]);
            col_dsums_portable(xs, ds, (m, a, b), &mut sg[c0..], &mut sgx[c0..]);
        }
    }
}
