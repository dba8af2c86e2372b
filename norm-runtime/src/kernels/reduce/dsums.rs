//! The backward row sums (Σw·dy, Σw·dy·x̂) of `f32` and `f64` rows, plain and pipelined
//! with the dx pass of the previous rows, written once over the ISA token.

use super::sums::{ld, st};
use super::{reborrow, row_dsums_portable, row_dsums_weighted, DxRows, RowParam, Rows};
use crate::kernels::isa::{Aligned, Isa};

/// The accumulators of one row's `f32` backward sums: Σw·dy and Σw·dy·x̂, each in two
/// `f64` chains (low and high lanes). `4·LANES` values at a time are first summed in
/// `f32` — four terms per lane — then widened once, which keeps the lane-crossing
/// conversions off the critical port. The plain and the pipelined kernels, for any number
/// of rows at a time, perform the same operations on a row in the same order
/// (bit-identical sums).
struct DSums<S: Isa> {
    coef: (f32, f32, f32),
    vm: S::F32,
    va: S::F32,
    vb: S::F32,
    s: [S::F64; 2],
    t: [S::F64; 2],
}

impl<S: Isa> DSums<S> {
    #[inline(always)]
    fn new(s: S, (m, a, b): (f32, f32, f32)) -> Self {
        let z = s.splat_d(0.0);
        DSums {
            coef: (m, a, b),
            vm: s.splat(m),
            va: s.splat(a),
            vb: s.splat(b),
            s: [z; 2],
            t: [z; 2],
        }
    }

    /// (dy, x̂) of the first `LANES` values of `x`, `dy`.
    #[inline(always)]
    fn raw(&self, s: S, x: &[f32], dy: &[f32]) -> (S::F32, S::F32) {
        let (vx, vd) = (s.load(x), s.load(dy));
        (vd, s.add(s.mul(s.sub(vx, self.vm), self.va), self.vb))
    }

    /// Widens `f32` partial sums of w·dy (`ps`) and w·dy·x̂ (`pt`) into the chains.
    #[inline(always)]
    fn push(&mut self, s: S, ps: S::F32, pt: S::F32) {
        let (sl, sh) = s.widen(ps);
        let (tl, th) = s.widen(pt);
        self.s[0] = s.add_d(self.s[0], sl);
        self.s[1] = s.add_d(self.s[1], sh);
        self.t[0] = s.add_d(self.t[0], tl);
        self.t[1] = s.add_d(self.t[1], th);
    }

    /// Adds the last values of the row (`x.len() < 4·LANES`) and reduces.
    #[inline(always)]
    fn finish(
        &mut self,
        s: S,
        x: &[f32],
        dy: &[f32],
        mut p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let (n, l) = (x.len(), S::LANES);
        let mut i = 0;
        while i + l <= n {
            let (vd, xh) = self.raw(s, &x[i..], &dy[i..]);
            let vw = weigh(s, vd, xh, &mut p, i);
            self.push(s, vw, s.mul(vw, xh));
            i += l;
        }
        let (r1, r2) = row_dsums_portable(&x[i..], &dy[i..], self.coef, tail(p, i));
        let sum = s.add_d(self.s[0], self.s[1]);
        let t = s.add_d(self.t[0], self.t[1]);
        (s.sum_d(sum) + r1, s.sum_d(t) + r2)
    }
}

/// One row's vector (dy, x̂) at `i` → w·dy, staging dy·x̂ and dy first if `p` is staged.
#[inline(always)]
fn weigh<S: Isa>(
    s: S,
    vd: S::F32,
    xh: S::F32,
    p: &mut Option<RowParam<'_, f32>>,
    i: usize,
) -> S::F32 {
    let Some((g, st)) = p else { return vd };
    if let Some((sg, sb)) = st {
        let (sg, sb) = (&mut sg[i..], &mut sb[i..]);
        s.store(sg, s.mul_add(vd, xh, s.load(sg)));
        s.store(sb, s.add(s.load(sb), vd));
    }
    s.mul(vd, s.load(&g[i..]))
}

/// Adds `4·LANES` columns from `i` of `R` rows sharing γ: each row sums its four vectors
/// in `f32` before one push; a staged γ gets the terms of all `R` rows summed in
/// registers, then one update of its accumulators per vector.
#[inline(always)]
fn add_block<S: Isa, const R: usize>(
    s: S,
    acc: &mut [DSums<S>; R],
    (x, dy): ([&[f32]; R], [&[f32]; R]),
    i: usize,
    p: &mut Option<RowParam<'_, f32>>,
) {
    let z = s.splat(0.0);
    let (mut ps, mut pt) = ([z; R], [z; R]);
    // The block of each row sliced once: the loads below index a slice of known length
    // at constant offsets, so they need no bounds checks of their own.
    let w = 4 * S::LANES;
    let (mut xb, mut db) = ([&x[0][..0]; R], [&dy[0][..0]; R]);
    for r in 0..R {
        (xb[r], db[r]) = (&x[r][i..i + w], &dy[r][i..i + w]);
    }
    for k in 0..4 {
        let off = i + S::LANES * k;
        let (g, mut st) = match p {
            Some((g, st)) => (Some(s.load(&g[off..])), st.as_mut()),
            None => (None, None),
        };
        let mut staged = st
            .as_ref()
            .map(|(sg, sb)| (s.load(&sg[off..]), s.load(&sb[off..])));
        for r in 0..R {
            let o = S::LANES * k;
            let (vd, xh) = acc[r].raw(s, &xb[r][o..], &db[r][o..]);
            if let Some((sg, sb)) = &mut staged {
                *sg = s.mul_add(vd, xh, *sg);
                *sb = s.add(*sb, vd);
            }
            let vw = g.map_or(vd, |g| s.mul(vd, g));
            if k == 0 {
                (ps[r], pt[r]) = (vw, s.mul(vw, xh));
            } else {
                ps[r] = s.add(ps[r], vw);
                pt[r] = s.mul_add(vw, xh, pt[r]);
            }
        }
        if let (Some((a, b)), Some((sg, sb))) = (st.as_mut(), staged) {
            s.store(&mut a[off..], sg);
            s.store(&mut b[off..], sb);
        }
    }
    for r in 0..R {
        acc[r].push(s, ps[r], pt[r]);
    }
}

/// The values from `from` on of a row parameter.
#[inline(always)]
fn tail<'a>(p: Option<RowParam<'a, f32>>, from: usize) -> Option<RowParam<'a, f32>> {
    p.map(|(g, st)| {
        (
            &g[from..],
            st.map(|(sg, sb)| (&mut sg[from..], &mut sb[from..])),
        )
    })
}

/// Asserts that rows, upstream gradients and the parameter all have length `n`.
#[inline(always)]
fn check_rows<const R: usize>(n: usize, rows: &Rows<'_, f32, R>, p: &Option<RowParam<'_, f32>>) {
    for r in 0..R {
        assert!(
            rows.x[r].len() == n && rows.dy[r].len() == n,
            "rows of one length"
        );
    }
    if let Some((g, st)) = p {
        assert!(
            g.len() == n
                && st
                    .as_ref()
                    .is_none_or(|(sg, sb)| sg.len() == n && sb.len() == n),
            "parameters span the row"
        );
    }
}

/// Each row's rest from `full` on, and the reduced sums. The accumulators are borrowed,
/// not moved (a by-value move copied them through memory once per row).
#[inline(always)]
fn dsums_finish<S: Isa, const R: usize>(
    s: S,
    acc: &mut [DSums<S>; R],
    rows: &Rows<'_, f32, R>,
    full: usize,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let mut out = [(0.0, 0.0); R];
    for (r, a) in acc.iter_mut().enumerate() {
        let (x, dy) = (&rows.x[r][full..], &rows.dy[r][full..]);
        out[r] = a.finish(s, x, dy, tail(reborrow(&mut p), full));
    }
    out
}

/// Σw·dy and Σw·dy·x̂ of `R` `f32` rows sharing `p`.
#[inline(always)]
pub(super) fn dsums_f32<S: Isa, const R: usize>(
    s: S,
    rows: Rows<'_, f32, R>,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let n = rows.x[0].len();
    check_rows(n, &rows, &p);
    let mut acc = rows.c.map(|c| DSums::new(s, c));
    let step = 4 * S::LANES;
    let full = n - n % step;
    let mut i = 0;
    if p.is_none() {
        // Without a parameter, a loop of its own: the `Option` tests of `add_block` fold
        // away instead of running once per vector.
        while i < full {
            add_block(s, &mut acc, (rows.x, rows.dy), i, &mut None);
            i += step;
        }
    } else {
        while i < full {
            add_block(s, &mut acc, (rows.x, rows.dy), i, &mut p);
            i += step;
        }
    }
    dsums_finish(s, &mut acc, &rows, full, p)
}

/// dx = dy·(c·γ) + ((x − m)·a + b) on `len` values from `j`: the portable kernel's
/// operations, lane by lane.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dx_vec<S: Isa>(
    s: S,
    (x, dy, dx): (&[f32], &[f32], &mut [f32]),
    (vc, vm, va, vb): (S::F32, S::F32, S::F32, S::F32),
    g: Option<&[f32]>,
    (j, len): (usize, usize),
    stream: bool,
) {
    let v = ld(s, x, j, len);
    let d = ld(s, dy, j, len);
    let xh = s.add(s.mul(s.sub(v, vm), va), vb);
    let k = g.map_or(vc, |g| s.mul(vc, ld(s, g, j, len)));
    st(s, dx, j, len, s.add(s.mul(d, k), xh), stream);
}

/// dx of the current rows with `dsums_f32` of the next rows in the same loop.
#[inline(always)]
pub(super) fn dx_then_dsums_f32<S: Isa, const R: usize>(
    s: S,
    cur: DxRows<'_, f32, R>,
    next: Rows<'_, f32, R>,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    let n = next.x[0].len();
    check_rows(n, &next, &p);
    for r in 0..R {
        assert!(
            cur.x[r].len() == n && cur.dy[r].len() == n && cur.dx[r].len() == n,
            "rows of one length"
        );
    }
    assert!(
        cur.g.is_none_or(|g| g.len() == n),
        "parameters span the row"
    );
    let DxRows {
        x,
        dy,
        dx,
        c,
        g,
        stream,
    } = cur;
    let coef = c.map(|(c, m, a, b)| (s.splat(c), s.splat(m), s.splat(a), s.splat(b)));
    let mut out = [Aligned::new(s, &dx[0][..]); R];
    for (o, d) in out.iter_mut().zip(&dx) {
        *o = Aligned::new(s, d);
    }
    let mut acc = next.c.map(|c| DSums::new(s, c));
    let l = S::LANES;
    let step = 4 * l;
    let full = n - n % step;
    // The R rows after `next` (`Rows::ahead`): R·step values of each per step.
    let ahead = next.ahead;
    let ax = next.x[R - 1].as_ptr().wrapping_add(n);
    let ad = next.dy[R - 1].as_ptr().wrapping_add(n);
    let lines = (R * step).div_ceil(32);
    let mut i = 0;
    while i < full {
        // The next rows' loads first: a load behind a store to an address 4 KiB apart
        // (rows of whole pages) would wait on it (4K aliasing).
        add_block(s, &mut acc, (next.x, next.dy), i, &mut p);
        if ahead {
            for k in 0..lines {
                s.prefetch(ax.wrapping_add(R * i + 32 * k));
                s.prefetch(ad.wrapping_add(R * i + 32 * k));
            }
        }
        for r in 0..R {
            if let Some(j) = out[r].body(step) {
                for j in [j, j + l, j + 2 * l, j + 3 * l] {
                    dx_vec(s, (x[r], dy[r], &mut *dx[r]), coef[r], g, (j, l), stream);
                }
            }
        }
        i += step;
    }
    for r in 0..R {
        for part in out[r].rest() {
            dx_vec(s, (x[r], dy[r], &mut *dx[r]), coef[r], g, part, stream);
        }
    }
    if stream {
        s.fence();
    }
    dsums_finish(s, &mut acc, &next, full, p)
}

/// Σw·dy and Σw·dy·x̂ of an `f64` row with its weight `w` (γ, staged by the caller).
#[inline(always)]
pub(super) fn dsums_f64<S: Isa>(
    s: S,
    x: &[f64],
    dy: &[f64],
    (m, a, b): (f64, f64, f64),
    w: Option<&[f64]>,
) -> (f64, f64) {
    let n = x
        .len()
        .min(dy.len())
        .min(w.map_or(usize::MAX, <[f64]>::len));
    let half = S::LANES / 2;
    let (vm, va, vb) = (s.splat_d(m), s.splat_d(a), s.splat_d(b));
    let z = s.splat_d(0.0);
    let (mut s0, mut t0) = (z, z);
    let full = n - n % half;
    let mut i = 0;
    while i < full {
        let vx = s.load_d(&x[i..]);
        let mut vd = s.load_d(&dy[i..]);
        if let Some(w) = w {
            vd = s.mul_d(vd, s.load_d(&w[i..]));
        }
        let xh = s.add_d(s.mul_d(s.sub_d(vx, vm), va), vb);
        s0 = s.add_d(s0, vd);
        t0 = s.mul_add_d(vd, xh, t0);
        i += half;
    }
    let (r1, r2) = row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
    (s.sum_d(s0) + r1, s.sum_d(t0) + r2)
}

/// dx of a tile of contiguous rows of `len` values, row r with its own (c, m, a, b) and the
/// shared γ along the row: whole vectors from the row's start, then one partial vector
/// (each value as `dx_vec`, the row kernels' arithmetic).
#[inline(always)]
pub(super) fn rows_dx_f32<S: Isa>(
    s: S,
    (x, dy, dx): (&[f32], &[f32], &mut [f32]),
    len: usize,
    (c, m, a, b): (&[f32], &[f32], &[f32], &[f32]),
    g: Option<&[f32]>,
    stream: bool,
) {
    if len == 0 {
        return;
    }
    assert!(g.is_none_or(|g| g.len() == len), "parameters span the row");
    let l = S::LANES;
    let full = len - len % l;
    let n = c.len().min(m.len()).min(a.len()).min(b.len());
    let rows = dx
        .chunks_exact_mut(len)
        .zip(x.chunks_exact(len).zip(dy.chunks_exact(len)));
    for (r, (o, (xr, dr))) in rows.take(n).enumerate() {
        let k = (s.splat(c[r]), s.splat(m[r]), s.splat(a[r]), s.splat(b[r]));
        let mut j = 0;
        while j < full {
            dx_vec(s, (xr, dr, &mut *o), k, g, (j, l), stream);
            j += l;
        }
        if j < len {
            dx_vec(s, (xr, dr, &mut *o), k, g, (j, len - j), stream);
        }
    }
    if stream {
        s.fence();
    }
}

/// `dsums_f32` of each contiguous row of `len` values of (`x`, `dy`), one row at a time
/// (row r with its (m, a, b)), all sharing `p`; `out.len()` rows. A row's sums are those of
/// `dsums_f32` of any number of rows, and γ's staged terms are added in row order as there:
/// the same bits. (Short rows one at a time: the accumulators of several rows at once
/// spilled to the stack.)
#[inline(always)]
pub(super) fn rows_dsums_f32<S: Isa>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    len: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
    mut p: Option<RowParam<'_, f32>>,
    out: &mut [(f64, f64)],
) {
    if len == 0 {
        return;
    }
    let rows = x.chunks_exact(len).zip(dy.chunks_exact(len));
    for (r, ((xr, dr), o)) in rows.zip(out.iter_mut()).enumerate() {
        let row = Rows {
            x: [xr],
            dy: [dr],
            c: [(m[r], a[r], b[r])],
            ahead: false,
        };
        [*o] = dsums_f32(s, row, reborrow(&mut p));
    }
}
