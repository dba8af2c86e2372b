//! Row and column kernels that read and write bf16/f16 storage directly (the ISA token's
//! half-precision loads and stores): the fused half-precision paths (`crate::widen::tiled`,
//! `crate::widen::rows`) read `x` (and `dy`) once and write `y` (or `dx`) once, with no f32
//! copy of a tile in between.
//!
//! Arithmetic is that of the f32 kernels they replace: the elementwise expressions of the
//! portable kernels (`(x − m)·a + b`, `((x − m)·a + b)·γ + β`, `dy·(c·γ) + ((x − m)·a + b)`)
//! in f32 without fused multiply-add, so every level gives the same bits; statistics and
//! backward sums in f64 (the shifted scheme), except the row path's forward statistics
//! ([`row_stats`]: f32 lanes, two passes, the same bits at every level). Each kernel runs at the current SIMD level
//! (`isa::dispatch`, one choice per call), monomorphized per storage format. The kernels
//! take the bit patterns (`&[u16]`) and a [`Fmt`]; `crate::widen` reinterprets its half
//! slices (this module names no element type, so `convert` stays free of `Float`).

use std::marker::PhantomData;

use crate::kernels::isa::{dispatch, dispatch_bf16, Isa, WithIsa};

/// A half-precision storage format: how `LANES` of its bit patterns load into `f32` lanes
/// and store from them (the token's half loads and stores).
pub(crate) trait Format: Copy + 'static {
    /// `LANES` values widened (exact).
    fn ld<S: Isa>(s: S, x: &[u16]) -> S::F32;
    /// `v` rounded to nearest even into `LANES` values.
    fn st<S: Isa>(s: S, o: &mut [u16], v: S::F32);
    /// Vector `q` (of `16 / LANES`) of two 16-lane sums over a block of 32 values `h`
    /// (widened, exact), in an assignment of values to lanes that is the same at every
    /// level: bf16 the values at even indices (lane `l`: value `2l`) and at odd ones
    /// (`2l + 1`), f16 the first 16 and the next 16 (`l`, `16 + l`).
    fn ld_pair<S: Isa>(s: S, h: &[u16], q: usize) -> (S::F32, S::F32);
}

/// bf16 storage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16;

/// f16 storage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F16;

impl Format for Bf16 {
    #[inline(always)]
    fn ld<S: Isa>(s: S, x: &[u16]) -> S::F32 {
        s.load_bf16(x)
    }
    #[inline(always)]
    fn st<S: Isa>(s: S, o: &mut [u16], v: S::F32) {
        s.store_bf16_ne(o, v)
    }
    #[inline(always)]
    fn ld_pair<S: Isa>(s: S, h: &[u16], q: usize) -> (S::F32, S::F32) {
        s.load_bf16_pair(&h[2 * q * S::LANES..])
    }
}

impl Format for F16 {
    #[inline(always)]
    fn ld<S: Isa>(s: S, x: &[u16]) -> S::F32 {
        s.load_f16(x)
    }
    #[inline(always)]
    fn st<S: Isa>(s: S, o: &mut [u16], v: S::F32) {
        s.store_f16(o, v)
    }
    #[inline(always)]
    fn ld_pair<S: Isa>(s: S, h: &[u16], q: usize) -> (S::F32, S::F32) {
        let l = S::LANES;
        (s.load_f16(&h[q * l..]), s.load_f16(&h[16 + q * l..]))
    }
}

/// The storage format of a half type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fmt {
    /// `bf16`.
    Bf16,
    /// `f16`.
    F16,
}

/// A kernel generic over the level and the storage format.
trait Kernel {
    type Out;
    fn run<S: Isa, F: Format>(self, s: S) -> Self::Out;
}

/// A [`Kernel`] at format `F`, as an [`isa::dispatch`](dispatch) operation.
struct At<K, F>(K, PhantomData<F>);

impl<K: Kernel, F: Format> WithIsa for At<K, F> {
    type Out = K::Out;
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> K::Out {
        self.0.run::<S, F>(s)
    }
}

/// Runs `k` at the current level for `fmt`.
#[inline(always)]
fn go<K: Kernel>(fmt: Fmt, k: K) -> K::Out {
    match fmt {
        Fmt::Bf16 => dispatch_bf16(At(k, PhantomData::<Bf16>)),
        Fmt::F16 => dispatch(At(k, PhantomData::<F16>)),
    }
}

/// Up to `LANES` half values (zero in the lanes after).
#[inline(always)]
fn ldh<S: Isa, F: Format>(s: S, x: &[u16]) -> S::F32 {
    if x.len() == S::LANES {
        F::ld(s, x)
    } else {
        let mut b = [0u16; 16];
        b[..x.len()].copy_from_slice(x);
        F::ld(s, &b)
    }
}

/// Stores the first `o.len() ≤ LANES` lanes of `v`, rounded.
#[inline(always)]
fn sth<S: Isa, F: Format>(s: S, o: &mut [u16], v: S::F32) {
    if o.len() == S::LANES {
        F::st(s, o, v)
    } else {
        let mut b = [0u16; 16];
        F::st(s, &mut b, v);
        let n = o.len();
        o.copy_from_slice(&b[..n]);
    }
}

/// Up to `LANES` f32 values (zero in the lanes after).
#[inline(always)]
fn ldf<S: Isa>(s: S, x: &[f32]) -> S::F32 {
    if x.len() == S::LANES {
        s.load(x)
    } else {
        s.load_part(x)
    }
}

/// `v`'s `f64` halves as an array (the first `LANES` values).
#[inline(always)]
fn wide_array<S: Isa>(s: S, (lo, hi): (S::F64, S::F64)) -> [f64; 16] {
    let mut a = [0f64; 16];
    s.store_d(&mut a, lo);
    s.store_d(&mut a[S::LANES / 2..], hi);
    a
}

/// `acc[..n] += v` for the `f64` halves of a vector (`n ≤ LANES`).
#[inline(always)]
fn add_into<S: Isa>(s: S, acc: &mut [f64], (lo, hi): (S::F64, S::F64)) {
    let h = S::LANES / 2;
    if acc.len() == S::LANES {
        let (a, b) = acc.split_at_mut(h);
        s.store_d(a, s.add_d(s.load_d(a), lo));
        s.store_d(b, s.add_d(s.load_d(b), hi));
    } else {
        let v = wide_array(s, (lo, hi));
        for (a, v) in acc.iter_mut().zip(v) {
            *a += v;
        }
    }
}

/// `(x − m)·a + b` in f32 (no fused multiply-add).
#[inline(always)]
fn xhat<S: Isa>(s: S, x: S::F32, (m, a, b): (S::F32, S::F32, S::F32)) -> S::F32 {
    s.add(s.mul(s.sub(x, m), a), b)
}

/// `(x − m)·a + b` with one rounding after the subtraction (`fma(x − m, a, b)`, the same
/// bits at every level): the row path's forward with γ (and β) along the row, whose
/// statistics are its own (f32 lanes, not the f32 layer's), and whose output is then
/// `x̂·γ` or `fma(x̂, γ, β)` — three operations per vector instead of five. With `b = 0`
/// (layer and RMS norm) `x̂` has the bits of [`xhat`]'s (the product rounded once, and
/// `−0 + 0 = +0` either way).
#[inline(always)]
fn xhat_fused<S: Isa>(s: S, x: S::F32, (m, a, b): (S::F32, S::F32, S::F32)) -> S::F32 {
    s.fma(s.sub(x, m), a, b)
}

/// The three coefficients as vectors.
#[inline(always)]
fn splat3<S: Isa>(s: S, (m, a, b): (f32, f32, f32)) -> (S::F32, S::F32, S::F32) {
    (s.splat(m), s.splat(a), s.splat(b))
}

// ---------------------------------------------------------------------------------------
// Rows.

struct Sums<'a> {
    x: &'a [u16],
    shift: f64,
}

impl Kernel for Sums<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64) {
        shifted_sums::<S, F, true>(s, self.x, self.shift)
    }
}

/// The operations of the f32 row sums (`reduce::sums`), in their order: eight `f64`
/// chains over `2·LANES` values, one more vector into the first two, the rest in scalar
/// `f64` (so a half row's sums are those of its f32 values, bit for bit). Without `D`, the
/// four Σd chains do not run and Σd is 0.
#[inline(always)]
fn shifted_sums<S: Isa, F: Format, const D: bool>(s: S, x: &[u16], shift: f64) -> (f64, f64) {
    let l = S::LANES;
    let h = s.splat_d(shift);
    let z = s.splat_d(0.0);
    let (mut sm, mut sq) = ([z; 4], [z; 4]);
    let mut chunks = x.chunks_exact(2 * l);
    for c in &mut chunks {
        let (a, b) = s.widen(F::ld(s, c));
        let (c, d) = s.widen(F::ld(s, &c[l..]));
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            let v = s.sub_d(v, h);
            if D {
                sm[k] = s.add_d(sm[k], v);
            }
            sq[k] = s.mul_add_d(v, v, sq[k]);
        }
    }
    let mut rest = chunks.remainder();
    if rest.len() >= l {
        let (a, b) = s.widen(F::ld(s, rest));
        for (k, v) in [a, b].into_iter().enumerate() {
            let v = s.sub_d(v, h);
            if D {
                sm[k] = s.add_d(sm[k], v);
            }
            sq[k] = s.mul_add_d(v, v, sq[k]);
        }
        rest = &rest[l..];
    }
    let (mut ts, mut tq) = (0.0, 0.0);
    let v = wide_array(s, s.widen(ldh::<S, F>(s, rest)));
    for &v in &v[..rest.len()] {
        let d = v - shift;
        ts += d;
        tq += d * d;
    }
    let sqs = s.add_d(s.add_d(sq[0], sq[1]), s.add_d(sq[2], sq[3]));
    if !D {
        return (0.0, s.sum_d(sqs) + tq);
    }
    let sum = s.add_d(s.add_d(sm[0], sm[1]), s.add_d(sm[2], sm[3]));
    (s.sum_d(sum) + ts, s.sum_d(sqs) + tq)
}

/// Σ(x − shift) and Σ(x − shift)² of a half row, in f64.
pub(crate) fn sums(fmt: Fmt, x: &[u16], shift: f64) -> (f64, f64) {
    go(fmt, Sums { x, shift })
}

/// γ and β along a row (β optional).
pub(crate) type Params<'a> = Option<(&'a [f32], Option<&'a [f32]>)>;

struct Affine<'a> {
    x: &'a [u16],
    y: &'a mut [u16],
    c: (f32, f32, f32),
    p: Params<'a>,
}

impl Kernel for Affine<'_> {
    type Out = ();
    /// Whole vectors over exact chunks (no per-vector length checks), then one partial.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let k = splat3(s, self.c);
        let n = self.x.len();
        assert_eq!(self.y.len(), n, "rows of one length");
        let body = n - n % l;
        let (xb, xt) = self.x.split_at(body);
        let (yb, yt) = self.y.split_at_mut(body);
        let rows = xb.chunks_exact(l).zip(yb.chunks_exact_mut(l));
        match self.p {
            None => {
                for (xc, yc) in rows {
                    F::st(s, yc, xhat(s, F::ld(s, xc), k));
                }
                if !xt.is_empty() {
                    sth::<S, F>(s, yt, xhat(s, ldh::<S, F>(s, xt), k));
                }
            }
            Some((g, None)) => {
                let (gb, gt) = g[..n].split_at(body);
                for ((xc, yc), gc) in rows.zip(gb.chunks_exact(l)) {
                    let v = xhat_fused(s, F::ld(s, xc), k);
                    F::st(s, yc, s.mul(v, s.load(gc)));
                }
                if !xt.is_empty() {
                    let v = xhat_fused(s, ldh::<S, F>(s, xt), k);
                    sth::<S, F>(s, yt, s.mul(v, ldf(s, gt)));
                }
            }
            Some((g, Some(bt))) => {
                let (gb, gt) = g[..n].split_at(body);
                let (bb, btt) = bt[..n].split_at(body);
                let params = gb.chunks_exact(l).zip(bb.chunks_exact(l));
                for ((xc, yc), (gc, bc)) in rows.zip(params) {
                    let v = xhat_fused(s, F::ld(s, xc), k);
                    F::st(s, yc, s.fma(v, s.load(gc), s.load(bc)));
                }
                if !xt.is_empty() {
                    let v = xhat_fused(s, ldh::<S, F>(s, xt), k);
                    let v = s.fma(v, ldf(s, gt), ldf(s, btt));
                    sth::<S, F>(s, yt, v);
                }
            }
        }
    }
}

/// `y = (x − m)·a + b` (two roundings, the f32 layers' expression); with γ (and β) along
/// the row, the row path's `x̂·γ` or `fma(x̂, γ, β)` with `x̂ = fma(x − m, a, b)`.
pub(crate) fn affine(fmt: Fmt, x: &[u16], y: &mut [u16], c: (f32, f32, f32), p: Params<'_>) {
    affine_streamed(fmt, x, y, c, p, false)
}

/// [`affine`]; with `stream`, non-temporal stores of the output where a kernel has them
/// (the AVX2 one, rows without γ along them): for passes whose data do not fit the cache.
/// The same values; the caller runs [`stream_fence`] after its last call, before another
/// thread reads `y`.
pub(crate) fn affine_streamed(
    fmt: Fmt,
    x: &[u16],
    y: &mut [u16],
    c: (f32, f32, f32),
    p: Params<'_>,
    stream: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 {
        if let Some((_, true)) = bf16x::run(bf16x::Op::Affine(x, &mut *y, c, p)) {
            return;
        }
        // Rows with γ along them keep the token kernel (the AVX2 kernel with γ and β, in
        // order or in the unpack order, streamed, measured slower on bf16 LayerNorm
        // [8192, 1024] forward on AMD EPYC Zen 3: 1.09-1.17× the time).
        if p.is_none() && avx2::row_affine(x, &mut *y, c, stream) {
            return;
        }
    }
    let _ = stream;
    go(fmt, Affine { x, y, c, p })
}

/// `y = (x − m)·a + b` over one row and [`sums`] of the next row (`next`, of the same
/// length as `x`): one loop where the CPU runs the bf16 fast kernels, the two calls
/// otherwise (the same bits either way; `stream` as [`affine_streamed`], for the two
/// calls).
pub(crate) fn affine_then_sums(
    fmt: Fmt,
    (x, y): (&[u16], &mut [u16]),
    c: (f32, f32, f32),
    (next, shift): (&[u16], f64),
    stream: bool,
) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 && next.len() == x.len() {
        let op = bf16x::Op::AffineThenSums((x, &mut *y), c, (next, shift));
        if let Some((raw, ok)) = bf16x::run(op) {
            if !ok {
                go(fmt, Affine { x, y, c, p: None });
            }
            return raw;
        }
    }
    affine_streamed(fmt, x, y, c, None, stream);
    sums(fmt, next, shift)
}

/// Whole rows of `n` values of `xs` into `ys`, γ (and β) along each row (the parameters
/// of every row): `y = fma(x̂, γ, β)` (`x̂·γ` without β), `x̂ = fma(x − m, a, b)`, with row
/// `i`'s coefficients from
/// `stat(i, (shift, Σd, Σd²))`, its raw statistics as [`row_stats`] gives them (`center`
/// as there), called in row order. The same bits as [`row_stats`] then [`affine`] row by
/// row, each row's first pass summed in the previous row's affine loop; `false` where
/// the CPU has no fast kernel for it (nothing ran: the caller runs those).
pub(crate) fn params_rows(
    fmt: Fmt,
    (xs, ys): (&[u16], &mut [u16]),
    n: usize,
    (g, bt): (&[f32], Option<&[f32]>),
    center: bool,
    stat: &mut dyn FnMut(usize, (f64, f64, f64)) -> (f32, f32, f32),
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 && n > 0 && xs.len().is_multiple_of(n) && g.len() >= n {
        let mut hooks = Hooks { stat, p: (g, bt) };
        let op = bf16x::Op::ParamsRows((xs, ys), n, (g, bt), center, &mut hooks);
        return bf16x::run(op).is_some();
    }
    let _ = (fmt, xs, ys, n, g, bt, center, stat);
    false
}

/// [`params_rows`]'s statistics callback and its portable rewrite of a row.
#[cfg(target_arch = "x86_64")]
struct Hooks<'s, 'p> {
    stat: &'s mut dyn FnMut(usize, (f64, f64, f64)) -> (f32, f32, f32),
    p: (&'p [f32], Option<&'p [f32]>),
}

#[cfg(target_arch = "x86_64")]
impl bf16x::RowHooks for Hooks<'_, '_> {
    fn stat(&mut self, row: usize, raw: (f64, f64, f64)) -> (f32, f32, f32) {
        (self.stat)(row, raw)
    }
    fn redo(&mut self, _row: usize, x: &[u16], y: &mut [u16], c: (f32, f32, f32)) {
        let p = Some(self.p);
        go(Fmt::Bf16, Affine { x, y, c, p });
    }
}

struct DSums<'a> {
    x: &'a [u16],
    dy: &'a [u16],
    c: (f32, f32, f32),
    g: Option<&'a [f32]>,
    acc: Option<(&'a mut [f64], &'a mut [f64])>,
}

/// (w·dy, x̂) of the `len ≤ LANES` values from `i` of a backward row (w = γ or 1), with
/// the parameter-gradient terms `dg += dy·x̂`, `db += dy` added in f64 where asked.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn dterm<S: Isa, F: Format>(
    s: S,
    (x, dy): (&[u16], &[u16]),
    k: (S::F32, S::F32, S::F32),
    g: Option<&[f32]>,
    acc: &mut Option<(&mut [f64], &mut [f64])>,
    (i, len): (usize, usize),
) -> (S::F32, S::F32) {
    let xh = xhat(s, ldh::<S, F>(s, &x[i..i + len]), k);
    let d = ldh::<S, F>(s, &dy[i..i + len]);
    if let Some((dg, db)) = acc {
        let (xw, dw) = (s.widen(xh), s.widen(d));
        let gx = (s.mul_d(dw.0, xw.0), s.mul_d(dw.1, xw.1));
        add_into(s, &mut dg[i..i + len], gx);
        add_into(s, &mut db[i..i + len], dw);
    }
    let w = match g {
        Some(g) => s.mul(d, ldf(s, &g[i..i + len])),
        None => d,
    };
    (w, xh)
}

/// Widens f32 partial sums of w·dy and w·dy·x̂ into the two pairs of f64 chains.
#[inline(always)]
fn push<S: Isa>(s: S, (s1, s2): (&mut [S::F64; 2], &mut [S::F64; 2]), ps: S::F32, pt: S::F32) {
    let (sl, sh) = s.widen(ps);
    let (tl, th) = s.widen(pt);
    s1[0] = s.add_d(s1[0], sl);
    s1[1] = s.add_d(s1[1], sh);
    s2[0] = s.add_d(s2[0], tl);
    s2[1] = s.add_d(s2[1], th);
}

impl Kernel for DSums<'_> {
    type Out = (f64, f64);
    /// The operations of the f32 row kernel (`reduce::dsums`), in its order: blocks of
    /// `4·LANES` values summed in f32 (four terms per lane) and widened into two `f64`
    /// chains, then single vectors, then the rest in scalar `f64` (bit for bit its sums
    /// of the f32 values). The parameter-gradient terms go straight into f64.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64) {
        let l = S::LANES;
        let n = self.x.len();
        assert_eq!(self.dy.len(), n, "rows of one length");
        let k = splat3(s, self.c);
        let z = s.splat_d(0.0);
        let (mut s1, mut s2) = ([z; 2], [z; 2]);
        let g = self.g.map(|g| &g[..n]);
        let mut acc = self.acc.map(|(dg, db)| (&mut dg[..n], &mut db[..n]));
        let xd = (self.x, self.dy);
        let full = n - n % (4 * l);
        let mut i = 0;
        while i < full {
            let (w, xh) = dterm::<S, F>(s, xd, k, g, &mut acc, (i, l));
            let (mut ps, mut pt) = (w, s.mul(w, xh));
            for j in 1..4 {
                let (w, xh) = dterm::<S, F>(s, xd, k, g, &mut acc, (i + j * l, l));
                ps = s.add(ps, w);
                pt = s.mul_add(w, xh, pt);
            }
            push(s, (&mut s1, &mut s2), ps, pt);
            i += 4 * l;
        }
        dsums_rest::<S, F>(s, xd, k, (g, &mut acc), i, (s1, s2))
    }
}

/// The end of a backward row from `i` (after its blocks of `4·LANES`): single vectors into
/// the chains `(s1, s2)`, then the rest in scalar `f64`, and the row's two sums.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn dsums_rest<S: Isa, F: Format>(
    s: S,
    xd: (&[u16], &[u16]),
    k: (S::F32, S::F32, S::F32),
    (g, acc): (Option<&[f32]>, &mut Option<(&mut [f64], &mut [f64])>),
    mut i: usize,
    (mut s1, mut s2): ([S::F64; 2], [S::F64; 2]),
) -> (f64, f64) {
    let (l, n) = (S::LANES, xd.0.len());
    while i + l <= n {
        let (w, xh) = dterm::<S, F>(s, xd, k, g, acc, (i, l));
        push(s, (&mut s1, &mut s2), w, s.mul(w, xh));
        i += l;
    }
    let (mut r1, mut r2) = (0.0, 0.0);
    if i < n {
        // The portable kernel's tail: w·dy in f64.
        let len = n - i;
        let (_, xh) = dterm::<S, F>(s, xd, k, g, acc, (i, len));
        let (mut d, mut x, mut w) = ([0f32; 16], [0f32; 16], [1f32; 16]);
        s.store(&mut d, ldh::<S, F>(s, &xd.1[i..]));
        s.store(&mut x, xh);
        if let Some(g) = g {
            w[..len].copy_from_slice(&g[i..]);
        }
        for j in 0..len {
            let d = f64::from(d[j]) * f64::from(w[j]);
            r1 += d;
            r2 += d * f64::from(x[j]);
        }
    }
    (
        s.sum_d(s.add_d(s1[0], s1[1])) + r1,
        s.sum_d(s.add_d(s2[0], s2[1])) + r2,
    )
}

/// Σw·dy and Σw·dy·x̂ of a half row (x̂ = (x − m)·a + b in f32, w = γ or 1), in f64; with
/// `acc`, also `dg[i] += dy·x̂`, `db[i] += dy` along the row.
pub(crate) fn dsums(
    fmt: Fmt,
    (x, dy): (&[u16], &[u16]),
    c: (f32, f32, f32),
    g: Option<&[f32]>,
    acc: Option<(&mut [f64], &mut [f64])>,
) -> (f64, f64) {
    go(fmt, DSums { x, dy, c, g, acc })
}

struct Dx<'a> {
    x: &'a [u16],
    dy: &'a [u16],
    out: &'a mut [u16],
    k: (f32, f32, f32, f32),
    g: Option<&'a [f32]>,
}

impl Kernel for Dx<'_> {
    type Out = ();
    /// Whole vectors over exact chunks (no per-vector length checks), then one partial.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let n = self.x.len();
        assert!(
            self.dy.len() == n && self.out.len() == n,
            "rows of one length"
        );
        let (c, m, a, b) = self.k;
        let vc = s.splat(c);
        let k = splat3(s, (m, a, b));
        let body = n - n % l;
        let (xb, xt) = self.x.split_at(body);
        let (db, dt) = self.dy.split_at(body);
        let (ob, ot) = self.out.split_at_mut(body);
        let rows = xb
            .chunks_exact(l)
            .zip(db.chunks_exact(l))
            .zip(ob.chunks_exact_mut(l));
        match self.g {
            None => {
                for ((xc, dc), oc) in rows {
                    let v = s.add(s.mul(F::ld(s, dc), vc), xhat(s, F::ld(s, xc), k));
                    F::st(s, oc, v);
                }
                if !xt.is_empty() {
                    let d = ldh::<S, F>(s, dt);
                    let v = s.add(s.mul(d, vc), xhat(s, ldh::<S, F>(s, xt), k));
                    sth::<S, F>(s, ot, v);
                }
            }
            Some(g) => {
                let (gb, gt) = g[..n].split_at(body);
                for (((xc, dc), oc), gc) in rows.zip(gb.chunks_exact(l)) {
                    let cg = s.mul(vc, s.load(gc));
                    let v = s.add(s.mul(F::ld(s, dc), cg), xhat(s, F::ld(s, xc), k));
                    F::st(s, oc, v);
                }
                if !xt.is_empty() {
                    let cg = s.mul(vc, ldf(s, gt));
                    let d = ldh::<S, F>(s, dt);
                    let v = s.add(s.mul(d, cg), xhat(s, ldh::<S, F>(s, xt), k));
                    sth::<S, F>(s, ot, v);
                }
            }
        }
    }
}

/// `dx = dy·(c·γ) + ((x − m)·a + b)` over a half row (γ = 1 when absent).
pub(crate) fn dx(
    fmt: Fmt,
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    k: (f32, f32, f32, f32),
    g: Option<&[f32]>,
) {
    if dx_bf16x(fmt, (x, dy, &mut *out), k, g, false) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 && avx2::row_dx((x, dy, &mut *out), k, g, false) {
        return;
    }
    go(fmt, Dx { x, dy, out, k, g })
}

/// [`dx`] with non-temporal stores of the output where a kernel has them (the
/// AVX512_BF16 one, and the AVX2 one on rows without γ): for passes whose data do not fit
/// the cache. The same values; the caller runs [`stream_fence`] after its last call,
/// before another thread reads `out`.
pub(crate) fn dx_streamed(
    fmt: Fmt,
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    k: (f32, f32, f32, f32),
    g: Option<&[f32]>,
) {
    if dx_bf16x(fmt, (x, dy, &mut *out), k, g, true) {
        return;
    }
    // The AVX2 kernel streams rows without γ along them only, as the f32 kernels at AVX2
    // (`reduce::sums::dx_streams`): bf16 LayerNorm and RMSNorm [8192, 1024] backward on
    // AMD EPYC Zen 3, 5 alternating rounds, streamed 0.87× / 0.77× the time at one thread
    // but 1.27× / 1.22× at two.
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 && g.is_none() && avx2::row_dx((x, dy, &mut *out), k, g, true) {
        return;
    }
    dx(fmt, (x, dy, out), k, g)
}

/// [`dx`] by the AVX512_BF16 kernel where it runs and completes the row (`false`: the
/// caller runs the token kernel).
#[inline(always)]
#[allow(clippy::type_complexity)]
fn dx_bf16x(
    fmt: Fmt,
    io: (&[u16], &[u16], &mut [u16]),
    k: (f32, f32, f32, f32),
    g: Option<&[f32]>,
    stream: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 {
        return matches!(bf16x::run(bf16x::Op::Dx(io, k, g, stream)), Some((_, true)));
    }
    let _ = (fmt, io, k, g, stream);
    false
}

/// Orders the non-temporal stores of this thread's [`dx_streamed`] calls before its later
/// memory operations (a full fence).
pub(crate) fn stream_fence() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

struct Narrow<'a> {
    src: &'a [f32],
    dst: &'a mut [u16],
}

impl Kernel for Narrow<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        assert_eq!(self.src.len(), self.dst.len(), "narrow: lengths differ");
        for (c, o) in self.src.chunks(l).zip(self.dst.chunks_mut(l)) {
            sth::<S, F>(s, o, ldf(s, c));
        }
    }
}

/// `dst[i] = src[i]` rounded to nearest even (the token's stores: vector code at the x86
/// levels). Panics if the lengths differ.
pub(crate) fn narrow(fmt: Fmt, src: &[f32], dst: &mut [u16]) {
    go(fmt, Narrow { src, dst })
}

mod blocked;
pub(crate) use blocked::dsums_rows;

mod stats32;
#[cfg(test)]
use blocked::DSumsRows;
pub(crate) use stats32::row_stats;

mod cols;
#[cfg(target_arch = "x86_64")]
use cols::Cols;
pub(crate) use cols::{
    col_affine, col_dsums_with, col_dx_streamed, col_sums_with, zeroed, ColWork, Streamed,
};
#[cfg(test)]
use cols::{col_dsums, col_dx, col_sums, ColAffine, ColDSums, ColDx, ColSums};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod bf16x;

#[cfg(test)]
#[path = "fused/tests/lead.rs"]
mod lead_tests;
#[cfg(test)]
#[path = "fused/tests/rows_bits.rs"]
mod rows_bits_tests;
#[cfg(test)]
#[path = "fused/tests/rows.rs"]
mod rows_tests;
#[cfg(test)]
mod tests;
