//! The column kernels of the small column forward (`stage::small`: a plan of `lines`
//! contiguous lines of `w` columns small enough to run as one task, BatchNorm1d on
//! `[32, 128]`), for `f32` at AVX2's 8 lanes only; other levels keep the executor's
//! kernels (`Elem::col_sums`, `Elem::col_affine`), and so does AVX2 where these decline.
//!
//! Both walk a block of columns down all the lines with its state in registers:
//!
//! * [`sums`]: the shifted column sums of `cols::col_sums_f32`, the same operations per
//!   column in the same (line) order, so the same bits: d = x − h exact in `f64`, Σd, and
//!   Σd² fused. The subtraction and the addition are issued as fused multiply-adds by
//!   1 (`x·1 + (−h)` and `d·1 + Σ`, rounded once: the same values as `x − h` and `Σ + d`),
//!   which moves them from the two FP add pipes that also convert `f32 → f64` to the two
//!   FMA pipes (AMD Zen 3: the widening and the subtractions and additions all queued on
//!   the add pipes). The whole lines in one walk per block: no tile of lines whose
//!   accumulators are stored and reloaded.
//! * [`affine`]: y = (x − m)·a + b (`cols::col_vec`'s operations) with the coefficients of
//!   a block of columns in registers across the lines (the executor's kernel for lines
//!   wider than a run loads the three coefficients beside every value: four loads per
//!   vector), full vector stores at aligned addresses of the output (the seam vector of
//!   each line spans into the next, as in `cols::col_lines`).

use super::sums::{ld, st};
use crate::kernels::isa::{dispatch, Aligned, Isa, WithIsa};

/// `f32` lanes of the one level these kernels run at (AVX2).
const LANES: usize = 8;

/// Vectors of columns per block of [`sums`]: 3 vectors (24 columns) hold 12 `f64`
/// accumulators, with the negated shifts read from memory.
const SUM_V: usize = 3;

/// Vectors of columns per block of [`affine`]: 4 vectors (32 columns) of three
/// coefficients each, 12 registers.
const AFFINE_V: usize = 4;

/// The shifted column sums of `x`, whole lines of `w = shift.len()` columns: for every
/// column `c`, over the lines in order, `sum[c] += x − shift[c]`, `sq[c] += (x − shift[c])²`
/// (as `Elem::col_sums` over all lines of `x`, bit for bit). False, doing nothing, where
/// the level is not AVX2 or `w` is not a multiple of 8.
pub(crate) fn sums(x: &[f32], shift: &[f64], sum: &mut [f64], sq: &mut [f64]) -> bool {
    /// The arguments.
    struct Op<'a>(&'a [f32], &'a [f64], &'a mut [f64], &'a mut [f64]);
    impl WithIsa for Op<'_> {
        type Out = bool;
        #[inline(always)]
        fn run<S: Isa>(self, s: S) -> bool {
            let Op(x, shift, sum, sq) = self;
            let w = shift.len();
            if S::LANES != LANES || w == 0 || !w.is_multiple_of(LANES) {
                return false;
            }
            assert!(
                sum.len() == w && sq.len() == w && x.len().is_multiple_of(w),
                "one accumulator per column, whole lines"
            );
            let mut c0 = 0;
            while c0 + SUM_V * LANES <= w {
                sums_block::<S, SUM_V>(s, x, c0, shift, (&mut *sum, &mut *sq));
                c0 += SUM_V * LANES;
            }
            while c0 < w {
                sums_block::<S, 1>(s, x, c0, shift, (&mut *sum, &mut *sq));
                c0 += LANES;
            }
            true
        }
    }
    dispatch(Op(x, shift, sum, sq))
}

/// [`sums`] of the `8·V` columns from `c0`, all the lines of `w = shift.len()` columns.
#[inline(always)]
fn sums_block<S: Isa, const V: usize>(
    s: S,
    x: &[f32],
    c0: usize,
    shift: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
) {
    let w = shift.len();
    let (n, half) = (LANES * V, LANES / 2);
    let (sum, sq) = (&mut sum[c0..c0 + n], &mut sq[c0..c0 + n]);
    // −shift: negation is exact, so x·1 + (−h) rounds x − h.
    let mut neg = [0.0f64; LANES * SUM_V];
    for (d, &h) in neg.iter_mut().zip(&shift[c0..c0 + n]) {
        *d = -h;
    }
    let z = s.splat_d(0.0);
    // 1 as the compiler cannot see it: it folds x·1 + c back into an addition.
    let one = s.splat_d(std::hint::black_box(1.0));
    let (mut sv, mut qv) = ([z; 2 * SUM_V], [z; 2 * SUM_V]);
    for k in 0..2 * V {
        sv[k] = s.load_d(&sum[half * k..]);
        qv[k] = s.load_d(&sq[half * k..]);
    }
    for line in x.chunks_exact(w) {
        let line = &line[c0..c0 + n];
        for v in 0..V {
            let (lo, hi) = s.widen(s.load(&line[LANES * v..]));
            let k = 2 * v;
            let dl = s.mul_add_d(lo, one, s.load_d(&neg[half * k..]));
            let dh = s.mul_add_d(hi, one, s.load_d(&neg[half * (k + 1)..]));
            sv[k] = s.add_d(sv[k], dl);
            sv[k + 1] = s.add_d(sv[k + 1], dh);
            qv[k] = s.mul_add_d(dl, dl, qv[k]);
            qv[k + 1] = s.mul_add_d(dh, dh, qv[k + 1]);
        }
    }
    for k in 0..2 * V {
        s.store_d(&mut sum[half * k..], sv[k]);
        s.store_d(&mut sq[half * k..], qv[k]);
    }
}

/// y = (x − m[c])·a[c] + b[c] over whole lines of `w = m.len()` columns (`Elem::col_affine`'s
/// operations, bit for bit). False, writing nothing, where the level is not AVX2, `w` is
/// not a multiple of 8 or the output is not element-aligned.
pub(crate) fn affine(x: &[f32], out: &mut [f32], k: (&[f32], &[f32], &[f32])) -> bool {
    /// The arguments.
    struct Op<'a>(&'a [f32], &'a mut [f32], (&'a [f32], &'a [f32], &'a [f32]));
    impl WithIsa for Op<'_> {
        type Out = bool;
        #[inline(always)]
        fn run<S: Isa>(self, s: S) -> bool {
            let Op(x, out, k) = self;
            let w = k.0.len();
            if S::LANES != LANES || w == 0 || !w.is_multiple_of(LANES) {
                return false;
            }
            let h = Aligned::new(s, out).head;
            if h >= LANES {
                return false;
            }
            affine_lines(s, x, out, h, k);
            true
        }
    }
    dispatch(Op(x, out, k))
}

/// [`affine`] with the output's first `h < 8` values before its first aligned vector:
/// the aligned vectors of each line from column `h` in blocks of columns, then (h > 0)
/// the seam vectors (the last `8 − h` columns of a line and the first `h` of the next),
/// the head of the first line and the tail of the last.
#[inline(always)]
fn affine_lines<S: Isa>(
    s: S,
    x: &[f32],
    out: &mut [f32],
    h: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
) {
    let w = m.len();
    assert!(a.len() == w && b.len() == w, "one coefficient per column");
    let n = out.len() / w * w;
    let (x, out) = (&x[..n], &mut out[..n]);
    if n == 0 {
        return;
    }
    // Full vectors of a line from column h.
    let full = (w - h) / LANES;
    let mut c0 = h;
    let end = h + full * LANES;
    while c0 + AFFINE_V * LANES <= end {
        affine_block::<S, AFFINE_V>(s, (x, &mut *out), c0, (m, a, b));
        c0 += AFFINE_V * LANES;
    }
    while c0 < end {
        affine_block::<S, 1>(s, (x, &mut *out), c0, (m, a, b));
        c0 += LANES;
    }
    if h == 0 {
        return;
    }
    // The seam's coefficients: lane j is column (w − 8 + h + j) mod w.
    let mut seam = [s.splat(0.0); 3];
    for (k, arr) in [m, a, b].into_iter().enumerate() {
        let mut buf = [0.0f32; LANES];
        for (j, v) in buf.iter_mut().enumerate() {
            *v = arr[(w - LANES + h + j) % w];
        }
        seam[k] = s.load(&buf);
    }
    let lines = n / w;
    for li in 0..lines {
        let f = li * w + w - LANES + h;
        affine_vec(s, (x, &mut *out), (f, LANES.min(n - f)), seam);
    }
    let head = [ld(s, m, 0, h), ld(s, a, 0, h), ld(s, b, 0, h)];
    affine_vec(s, (x, out), (0, h), head);
}

/// `8·V` columns from `c0` of every line: coefficients in registers.
#[inline(always)]
fn affine_block<S: Isa, const V: usize>(
    s: S,
    (x, out): (&[f32], &mut [f32]),
    c0: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
) {
    let w = m.len();
    let n = LANES * V;
    let z = s.splat(0.0);
    let mut k = [[z; 3]; AFFINE_V];
    for (v, kv) in k.iter_mut().take(V).enumerate() {
        let c = c0 + LANES * v;
        *kv = [s.load(&m[c..]), s.load(&a[c..]), s.load(&b[c..])];
    }
    for (yl, xl) in out.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
        let (yb, xb) = (&mut yl[c0..c0 + n], &xl[c0..c0 + n]);
        for v in 0..V {
            let [vm, va, vb] = k[v];
            let y = s.add(s.mul(s.sub(s.load(&xb[LANES * v..]), vm), va), vb);
            s.store(&mut yb[LANES * v..], y);
        }
    }
}

/// One vector of `len` values from flat offset `i`: y = (x − m)·a + b.
#[inline(always)]
fn affine_vec<S: Isa>(
    s: S,
    (x, out): (&[f32], &mut [f32]),
    (i, len): (usize, usize),
    [vm, va, vb]: [S::F32; 3],
) {
    let y = s.add(s.mul(s.sub(ld(s, x, i, len), vm), va), vb);
    st(s, out, i, len, y, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reduce::Elem;
    use crate::kernels::simd::{available, with_thread_cap};

    /// Values in [offset − 2, offset + 2) from a 64-bit LCG.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let offset = (seed % 7) as f64;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (offset + 4.0 * ((state >> 11) as f64 / (1u64 << 53) as f64) - 2.0) as f32
            })
            .collect()
    }

    const SHAPES: [(usize, usize); 9] = [
        (32, 128),
        (1, 8),
        (3, 16),
        (5, 24),
        (7, 64),
        (9, 192),
        (4, 200),
        (2, 13),
        (33, 40),
    ];

    /// The sums are the level's `Elem::col_sums` over the lines, bit for bit, at every
    /// level (declining where they do not run), shifted or not.
    #[test]
    fn sums_match_the_column_kernel() {
        for level in available() {
            with_thread_cap(level, || {
                for (i, &(lines, w)) in SHAPES.iter().enumerate() {
                    let x = values(lines * w, 11 + i as u64);
                    for center in [true, false] {
                        let shift: Vec<f64> = (0..w)
                            .map(|c| if center { f64::from(x[c]) } else { 0.0 })
                            .collect();
                        let (mut s0, mut q0) = (vec![0.5; w], vec![0.25; w]);
                        let (mut s1, mut q1) = (s0.clone(), q0.clone());
                        let lines_at = (0..lines).map(|j| j * w);
                        <f32 as Elem>::col_sums(&x, lines_at, &shift, &mut s0, &mut q0);
                        if !sums(&x, &shift, &mut s1, &mut q1) {
                            assert!(level != crate::simd::Level::Avx2 || w % 8 != 0);
                            continue;
                        }
                        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&s0), bits(&s1), "Σ {lines}x{w} {level:?}");
                        assert_eq!(bits(&q0), bits(&q1), "Σ² {lines}x{w} {level:?}");
                    }
                }
            });
        }
    }

    /// The affine pass writes (x − m)·a + b (`f32` operations) at every alignment of the
    /// output, and nothing outside it.
    #[test]
    fn affine_matches_the_elementwise_formula_at_every_alignment() {
        for level in available() {
            with_thread_cap(level, || {
                for (i, &(lines, w)) in SHAPES.iter().enumerate() {
                    let n = lines * w;
                    let x = values(n, 5 + i as u64);
                    let k = values(3 * w, 99 + i as u64);
                    let (m, a, b) = (&k[..w], &k[w..2 * w], &k[2 * w..]);
                    let want: Vec<f32> = (0..n)
                        .map(|j| (x[j] - m[j % w]) * a[j % w] + b[j % w])
                        .collect();
                    for at in 0..16 {
                        let mut buf = vec![-7.0f32; n + 32];
                        let done = affine(&x, &mut buf[at..at + n], (m, a, b));
                        if !done {
                            assert!(level != crate::simd::Level::Avx2 || w % 8 != 0);
                            continue;
                        }
                        assert!(buf[..at].iter().all(|&v| v == -7.0), "before {at}");
                        assert!(buf[at + n..].iter().all(|&v| v == -7.0), "after {at}");
                        let got = &buf[at..at + n];
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(g, e)| g.to_bits() == e.to_bits());
                        assert!(same, "{lines}x{w} at {at}, {level:?}");
                    }
                }
            });
        }
    }
}
