//! AVX512_BF16 row kernels of the fused bf16 paths: the elementwise passes of
//! [`affine`](super::affine) and [`dx`](super::dx) with two vectors rounded by one
//! `vcvtne2ps2bf16` (32 values per instruction) and the subnormal test of the whole row
//! after the loop, instead of one `vcvtneps2bf16` and one test-and-branch per vector
//! (the token's `store_bf16_ne`): on Zen 4 the bf16 store was most of the cost of these
//! passes (`vcvtneps2bf16` half the f32 pass's throughput alone, the test another third).
//!
//! The instruction reads f32 subnormal inputs as zero, where the portable rounding gives
//! their nearest bf16; so each kernel reports whether any output value was an f32
//! subnormal, and the caller then runs the token kernel over the whole row again (the
//! same bits as the portable rounding). The arithmetic is the token kernels' (the same
//! f32 operations in the same order, no fused multiply-add), so the results are theirs
//! bit for bit (`tests.rs` checks it against the portable level).
//!
//! Safe `#[target_feature]` functions over fixed-size arrays (`bytemuck` casts, no
//! pointers), as the conversions of `convert.rs`; [`available`] says whether the caller
//! may run them.

use std::arch::x86_64::*;

use super::Params;
use crate::kernels::simd::{self, Level};

mod cols;
mod rows;

pub(super) use rows::RowHooks;

/// Whether the fast kernels run here: the AVX-512 level is selected (not capped by
/// `NORMKIT_SIMD`) and the CPU has AVX512_BF16.
#[inline]
fn available() -> bool {
    simd::level() == Level::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// A call of one of the fast kernels (their arguments).
pub(super) enum Op<'a> {
    /// [`affine`].
    Affine(&'a [u16], &'a mut [u16], (f32, f32, f32), Params<'a>),
    /// [`dx`] (with non-temporal stores of the output where `true`).
    Dx(
        (&'a [u16], &'a [u16], &'a mut [u16]),
        (f32, f32, f32, f32),
        Option<&'a [f32]>,
        bool,
    ),
    /// [`cols::col_affine`] (with non-temporal stores of the output where given).
    ColAffine(
        &'a [u16],
        &'a mut [u16],
        super::Cols<'a>,
        Option<&'a super::Streamed>,
    ),
    /// [`cols::col_dx`] (with non-temporal stores of the output where given).
    ColDx(
        (&'a [u16], &'a [u16], &'a mut [u16]),
        &'a [f32],
        super::Cols<'a>,
        Option<&'a super::Streamed>,
    ),
    /// [`affine_then_sums`].
    AffineThenSums(
        (&'a [u16], &'a mut [u16]),
        (f32, f32, f32),
        (&'a [u16], f64),
    ),
    /// [`rows::params_rows`].
    ParamsRows(
        (&'a [u16], &'a mut [u16]),
        usize,
        (&'a [f32], Option<&'a [f32]>),
        bool,
        &'a mut dyn RowHooks,
    ),
}

/// Runs `op` where the CPU has the fast kernels (`None`: it does not, nothing ran): the
/// shifted sums it computes (zero for the kernels without) and whether its output is
/// complete (`false`: a value was an f32 subnormal, the caller reruns the elementwise
/// pass with the token kernels).
pub(super) fn run(op: Op<'_>) -> Option<((f64, f64), bool)> {
    if !available() {
        return None;
    }
    // SAFETY: `available` checked that the CPU has AVX-512 (F, BW, DQ: the level) and
    // AVX512_BF16, the features of `run_op`.
    Some(unsafe { run_op(op) })
}

/// [`run`] inside the kernels' features.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn run_op(op: Op<'_>) -> ((f64, f64), bool) {
    let none = (0.0, 0.0);
    match op {
        Op::Affine(x, y, c, p) => (none, affine(x, y, c, p)),
        Op::Dx(io, k, g, stream) => (none, dx(io, k, g, stream)),
        Op::ColAffine(x, y, c, nt) => (none, cols::col_affine(x, y, c, nt)),
        Op::ColDx(io, cc, c, nt) => (none, cols::col_dx(io, cc, c, nt)),
        Op::AffineThenSums(io, c, next) => affine_then_sums(io, c, next),
        Op::ParamsRows(io, n, p, center, hooks) => {
            rows::params_rows(io, n, p, center, hooks);
            (none, true)
        }
    }
}

/// 16 bf16 bit patterns widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn ld(x: &[u16]) -> __m512 {
    let a: [u16; 16] = x[..16].try_into().expect("16 values");
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
        bytemuck::cast(a),
    )))
}

/// 16 f32 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn ldf(x: &[f32]) -> __m512 {
    let a: [f32; 16] = x[..16].try_into().expect("16 values");
    bytemuck::cast(a)
}

/// `lo` then `hi` rounded to nearest even into 32 bf16 bit patterns, and the lanes holding
/// an f32 subnormal (bit `i` for value `i`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn round32(lo: __m512, hi: __m512) -> ([u16; 32], u32) {
    let r: [u16; 32] = bytemuck::cast(_mm512_cvtne2ps_pbh(hi, lo));
    let tiny = u32::from(_mm512_fpclass_ps_mask::<0x20>(lo))
        | (u32::from(_mm512_fpclass_ps_mask::<0x20>(hi)) << 16);
    (r, tiny)
}

/// `(x − m)·a + b` in f32 (no fused multiply-add), as the token kernels.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn xhat(x: __m512, (m, a, b): (__m512, __m512, __m512)) -> __m512 {
    _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, m), a), b)
}

/// `fma(x − m, a, b)`: the row path's `x̂` with γ along the row (as the token kernels'
/// `xhat_fused`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn xhat_fused(x: __m512, (m, a, b): (__m512, __m512, __m512)) -> __m512 {
    _mm512_fmadd_ps(_mm512_sub_ps(x, m), a, b)
}

/// The first `src.len() ≤ 32` values of `src` in a zeroed block of 32.
#[inline(always)]
fn pad<T: Copy + Default>(src: &[T]) -> [T; 32] {
    let mut b = [T::default(); 32];
    b[..src.len()].copy_from_slice(src);
    b
}

/// Bits `0..len` set.
#[inline(always)]
fn lanes(len: usize) -> u32 {
    if len >= 32 {
        u32::MAX
    } else {
        (1u32 << len) - 1
    }
}

/// 32 values: `lo` the first 16, `hi` the next.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn ld32(x: &[u16; 32]) -> (__m512, __m512) {
    (ld(&x[..16]), ld(&x[16..]))
}

/// 32 f32 values as two vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn ldf32(x: &[f32; 32]) -> (__m512, __m512) {
    (ldf(&x[..16]), ldf(&x[16..]))
}

/// The block of 32 values from `i` of a slice (its length checked by the caller).
#[inline(always)]
fn at<T>(v: &[T], i: usize) -> &[T; 32] {
    v[i..i + 32].try_into().expect("32 values")
}

/// The parameters of [`affine`] along a row: none, γ, or γ and β.
#[derive(Clone, Copy)]
enum P<'a> {
    None,
    G(&'a [f32]),
    Gb(&'a [f32], &'a [f32]),
}

/// The affine expression of one block of 32 values (`x̂`, times γ and plus β where given),
/// rounded; the mask of its f32 subnormal outputs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn affine32(
    x: &[u16; 32],
    k: (__m512, __m512, __m512),
    p: (Option<&[f32; 32]>, Option<&[f32; 32]>),
) -> ([u16; 32], u32) {
    let (xl, xh) = ld32(x);
    let (lo, hi) = match p {
        (None, _) => (xhat(xl, k), xhat(xh, k)),
        (Some(g), None) => {
            let (gl, gh) = ldf32(g);
            (
                _mm512_mul_ps(xhat_fused(xl, k), gl),
                _mm512_mul_ps(xhat_fused(xh, k), gh),
            )
        }
        (Some(g), Some(bt)) => {
            let ((gl, gh), (bl, bh)) = (ldf32(g), ldf32(bt));
            (
                _mm512_fmadd_ps(xhat_fused(xl, k), gl, bl),
                _mm512_fmadd_ps(xhat_fused(xh, k), gh, bh),
            )
        }
    };
    round32(lo, hi)
}

/// `y = (x − m)·a + b`, times γ and plus β along the row where given (the expression of
/// `fused::affine`). `false` when an output value is an f32 subnormal: `y` is then only
/// partly right and the caller runs the token kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn affine(x: &[u16], y: &mut [u16], (m, a, b): (f32, f32, f32), p: Params<'_>) -> bool {
    let n = x.len();
    assert_eq!(y.len(), n, "rows of one length");
    let p = match p {
        None => P::None,
        Some((g, None)) => P::G(&g[..n]),
        Some((g, Some(bt))) => P::Gb(&g[..n], &bt[..n]),
    };
    let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
    let body = n - n % 32;
    let mut tiny = 0u32;
    // One loop per parameter case (no per-block branch or closure).
    match p {
        P::None => {
            let mut i = 0;
            while i < body {
                let (r, t) = affine32(at(x, i), k, (None, None));
                y[i..i + 32].copy_from_slice(&r);
                tiny |= t;
                i += 32;
            }
        }
        P::G(g) => {
            let mut i = 0;
            while i < body {
                let (r, t) = affine32(at(x, i), k, (Some(at(g, i)), None));
                y[i..i + 32].copy_from_slice(&r);
                tiny |= t;
                i += 32;
            }
        }
        P::Gb(g, bt) => {
            let mut i = 0;
            while i < body {
                let (r, t) = affine32(at(x, i), k, (Some(at(g, i)), Some(at(bt, i))));
                y[i..i + 32].copy_from_slice(&r);
                tiny |= t;
                i += 32;
            }
        }
    }
    if body < n {
        let len = n - body;
        let xc = pad(&x[body..]);
        let (g, bt) = match p {
            P::None => (None, None),
            P::G(g) => (Some(pad(&g[body..])), None),
            P::Gb(g, bt) => (Some(pad(&g[body..])), Some(pad(&bt[body..]))),
        };
        let (r, t) = affine32(&xc, k, (g.as_ref(), bt.as_ref()));
        y[body..].copy_from_slice(&r[..len]);
        tiny |= t & lanes(len);
    }
    tiny == 0
}

/// `dy·(c·γ) + ((x − m)·a + b)` of one block of 32 values (γ = 1 when absent), as
/// `fused::dx`, rounded; the mask of its f32 subnormal outputs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn dx32(
    (x, dy): (&[u16; 32], &[u16; 32]),
    c: __m512,
    k: (__m512, __m512, __m512),
    g: Option<&[f32; 32]>,
) -> ([u16; 32], u32) {
    let (cl, ch) = match g {
        Some(g) => {
            let (gl, gh) = ldf32(g);
            (_mm512_mul_ps(c, gl), _mm512_mul_ps(c, gh))
        }
        None => (c, c),
    };
    let ((xl, xh), (dl, dh)) = (ld32(x), ld32(dy));
    let lo = _mm512_add_ps(_mm512_mul_ps(dl, cl), xhat(xl, k));
    let hi = _mm512_add_ps(_mm512_mul_ps(dh, ch), xhat(xh, k));
    round32(lo, hi)
}

/// `dx = dy·(c·γ) + ((x − m)·a + b)` over a bf16 row (γ = 1 when absent), as
/// `fused::dx`; with `stream`, non-temporal stores of the output ([`dx_stream`]). `false`
/// when an output value is an f32 subnormal (see [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    (c, m, a, b): (f32, f32, f32, f32),
    g: Option<&[f32]>,
    stream: bool,
) -> bool {
    let n = x.len();
    assert!(dy.len() == n && out.len() == n, "rows of one length");
    let vc = _mm512_set1_ps(c);
    let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
    if stream {
        return dx_stream((x, dy, out), (vc, k), g.map(|g| &g[..n]));
    }
    let body = n - n % 32;
    let mut tiny = 0u32;
    match g {
        None => {
            let mut i = 0;
            while i < body {
                let (r, t) = dx32((at(x, i), at(dy, i)), vc, k, None);
                out[i..i + 32].copy_from_slice(&r);
                tiny |= t;
                i += 32;
            }
        }
        Some(g) => {
            let g = &g[..n];
            let mut i = 0;
            while i < body {
                let (r, t) = dx32((at(x, i), at(dy, i)), vc, k, Some(at(g, i)));
                out[i..i + 32].copy_from_slice(&r);
                tiny |= t;
                i += 32;
            }
        }
    }
    if body < n {
        let len = n - body;
        let (xc, dc) = (pad(&x[body..]), pad(&dy[body..]));
        let gc = g.map(|g| pad(&g[body..n]));
        let (r, t) = dx32((&xc, &dc), vc, k, gc.as_ref());
        out[body..].copy_from_slice(&r[..len]);
        tiny |= t & lanes(len);
    }
    tiny == 0
}

/// [`dx`] writing the output with non-temporal stores (no read of its cache lines, and
/// the inputs the next call reads stay cached): the values before the output's first
/// 64-byte boundary and after its last one are stored as usual, the body in blocks of 32
/// values from that boundary. The same expression per value, so the same bits. The caller
/// fences the stores (`fused::dx_streamed`) before another thread reads them.
/// (`vc`, `k`: the coefficients as vectors; rows of one length.)
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn dx_stream(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    (vc, k): (__m512, (__m512, __m512, __m512)),
    g: Option<&[f32]>,
) -> bool {
    let n = x.len();
    // The values `lo..hi` (fewer than 32) with ordinary stores; their subnormal mask.
    let part = |lo: usize, hi: usize, out: &mut [u16]| -> u32 {
        if lo == hi {
            return 0;
        }
        let (xc, dc) = (pad(&x[lo..hi]), pad(&dy[lo..hi]));
        let gc = g.map(|g| pad(&g[lo..hi]));
        let (r, t) = dx32((&xc, &dc), vc, k, gc.as_ref());
        out[lo..hi].copy_from_slice(&r[..hi - lo]);
        t & lanes(hi - lo)
    };
    // Values before the first 64-byte boundary (u16 values: an even address).
    let head = (out.as_ptr().cast::<u8>().align_offset(64) / 2).min(n);
    let mut tiny = part(0, head, out);
    let mut i = head;
    while i + 32 <= n {
        let (r, t) = dx32((at(x, i), at(dy, i)), vc, k, g.map(|g| at(g, i)));
        tiny |= t;
        let dst: &mut [u16; 32] = (&mut out[i..i + 32]).try_into().expect("32 values");
        // SAFETY: 64 bytes at a 64-byte boundary (`head`, then whole blocks), borrowed
        // mutably; the caller fences the stores before another thread reads them.
        unsafe { _mm512_stream_si512(dst.as_mut_ptr().cast(), bytemuck::cast(r)) };
        i += 32;
    }
    tiny |= part(i, n, out);
    if tiny != 0 {
        // The caller rewrites the row with ordinary stores: these go first.
        _mm_sfence();
    }
    tiny == 0
}

/// The shifted sums of `fused::sums` over a row, in its operations and order: four
/// chains of each sum over blocks of 32 values, one more vector of 16 into the first two,
/// the rest in scalar `f64`, the chains added pairwise and reduced as the token's
/// `sum_d` (`_mm512_reduce_add_pd`).
struct RowSums {
    h: __m512d,
    shift: f64,
    sm: [__m512d; 4],
    sq: [__m512d; 4],
}

impl RowSums {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn new(shift: f64) -> RowSums {
        let z = _mm512_setzero_pd();
        RowSums {
            h: _mm512_set1_pd(shift),
            shift,
            sm: [z; 4],
            sq: [z; 4],
        }
    }

    /// `v`'s two halves into chains `k0` and `k0 + 1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn add16(&mut self, v: __m512, k0: usize) {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v));
        for (k, w) in [(k0, lo), (k0 + 1, hi)] {
            let d = _mm512_sub_pd(w, self.h);
            self.sm[k] = _mm512_add_pd(self.sm[k], d);
            self.sq[k] = _mm512_fmadd_pd(d, d, self.sq[k]);
        }
    }

    /// A block of 32 values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn add32(&mut self, x: &[u16; 32]) {
        let (lo, hi) = ld32(x);
        self.add16(lo, 0);
        self.add16(hi, 2);
    }

    /// The last `rest.len() < 32` values, and the sums.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    fn finish(mut self, mut rest: &[u16]) -> (f64, f64) {
        if rest.len() >= 16 {
            self.add16(ld(rest), 0);
            rest = &rest[16..];
        }
        let (mut ts, mut tq) = (0.0, 0.0);
        for &v in rest {
            let d = f64::from(f32::from_bits(u32::from(v) << 16)) - self.shift;
            ts += d;
            tq += d * d;
        }
        let [s0, s1, s2, s3] = self.sm;
        let [q0, q1, q2, q3] = self.sq;
        let sum = _mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3));
        let sq = _mm512_add_pd(_mm512_add_pd(q0, q1), _mm512_add_pd(q2, q3));
        (
            _mm512_reduce_add_pd(sum) + ts,
            _mm512_reduce_add_pd(sq) + tq,
        )
    }
}

/// `y = (x − m)·a + b` over one row and the shifted sums of the next row (`next`, of the
/// same length) in one loop, as the f32 layers' pipelined rows: the sums' `f64` additions
/// and the row's rounding overlap. The sums are those of `fused::sums` bit for bit; the
/// flag is `false` when an output value of the row is an f32 subnormal (the caller
/// reruns the row's affine pass with the token kernel; the sums stand).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn affine_then_sums(
    (x, y): (&[u16], &mut [u16]),
    (m, a, b): (f32, f32, f32),
    (next, shift): (&[u16], f64),
) -> ((f64, f64), bool) {
    let n = x.len();
    assert!(y.len() == n && next.len() == n, "rows of one length");
    let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
    let body = n - n % 32;
    let mut acc = RowSums::new(shift);
    let mut tiny = 0u32;
    let mut i = 0;
    while i < body {
        acc.add32(at(next, i));
        let (r, t) = affine32(at(x, i), k, (None, None));
        y[i..i + 32].copy_from_slice(&r);
        tiny |= t;
        i += 32;
    }
    if body < n {
        let len = n - body;
        let (r, t) = affine32(&pad(&x[body..]), k, (None, None));
        y[body..].copy_from_slice(&r[..len]);
        tiny |= t & lanes(len);
    }
    (acc.finish(&next[body..]), tiny == 0)
}

/// `x̂·γ` or `fma(x̂, γ, β)` (β when `B`) with `x̂ = fma(x − m, a, b)` of one block of 32
/// values in f32 (the token kernels' row expression, `affine32`'s with γ): the first 16
/// values and the next 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn params_f32<const B: bool>(
    x: &[u16; 32],
    k: (__m512, __m512, __m512),
    (g, bt): (&[f32; 32], &[f32; 32]),
) -> (__m512, __m512) {
    let (xl, xh) = ld32(x);
    let (gl, gh) = ldf32(g);
    let (lo, hi) = (xhat_fused(xl, k), xhat_fused(xh, k));
    if B {
        let (bl, bh) = ldf32(bt);
        (_mm512_fmadd_ps(lo, gl, bl), _mm512_fmadd_ps(hi, gh, bh))
    } else {
        (_mm512_mul_ps(lo, gl), _mm512_mul_ps(hi, gh))
    }
}
