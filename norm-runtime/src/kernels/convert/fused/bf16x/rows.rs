//! Layer norm's and RMS norm's forward over a task's rows in one call, with each row's
//! statistics in f32 lanes as `fused::row_stats` computes them (the same structure and
//! operations, so the same bits): the row's Σx (Σx² for an uncentered row) summed in the
//! loop of the previous row's affine pass (the affine pass is bound by the multiply pipes,
//! the sums use the add pipes), then Σd and Σd² about the row's f32 mean over the row again
//! from L1, the statistics and coefficients ([`RowHooks::stat`], the caller's scalar f64
//! code), and the row's affine pass with γ (and β) along it.
//!
//! The subnormal test: `vcvtne2ps2bf16` reads an f32 subnormal as zero, so a row none
//! of whose rounded values is ±0 has no subnormal output, which two integer operations
//! per 32 rounded values and one compare per row tell (instead of two `vfpclassps` and
//! mask moves per 32 values: about 5 % of the row in L2). A row with a zero output is
//! checked again with the exact test (`vfpclassps`, [`affine`](super::affine)), and so
//! are the rest of the task's rows (data with zeros, as RMS norm's of sparse inputs,
//! pays one extra row per task), and a row with a subnormal output is rewritten with the
//! portable rounding ([`RowHooks::redo`]).

use std::arch::x86_64::*;

use super::super::stats32::{tree, BLOCK, W};
use super::{affine32, at, lanes, pad, params_f32};

/// What [`params_rows`] asks its caller per row.
pub(crate) trait RowHooks {
    /// Row `row`'s statistics from its raw sums `(shift, Σd, Σd²)` (`fused::row_stats`'s:
    /// `(0, 0, Σx²)` for an uncentered row): records them and returns the row's
    /// coefficients `(m, a, b)`.
    fn stat(&mut self, row: usize, raw: (f64, f64, f64)) -> (f32, f32, f32);
    /// Rewrites row `row` (`x`, `y`) with the portable rounding: one of its output
    /// values was an f32 subnormal (`c`: its coefficients).
    fn redo(&mut self, row: usize, x: &[u16], y: &mut [u16], c: (f32, f32, f32));
}

/// One f32 sum of a row in `row_stats`'s structure: four chains of 16 lanes over blocks
/// of 64 values, added pairwise and widened into 16 f64 lanes every `BLOCK` values.
#[derive(Clone, Copy)]
struct Acc {
    c: [__m512; 4],
    lanes: [__m512d; 2],
}

impl Acc {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn new() -> Acc {
        Acc {
            c: [_mm512_setzero_ps(); 4],
            lanes: [_mm512_setzero_pd(); 2],
        }
    }

    /// Chain `k` takes `v` (`SQ`: `v²` by one fused multiply-add, else `v`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn push<const SQ: bool>(&mut self, k: usize, v: __m512) {
        self.c[k] = if SQ {
            _mm512_fmadd_ps(v, v, self.c[k])
        } else {
            _mm512_add_ps(self.c[k], v)
        };
    }

    /// The chains into the f64 lanes (`(c0 + c1) + (c2 + c3)`, widened), chains reset.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn fold(&mut self) {
        let [c0, c1, c2, c3] = self.c;
        let t = _mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3));
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(t));
        let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(t));
        self.lanes = [
            _mm512_add_pd(self.lanes[0], lo),
            _mm512_add_pd(self.lanes[1], hi),
        ];
        self.c = [_mm512_setzero_ps(); 4];
    }

    /// The f64 lanes added by `row_stats`'s tree.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn total(self) -> f64 {
        let a: [f64; 16] = bytemuck::cast(self.lanes);
        tree(a)
    }
}

/// Whether the block of 64 values ending before `end` closes a fold (`BLOCK` values, or
/// the last whole block of 64 at `full`).
#[inline(always)]
fn folds(end: usize, full: usize) -> bool {
    end.is_multiple_of(BLOCK) || end == full
}

/// 32 bf16 values widened in place: those at even indices, then those at odd ones (the
/// token's `load_bf16_pair`, the lanes of `Format::ld_pair`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn pair(x: &[u16]) -> (__m512, __m512) {
    let a: [u16; 32] = x[..32].try_into().expect("32 values");
    let v: __m512i = bytemuck::cast(a);
    let e = _mm512_slli_epi32::<16>(v);
    let o = _mm512_and_si512(v, _mm512_set1_epi32(-65536));
    (_mm512_castsi512_ps(e), _mm512_castsi512_ps(o))
}

/// A bf16 value widened to f64.
#[inline(always)]
fn wide(v: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(v) << 16))
}

/// The first pass of a row (`SQ`: Σx², else Σx) from its block of 64 at `j`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn first64<const SQ: bool>(acc: &mut Acc, x: &[u16], j: usize, full: usize) {
    for h in 0..2 {
        let (e, o) = pair(&x[j + 32 * h..]);
        acc.push::<SQ>(2 * h, e);
        acc.push::<SQ>(2 * h + 1, o);
    }
    if folds(j + W, full) {
        acc.fold();
    }
}

/// The first pass's result: the f64 lanes' tree plus the values after `full` in f64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn first_total<const SQ: bool>(acc: Acc, rest: &[u16]) -> f64 {
    let mut t = 0f64;
    for &v in rest {
        let d = wide(v);
        if SQ {
            let d = d - 0.0;
            t += d * d;
        } else {
            t += d;
        }
    }
    acc.total() + t
}

/// The first pass of a whole row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn first_row<const SQ: bool>(x: &[u16]) -> f64 {
    let full = x.len() - x.len() % W;
    let mut acc = Acc::new();
    let mut j = 0;
    while j < full {
        first64::<SQ>(&mut acc, x, j, full);
        j += W;
    }
    first_total::<SQ>(acc, &x[full..])
}

/// The second pass of a centered row: Σd and Σd² with `d = x − m`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn second_row(x: &[u16], m: f32) -> (f64, f64) {
    let full = x.len() - x.len() % W;
    let vm = _mm512_set1_ps(m);
    let (mut sd, mut sq) = (Acc::new(), Acc::new());
    let mut j = 0;
    while j < full {
        for h in 0..2 {
            let (e, o) = pair(&x[j + 32 * h..]);
            for (k, v) in [(2 * h, e), (2 * h + 1, o)] {
                let d = _mm512_sub_ps(v, vm);
                sd.push::<false>(k, d);
                sq.push::<true>(k, d);
            }
        }
        if folds(j + W, full) {
            sd.fold();
            sq.fold();
        }
        j += W;
    }
    let (mut ts, mut tq) = (0f64, 0f64);
    for &v in &x[full..] {
        let d = wide(v) - f64::from(m);
        ts += d;
        tq += d * d;
    }
    (sd.total() + ts, sq.total() + tq)
}

/// The raw statistics `(shift, Σd, Σd²)` of a row from its first pass `first` (Σx where
/// `center`, else Σx²), as `fused::row_stats`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn raw_of(x: &[u16], first: f64, center: bool) -> (f64, f64, f64) {
    if !center {
        return (0.0, 0.0, first);
    }
    let m = (first / x.len() as f64) as f32;
    let (sd, sq) = second_row(x, m);
    (f64::from(m), sd, sq)
}

/// The rows of `n` values of `xs` into `ys` (whole rows), γ (and β) along each row:
/// `y = fma(x̂, γ, β)` (`x̂·γ` without β), `x̂ = fma(x − m, a, b)`, with each row's
/// coefficients from [`RowHooks::stat`],
/// given the row's raw statistics as `fused::row_stats` computes them (centered where
/// `center`, else Σx² only).
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
        (None, false) => rows::<false, true>((xs, ys), n, (g, g), hooks),
        (None, true) => rows::<false, false>((xs, ys), n, (g, g), hooks),
        (Some(bt), false) => rows::<true, true>((xs, ys), n, (g, &bt[..n]), hooks),
        (Some(bt), true) => rows::<true, false>((xs, ys), n, (g, &bt[..n]), hooks),
    }
}

/// The subnormal test of [`params32`]: whether any rounded value is ±0 (two integer
/// operations per 32 values on the rounded bits; the rows are then checked again, see
/// [`params_rows`]).
const ZEROS: u8 = 0;
/// The subnormal test of [`params32`]: whether any f32 value is subnormal
/// (`vfpclassps`, exact; after a row with a zero output).
const EXACT: u8 = 1;

/// [`params_f32`] of 32 values (β when `B`) rounded into `y`; the test `T` ([`ZEROS`],
/// [`EXACT`]) into `seen` (a lane 0 where it hit).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn params32<const B: bool, const T: u8>(
    (x, y): (&[u16; 32], &mut [u16; 32]),
    k: (__m512, __m512, __m512),
    p: (&[f32; 32], &[f32; 32]),
    seen: &mut __m512i,
) {
    let (lo, hi) = params_f32::<B>(x, k, p);
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

/// One row's affine pass (`x`, `y`, coefficients `k`) with the test `T`, and the first
/// pass of `next` (`SQ`: Σx², else Σx) in the same loop, one block of 64 per two blocks of
/// 32 of the affine pass. The next row's first pass (or 0) and whether the test hit.
/// (Non-temporal stores of the output where the tensors exceed the cache measured slower:
/// bf16 layer norm [8192, 1024] at one thread, 4 alternating rounds under load, minimum
/// 1.94 → 2.01 ms.)
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn row_pass<const B: bool, const SQ: bool, const T: u8>(
    (x, y): (&[u16], &mut [u16]),
    k: (__m512, __m512, __m512),
    (g, bt): (&[f32], &[f32]),
    next: Option<&[u16]>,
) -> (f64, bool) {
    let n = x.len();
    // One check of every length here, none in the loop.
    let (y, g, bt) = (&mut y[..n], &g[..n], &bt[..n]);
    let has_next = next.is_some();
    let (next, full) = match next {
        Some(next) => (&next[..n], n - n % W),
        None => (x, 0),
    };
    let body = n - n % 32;
    let mut seen = _mm512_set1_epi32(-1);
    let mut acc = Acc::new();
    let mut v = 0;
    while v < body {
        if v.is_multiple_of(W) && v < full {
            first64::<SQ>(&mut acc, next, v, full);
        }
        let yv: &mut [u16; 32] = (&mut y[v..v + 32]).try_into().expect("32 values");
        let p = (at(g, v), at(bt, v));
        params32::<B, T>((at(x, v), yv), k, p, &mut seen);
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
    let first = if has_next {
        first_total::<SQ>(acc, &next[full..])
    } else {
        0.0
    };
    (first, hit::<T>(seen) || tail != 0)
}

/// [`params_rows`] for one parameter case (`B`) and kind of statistics (`SQ`: uncentered).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn rows<const B: bool, const SQ: bool>(
    (xs, ys): (&[u16], &mut [u16]),
    n: usize,
    (g, bt): (&[f32], &[f32]),
    hooks: &mut dyn RowHooks,
) {
    let count = xs.len() / n;
    let row = |i: usize| &xs[i * n..(i + 1) * n];
    let mut first = first_row::<SQ>(row(0));
    // The exact test from the first row with a zero output on.
    let mut exact = false;
    for (i, y) in ys.chunks_exact_mut(n).enumerate() {
        let x = row(i);
        let c = hooks.stat(i, raw_of(x, first, !SQ));
        let k = (
            _mm512_set1_ps(c.0),
            _mm512_set1_ps(c.1),
            _mm512_set1_ps(c.2),
        );
        let next = (i + 1 < count).then(|| row(i + 1));
        let pass = (g, bt);
        let bad;
        (first, bad) = if exact {
            row_pass::<B, SQ, EXACT>((x, y), k, pass, next)
        } else {
            row_pass::<B, SQ, ZEROS>((x, y), k, pass, next)
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
    }
}
