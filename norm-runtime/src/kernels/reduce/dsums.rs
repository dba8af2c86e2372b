//! The backward row sums (Σw·dy, Σw·dy·x̂) of `f32` and `f64` rows, plain and pipelined
//! with the dx pass of the previous rows, written once over the ISA token.

use std::iter::Zip;
use std::slice::{ChunksExact, ChunksExactMut};

use super::sums::{ld, put};
use super::{reborrow, row_dsums_portable, row_dsums_weighted, DxRows, RowParam, Rows};
use crate::kernels::isa::{Aligned, Isa};

/// The accumulators of one row's `f32` backward sums: Σw·dy and Σw·dy·x̂, each in two
/// `f64` chains (low and high lanes). `4·LANES` values at a time are first summed in
/// `f32` — four terms per lane — then widened once, which keeps the lane-crossing
/// conversions off the critical port. The plain and the pipelined kernels, for any number
/// of rows at a time, perform the same operations on a row in the same order
/// (bit-identical sums).
#[derive(Clone, Copy)]
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
///
/// With `F` the four vectors' loads stay in their order (a compiler fence before each): the
/// pipelined loop's loads of the next rows then alternate x and dy per vector, as its dx
/// pass does, instead of all of x before all of dy (Zen 4, AVX-512, InstanceNorm backward:
/// 1 thread, rows streaming from memory: ~5 % faster in-process; ln, ws backward unchanged).
#[inline(always)]
fn add_block<S: Isa, const R: usize, const F: bool>(
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
    // γ and its staging sliced once per block too: a bounds test per load of γ and of the
    // two staged sums cost 12 tests per block at AVX-512 (LayerNorm backward). No
    // `Option::map` closures (one may stay out of line, outside the level's features).
    let (mut gb, mut stb) = (None, None);
    if let Some((g, st)) = p {
        gb = Some(&g[i..i + w]);
        if let Some((a, b)) = st {
            stb = Some((&mut a[i..i + w], &mut b[i..i + w]));
        }
    }
    for k in 0..4 {
        if F {
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        }
        let o = S::LANES * k;
        let mut g = None;
        if let Some(gb) = gb {
            g = Some(s.load(&gb[o..]));
        }
        let mut staged = None;
        if let Some((sg, sb)) = &stb {
            staged = Some((s.load(&sg[o..]), s.load(&sb[o..])));
        }
        for r in 0..R {
            let (vd, xh) = acc[r].raw(s, &xb[r][o..], &db[r][o..]);
            if let Some((sg, sb)) = &mut staged {
                *sg = s.mul_add(vd, xh, *sg);
                *sb = s.add(*sb, vd);
            }
            let vw = match g {
                Some(g) => s.mul(vd, g),
                None => vd,
            };
            if k == 0 {
                (ps[r], pt[r]) = (vw, s.mul(vw, xh));
            } else {
                ps[r] = s.add(ps[r], vw);
                pt[r] = s.mul_add(vw, xh, pt[r]);
            }
        }
        if let (Some((a, b)), Some((sg, sb))) = (stb.as_mut(), staged) {
            s.store(&mut a[o..], sg);
            s.store(&mut b[o..], sb);
        }
    }
    for r in 0..R {
        acc[r].push(s, ps[r], pt[r]);
    }
}

/// The values from `from` on of a row parameter.
#[inline(always)]
fn tail<'a>(p: Option<RowParam<'a, f32>>, from: usize) -> Option<RowParam<'a, f32>> {
    match p {
        Some((g, Some((sg, sb)))) => Some((&g[from..], Some((&mut sg[from..], &mut sb[from..])))),
        Some((g, None)) => Some((&g[from..], None)),
        None => None,
    }
}

/// The accumulators of `R` rows (a plain loop: a closure of `<[_; R]>::map` may stay out of
/// line, compiled without the level's features, each token operation in it a call).
#[inline(always)]
fn dsums_acc<S: Isa, const R: usize>(s: S, rows: &Rows<'_, f32, R>) -> [DSums<S>; R] {
    let mut acc = [DSums::new(s, rows.c[0]); R];
    for (a, &c) in acc.iter_mut().zip(&rows.c) {
        *a = DSums::new(s, c);
    }
    acc
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
    let mut acc = dsums_acc(s, &rows);
    let step = 4 * S::LANES;
    let full = n - n % step;
    let mut i = 0;
    if p.is_none() {
        // Without a parameter, a loop of its own: the `Option` tests of `add_block` fold
        // away instead of running once per vector.
        while i < full {
            add_block::<S, R, false>(s, &mut acc, (rows.x, rows.dy), i, &mut None);
            i += step;
        }
    } else {
        while i < full {
            add_block::<S, R, false>(s, &mut acc, (rows.x, rows.dy), i, &mut p);
            i += step;
        }
    }
    dsums_finish(s, &mut acc, &rows, full, p)
}

/// The dx pass of one row, dx = dy·(c·γ) + ((x − m)·a + b): (c, m, a, b) in registers, γ
/// along the row when `G` (otherwise `g` is a stand-in of the row's length, never read), so
/// a loop over the row tests nothing per vector.
#[derive(Clone, Copy)]
struct Dx<'a, S: Isa, const G: bool> {
    k: (S::F32, S::F32, S::F32, S::F32),
    g: &'a [f32],
}

impl<S: Isa, const G: bool> Dx<'_, S, G> {
    /// dx of the `len ≤ LANES` values from `j` of (`x`, `dy`; γ at the same offsets): the
    /// portable kernel's operations, lane by lane.
    #[inline(always)]
    fn at(&self, s: S, (x, dy): (&[f32], &[f32]), (j, len): (usize, usize)) -> S::F32 {
        let (vc, vm, va, vb) = self.k;
        let v = ld(s, x, j, len);
        let d = ld(s, dy, j, len);
        let xh = s.add(s.mul(s.sub(v, vm), va), vb);
        let k = if G {
            s.mul(vc, ld(s, self.g, j, len))
        } else {
            vc
        };
        s.add(s.mul(d, k), xh)
    }

    /// The values `0..out.len()` (a multiple of `LANES`) of the row into `out`, as full
    /// vectors.
    #[inline(always)]
    fn block(&self, s: S, io: (&[f32], &[f32]), out: &mut [f32], stream: bool) {
        for (t, o) in out.chunks_exact_mut(S::LANES).enumerate() {
            let v = self.at(s, io, (t * S::LANES, S::LANES));
            put(s, o, v, stream);
        }
    }

    /// The values `from..from + out.len()` of the row into `out`, as vectors from `from`
    /// (the last one partial).
    #[inline(always)]
    fn run(&self, s: S, io: (&[f32], &[f32]), from: usize, out: &mut [f32], stream: bool) {
        for (t, o) in out.chunks_mut(S::LANES).enumerate() {
            let v = self.at(s, io, (from + t * S::LANES, o.len()));
            put(s, o, v, stream);
        }
    }
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
    let mut acc = dsums_acc(s, &next);
    // One loop per parameter kind (γ of the sums, γ of dx): nothing in it tests them per
    // vector.
    let full = match (p.is_some(), cur.g.is_some()) {
        (false, false) => dx_loop::<S, R, false, false>(s, cur, &next, &mut p, &mut acc),
        (false, true) => dx_loop::<S, R, false, true>(s, cur, &next, &mut p, &mut acc),
        (true, false) => dx_loop::<S, R, true, false>(s, cur, &next, &mut p, &mut acc),
        (true, true) => dx_loop::<S, R, true, true>(s, cur, &next, &mut p, &mut acc),
    };
    dsums_finish(s, &mut acc, &next, full, p)
}

/// A row's body blocks of `4·LANES` values: (dx, ((x, dy), γ or a stand-in)).
type Blocks<'a> = Zip<
    ChunksExactMut<'a, f32>,
    Zip<Zip<ChunksExact<'a, f32>, ChunksExact<'a, f32>>, ChunksExact<'a, f32>>,
>;

/// The loop of [`dx_then_dsums_f32`] with the sums' parameter (`P`: `p` is `Some`) and γ
/// of dx (`G`) fixed; returns where the sums' rest starts. Each block's slices are taken
/// once (one bounds test per block and row, not per vector).
#[inline(always)]
fn dx_loop<S: Isa, const R: usize, const P: bool, const G: bool>(
    s: S,
    cur: DxRows<'_, f32, R>,
    next: &Rows<'_, f32, R>,
    p: &mut Option<RowParam<'_, f32>>,
    acc: &mut [DSums<S>; R],
) -> usize {
    let n = next.x[0].len();
    let DxRows {
        x,
        dy,
        mut dx,
        c,
        g,
        stream,
        ..
    } = cur;
    let g = g.unwrap_or(x[0]);
    let stream = super::sums::dx_streams::<S>(stream, G);
    // Plain loops, not `<[_; R]>::map`: a closure may stay out of line, compiled without
    // the level's features, and then every token operation in it is a call.
    let (c0, m0, a0, b0) = c[0];
    let k0 = (s.splat(c0), s.splat(m0), s.splat(a0), s.splat(b0));
    let mut kind = [Dx::<S, G> { k: k0, g }; R];
    for (f, &(c, m, a, b)) in kind.iter_mut().zip(&c) {
        f.k = (s.splat(c), s.splat(m), s.splat(a), s.splat(b));
    }
    let step = 4 * S::LANES;
    let full = n - n % step;
    // Each row's body blocks as one iterator of constant-length chunks (dx, ((x, dy), γ)):
    // a block costs one length test, not one bounds test per slice (the slices of a span
    // `j..j + step` tested x, dy, dx and γ apart, and the span's end for overflow).
    let mut out = [Aligned::new(s, &dx[0][..]); R];
    let mut blocks: [Option<Blocks<'_>>; R] = [const { None }; R];
    for (r, (b, d)) in blocks.iter_mut().zip(dx.iter_mut()).enumerate() {
        out[r] = Aligned::new(s, d);
        let span = out[r].bodies(step);
        let (xr, dr) = (&x[r][span.clone()], &dy[r][span.clone()]);
        // Without γ a stand-in of the same length (never read).
        let gr = if G { &g[span.clone()] } else { xr };
        let io = xr.chunks_exact(step).zip(dr.chunks_exact(step));
        *b = Some(
            d[span]
                .chunks_exact_mut(step)
                .zip(io.zip(gr.chunks_exact(step))),
        );
    }
    // The next rows cut to the blocks' end: all of one known length, so the bounds tests of
    // `add_block`'s slices are one and the same test.
    let (mut nx, mut nd) = (next.x, next.dy);
    for r in 0..R {
        (nx[r], nd[r]) = (&nx[r][..full], &nd[r][..full]);
    }
    // The R rows after `next` (`Rows::ahead`): R·step values of each per step.
    let ahead = next.ahead;
    let ax = next.x[R - 1].as_ptr().wrapping_add(n);
    let ad = next.dy[R - 1].as_ptr().wrapping_add(n);
    let lines = (R * step).div_ceil(32);
    let mut i = 0;
    while i < full {
        // The next rows' loads first: a load behind a store to an address 4 KiB apart
        // (rows of whole pages) would wait on it (4K aliasing).
        if P {
            add_block::<S, R, true>(s, acc, (nx, nd), i, p);
        } else {
            add_block::<S, R, true>(s, acc, (nx, nd), i, &mut None);
        }
        if ahead {
            for k in 0..lines {
                s.prefetch(ax.wrapping_add(R * i + 32 * k));
                s.prefetch(ad.wrapping_add(R * i + 32 * k));
            }
        }
        for (b, f) in blocks.iter_mut().zip(&kind) {
            if let Some(b) = b {
                if let Some((o, (io, gb))) = b.next() {
                    Dx::<S, G> { g: gb, ..*f }.block(s, io, o, stream);
                }
            }
        }
        i += step;
    }
    for r in 0..R {
        for (j, len) in out[r].rest() {
            let span = j..j + len;
            kind[r].run(s, (x[r], dy[r]), j, &mut dx[r][span], stream);
        }
    }
    if stream {
        s.fence();
    }
    full
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
/// (each value as [`Dx::at`], the row kernels' arithmetic).
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
    let stream = super::sums::dx_streams::<S>(stream, g.is_some());
    let rows = dx
        .chunks_exact_mut(len)
        .zip(x.chunks_exact(len).zip(dy.chunks_exact(len)));
    let coef = c.iter().zip(m).zip(a.iter().zip(b));
    for ((o, (xr, dr)), ((&c, &m), (&a, &b))) in rows.zip(coef) {
        let k = (s.splat(c), s.splat(m), s.splat(a), s.splat(b));
        match g {
            None => Dx::<S, false> { k, g: xr }.run(s, (xr, dr), 0, o, stream),
            Some(g) => Dx::<S, true> { k, g }.run(s, (xr, dr), 0, o, stream),
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
