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
//! The centered sums widen bf16 to f64 with integer operations (`ld8_bits`: the bits
//! moved into an f64 2^896 times too small, the factor taken in the `fma` that subtracts
//! the shift) instead of the f32 widening and `vcvtps2pd` (four uops of Zen 4's FP2/FP3
//! pipes per 8 values, which the loop's additions also need); the affine pass then adds
//! on those pipes rather than as `fma(u, 1, v)`. A model of the loop over rows in L2
//! (1024 values, γ and β): 266 ns a row with the one-row kernel's prefetch, 222 without,
//! 205 with the integer widening and the additions. Exact for every finite value; an
//! infinity or NaN input gives an infinity or NaN output in the same row (whatever the
//! coefficients), which one more integer operation per 32 values tells, and such a row
//! is summed again with the f32 widening and rewritten ([`RowHooks::stat`] a second
//! time, then [`RowHooks::redo`]). Uncentered rows (Σv² only) keep the conversion.
//!
//! The same operations in the same order as the per-row kernels (the sums of
//! `fused::sums`, the affine expression of `fused::affine`): the same bits.

use std::arch::x86_64::*;

use super::{affine32, at, lanes, ld32, ldf32, pad, xhat, RowSums};
use super::{LEAD, SHIFTED, SQUARES};

/// What [`params_rows`] asks its caller per row.
pub(crate) trait RowHooks {
    /// Row `row`'s statistics from its raw sums `(shift, Σd, Σd²)` (Σd 0 for an
    /// uncentered row): records them and returns the row's coefficients `(m, a, b)`.
    /// Called in row order, once per row; a second time right after the first for a
    /// row holding an infinity or NaN (the sums of the second call stand).
    fn stat(&mut self, row: usize, raw: (f64, f64, f64)) -> (f32, f32, f32);
    /// Rewrites row `row` (`x`, `y`) with the portable rounding: one of its output
    /// values was an f32 subnormal, or an input value infinite or NaN (`c`: its
    /// coefficients).
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

/// The constants of [`sums32`] for `shift`: `−shift` and [`SCALE`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn wide(shift: f64) -> Wide {
    (_mm512_set1_pd(-shift), _mm512_set1_pd(SCALE))
}

/// The constants of [`sums32`]: `−shift` and [`SCALE`].
type Wide = (__m512d, __m512d);

/// 2^896 (the bf16 exponent bias 127 from the f64 bias 1023): the factor from the f64
/// that [`ld8_bits`] makes of a bf16 bit pattern to the bf16 value.
const SCALE: f64 = f64::from_bits((1023 + 896) << 52);

/// 8 bf16 bit patterns as the f64 whose value is the bf16 value times 2^−896 (exact for
/// every finite bf16, subnormals and ±0 included: sign to bit 63, exponent and fraction
/// to bits 59..45; an infinity or NaN becomes a finite value, which [`params_rows`]
/// detects): integer operations only, where the f32 widening and `vcvtps2pd` (four
/// uops of the FP2/FP3 pipes on Zen 4, the pipelined loop's bottleneck) took three.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn ld8_bits(x: &[u16]) -> __m512d {
    let a: [u16; 8] = x[..8].try_into().expect("8 values");
    // Sign-extended, the sign then fills bits 63..60: bits 62..60 cleared.
    let q = _mm512_slli_epi64::<45>(_mm512_cvtepi16_epi64(bytemuck::cast(a)));
    let keep = _mm512_set1_epi64(0x8FFF_FFFF_FFFF_FFFF_u64 as i64);
    _mm512_castsi512_pd(_mm512_and_si512(q, keep))
}

/// A block of 32 values into the chains of `acc`, as the one-row kernels' `sums32`
/// (values `8k..8k + 8` into chain `k`) with `d = fma(w, 2^896, −shift)` on the values of
/// [`ld8_bits`]: the product is the bf16 value exactly, so `d` is `v − shift` rounded
/// once, the bits of `fma(v, 1, −shift)` (and for [`SQUARES`], `−shift` being −0.0,
/// `v` itself, ±0 included). Only for finite values: an infinity or NaN gives a finite
/// `d` (see [`params_rows`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn sums32<const K: u8>(acc: &mut RowSums, x: &[u16; 32], (neg_shift, scale): Wide) {
    if K == SQUARES {
        // Σv² needs no subtraction, so the factor of `ld8_bits` would be one more FMA-pipe
        // operation per 8 values: the f32 widening and `vcvtps2pd` here (in L2 the rows
        // took 203 ns with the bits, 184 with the conversion).
        let one = super::Wide {
            neg_shift,
            one: scale,
        };
        return super::sums32::<SQUARES>(acc, x, one);
    }
    for k in 0..4 {
        let d = _mm512_fmadd_pd(ld8_bits(&x[8 * k..]), scale, neg_shift);
        if K != SQUARES {
            acc.sm[k] = _mm512_add_pd(acc.sm[k], d);
        }
        acc.sq[k] = _mm512_fmadd_pd(d, d, acc.sq[k]);
    }
}

/// Whether a value of `x` is an infinity or a NaN (exponent bits all set).
fn nonfinite(x: &[u16]) -> bool {
    x.iter().any(|&b| b & 0x7f80 == 0x7f80)
}

/// The subnormal test of [`params32`]: whether any rounded value is ±0 (two integer
/// operations per 32 values on the rounded bits; the rows are then checked again, see
/// [`params_rows`]).
const ZEROS: u8 = 0;
/// The subnormal test of [`params32`]: whether any f32 value is subnormal
/// (`vfpclassps`, exact; after a row with a zero output).
const EXACT: u8 = 1;

/// `((x − m)·a + b)·γ + β` of 32 values (β when `B`) in f32, rounded into `y` (the
/// additions as additions: with the sums' conversions gone the add pipes have room, and
/// moving them to the multiply pipes as `fma(u, 1, v)` measured 5 % slower); the test `T` ([`ZEROS`], [`EXACT`])
/// into `seen` (a lane 0 where it hit), and the largest doubled rounded bits into `big`
/// (an infinity or NaN output: at least `0xff00`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn params32<const B: bool, const T: u8>(
    (x, y): (&[u16; 32], &mut [u16; 32]),
    k: (__m512, __m512, __m512),
    (g, bt): (&[f32; 32], &[f32; 32]),
    (seen, big): (&mut __m512i, &mut __m512i),
) {
    let ((xl, xh), (gl, gh)) = (ld32(x), ldf32(g));
    let mut lo = _mm512_mul_ps(xhat(xl, k), gl);
    let mut hi = _mm512_mul_ps(xhat(xh, k), gh);
    if B {
        let (bl, bh) = ldf32(bt);
        lo = _mm512_add_ps(lo, bl);
        hi = _mm512_add_ps(hi, bh);
    }
    // The rounded bits as integers from here (a test of them as bf16 values compiles
    // to per-lane scalar code).
    let r: __m512i = bytemuck::cast(_mm512_cvtne2ps_pbh(hi, lo));
    // 2·bits drops the sign: 0 exactly for ±0, from 0xff00 on for ±∞ and NaN.
    let r2 = _mm512_add_epi16(r, r);
    if T == ZEROS {
        *seen = _mm512_min_epu16(*seen, r2);
    } else {
        let t = _mm512_fpclass_ps_mask::<0x20>(lo) | _mm512_fpclass_ps_mask::<0x20>(hi);
        *seen = _mm512_mask_mov_epi32(*seen, t, _mm512_setzero_si512());
    }
    *big = _mm512_max_epu16(*big, r2);
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
/// two-rows-ahead `prefetcht1` of the one-row kernel cost 17 % of a row in L2 and 6 % out
/// of cache (bf16 layer norm [8192, 1024], one thread). Whether the test hit, and whether an output value of the blocks of 32
/// (not the tail) is an infinity or NaN.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn row_pass<const B: bool, const K: u8, const T: u8>(
    (x, y): (&[u16], &mut [u16]),
    k: (__m512, __m512, __m512),
    (g, bt): (&[f32], &[f32]),
    (next, c, mut nacc, j0): (Option<&[u16]>, Wide, RowSums, usize),
) -> (RowSums, bool, bool) {
    let n = x.len();
    // One check of every length here, none in the loop.
    let (y, g, bt) = (&mut y[..n], &g[..n], &bt[..n]);
    let (next, sum_end) = match next {
        Some(next) => (&next[..n], n - n % 32),
        None => (x, 0),
    };
    let body = n - n % 32;
    let mut seen = _mm512_set1_epi32(-1);
    let mut big = _mm512_setzero_si512();
    let mut j = j0;
    let mut v = 0;
    while v < body {
        if j < sum_end {
            sums32::<K>(&mut nacc, at(next, j), c);
            j += 32;
        }
        let yv: &mut [u16; 32] = (&mut y[v..v + 32]).try_into().expect("32 values");
        params32::<B, T>(
            (at(x, v), yv),
            k,
            (at(g, v), at(bt, v)),
            (&mut seen, &mut big),
        );
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
    let inf = _mm512_cmpge_epu16_mask(big, _mm512_set1_epi16(0xff00_u16 as i16)) != 0;
    (nacc, hit::<T>(seen) || tail != 0, inf)
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
    let row = |i: usize| &xs[i * n..(i + 1) * n];
    // Row 0's sums, then the first blocks of row 1's, then row 0's statistics.
    let x0 = row(0);
    let sh = shift_of::<K>(x0);
    let mut acc = RowSums::new(sh);
    let mut j = 0;
    while j < body {
        sums32::<K>(&mut acc, at(x0, j), wide(sh));
        j += 32;
    }
    let (s, q) = acc.finish(&x0[body..]);
    let mut next_shift = 0.0;
    let mut nacc = RowSums::new(0.0);
    if count > 1 {
        next_shift = shift_of::<K>(row(1));
        nacc = RowSums::new(next_shift);
        let (x1, c) = (row(1), wide(next_shift));
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
        let cn = wide(next_shift);
        let pass = (g, bt);
        let nx = (
            next,
            cn,
            std::mem::replace(&mut nacc, RowSums::new(0.0)),
            lead,
        );
        let (bad, inf);
        (nacc, bad, inf) = if exact {
            row_pass::<B, K, EXACT>((x, y), k, pass, nx)
        } else {
            row_pass::<B, K, ZEROS>((x, y), k, pass, nx)
        };
        if K != SQUARES && inf && nonfinite(&x[..body]) {
            // An infinity or NaN among the values summed with `ld8_bits`: the row's sums
            // again with the f32 widening (`RowSums::add32`: the same operations), its
            // statistics, and the row with the portable rounding.
            let sh = shift_of::<K>(x);
            let mut acc = RowSums::new(sh);
            let mut j = 0;
            while j < body {
                acc.add32(at(x, j));
                j += 32;
            }
            let (s, q) = acc.finish(&x[body..]);
            c = hooks.stat(i, (sh, sum(s), q));
            hooks.redo(i, x, y, c);
        } else if bad && exact {
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
                let c2 = wide(next_shift);
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
