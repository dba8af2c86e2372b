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

/// Whether the fast kernels run here: the AVX-512 level is selected (not capped by
/// `NORMKIT_SIMD`) and the CPU has AVX512_BF16.
#[inline]
pub(super) fn available() -> bool {
    simd::level() == Level::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
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
    let (mut lo, mut hi) = (xhat(xl, k), xhat(xh, k));
    if let Some(g) = p.0 {
        let (gl, gh) = ldf32(g);
        lo = _mm512_mul_ps(lo, gl);
        hi = _mm512_mul_ps(hi, gh);
    }
    if let Some(bt) = p.1 {
        let (bl, bh) = ldf32(bt);
        lo = _mm512_add_ps(lo, bl);
        hi = _mm512_add_ps(hi, bh);
    }
    round32(lo, hi)
}

/// `y = (x − m)·a + b`, times γ and plus β along the row where given (the expression of
/// `fused::affine`). `false` when an output value is an f32 subnormal: `y` is then only
/// partly right and the caller runs the token kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn affine(x: &[u16], y: &mut [u16], (m, a, b): (f32, f32, f32), p: Params<'_>) -> bool {
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
/// `fused::dx`. `false` when an output value is an f32 subnormal (see [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    (c, m, a, b): (f32, f32, f32, f32),
    g: Option<&[f32]>,
) -> bool {
    let n = x.len();
    assert!(dy.len() == n && out.len() == n, "rows of one length");
    let vc = _mm512_set1_ps(c);
    let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
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

/// The coefficient arrays' blocks of 32 columns (the last one zero-padded).
struct ColBlocks {
    blocks: Vec<[[f32; 32]; 4]>,
}

impl ColBlocks {
    /// `vs` (up to four arrays of `k` values) in blocks of 32 columns.
    fn of(vs: &[&[f32]], k: usize) -> ColBlocks {
        let blocks = (0..k.div_ceil(32))
            .map(|j| {
                let mut b = [[0f32; 32]; 4];
                for (d, v) in b.iter_mut().zip(vs) {
                    let r = &v[32 * j..(32 * j + 32).min(k)];
                    d[..r.len()].copy_from_slice(r);
                }
                b
            })
            .collect();
        ColBlocks { blocks }
    }
}

/// `(x − m)·a + b` of a block of 32 columns with their coefficient block, rounded.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn col_affine32(x: &[u16; 32], c: &[[f32; 32]; 4]) -> ([u16; 32], u32) {
    let ((xl, xh), (ml, mh), (al, ah), (bl, bh)) =
        (ld32(x), ldf32(&c[0]), ldf32(&c[1]), ldf32(&c[2]));
    round32(xhat(xl, (ml, al, bl)), xhat(xh, (mh, ah, bh)))
}

/// Rows of `m.len()` columns: `y = (x − m[j])·a[j] + b[j]` (as `fused::col_affine`).
/// `false` when an output value is an f32 subnormal (see [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn col_affine(x: &[u16], y: &mut [u16], (m, a, b): super::Cols<'_>) -> bool {
    let k = m.len();
    if k == 0 {
        return true;
    }
    let cb = ColBlocks::of(&[m, &a[..k], &b[..k]], k);
    let body = k - k % 32;
    let (full, last) = cb.blocks.split_at(body / 32);
    let mut tiny = 0u32;
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(k)) {
        let mut o = 0;
        for c in full {
            let (r, t) = col_affine32(at(xr, o), c);
            yr[o..o + 32].copy_from_slice(&r);
            tiny |= t;
            o += 32;
        }
        if let [c] = last {
            let len = k - body;
            let (r, t) = col_affine32(&pad(&xr[body..]), c);
            yr[body..].copy_from_slice(&r[..len]);
            tiny |= t & lanes(len);
        }
    }
    tiny == 0
}

/// `dy·c + ((x − m)·a + b)` of a block of 32 columns with their coefficient block,
/// rounded.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn col_dx32((x, dy): (&[u16; 32], &[u16; 32]), c: &[[f32; 32]; 4]) -> ([u16; 32], u32) {
    let ((xl, xh), (dl, dh)) = (ld32(x), ld32(dy));
    let ((ml, mh), (al, ah), (bl, bh), (cl, ch)) =
        (ldf32(&c[0]), ldf32(&c[1]), ldf32(&c[2]), ldf32(&c[3]));
    let lo = _mm512_add_ps(_mm512_mul_ps(dl, cl), xhat(xl, (ml, al, bl)));
    let hi = _mm512_add_ps(_mm512_mul_ps(dh, ch), xhat(xh, (mh, ah, bh)));
    round32(lo, hi)
}

/// Rows of `m.len()` columns: `dx = dy·c[j] + ((x − m[j])·a[j] + b[j])` (as
/// `fused::col_dx`). `false` when an output value is an f32 subnormal (see [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn col_dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    cc: &[f32],
    (m, a, b): super::Cols<'_>,
) -> bool {
    let k = m.len();
    if k == 0 {
        return true;
    }
    let cb = ColBlocks::of(&[m, &a[..k], &b[..k], &cc[..k]], k);
    let body = k - k % 32;
    let (full, last) = cb.blocks.split_at(body / 32);
    let mut tiny = 0u32;
    let rows = x.chunks_exact(k).zip(dy.chunks_exact(k));
    for ((xr, dr), or) in rows.zip(out.chunks_exact_mut(k)) {
        let mut o = 0;
        for c in full {
            let (r, t) = col_dx32((at(xr, o), at(dr, o)), c);
            or[o..o + 32].copy_from_slice(&r);
            tiny |= t;
            o += 32;
        }
        if let [c] = last {
            let len = k - body;
            let (r, t) = col_dx32((&pad(&xr[body..]), &pad(&dr[body..])), c);
            or[body..].copy_from_slice(&r[..len]);
            tiny |= t & lanes(len);
        }
    }
    tiny == 0
}
