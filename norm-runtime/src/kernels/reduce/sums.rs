//! The statistics row sums (`f32` and `f64`) and the pipelined forward row (affine pass
//! of one row in the loop that sums the next), written once over the ISA token.

use super::row_sums_portable;
use crate::kernels::isa::{Aligned, Isa};

/// The eight accumulator chains of the `f32` shifted sums: four for Σd, four for Σd².
/// One type for the plain and the pipelined reduction, so both perform the same
/// operations in the same order (bit-identical sums).
pub(super) struct Sums<S: Isa> {
    h: S::F64,
    s: [S::F64; 4],
    q: [S::F64; 4],
}

impl<S: Isa> Sums<S> {
    #[inline(always)]
    pub(super) fn new(s: S, shift: f64) -> Self {
        let z = s.splat_d(0.0);
        Sums {
            h: s.splat_d(shift),
            s: [z; 4],
            q: [z; 4],
        }
    }

    /// Adds the first `2·LANES` values of `x`. Eight independent chains: the add latency,
    /// not memory, would otherwise bound the loop.
    #[inline(always)]
    pub(super) fn add(&mut self, s: S, x: &[f32]) {
        let l = S::LANES;
        let (a, b) = s.load_wide(&x[..l]);
        let (c, d) = s.load_wide(&x[l..2 * l]);
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            let v = s.sub_d(v, self.h);
            self.s[k] = s.add_d(self.s[k], v);
            self.q[k] = s.mul_add_d(v, v, self.q[k]);
        }
    }

    /// Adds the last `rest.len() < 2·LANES` values and reduces: (Σd, Σd²).
    #[inline(always)]
    pub(super) fn finish(mut self, s: S, mut rest: &[f32], shift: f64) -> (f64, f64) {
        let l = S::LANES;
        if rest.len() >= l {
            let (a, b) = s.widen(s.load(rest));
            for (k, v) in [a, b].into_iter().enumerate() {
                let v = s.sub_d(v, self.h);
                self.s[k] = s.add_d(self.s[k], v);
                self.q[k] = s.mul_add_d(v, v, self.q[k]);
            }
            rest = &rest[l..];
        }
        let (rs, rq) = row_sums_portable(rest, shift);
        let [s0, s1, s2, s3] = self.s;
        let [q0, q1, q2, q3] = self.q;
        let sum = s.add_d(s.add_d(s0, s1), s.add_d(s2, s3));
        let sq = s.add_d(s.add_d(q0, q1), s.add_d(q2, q3));
        (s.sum_d(sum) + rs, s.sum_d(sq) + rq)
    }
}

/// Σ(x − shift) and Σ(x − shift)² of an `f32` row.
#[inline(always)]
pub(super) fn row_sums_f32<S: Isa>(s: S, x: &[f32], shift: f64) -> (f64, f64) {
    let mut acc = Sums::new(s, shift);
    let mut chunks = x.chunks_exact(2 * S::LANES);
    for c in &mut chunks {
        acc.add(s, c);
    }
    acc.finish(s, chunks.remainder(), shift)
}

/// Σ(x − shift) and Σ(x − shift)² of an `f64` row: two chains of each.
#[inline(always)]
pub(super) fn row_sums_f64<S: Isa>(s: S, x: &[f64], shift: f64) -> (f64, f64) {
    let half = S::LANES / 2;
    let h = s.splat_d(shift);
    let z = s.splat_d(0.0);
    let (mut s0, mut s1, mut q0, mut q1) = (z, z, z, z);
    let mut chunks = x.chunks_exact(S::LANES);
    for c in &mut chunks {
        let a = s.sub_d(s.load_d(c), h);
        let b = s.sub_d(s.load_d(&c[half..]), h);
        s0 = s.add_d(s0, a);
        s1 = s.add_d(s1, b);
        q0 = s.mul_add_d(a, a, q0);
        q1 = s.mul_add_d(b, b, q1);
    }
    let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
    (s.sum_d(s.add_d(s0, s1)) + rs, s.sum_d(s.add_d(q0, q1)) + rq)
}

/// A partial or full vector: `len` values from `j` (full when `len == LANES`).
#[inline(always)]
pub(super) fn ld<S: Isa>(s: S, v: &[f32], j: usize, len: usize) -> S::F32 {
    if len == S::LANES {
        s.load(&v[j..j + len])
    } else {
        s.load_part(&v[j..j + len])
    }
}

/// Stores a partial or full vector (streamed if asked, full and aligned).
#[inline(always)]
pub(super) fn st<S: Isa>(s: S, out: &mut [f32], j: usize, len: usize, v: S::F32, stream: bool) {
    let o = &mut out[j..j + len];
    if len < S::LANES {
        s.store_part(o, v);
    } else if stream {
        s.stream(o, v);
    } else {
        s.store(o, v);
    }
}

/// y = ((x − m)·a + b)·γ + β on `len` values from `j`: the portable kernel's operations,
/// lane by lane (no fused multiply-add, so results match it bit for bit).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn affine_vec<S: Isa>(
    s: S,
    x: &[f32],
    y: &mut [f32],
    (vm, va, vb): (S::F32, S::F32, S::F32),
    p: Option<(&[f32], Option<&[f32]>)>,
    (j, len): (usize, usize),
    stream: bool,
) {
    let mut v = s.sub(ld(s, x, j, len), vm);
    v = s.add(s.mul(v, va), vb);
    if let Some((g, bt)) = p {
        v = s.mul(v, ld(s, g, j, len));
        if let Some(bt) = bt {
            v = s.add(v, ld(s, bt, j, len));
        }
    }
    st(s, y, j, len, v, stream);
}

/// `row_sums_f32` over `next` with the affine pass over (`x`, `y`) in the same loop
/// (exactly the arithmetic of the separate passes).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn affine_then_sums_f32<S: Isa>(
    s: S,
    x: &[f32],
    y: &mut [f32],
    (m, a, b): (f32, f32, f32),
    p: Option<(&[f32], Option<&[f32]>)>,
    (next, ahead): (&[f32], bool),
    shift: f64,
    stream: bool,
) -> (f64, f64) {
    let n = next.len();
    assert!(x.len() == n && y.len() == n, "rows of one length");
    if let Some((g, bt)) = p {
        assert!(
            g.len() == n && bt.is_none_or(|bt| bt.len() == n),
            "parameters span the row"
        );
    }
    let l = S::LANES;
    let k = (s.splat(m), s.splat(a), s.splat(b));
    let mut acc = Sums::new(s, shift);
    // The row after `next`: prefetched along the loop when the caller says it is the
    // next call's (`ahead`).
    let after = next.as_ptr().wrapping_add(n);
    let mut out = Aligned::new(s, y);
    let full = n - n % (2 * l);
    let mut i = 0;
    while i < full {
        // The next row's loads first: a load behind a store to an address 4 KiB apart
        // (rows of whole pages) would wait on it (4K aliasing).
        acc.add(s, &next[i..]);
        if ahead && i % 32 == 0 {
            s.prefetch(after.wrapping_add(i));
        }
        if let Some(j) = out.body(2 * l) {
            affine_vec(s, x, y, k, p, (j, l), stream);
            affine_vec(s, x, y, k, p, (j + l, l), stream);
        }
        i += 2 * l;
    }
    for part in out.rest() {
        affine_vec(s, x, y, k, p, part, stream);
    }
    if stream {
        s.fence();
    }
    // The rest of the sums, exactly as `row_sums_f32` finishes.
    acc.finish(s, &next[full..], shift)
}

/// `row_sums_f32` of each contiguous row of `len` values of `x` (shift: the row's first
/// value when `center`), one slot of `out` per row: the tile's sums in one call.
#[inline(always)]
pub(super) fn rows_sums_f32<S: Isa>(
    s: S,
    x: &[f32],
    len: usize,
    center: bool,
    (shift, sum, sq): super::TileSums<'_>,
) {
    if len == 0 {
        return;
    }
    let rows = x.chunks_exact(len).zip(shift.iter_mut());
    for ((row, h), (sr, qr)) in rows.zip(sum.iter_mut().zip(sq.iter_mut())) {
        *h = if center { f64::from(row[0]) } else { 0.0 };
        (*sr, *qr) = row_sums_f32(s, row, *h);
    }
}

/// The affine pass of a tile of contiguous rows of `len` values, row r with its own
/// (m, a, b) and the shared γ, β along the row: whole vectors from the row's start, then
/// one partial vector (each value as `affine_vec`, so the results are those of the row
/// kernels).
#[inline(always)]
pub(super) fn rows_affine_f32<S: Isa>(
    s: S,
    (x, y): (&[f32], &mut [f32]),
    len: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
    p: Option<(&[f32], Option<&[f32]>)>,
    stream: bool,
) {
    if len == 0 {
        return;
    }
    if let Some((g, bt)) = p {
        assert!(
            g.len() == len && bt.is_none_or(|bt| bt.len() == len),
            "parameters span the row"
        );
    }
    let l = S::LANES;
    let full = len - len % l;
    let rows = y.chunks_exact_mut(len).zip(x.chunks_exact(len));
    for (r, (yr, xr)) in rows.take(m.len().min(a.len()).min(b.len())).enumerate() {
        let k = (s.splat(m[r]), s.splat(a[r]), s.splat(b[r]));
        let mut j = 0;
        while j < full {
            affine_vec(s, xr, yr, k, p, (j, l), stream);
            j += l;
        }
        if j < len {
            affine_vec(s, xr, yr, k, p, (j, len - j), stream);
        }
    }
    if stream {
        s.fence();
    }
}
