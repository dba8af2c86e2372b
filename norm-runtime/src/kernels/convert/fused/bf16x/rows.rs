//! Layer norm's and RMS norm's forward over a task's rows in one call: each row's affine
//! pass with γ (and β) along it, the next row's sums in the same loop (as
//! [`params_pipe`](super::params_pipe)), and the row boundary without a return to the
//! caller: the next row's sums are finished, the first blocks of the row after it summed,
//! and only then the statistics and coefficients computed ([`RowHooks::stat`], the
//! caller's scalar f64 code), so that their division and square-root chain overlaps vector
//! work instead of stalling the start of the next row.
//!
//! The subnormal test: `vcvtne2ps2bf16` reads an f32 subnormal as zero, so a row none
//! of whose rounded values is ±0 has no subnormal output, which two integer operations
//! per 32 rounded values and one compare per row tell (instead of two `vfpclassps` and
//! mask moves per 32 values: about 5 % of the row in L2). A row with a zero output is
//! checked again with the exact test (`vfpclassps`, [`affine`](super::affine)), and so
//! are the rest of the task's rows (data with zeros, as RMS norm's of sparse inputs,
//! pays one extra row per task), and a row with a subnormal output is rewritten with the
//! portable rounding ([`RowHooks::redo`]).
//!
//! The same operations in the same order as the per-row kernels (the sums of
//! `fused::sums`, the affine expression of `fused::affine`): the same bits.

use std::arch::x86_64::*;

use super::{affine32, at, lanes, pad, params_f32, sums32, RowSums, Wide};
use super::{LEAD, SHIFTED, SQUARES};

/// What [`params_rows`] asks its caller per row.
pub(crate) trait RowHooks {
    /// Row `row`'s statistics from its raw sums `(shift, Σd, Σd²)` (Σd 0 for an
    /// uncentered row): records them and returns the row's coefficients `(m, a, b)`.
    fn stat(&mut self, row: usize, raw: (f64, f64, f64)) -> (f32, f32, f32);
    /// Rewrites row `row` (`x`, `y`) with the portable rounding: one of its output
    /// values was an f32 subnormal (`c`: its coefficients).
    fn redo(&mut self, row: usize, x: &[u16], y: &mut [u16], c: (f32, f32, f32));
}

/// The rows of `n` values of `xs` into `ys` (whole rows), γ (and β) along each row:
/// `y = ((x − m)·a + b)·γ + β` with each row's coefficients from [`RowHooks::stat`],
/// centered rows (Σd and Σd² about the row's first value) where `center`, else Σd² only.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn params_rows(
    (xs, ys): (&[u16], &mut [u16]),
    n: usize,
    (g, bt): (&[f32], Option<&[f32]>),
    center: bool,
    hooks: &mut dyn RowHooks,
) {
    assert!(
        n > 0 && xs.len() == ys.len() && xs.len().is_multiple_of(n) && g.len() >= n,
        "whole rows"
    );
    let g = &g[..n];
    match (bt, center) {
        (None, false) => rows::<false, SQUARES>((xs, ys), n, (g, g), hooks),
        (None, true) => rows::<false, SHIFTED>((xs, ys), n, (g, g), hooks),
        (Some(bt), false) => rows::<true, SQUARES>((xs, ys), n, (g, &bt[..n]), hooks),
        (Some(bt), true) => rows::<true, SHIFTED>((xs, ys), n, (g, &bt[..n]), hooks),
    }
}

/// The shift of a row's sums (`K`: see [`sums32`]): its first value where centered, else 0.
#[inline(always)]
fn shift_of<const K: u8>(row: &[u16]) -> f64 {
    if K == SQUARES {
        0.0
    } else {
        f64::from(f32::from_bits(u32::from(row[0]) << 16))
    }
}

/// The constants of [`sums32`] for `shift`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn wide(shift: f64, one: __m512d) -> Wide {
    Wide {
        neg_shift: _mm512_set1_pd(-shift),
        one,
    }
}

/// The subnormal test of [`params32`]: whether any rounded value is ±0 (two integer
/// operations per 32 values on the rounded bits; the rows are then checked again, see
/// [`params_rows`]).
const ZEROS: u8 = 0;
/// The subnormal test of [`params32`]: whether any f32 value is subnormal
/// (`vfpclassps`, exact; after a row with a zero output).
const EXACT: u8 = 1;

/// `((x − m)·a + b)·γ + β` of 32 values (β when `B`), the additions as `fma(u, 1, v)`
/// (the same single rounding), rounded into `y`; the test `T` ([`ZEROS`], [`EXACT`])
/// into `seen` (a lane 0 where it hit).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn params32<const B: bool, const T: u8>(
    (x, y): (&[u16; 32], &mut [u16; 32]),
    k: (__m512, __m512, __m512),
    one: __m512,
    p: (&[f32; 32], &[f32; 32]),
    seen: &mut __m512i,
) {
    let (lo, hi) = params_f32::<B>(x, k, one, p);
    // The rounded bits as integers from here (a test of them as bf16 values compiles
    // to per-lane scalar code).
    let r: __m512i = bytemuck::cast(_mm512_cvtne2ps_pbh(hi, lo));
    if T == ZEROS {
        // 2·bits drops the sign: 0 exactly for ±0.
        *seen = _mm512_min_epu16(*seen, _mm512_add_epi16(r, r));
    } else {
        let t = _mm512_fpclass_ps_mask::<0x20>(lo) | _mm512_fpclass_ps_mask::<0x20>(hi);
        *seen = _mm512_mask_mov_epi32(*seen, t, _mm512_setzero_si512());
    }
    *y = bytemuck::cast(r);
}

/// Whether the test `T` of [`params32`] hit in `seen`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn hit<const T: u8>(seen: __m512i) -> bool {
    if T == ZEROS {
        _mm512_cmpeq_epi16_mask(seen, _mm512_setzero_si512()) != 0
    } else {
        _mm512_cmpneq_epi32_mask(seen, _mm512_set1_epi32(-1)) != 0
    }
}

/// One row's pass: its affine output (`x`, `y`, coefficients `k`) with the test `T`, and
/// the sums of `next` from `j0` into `nacc` (blocks before `j0`: summed already). No
/// software prefetch: Zen 4's hardware prefetcher follows the row streams, and the
/// one-row kernel's `prefetcht1` of the row after `next` cost 0.6 % of a row in L2 here.
/// Whether the test hit.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn row_pass<const B: bool, const K: u8, const T: u8>(
    (x, y): (&[u16], &mut [u16]),
    k: (__m512, __m512, __m512),
    (one_s, (g, bt)): (__m512, (&[f32], &[f32])),
    (next, c, mut nacc, j0): (Option<&[u16]>, Wide, RowSums, usize),
) -> (RowSums, bool) {
    let n = x.len();
    // One check of every length here, none in the loop.
    let (y, g, bt) = (&mut y[..n], &g[..n], &bt[..n]);
    let (next, sum_end) = match next {
        Some(next) => (&next[..n], n - n % 32),
        None => (x, 0),
    };
    let body = n - n % 32;
    let mut seen = _mm512_set1_epi32(-1);
    let mut j = j0;
    let mut v = 0;
    while v < body {
        if j < sum_end {
            sums32::<K>(&mut nacc, at(next, j), c);
            j += 32;
        }
        let yv: &mut [u16; 32] = (&mut y[v..v + 32]).try_into().expect("32 values");
        params32::<B, T>((at(x, v), yv), k, one_s, (at(g, v), at(bt, v)), &mut seen);
        v += 32;
    }
    let mut tail = 0u32;
    if body < n {
        let len = n - body;
        let bb = if B { Some(pad(&bt[body..])) } else { None };
        let (r, t) = affine32(&pad(&x[body..]), k, (Some(&pad(&g[body..])), bb.as_ref()));
        y[body..].copy_from_slice(&r[..len]);
        tail = t & lanes(len);
    }
    (nacc, hit::<T>(seen) || tail != 0)
}

/// [`params_rows`] for one parameter case (`B`) and kind of sums (`K`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn rows<const B: bool, const K: u8>(
    (xs, ys): (&[u16], &mut [u16]),
    n: usize,
    (g, bt): (&[f32], &[f32]),
    hooks: &mut dyn RowHooks,
) {
    let count = xs.len() / n;
    let body = n - n % 32;
    let lead = LEAD.min(body);
    // 1.0 hidden from the compiler, which would otherwise turn `fma(u, 1, v)` back into
    // an addition.
    let one = std::hint::black_box(1.0f64);
    let (one_d, one_s) = (_mm512_set1_pd(one), _mm512_set1_ps(one as f32));
    let row = |i: usize| &xs[i * n..(i + 1) * n];
    // Row 0's sums, then the first blocks of row 1's, then row 0's statistics.
    let x0 = row(0);
    let sh = shift_of::<K>(x0);
    let mut acc = RowSums::new(sh);
    let mut j = 0;
    while j < body {
        sums32::<K>(&mut acc, at(x0, j), wide(sh, one_d));
        j += 32;
    }
    let (s, q) = acc.finish(&x0[body..]);
    let mut next_shift = 0.0;
    let mut nacc = RowSums::new(0.0);
    if count > 1 {
        next_shift = shift_of::<K>(row(1));
        nacc = RowSums::new(next_shift);
        let (x1, c) = (row(1), wide(next_shift, one_d));
        let mut j = 0;
        while j < lead {
            sums32::<K>(&mut nacc, at(x1, j), c);
            j += 32;
        }
    }
    let sum = |s: f64| if K == SQUARES { 0.0 } else { s };
    let mut c = hooks.stat(0, (sh, sum(s), q));
    // The exact test from the first row with a zero output on.
    let mut exact = false;
    for (i, y) in ys.chunks_exact_mut(n).enumerate() {
        let x = row(i);
        let k = (
            _mm512_set1_ps(c.0),
            _mm512_set1_ps(c.1),
            _mm512_set1_ps(c.2),
        );
        let next = (i + 1 < count).then(|| row(i + 1));
        let cn = wide(next_shift, one_d);
        let pass = (one_s, (g, bt));
        let nx = (
            next,
            cn,
            std::mem::replace(&mut nacc, RowSums::new(0.0)),
            lead,
        );
        let bad;
        (nacc, bad) = if exact {
            row_pass::<B, K, EXACT>((x, y), k, pass, nx)
        } else {
            row_pass::<B, K, ZEROS>((x, y), k, pass, nx)
        };
        if bad && exact {
            hooks.redo(i, x, y, c);
        } else if bad {
            // A zero output: an f32 subnormal, or a zero. The row again with the exact
            // test (the same bits where it passes), and so the task's rows after it.
            exact = true;
            let p = Some((g, B.then_some(bt)));
            if !super::affine(x, y, c, p) {
                hooks.redo(i, x, y, c);
            }
        }
        if let Some(next) = next {
            let (s, q) = std::mem::replace(&mut nacc, RowSums::new(0.0)).finish(&next[body..]);
            let shift = next_shift;
            if i + 2 < count {
                // The first blocks of the row after next, before the statistics' chain.
                let x2 = row(i + 2);
                next_shift = shift_of::<K>(x2);
                nacc = RowSums::new(next_shift);
                let c2 = wide(next_shift, one_d);
                let mut j = 0;
                while j < lead {
                    sums32::<K>(&mut nacc, at(x2, j), c2);
                    j += 32;
                }
            }
            c = hooks.stat(i + 1, (shift, sum(s), q));
        }
    }
}
