//! The column kernels (channels-last `f32`): sums, backward sums and the elementwise runs
//! with per-column coefficients in registers, written once over the ISA token.

use super::sums::{ld, st};
use super::{col_dsums_portable, col_sums_portable};
use crate::kernels::isa::{Aligned, Isa};

/// The most vectors of columns a block of the column sums keeps in registers.
const MAX_V: usize = 4;

/// Vectors of columns per block of the column sums at level `S` for lines of `w` columns:
/// as many as keep a block's state in the vector registers. A block of `V` vectors holds
/// 6·V of them in the forward sums (shift, sum and square sum, two `f64` halves each) and
/// 5·V in the backward (m, a, b, and the two `f32` partial sums), plus temporaries:
/// [`MAX_V`] where there are 32 registers (AVX-512, NEON), 2 with AVX2's 16 — at 4 the AVX2
/// loops kept half their accumulators or coefficients on the stack, a load (and, forward, a
/// store) per vector per line (AMD EPYC Zen 3: BatchNorm1d [256, 512] train forward 61 → 49
/// µs at 1 thread, best of runs). Except lines of exactly two blocks of [`MAX_V`] (64
/// columns at AVX2: channels-last BatchNorm of 64 channels, whose inputs stream from
/// memory): there a tile's lines in two halves of 4 vectors, as before session 14, not
/// four quarters of 2 (which took 8.8 % more instructions). AMD EPYC Zen 3, BatchNorm train
/// [32, 64, 56, 56] channels-last, backward, 5 alternating rounds on a loaded host: the
/// 2-vector blocks 0.79× / 0.82× of a577072 (1 / 2 threads), 4 here 1.09× / 1.10× of 2.
/// Each column still adds its lines in order: the same sums, bit for bit, at any `V`.
const fn block_v<S: Isa>(w: usize) -> usize {
    if S::LANES == 8 && w != 2 * MAX_V * S::LANES {
        2
    } else {
        MAX_V
    }
}

/// The widest run in values, at every level: 64 columns. Wider rows go line by line: 128
/// columns as one AVX-512 run (32 coefficient vectors, more than the registers) made
/// BatchNorm1d train on [32, 128] a quarter slower (`norm-bench --small`: 1.9 → 2.4 µs).
const RUN_W: usize = 64;

/// The most vectors of columns of an elementwise run: [`RUN_W`] at AVX2's 8 lanes, so that
/// AVX2 runs 64 channels (8 vectors) as AVX-512 does (4). Beyond the registers the
/// coefficients are memory operands, as on the line-by-line path that would run otherwise.
const RUN_V: usize = RUN_W / 8;

/// The elementwise passes over a run of `lines` contiguous lines of `w = LANES·V` columns
/// from `start` (`out` is the run's output), coefficients in registers: y = (x − m)·a + b,
/// and with `DX`, dx = dy·c + ((x − m)·a + b) — the portable kernels' operations, lane by
/// lane. `k` = (m, a, b, c). The run is walked as one flat range whose full vectors start
/// at aligned addresses of the output ([`Aligned`]): the vector at flat offset `h + L·t`
/// (`h` the head) holds columns `(h + L·t + lane) mod w`, so the coefficients are loaded
/// once per run, rotated by `h`.
#[inline(always)]
fn col_run<S: Isa, const V: usize, const DX: bool>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    out: &mut [f32],
    start: usize,
    (m, a, b, c): (&[f32], &[f32], &[f32], &[f32]),
    stream: bool,
) {
    let l = S::LANES;
    let w = l * V;
    assert!(
        m.len() == w && a.len() == w && b.len() == w && c.len() == w,
        "one coefficient per column"
    );
    let n = out.len();
    let x = &x[start..start + n];
    let dy = if DX { &dy[start..start + n] } else { x };
    let walk = Aligned::new(s, out);
    let h = walk.head;
    assert!(h < l, "an element-aligned output");
    let z = s.splat(0.0);
    // The coefficients of the vectors from offset h + L·v (rotated) and from 0 (plain).
    let mut rot = [[z; 4]; RUN_V];
    let mut plain = [z; 4];
    for (j, arr) in [m, a, b, c].into_iter().enumerate() {
        // The coefficients twice over: twice[i] = arr[i % w] for i < 2·w.
        let mut twice = [0.0f32; 2 * RUN_W];
        let (lo, hi) = twice.split_at_mut(w);
        lo.copy_from_slice(arr);
        hi[..w].copy_from_slice(arr);
        for (v, r) in rot.iter_mut().take(V).enumerate() {
            r[j] = s.load(&twice[h + l * v..]);
        }
        plain[j] = s.load(arr);
    }
    let mut walk = walk;
    // The body as blocks of exactly `w` values: the vectors' offsets in a block are
    // constants, so their bounds checks fold away (a check per vector, as `walk.body`
    // gave, cost four instructions per vector: +35 % in the loop at AVX-512).
    let body = walk.bodies(w);
    let blocks = out[body.clone()]
        .chunks_exact_mut(w)
        .zip(x[body.clone()].chunks_exact(w))
        .zip(dy[body].chunks_exact(w));
    for ((ob, xb), db) in blocks {
        for (v, &k) in rot.iter().take(V).enumerate() {
            col_vec::<S, DX>(s, (xb, db, ob), (l * v, l), k, stream);
        }
    }
    for (i, len) in walk.rest() {
        let k = if i < h { plain } else { rot[(i - h) / l % V] };
        col_vec::<S, DX>(s, (x, dy, out), (i, len), k, stream);
    }
    if stream {
        s.fence();
    }
}

/// One vector of `col_run`: `len` values from `i`, coefficients (m, a, b, c).
#[inline(always)]
fn col_vec<S: Isa, const DX: bool>(
    s: S,
    (x, dy, out): (&[f32], &[f32], &mut [f32]),
    (i, len): (usize, usize),
    [vm, va, vb, vc]: [S::F32; 4],
    stream: bool,
) {
    let xh = s.add(s.mul(s.sub(ld(s, x, i, len), vm), va), vb);
    let y = if DX {
        s.add(s.mul(ld(s, dy, i, len), vc), xh)
    } else {
        xh
    };
    st(s, out, i, len, y, stream);
}

/// `col_run` for the widths it has (`LANES·V`, V = 1..=[`RUN_V`]), [`col_lines`] for wider
/// lines of whole vectors; false otherwise, writing nothing. `k` = (m, a, b, c).
#[inline(always)]
pub(super) fn col_run_f32<S: Isa, const DX: bool>(
    s: S,
    xdy: (&[f32], &[f32]),
    out: &mut [f32],
    start: usize,
    k: (&[f32], &[f32], &[f32], &[f32]),
    stream: bool,
) -> bool {
    let stream = if DX {
        // Columns keep plain dx stores at AVX2 (measured: see `dx_streams`).
        super::sums::dx_streams::<S>(stream, true)
    } else {
        stream
    };
    let w = k.0.len();
    if w == 0 || !w.is_multiple_of(S::LANES) {
        return false;
    }
    if w > RUN_W {
        col_lines::<S, DX>(s, xdy, out, start, k, stream);
        return true;
    }
    match w / S::LANES {
        1 => col_run::<S, 1, DX>(s, xdy, out, start, k, stream),
        2 => col_run::<S, 2, DX>(s, xdy, out, start, k, stream),
        3 => col_run::<S, 3, DX>(s, xdy, out, start, k, stream),
        4 => col_run::<S, 4, DX>(s, xdy, out, start, k, stream),
        6 => col_run::<S, 6, DX>(s, xdy, out, start, k, stream),
        8 => col_run::<S, 8, DX>(s, xdy, out, start, k, stream),
        _ => return false,
    }
    true
}

/// The elementwise passes of [`col_run`] over lines wider than a run ([`RUN_W`]) of a
/// multiple of `LANES` columns: the run walked as one flat range whose full vectors start
/// at aligned addresses of the output ([`Aligned`]), line by line, the coefficients loaded
/// from memory at the same columns. With a head `h > 0`, the last vector of each line
/// spans into the next (its last `L − h` columns, then the first `h`): the *seam*, whose
/// coefficients are the same for every line and are gathered once. So no vector straddles
/// two cache lines or (the lines of BatchNorm1d [N, 1024] are 4 KiB, `Vec`s start 16 bytes
/// past a page) two pages: a partial or split vector at each line's end cost ~40 % of this
/// pass on AMD Zen 4. The same operations per element as `col_run` (and `lines::affine`,
/// `lines::dx` on columns).
#[inline(always)]
fn col_lines<S: Isa, const DX: bool>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    out: &mut [f32],
    start: usize,
    (m, a, b, c): (&[f32], &[f32], &[f32], &[f32]),
    stream: bool,
) {
    let l = S::LANES;
    let w = m.len();
    assert!(
        w >= l && w.is_multiple_of(l) && a.len() == w && b.len() == w && c.len() == w,
        "whole vectors of coefficients, one per column"
    );
    let lines = out.len() / w;
    let n = lines * w;
    let out = &mut out[..n];
    let x = &x[start..start + n];
    let dy = if DX { &dy[start..start + n] } else { x };
    let h = Aligned::new(s, out).head;
    assert!(h < l, "an element-aligned output");
    // The seam's coefficients: columns w − L + h + j (mod w).
    let z = s.splat(0.0);
    let mut seam = [z; 4];
    if h > 0 {
        for (k, arr) in [m, a, b, c].into_iter().enumerate() {
            let mut buf = [0.0f32; 64];
            for (j, v) in buf.iter_mut().take(l).enumerate() {
                *v = arr[(w - l + h + j) % w];
            }
            seam[k] = s.load(&buf);
        }
        // The first line's head: columns 0..h.
        let k = [
            ld(s, m, 0, h),
            ld(s, a, 0, h),
            ld(s, b, 0, h),
            ld(s, c, 0, h),
        ];
        col_vec::<S, DX>(s, (x, dy, out), (0, h), k, stream);
    }
    // Each line's aligned vectors from column h, then (h > 0) its seam.
    let body = if h > 0 { w - l } else { w };
    let k = (&m[h..h + body], &a[h..h + body], &b[h..h + body]);
    let cb = &c[h..h + body];
    for li in 0..lines {
        // The first cache lines of every page the next line enters, asked for a line
        // ahead: the hardware prefetchers stop at page boundaries, and the first vector of
        // each page (the seam, for BatchNorm1d [N, 1024]) waited on memory there.
        let next = ((li + 1) * w, (li + 2) * w);
        prefetch_pages(s, out.as_ptr(), next, n);
        prefetch_pages(s, x.as_ptr(), next, n);
        if DX {
            prefetch_pages(s, dy.as_ptr(), next, n);
        }
        let f = li * w + h;
        let vecs = out[f..f + body]
            .chunks_exact_mut(l)
            .zip(x[f..f + body].chunks_exact(l))
            .zip(dy[f..f + body].chunks_exact(l))
            .zip(k.0.chunks_exact(l).zip(k.1.chunks_exact(l)))
            .zip(k.2.chunks_exact(l).zip(cb.chunks_exact(l)));
        for ((((ov, xv), dv), (mv, av)), (bv, cv)) in vecs {
            let vc = if DX { s.load(cv) } else { z };
            let k = [s.load(mv), s.load(av), s.load(bv), vc];
            col_vec::<S, DX>(s, (xv, dv, ov), (0, l), k, stream);
        }
        if h > 0 {
            let f = f + body;
            col_vec::<S, DX>(s, (x, dy, out), (f, l.min(n - f)), seam, stream);
        }
    }
    if stream {
        s.fence();
    }
}

/// Bytes of a page (the hardware prefetchers' reach).
const PAGE: usize = 4096;

/// Prefetches the first two cache lines of every page that starts within `from..to`
/// (values from `base`, clipped at `n`): hints only, no memory access.
#[inline(always)]
fn prefetch_pages<S: Isa>(s: S, base: *const f32, (from, to): (usize, usize), n: usize) {
    let addr = base as usize;
    let to = to.min(n);
    // The first value at or after `from` that starts a page (f32 values: 4-byte aligned).
    let first = (addr + 4 * from).next_multiple_of(PAGE);
    let mut i = (first - addr) / 4;
    while i < to {
        s.prefetch(base.wrapping_add(i));
        i += PAGE / 4;
    }
}

/// Lines per flush of the `f32` partial column sums of the backward pass.
const COL_FLUSH: usize = 8;

/// Lines per tile of the column sums: the kernels walk the lines a tile at a time, every
/// column block of a tile before the next tile, so the input streams through memory a few
/// lines abreast (a walk of every line per column block strode the tensor one cache line
/// per line: 32 lines of 4 KiB ran the column sums of BatchNorm1d [4096, 1024] at a third
/// of the read bandwidth). A multiple of [`COL_FLUSH`], so the backward's `f32` partial
/// sums flush at the same lines; each column adds its lines in order, as before.
const COL_TILE: usize = 8;

/// The next tile of at most [`COL_TILE`] line offsets of `lines` into `offs`; their number.
#[inline(always)]
fn next_tile<I: Iterator<Item = usize>>(lines: &mut I, offs: &mut [usize; COL_TILE]) -> usize {
    let mut n = 0;
    while n < COL_TILE {
        let Some(o) = lines.next() else { break };
        offs[n] = o;
        n += 1;
    }
    n
}

/// What a walk of the lines a tile at a time ([`walk_tiles`]) accumulates per column.
trait TileAcc {
    /// Columns `c0..c0 + LANES·V` over the lines at `offs` (a tile, in line order).
    fn block<S: Isa, const V: usize>(&mut self, s: S, offs: &[usize], c0: usize);
    /// Columns from `c0` to the end (fewer than `LANES`) of the line at `o`, portably.
    fn rest(&mut self, o: usize, c0: usize);
}

/// The lines of `w` columns a tile of [`COL_TILE`] at a time: blocks of `LANES·V` columns,
/// then of `LANES`, then the rest per line, every column block of a tile before the next
/// tile; each column sees its lines in order.
#[inline(always)]
fn walk_tiles<S: Isa, const V: usize, I: Iterator<Item = usize>, A: TileAcc>(
    s: S,
    w: usize,
    lines: I,
    acc: &mut A,
) {
    let l = S::LANES;
    let mut lines = lines;
    let mut offs = [0usize; COL_TILE];
    loop {
        let n = next_tile(&mut lines, &mut offs);
        if n == 0 {
            break;
        }
        let tile = &offs[..n];
        let mut c0 = 0;
        while c0 + V * l <= w {
            acc.block::<S, V>(s, tile, c0);
            c0 += V * l;
        }
        while c0 + l <= w {
            acc.block::<S, 1>(s, tile, c0);
            c0 += l;
        }
        if c0 < w {
            for &o in tile {
                acc.rest(o, c0);
            }
        }
        if n < COL_TILE {
            break;
        }
    }
}

/// `col_sums` of the `LANES·V` columns from `c0` over the lines at `offs`, accumulators in
/// registers (loaded from and stored back to `sum`, `sq`: each column's values add in line
/// order onto its running sums), exact `f64` differences as the portable kernel.
#[inline(always)]
fn col_sums_block<S: Isa, const V: usize, I: Iterator<Item = usize>>(
    s: S,
    x: &[f32],
    offs: I,
    c0: usize,
    shift: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
) {
    let l = S::LANES;
    let (w, half) = (l * V, l / 2);
    let (shift, sum, sq) = (
        &shift[c0..c0 + w],
        &mut sum[c0..c0 + w],
        &mut sq[c0..c0 + w],
    );
    let z = s.splat_d(0.0);
    let mut h = [z; 2 * MAX_V];
    let (mut sv, mut qv) = ([z; 2 * MAX_V], [z; 2 * MAX_V]);
    for k in 0..2 * V {
        h[k] = s.load_d(&shift[half * k..]);
        sv[k] = s.load_d(&sum[half * k..]);
        qv[k] = s.load_d(&sq[half * k..]);
    }
    for o in offs {
        let line = &x[o + c0..o + c0 + w];
        for v in 0..V {
            let (lo, hi) = s.widen(s.load(&line[l * v..]));
            let (lo, hi) = (s.sub_d(lo, h[2 * v]), s.sub_d(hi, h[2 * v + 1]));
            sv[2 * v] = s.add_d(sv[2 * v], lo);
            sv[2 * v + 1] = s.add_d(sv[2 * v + 1], hi);
            qv[2 * v] = s.mul_add_d(lo, lo, qv[2 * v]);
            qv[2 * v + 1] = s.mul_add_d(hi, hi, qv[2 * v + 1]);
        }
    }
    for k in 0..2 * V {
        s.store_d(&mut sum[half * k..], sv[k]);
        s.store_d(&mut sq[half * k..], qv[k]);
    }
}

/// Shifted column sums, a tile of [`COL_TILE`] lines at a time: blocks of `V·LANES`
/// columns (`V` = [`block_v`]), then of `LANES`, then the rest per line.
#[inline(always)]
pub(super) fn col_sums_f32<S: Isa, I: Iterator<Item = usize>>(
    s: S,
    x: &[f32],
    lines: I,
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let w = shift.len();
    assert!(
        sum.len() == w && sq.len() == w,
        "one accumulator per column"
    );
    if block_v::<S>(w) == 2 {
        col_sums_tiles::<S, 2, I>(s, x, lines, shift, (sum, sq));
    } else {
        col_sums_tiles::<S, MAX_V, I>(s, x, lines, shift, (sum, sq));
    }
}

/// [`col_sums_f32`] with blocks of `V` vectors.
#[inline(always)]
fn col_sums_tiles<S: Isa, const V: usize, I: Iterator<Item = usize>>(
    s: S,
    x: &[f32],
    lines: I,
    shift: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
) {
    let w = shift.len();
    let l = S::LANES;
    if w == V * l {
        // One block of columns: the lines in one walk, their accumulators in registers
        // throughout (a tile would store and reload them every few lines; such lines are
        // contiguous in memory, nothing to stride across).
        col_sums_block::<S, V, I>(s, x, lines, 0, shift, (sum, sq));
        return;
    }
    let mut acc = Sums { x, shift, sum, sq };
    walk_tiles::<S, V, I, _>(s, w, lines, &mut acc);
}

/// The arguments of the column sums, a [`TileAcc`].
struct Sums<'a> {
    x: &'a [f32],
    shift: &'a [f64],
    sum: &'a mut [f64],
    sq: &'a mut [f64],
}

impl TileAcc for Sums<'_> {
    #[inline(always)]
    fn block<S: Isa, const V: usize>(&mut self, s: S, offs: &[usize], c0: usize) {
        let acc = (&mut *self.sum, &mut *self.sq);
        col_sums_block::<S, V, _>(s, self.x, offs.iter().copied(), c0, self.shift, acc);
    }

    #[inline(always)]
    fn rest(&mut self, o: usize, c0: usize) {
        let w = self.shift.len();
        let (h, su, q) = (&self.shift[c0..], &mut self.sum[c0..], &mut self.sq[c0..]);
        col_sums_portable(&self.x[o + c0..o + w], h, su, q);
    }
}

/// `col_dsums` of the `LANES·V` columns from `c0` over the lines at `offs` (at most
/// [`COL_FLUSH`]): `f32` partial sums over the lines, then added into the `f64`
/// accumulators.
#[inline(always)]
fn col_dsums_block<S: Isa, const V: usize>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    offs: &[usize],
    c0: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
    (sg, sgx): (&mut [f64], &mut [f64]),
) {
    let l = S::LANES;
    let w = l * V;
    let (m, a, b) = (&m[c0..c0 + w], &a[c0..c0 + w], &b[c0..c0 + w]);
    let (sg, sgx) = (&mut sg[c0..c0 + w], &mut sgx[c0..c0 + w]);
    let zs = s.splat(0.0);
    let mut coef = [(zs, zs, zs); MAX_V];
    for (v, k) in coef.iter_mut().take(V).enumerate() {
        *k = (
            s.load(&m[l * v..]),
            s.load(&a[l * v..]),
            s.load(&b[l * v..]),
        );
    }
    let (mut ps, mut pt) = ([zs; MAX_V], [zs; MAX_V]);
    // `x` and `dy` cut to one length: one bounds check per line covers both.
    let both = x.len().min(dy.len());
    let (x, dy) = (&x[..both], &dy[..both]);
    for &o in offs {
        let (xl, dl) = (&x[o + c0..o + c0 + w], &dy[o + c0..o + c0 + w]);
        for v in 0..V {
            let (vm, va, vb) = coef[v];
            let (xv, d) = (s.load(&xl[l * v..]), s.load(&dl[l * v..]));
            let xh = s.add(s.mul(s.sub(xv, vm), va), vb);
            ps[v] = s.add(ps[v], d);
            pt[v] = s.mul_add(d, xh, pt[v]);
        }
    }
    flush::<S, V>(s, (&mut ps, &mut pt), sg, sgx);
}

/// Adds the `f32` partial sums of `col_dsums_block` into the `f64` accumulators and
/// clears them.
#[inline(always)]
fn flush<S: Isa, const V: usize>(
    s: S,
    (ps, pt): (&mut [S::F32; MAX_V], &mut [S::F32; MAX_V]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let l = S::LANES;
    let zs = s.splat(0.0);
    for v in 0..V {
        for (p, acc) in [(ps[v], &mut *sg), (pt[v], &mut *sgx)] {
            let (lo, hi) = s.widen(p);
            let q = &mut acc[l * v..];
            s.store_d(q, s.add_d(s.load_d(q), lo));
            let q = &mut q[l / 2..];
            s.store_d(q, s.add_d(s.load_d(q), hi));
        }
        ps[v] = zs;
        pt[v] = zs;
    }
}

/// Backward column sums, a tile of [`COL_TILE`] lines at a time: blocks of `V·LANES`
/// columns (`V` = [`block_v`]), then of `LANES`, then the rest per line.
#[inline(always)]
pub(super) fn col_dsums_f32<S: Isa, I: Iterator<Item = usize>>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    lines: I,
    c: (&[f32], &[f32], &[f32]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let w = c.0.len();
    assert!(
        c.1.len() == w && c.2.len() == w && sg.len() == w && sgx.len() == w,
        "one coefficient and accumulator per column"
    );
    if block_v::<S>(w) == 2 {
        col_dsums_tiles::<S, 2, I>(s, (x, dy), lines, c, (sg, sgx));
    } else {
        col_dsums_tiles::<S, MAX_V, I>(s, (x, dy), lines, c, (sg, sgx));
    }
}

/// [`col_dsums_f32`] with blocks of `V` vectors.
#[inline(always)]
fn col_dsums_tiles<S: Isa, const V: usize, I: Iterator<Item = usize>>(
    s: S,
    (x, dy): (&[f32], &[f32]),
    lines: I,
    c: (&[f32], &[f32], &[f32]),
    (sg, sgx): (&mut [f64], &mut [f64]),
) {
    let w = c.0.len();
    let mut acc = DSums { x, dy, c, sg, sgx };
    walk_tiles::<S, V, I, _>(s, w, lines, &mut acc);
}

/// The arguments of the backward column sums, a [`TileAcc`].
struct DSums<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    c: (&'a [f32], &'a [f32], &'a [f32]),
    sg: &'a mut [f64],
    sgx: &'a mut [f64],
}

impl TileAcc for DSums<'_> {
    #[inline(always)]
    fn block<S: Isa, const V: usize>(&mut self, s: S, offs: &[usize], c0: usize) {
        for f in offs.chunks(COL_FLUSH) {
            let acc = (&mut *self.sg, &mut *self.sgx);
            col_dsums_block::<S, V>(s, (self.x, self.dy), f, c0, self.c, acc);
        }
    }

    #[inline(always)]
    fn rest(&mut self, o: usize, c0: usize) {
        let (c, w) = (self.c, self.c.0.len());
        let (m, a, b) = (&c.0[c0..], &c.1[c0..], &c.2[c0..]);
        let (xs, ds) = (&self.x[o + c0..o + w], &self.dy[o + c0..o + w]);
        col_dsums_portable(xs, ds, (m, a, b), &mut self.sg[c0..], &mut self.sgx[c0..]);
    }
}
