//! The bf16 elementwise passes at the AVX2 level, 16 values per step instead of the token
//! kernels' 8: the column passes (`ColAffine`, `ColDx`) and the row passes with one
//! coefficient set per row (`Affine` without γ along the row, `Dx`).
//!
//! With `stream`, the row passes write the output's whole 64-byte lines with non-temporal
//! stores: a bf16 store through the cache reads the output's lines first, which costs as
//! much traffic as writing them (the passes that do not fit the cache).
//!
//! On an AVX2-only CPU (Zen 3) the token kernels' bf16 store bounded these passes: each
//! vector of 8 was rounded (five integer operations), tested for NaN and blended (three),
//! then extracted and packed to 8 values (two) and stored, beside (in the column kernel)
//! one chunk iteration with its bounds tests per 8 columns; the f32 layer's own pass is a
//! load, three operations and a store per 8. Here two vectors of 8 are rounded with the
//! same integer arithmetic, one compare of the two tells whether either holds a NaN (the
//! quieting blend only then), and one pack gives the 16 values in order for one store:
//! the values are widened by unpacking one 32-byte load (values 0–3 and 8–11 in one
//! vector, 4–7 and 12–15 in the other, the coefficients along the row loaded in the same
//! order from 16-byte halves), which is the order the pack, working in 128-bit halves,
//! puts back in sequence, so the row passes need no cross-lane permute. The column passes
//! widen 8 values in order (their three or four coefficient arrays would need twice the
//! loads in the unpack order: slower on Zen 3, 256×512 BatchNorm1d eval) and permute
//! the packed 16 once. The arithmetic per value is the token kernels' (`(x − m)·a +
//! b`, `dy·c + ((x − m)·a + b)` and `dy·(c·γ) + ((x − m)·a + b)` in f32, no fused
//! multiply-add, rounded to nearest even, NaN quieted: the `half` crate's bits), the values
//! past the last 16 in scalar code with the same expressions, so the outputs are the token
//! kernels' bits (`tests/avx2.rs`).
//!
//! Only at the AVX2 level (`simd::level()`): the AVX-512 levels keep their own kernels.

use std::arch::x86_64::*;

use super::Cols;
use crate::kernels::simd::{self, Level};

/// `y = (x − m[j])·a[j] + b[j]` over rows of `m.len()` columns (as `ColAffine`) where the
/// level is AVX2; `false` (nothing done) elsewhere.
pub(super) fn col_affine(x: &[u16], y: &mut [u16], (m, a, b): Cols<'_>) -> bool {
    col_pass::<false>((x, x, y), [m, a, b, m])
}

/// `dx = dy·c[j] + ((x − m[j])·a[j] + b[j])` over rows of `m.len()` columns (as `ColDx`)
/// where the level is AVX2; `false` (nothing done) elsewhere.
pub(super) fn col_dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    cc: &[f32],
    (m, a, b): Cols<'_>,
) -> bool {
    col_pass::<true>((x, dy, out), [m, a, b, cc])
}

/// [`col_affine`] (`DX = false`: `dy` and `c` unused) or [`col_dx`] (`DX`), coefficients
/// `[m, a, b, c]`.
fn col_pass<const DX: bool>(io: (&[u16], &[u16], &mut [u16]), c: [&[f32]; 4]) -> bool {
    if simd::level() != Level::Avx2 {
        return false;
    }
    // SAFETY: the level is AVX2 (AVX2 and FMA detected), the features of `pass`.
    unsafe { pass::<DX>(io, c) };
    true
}

/// 16 bf16 bit patterns widened to f32 (exact: the bits in the upper half of each lane)
/// in two vectors in the unpack order ([`halves`]): values 0–3 and 8–11, then 4–7 and
/// 12–15.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn ld16(x: &[u16]) -> (__m256, __m256) {
    let a: [u16; 16] = x[..16].try_into().expect("16 values");
    let (v, z) = (bytemuck::cast(a), _mm256_setzero_si256());
    (
        _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v)),
        _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v)),
    )
}

/// 16 f32 values in the unpack order of [`ld16`] (the 128-bit halves 0, 2, then 1, 3):
/// the row passes' γ.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn halves(x: &[f32]) -> (__m256, __m256) {
    let a: [f32; 16] = x[..16].try_into().expect("16 values");
    let q: [__m128; 4] = bytemuck::cast(a);
    (_mm256_set_m128(q[2], q[0]), _mm256_set_m128(q[3], q[1]))
}

/// 8 bf16 bit patterns widened to f32 in order (exact: the bits in the upper half of each
/// lane).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn ld8(x: &[u16]) -> __m256 {
    let a: [u16; 8] = x[..8].try_into().expect("8 values");
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        bytemuck::cast(a),
    )))
}

/// 8 f32 values.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn ldf8(x: &[f32]) -> __m256 {
    let a: [f32; 8] = x[..8].try_into().expect("8 values");
    bytemuck::cast(a)
}

/// The 8 values from column `o` of one row, in order: `(x − m)·a + b`, and with `DX`
/// `dy·c + ((x − m)·a + b)` (the token kernels' operations, in their order).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn value8<const DX: bool>(
    (x, dy): (&[u16], &[u16]),
    o: usize,
    [m, a, b, c]: [&[f32]; 4],
) -> __m256 {
    let d = _mm256_sub_ps(ld8(&x[o..]), ldf8(&m[o..]));
    let xh = _mm256_add_ps(_mm256_mul_ps(d, ldf8(&a[o..])), ldf8(&b[o..]));
    if DX {
        _mm256_add_ps(_mm256_mul_ps(ld8(&dy[o..]), ldf8(&c[o..])), xh)
    } else {
        xh
    }
}

/// `v`'s lanes rounded to nearest even to bf16, in the low 16 bits of each 32-bit lane
/// (NaN lanes not quieted: [`quiet`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn round8(v: __m256) -> __m256i {
    let b = _mm256_castps_si256(v);
    let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), odd);
    _mm256_srli_epi32::<16>(r)
}

/// `r` ([`round8`] of `v`) with `v`'s NaN lanes quieted as the `half` crate does (the
/// upper 16 bits with the quiet bit set).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn quiet(v: __m256, r: __m256i) -> __m256i {
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    let q = _mm256_or_si256(
        _mm256_srli_epi32::<16>(_mm256_castps_si256(v)),
        _mm256_set1_epi32(0x40),
    );
    _mm256_blendv_epi8(r, q, nan)
}

/// `lo` and `hi` rounded to bf16 bit patterns (NaN lanes quieted), packed: in 128-bit
/// halves, `lo` 0–3, `hi` 0–3 | `lo` 4–7, `hi` 4–7.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pack16((lo, hi): (__m256, __m256)) -> __m256i {
    let (mut rl, mut rh) = (round8(lo), round8(hi));
    // Either vector has a NaN lane.
    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(lo, hi)) != 0 {
        (rl, rh) = (quiet(lo, rl), quiet(hi, rh));
    }
    _mm256_packus_epi32(rl, rh)
}

/// Values 0–7 then 8–15 in order rounded to 16 bf16 bit patterns in order: the pack
/// interleaves the 128-bit halves, one cross-lane permute puts them back (the column
/// passes: their coefficients are in memory in order, and loading three or four arrays
/// in the unpack order costs more loads than the permute).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn round16_in_order(v: (__m256, __m256)) -> [u16; 16] {
    bytemuck::cast(_mm256_permute4x64_epi64::<0xD8>(pack16(v)))
}

/// One value of the passes in scalar code (the vector lanes' expressions and rounding).
#[inline]
fn value1<const DX: bool>((x, dy): (u16, u16), [m, a, b, c]: [f32; 4]) -> u16 {
    let w = |h: u16| f32::from_bits(u32::from(h) << 16);
    let xh = (w(x) - m) * a + b;
    let v = if DX { w(dy) * c + xh } else { xh };
    half::bf16::from_f32(v).to_bits()
}

/// `y = (x − m)·a + b` over a row (as `Affine` without γ). With `stream`, the output's
/// whole 64-byte lines are written with non-temporal stores (the caller fences them:
/// `fused::stream_fence`). Where the level is AVX2; `false` (nothing done) elsewhere.
pub(super) fn row_affine(
    x: &[u16],
    y: &mut [u16],
    (m, a, b): (f32, f32, f32),
    stream: bool,
) -> bool {
    row_pass::<false, false>((x, x, y), [m, a, b, 0.0], None, stream)
}

/// `dx = dy·(c·γ) + ((x − m)·a + b)` over a row (γ = 1 when absent: `dy·c + …`, as `Dx`);
/// `stream` as [`row_affine`]. Where the level is AVX2; `false` (nothing done) elsewhere.
pub(super) fn row_dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    (c, m, a, b): (f32, f32, f32, f32),
    g: Option<&[f32]>,
    stream: bool,
) -> bool {
    let k = [m, a, b, c];
    match g {
        None => row_pass::<true, false>((x, dy, out), k, None, stream),
        Some(g) => row_pass::<true, true>((x, dy, out), k, Some(g), stream),
    }
}

/// [`row_affine`] (`DX = false`: `dy` and `c` unused) or [`row_dx`] (`DX`, with γ where
/// `G`), coefficients `[m, a, b, c]`.
fn row_pass<const DX: bool, const G: bool>(
    io: (&[u16], &[u16], &mut [u16]),
    k: [f32; 4],
    g: Option<&[f32]>,
    stream: bool,
) -> bool {
    if simd::level() != Level::Avx2 {
        return false;
    }
    let n = io.0.len();
    assert!(
        io.1.len() == n && io.2.len() == n && g.is_none_or(|g| g.len() >= n),
        "rows of one length"
    );
    let g = g.map_or(&[][..], |g| &g[..n]);
    // SAFETY: the level is AVX2 (AVX2 and FMA detected), the features of `row`.
    unsafe { row::<DX, G>(io, k, g, stream) };
    true
}

/// [`row_pass`] inside the level's features: blocks of 16 values, the last one overlapping
/// the one before where the row is not a multiple of 16 (rows below 16 one value at a
/// time); with `stream` (rows of 64 values or more), the output's whole 64-byte lines with
/// non-temporal stores, the values before and after them stored as usual.
#[target_feature(enable = "avx2,fma")]
fn row<const DX: bool, const G: bool>(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    [m, a, b, c]: [f32; 4],
    g: &[f32],
    stream: bool,
) {
    let n = x.len();
    let (vm, va, vb, vc) = (
        _mm256_set1_ps(m),
        _mm256_set1_ps(a),
        _mm256_set1_ps(b),
        _mm256_set1_ps(c),
    );
    // Block `o`'s 16 values rounded and packed in order. A macro, not a closure: its uses
    // stay inline, in the level's features (a closure with several calls was compiled out
    // of line, one call per block).
    macro_rules! block {
        ($o:expr) => {{
            let o: usize = $o;
            let (xl, xh) = ld16(&x[o..]);
            let lo = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xl, vm), va), vb);
            let hi = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xh, vm), va), vb);
            let v = if DX {
                let (cl, ch) = if G {
                    let (gl, gh) = halves(&g[o..]);
                    (_mm256_mul_ps(vc, gl), _mm256_mul_ps(vc, gh))
                } else {
                    (vc, vc)
                };
                let (dl, dh) = ld16(&dy[o..]);
                (
                    _mm256_add_ps(_mm256_mul_ps(dl, cl), lo),
                    _mm256_add_ps(_mm256_mul_ps(dh, ch), hi),
                )
            } else {
                (lo, hi)
            };
            pack16(v)
        }};
    }
    // Values `lo..hi` with ordinary stores: whole blocks, then one block reaching past
    // `hi` (or ending at the row's end) computed whole, only its values below `hi` stored.
    macro_rules! plain {
        ($lo:expr, $hi:expr) => {{
            let (mut o, hi): (usize, usize) = ($lo, $hi);
            while o + 16 <= hi {
                out[o..o + 16].copy_from_slice(&bytemuck::cast::<_, [u16; 16]>(block!(o)));
                o += 16;
            }
            if o < hi {
                let s = o.min(n - 16);
                let r: [u16; 16] = bytemuck::cast(block!(s));
                out[o..hi].copy_from_slice(&r[o - s..hi - s]);
            }
        }};
    }
    if n < 16 {
        for (j, v) in out.iter_mut().enumerate() {
            let cg = if G { c * g[j] } else { c };
            *v = value1::<DX>((x[j], dy[j]), [m, a, b, cg]);
        }
    } else if stream && n >= 64 {
        // Whole 64-byte lines streamed (u16 values: the byte distance to a line boundary
        // is even), two blocks per line; the values before the first and after the last
        // stored as usual. No line is written both ways: an ordinary store into a line
        // with streamed bytes pending costs as much as the line's whole pass.
        let first = (out.as_ptr().cast::<u8>().align_offset(64) / 2).min(n);
        let end = first + (n - first) / 32 * 32;
        plain!(0, first);
        let mut o = first;
        while o < end {
            let r = block!(o);
            let dst: &mut [u16; 16] = (&mut out[o..o + 16]).try_into().expect("16 values");
            // SAFETY: 32 bytes at a 32-byte boundary (`first`, a 64-byte one, then whole
            // blocks), borrowed mutably; the caller fences the stores before another
            // thread reads them.
            unsafe { _mm256_stream_si256(dst.as_mut_ptr().cast(), r) };
            o += 16;
        }
        plain!(end, n);
    } else {
        plain!(0, n);
    }
}

/// [`col_pass`] inside the level's features: per row, blocks of 16 columns, then the rest
/// one value at a time.
#[target_feature(enable = "avx2,fma")]
fn pass<const DX: bool>((x, dy, out): (&[u16], &[u16], &mut [u16]), c: [&[f32]; 4]) {
    let k = c[0].len();
    if k == 0 {
        return;
    }
    let c = [c[0], &c[1][..k], &c[2][..k], &c[3][..k]];
    let body = k - k % 16;
    let rows = x.chunks_exact(k).zip(dy.chunks_exact(k));
    for ((xr, dr), or) in rows.zip(out.chunks_exact_mut(k)) {
        let mut o = 0;
        while o < body {
            let v = (
                value8::<DX>((xr, dr), o, c),
                value8::<DX>((xr, dr), o + 8, c),
            );
            let r = round16_in_order(v);
            or[o..o + 16].copy_from_slice(&r);
            o += 16;
        }
        for j in body..k {
            or[j] = value1::<DX>((xr[j], dr[j]), [c[0][j], c[1][j], c[2][j], c[3][j]]);
        }
    }
}

#[cfg(test)]
#[path = "tests/avx2.rs"]
mod tests;
