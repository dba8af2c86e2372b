//! The AVX512_BF16 column kernels (rows of `k` columns with per-column coefficients):
//! `fused::col_affine` (optionally with non-temporal stores) and `fused::col_dx`, in
//! blocks of 32 columns, rounded and subnormal-checked as the row kernels of the parent
//! module.

use std::arch::x86_64::*;

use super::{at, lanes, ld32, ldf32, pad, round32, xhat};

/// The coefficient arrays (up to four, `k` values each) of the block of 32 columns from
/// `o`: borrowed where the block is whole, zero-padded copies in `pad` for the last one.
#[inline(always)]
fn coef_block<'a>(vs: [&'a [f32]; 4], o: usize, pad: &'a mut [[f32; 32]; 4]) -> [&'a [f32; 32]; 4] {
    let k = vs[0].len();
    if o + 32 <= k {
        return whole(vs, o);
    }
    for (d, v) in pad.iter_mut().zip(vs) {
        d[..k - o].copy_from_slice(&v[o..k]);
    }
    [&pad[0], &pad[1], &pad[2], &pad[3]]
}

/// The coefficient arrays' whole block of 32 columns from `o`.
#[inline(always)]
fn whole(vs: [&[f32]; 4], o: usize) -> [&[f32; 32]; 4] {
    [at(vs[0], o), at(vs[1], o), at(vs[2], o), at(vs[3], o)]
}

/// `(x − m)·a + b` of a block of 32 columns with their coefficients, rounded.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn col_affine32(x: &[u16; 32], [m, a, b, _]: [&[f32; 32]; 4]) -> ([u16; 32], u32) {
    let ((xl, xh), (ml, mh), (al, ah), (bl, bh)) = (ld32(x), ldf32(m), ldf32(a), ldf32(b));
    round32(xhat(xl, (ml, al, bl)), xhat(xh, (mh, ah, bh)))
}

/// Rows of `m.len()` columns: `y = (x − m[j])·a[j] + b[j]` (as `fused::col_affine`),
/// written with non-temporal stores with `stream` (see [`col_stream`]) where the
/// rows allow it and `y` starts as far from a 64-byte boundary as the pass's output.
/// `false` when an output value is an f32 subnormal (see [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn col_affine(
    x: &[u16],
    y: &mut [u16],
    (m, a, b): super::super::Cols<'_>,
    stream: Option<&super::super::Streamed>,
) -> bool {
    let k = m.len();
    if k == 0 {
        return true;
    }
    let head = y.as_ptr().cast::<u8>().align_offset(64) / 2;
    if let Some(s) = stream.filter(|s| s.head == head && s.m.len() == k) {
        if k.is_multiple_of(32) && x.len() >= k + 32 {
            return col_stream::<false>((x, x, y), [m, &a[..k], &b[..k], m], s);
        }
    }
    let vs = [m, &a[..k], &b[..k], m];
    let body = k - k % 32;
    let mut last = [[0f32; 32]; 4];
    let tail = coef_block(vs, body, &mut last);
    let mut tiny = 0u32;
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(k)) {
        let mut o = 0;
        while o < body {
            let (r, t) = col_affine32(at(xr, o), whole(vs, o));
            yr[o..o + 32].copy_from_slice(&r);
            tiny |= t;
            o += 32;
        }
        if body < k {
            let len = k - body;
            let (r, t) = col_affine32(&pad(&xr[body..]), tail);
            yr[body..].copy_from_slice(&r[..len]);
            tiny |= t & lanes(len);
        }
    }
    tiny == 0
}

/// Stores the 32 values `r` into `dst` (64 bytes at a 64-byte boundary, checked) with a
/// non-temporal store; the caller fences its stores (`_mm_sfence`) before it returns.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn stream32(dst: &mut [u16], r: [u16; 32]) {
    let dst: &mut [u16; 32] = dst.try_into().expect("32 values");
    assert!(dst.as_ptr().addr().is_multiple_of(64), "a 64-byte boundary");
    // SAFETY: 64 bytes at a 64-byte boundary (asserted), borrowed mutably.
    unsafe { _mm512_stream_si512(dst.as_mut_ptr().cast(), bytemuck::cast(r)) };
}

/// `dy·c + ((x − m)·a + b)` of a block of 32 columns with their coefficients, rounded.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn col_dx32((x, dy): (&[u16; 32], &[u16; 32]), [m, a, b, c]: [&[f32; 32]; 4]) -> ([u16; 32], u32) {
    let ((xl, xh), (dl, dh)) = (ld32(x), ld32(dy));
    let ((ml, mh), (al, ah), (bl, bh), (cl, ch)) = (ldf32(m), ldf32(a), ldf32(b), ldf32(c));
    let lo = _mm512_add_ps(_mm512_mul_ps(dl, cl), xhat(xl, (ml, al, bl)));
    let hi = _mm512_add_ps(_mm512_mul_ps(dh, ch), xhat(xh, (mh, ah, bh)));
    round32(lo, hi)
}

/// Rows of `m.len()` columns: `dx = dy·c[j] + ((x − m[j])·a[j] + b[j])` (as
/// `fused::col_dx_streamed`), written with non-temporal stores with `stream` (see
/// [`col_stream`]) where the rows allow it and `out` starts as far from a 64-byte
/// boundary as the pass's output. `false` when an output value is an f32 subnormal (see
/// [`affine`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(super) fn col_dx(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    cc: &[f32],
    (m, a, b): super::super::Cols<'_>,
    stream: Option<&super::super::Streamed>,
) -> bool {
    let k = m.len();
    if k == 0 {
        return true;
    }
    let head = out.as_ptr().cast::<u8>().align_offset(64) / 2;
    if let Some(s) = stream.filter(|s| s.head == head && s.m.len() == k && s.c.len() == k) {
        if k.is_multiple_of(32) && x.len() >= k + 32 {
            return col_stream::<true>((x, dy, out), [m, &a[..k], &b[..k], &cc[..k]], s);
        }
    }
    let vs = [m, &a[..k], &b[..k], &cc[..k]];
    let body = k - k % 32;
    let mut last = [[0f32; 32]; 4];
    let tail = coef_block(vs, body, &mut last);
    let mut tiny = 0u32;
    let rows = x.chunks_exact(k).zip(dy.chunks_exact(k));
    for ((xr, dr), or) in rows.zip(out.chunks_exact_mut(k)) {
        let mut o = 0;
        while o < body {
            let (r, t) = col_dx32((at(xr, o), at(dr, o)), whole(vs, o));
            or[o..o + 32].copy_from_slice(&r);
            tiny |= t;
            o += 32;
        }
        if body < k {
            let len = k - body;
            let (r, t) = col_dx32((&pad(&xr[body..]), &pad(&dr[body..])), tail);
            or[body..].copy_from_slice(&r[..len]);
            tiny |= t & lanes(len);
        }
    }
    tiny == 0
}

/// One block of 32 columns of a column pass, rounded, and the mask of its f32 subnormal
/// outputs: with `DX`, `dy·c + ((x − m)·a + b)` ([`col_dx32`], coefficients `[m, a, b,
/// c]`), else `(x − m)·a + b` of `x` ([`col_affine32`]; `dy` and `c` unused).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn block32<const DX: bool>(
    (x, dy): (&[u16; 32], &[u16; 32]),
    c: [&[f32; 32]; 4],
) -> ([u16; 32], u32) {
    if DX {
        col_dx32((x, dy), c)
    } else {
        col_affine32(x, c)
    }
}

/// [`col_affine`] (`DX = false`: `dy` unused) or [`col_dx`] (`DX`) of rows whose length `k`
/// is a multiple of 32 with the coefficient arrays `vs` (`[m, a, b, c]`), writing the
/// output with non-temporal stores (no read of the output's cache lines, and the inputs
/// the next pass reads are not evicted for it). The stores go to whole 64-byte lines: the
/// values before the output's first line boundary and after its last one are stored as
/// usual, and the body in blocks of 32 values from that boundary, whose columns (`k` a
/// multiple of 32) are a block of 32 of the coefficient arrays rotated by the boundary's
/// offset (`rot`, built once per pass). The same expression per value as the row loops,
/// so the same bits. One fence after the stores, before the caller's return.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn col_stream<const DX: bool>(
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    vs: [&[f32]; 4],
    rot: &super::super::Streamed,
) -> bool {
    let (k, n) = (vs[0].len(), x.len());
    assert!(
        dy.len() == n && out.len() == n && k >= 32 && n >= k + 32,
        "rows of one length"
    );
    // Values before the first 64-byte boundary of `out` (u16 values: an even address).
    let head = rot.head;
    let rc = if DX { &rot.c } else { &rot.m };
    assert!(
        rot.m.len() == k && rc.len() == k && out.as_ptr().cast::<u8>().align_offset(64) == 2 * head,
        "the pass's rotation"
    );
    let mut tiny = 0u32;
    if head > 0 {
        let xd = (&pad(&x[..head]), &pad(&dy[..head]));
        let (r, t) = block32::<DX>(xd, whole(vs, 0));
        out[..head].copy_from_slice(&r[..head]);
        tiny |= t & lanes(head);
    }
    // The coefficients of columns `head..k, 0..head`: block `j` of the body starts at
    // column `(head + 32·j) mod k`.
    let vs = [&rot.m[..k], &rot.a[..k], &rot.b[..k], &rc[..k]];
    let (mut i, mut c) = (head, 0);
    while i + 32 <= n {
        let (r, t) = block32::<DX>((at(x, i), at(dy, i)), whole(vs, c));
        tiny |= t;
        // A 64-byte boundary: `head`, then whole blocks.
        stream32(&mut out[i..i + 32], r);
        i += 32;
        c += 32;
        if c == k {
            c = 0;
        }
    }
    if i < n {
        let len = n - i;
        let (r, t) = block32::<DX>((&pad(&x[i..]), &pad(&dy[i..])), whole(vs, c));
        out[i..].copy_from_slice(&r[..len]);
        tiny |= t & lanes(len);
    }
    _mm_sfence();
    tiny == 0
}
