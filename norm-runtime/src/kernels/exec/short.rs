//! Units of short lines: GroupNorm and NCHW BatchNorm on small feature maps (lines of
//! `H·W` values), GroupNorm over 1×1 maps (a line of the group's channels, γ along it).
//!
//! The row kernels cost a call per line (the level's dispatch, the row's horizontal sums,
//! partial head and tail vectors) and the statistics a dependent chain of divisions and a
//! square root per group: more than a line of 16 values itself. Here a task's units run in
//! blocks of up to [`BLOCK`] units: the sums of every line of the block in one kernel call
//! (`f64` vector chains per unit, one horizontal sum per unit, or per line where a scalar γ
//! needs the line's own sums), the statistics or dx coefficients of the whole block in one
//! vectorized call (`Finish::many`, `DxFinish::many`), then the elementwise pass over the
//! block in one kernel call, its values read again from the L1/L2 cache. The unit bases
//! are walked without a division per unit. `f32` runs kernels written over the ISA token;
//! other element types the portable loops below. The arithmetic per element is that of the
//! row kernels (x̂ and dy·x̂ in the element type, sums in `f64`), the order of the sums fixed
//! by the shape, so results never depend on the number of threads.

use super::out::{TaskOut, UnitBase, UnitBases};
use super::units::{BackOut, CoefMut, ColumnSums, DxCoefMut, DxFinish, Finish, Params, Units};
use super::{Coef3, Coef4};
use crate::kernels::elem::{which, Which};
use crate::kernels::isa::{dispatch, Isa, WithIsa};
use crate::kernels::lines::{ParamLine, RowFold};
use crate::Float;

/// The longest line that runs the short-line passes (on the AMD EPYC Zen 4, GroupNorm and
/// NCHW BatchNorm on 14×14 and 16×16 maps ran 1.2–2× faster here than with the row kernels,
/// on 28×28 maps 5–15 % slower).
const SHORT_LINE: usize = 256;

/// The most units per block.
const BLOCK: usize = 64;

/// The values a block aims at (its second pass finds them in the cache).
const BLOCK_ELEMS: usize = 8192;

/// Ones, masking the lanes after a line's end.
static ONES: [f32; 16] = [1.0; 16];

/// Whether the one-group units of `units` run the short-line passes: short lines, in units
/// of several lines (grouped, NCHW batch norm) or with parameters that move from unit to
/// unit (GroupNorm over 1×1 maps). Rows that share their parameters (layer norm) keep the
/// row kernels.
#[inline(always)]
pub(super) fn applies(units: &Units) -> bool {
    units.groups_per_unit == 1
        && units.line.size <= SHORT_LINE
        && (units.lines > 1 || !units.shared_params())
}

/// The inputs of a task of the short-line passes.
pub(super) struct ShortTask<'a, 'o, T> {
    pub units: &'a Units,
    pub x: &'a [T],
    /// The task's units.
    pub range: (usize, usize),
    pub out: &'a mut TaskOut<'o, T>,
}

/// One block of units: the units' bases (tokens of the task's `TaskOut`) in order.
type Bases<'a> = &'a [UnitBase];

/// Whether the backward passes walk a block in memory order (line j of every unit, then
/// line j + 1): units whose lines lie across the whole tensor (NCHW batch norm: a channel's
/// line of each sample), without γ along the lines. Unit by unit, the lines of a unit lie a
/// sample apart, a multiple of 4 KiB on maps like 8×8 with 64 channels, and the L1 cache
/// keeps only eight lines per set; in memory order the passes stream through the tensor.
/// The sums of each unit add up in the same order either way.
#[inline(always)]
fn memory_order(units: &Units, gamma: bool) -> bool {
    units.reduced_outer && !gamma
}

/// Runs `f(b0, bases)` for the blocks of units `u0..u1` (`whole`: blocks of [`BLOCK`] units
/// whatever their size, walked in memory order); `walk` yields their bases.
#[inline(always)]
fn blocks(
    units: &Units,
    (u0, u1): (usize, usize),
    whole: bool,
    mut walk: UnitBases<'_>,
    mut f: impl FnMut(usize, Bases<'_>),
) {
    let per = if whole {
        BLOCK
    } else {
        (BLOCK_ELEMS / units.elems().max(1)).clamp(1, BLOCK)
    };
    let mut bases = [UnitBase::default(); BLOCK];
    let mut b0 = u0;
    while b0 < u1 {
        let nb = per.min(u1 - b0);
        for b in &mut bases[..nb] {
            *b = walk.next().unwrap_or_default();
        }
        f(b0, &bases[..nb]);
        b0 += nb;
    }
}

/// The fused forward of a task's units of short lines (see the module docs). `c` is the
/// task's share of the per-group arrays.
#[inline(always)]
pub(super) fn forward<T: Float>(
    t: ShortTask<'_, '_, T>,
    center: bool,
    params: Params<'_, T>,
    finish: &Finish<'_, T>,
    mut c: CoefMut<'_, T>,
) {
    let ShortTask {
        units,
        x,
        range,
        out,
    } = t;
    let (mut shift, mut sum, mut sq) = ([0.0f64; BLOCK], [0.0f64; BLOCK], [0.0f64; BLOCK]);
    let walk = out.bases(range.0, range.1);
    blocks(units, range, false, walk, |b0, bases| {
        let (nb, k0) = (bases.len(), b0 - range.0);
        let sums = (&mut shift[..nb], &mut sum[..nb], &mut sq[..nb]);
        match which::<T>() {
            Which::F32(k) => dispatch(SumsBlock {
                units,
                x: k.r(x),
                bases,
                center,
                out: sums,
            }),
            _ => sums_portable(units, x, bases, center, sums),
        }
        let raw = ColumnSums {
            shift: &shift[..nb],
            sum: &sum[..nb],
            sq: &sq[..nb],
        };
        let k = k0..k0 + nb;
        (finish.many)(b0, raw, c.part(k.clone()));
        let coef = (&c.m[k.clone()], &c.a[k.clone()], &c.b[k]);
        match which::<T>() {
            Which::F32(k) => {
                let p = Params {
                    gamma: params.gamma.map(|g| k.r(g)),
                    beta: params.beta.map(|b| k.r(b)),
                };
                let mut out = out.cast(&k);
                let coef = (k.r(coef.0), k.r(coef.1), k.r(coef.2));
                dispatch(AffineBlock {
                    units,
                    x: k.r(x),
                    bases,
                    coef,
                    params: p,
                    out: &mut out,
                });
            }
            _ => affine_portable(units, x, bases, coef, params, out),
        }
    });
}

/// The fused backward of a task's units of short lines (see the module docs). `o` is the
/// task's share of the per-group arrays, its `dparams` the task's parameter sums.
#[inline(always)]
pub(super) fn backward<T: Float>(
    t: ShortTask<'_, '_, T>,
    (dy, xhat): (&[T], Coef3<'_, T>),
    gamma: Option<&[T]>,
    finish: &DxFinish<'_, T>,
    o: BackOut<'_, T>,
) {
    let ShortTask {
        units,
        x,
        range,
        out,
    } = t;
    let np = o.dparams.len() / 2;
    let (dg, db) = o.dparams.split_at_mut(np);
    let whole = memory_order(units, gamma.is_some());
    let walk = out.bases(range.0, range.1);
    blocks(units, range, whole, walk, |b0, bases| {
        let (nb, k0) = (bases.len(), b0 - range.0);
        let k = k0..k0 + nb;
        let (sg, sgx) = (&mut o.sg[k.clone()], &mut o.sgx[k.clone()]);
        let xh = (
            &xhat.0[b0..b0 + nb],
            &xhat.1[b0..b0 + nb],
            &xhat.2[b0..b0 + nb],
        );
        let along = gamma.is_some() && units.line.ps != 0;
        match which::<T>() {
            Which::F32(c) if !along => dispatch(DSumsBlock {
                units,
                x: c.r(x),
                dy: c.r(dy),
                bases,
                xhat: (c.r(xh.0), c.r(xh.1), c.r(xh.2)),
                gamma: gamma.map(|g| c.r(g)),
                out: (&mut *sg, &mut *sgx),
                dp: (&mut *dg, &mut *db),
            }),
            _ => dsums_portable(
                (units, x, dy, bases),
                xh,
                gamma,
                (&mut *sg, &mut *sgx),
                (&mut *dg, &mut *db),
            ),
        }
        let run = DxCoefMut {
            c: &mut o.c[k.clone()],
            m: &mut o.m[k.clone()],
            a: &mut o.a[k.clone()],
            b: &mut o.b[k.clone()],
        };
        (finish.many)(b0, (&*sg, &*sgx), run);
        let coef = (&o.c[k.clone()], &o.m[k.clone()], &o.a[k.clone()], &o.b[k]);
        match which::<T>() {
            Which::F32(c) if !along => {
                let mut out = out.cast(&c);
                dispatch(DxBlock {
                    units,
                    x: c.r(x),
                    dy: c.r(dy),
                    bases,
                    coef: (c.r(coef.0), c.r(coef.1), c.r(coef.2), c.r(coef.3)),
                    gamma: gamma.map(|g| c.r(g)),
                    out: &mut out,
                });
            }
            _ => dx_portable((units, x, dy, bases), coef, gamma, out),
        }
    });
}

// ---- f32 kernels over the ISA token ----

/// The shifted sums of a block's units (`f32`).
struct SumsBlock<'a> {
    units: &'a Units,
    x: &'a [f32],
    bases: Bases<'a>,
    center: bool,
    out: (&'a mut [f64], &'a mut [f64], &'a mut [f64]),
}

impl WithIsa for SumsBlock<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let SumsBlock {
            units,
            x,
            bases,
            center,
            out: (shift, sum, sq),
        } = self;
        let (len, l) = (units.line.size, S::LANES);
        let mask = s.widen(s.load_part(&ONES[..len % l]));
        for (i, base) in bases.iter().map(UnitBase::at).enumerate() {
            let h = if center { f64::from(x[base.0]) } else { 0.0 };
            let hv = s.splat_d(h);
            let z = s.splat_d(0.0);
            let mut acc = [z; 4];
            for (xo, _) in units.lines_at(base) {
                let line = &x[xo..xo + len];
                let mut j = 0;
                while j + l <= len {
                    let (lo, hi) = s.widen(s.load(&line[j..]));
                    add_shifted(s, (s.sub_d(lo, hv), s.sub_d(hi, hv)), &mut acc);
                    j += l;
                }
                if j < len {
                    // The lanes after the line's end: (x − h)·0.
                    let (lo, hi) = s.widen(s.load_part(&line[j..]));
                    let dl = s.mul_d(s.sub_d(lo, hv), mask.0);
                    let dh = s.mul_d(s.sub_d(hi, hv), mask.1);
                    add_shifted(s, (dl, dh), &mut acc);
                }
            }
            shift[i] = h;
            sum[i] = s.sum_d(s.add_d(acc[0], acc[1]));
            sq[i] = s.sum_d(s.add_d(acc[2], acc[3]));
        }
    }
}

/// Adds the shifted values `(dl, dh)` (the two `f64` halves of a vector) to the chains of
/// Σ(x − h) (`acc[0..2]`) and Σ(x − h)² (`acc[2..4]`).
#[inline(always)]
fn add_shifted<S: Isa>(s: S, (dl, dh): (S::F64, S::F64), acc: &mut [S::F64; 4]) {
    acc[0] = s.add_d(acc[0], dl);
    acc[1] = s.add_d(acc[1], dh);
    acc[2] = s.mul_add_d(dl, dl, acc[2]);
    acc[3] = s.mul_add_d(dh, dh, acc[3]);
}

/// y = (x − m)·a + b (a scalar γ folded in: `lines::affine`'s operations) over a block's
/// units (`f32`).
struct AffineBlock<'a, 'o> {
    units: &'a Units,
    x: &'a [f32],
    bases: Bases<'a>,
    coef: Coef3<'a, f32>,
    params: Params<'a, f32>,
    out: &'a mut TaskOut<'o, f32>,
}

impl WithIsa for AffineBlock<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let AffineBlock {
            units,
            x,
            bases,
            coef,
            params,
            out,
        } = self;
        let (len, l) = (units.line.size, S::LANES);
        for (i, &base) in bases.iter().enumerate() {
            let (m, a, b) = (coef.0[i], coef.1[i], coef.2[i]);
            for (xo, po, y) in out.unit_lines(base) {
                let xs = &x[xo..xo + len];
                let (a, b) = match params.line(units.line, po) {
                    ParamLine::None => (a, b),
                    ParamLine::Scalar(g, bt) => (a * g, b * g + bt),
                    p => {
                        affine_line(xs, y, (m, a, b), p);
                        continue;
                    }
                };
                let (vm, va, vb) = (s.splat(m), s.splat(a), s.splat(b));
                let mut j = 0;
                while j + l <= len {
                    let v = s.add(s.mul(s.sub(s.load(&xs[j..]), vm), va), vb);
                    s.store(&mut y[j..], v);
                    j += l;
                }
                if j < len {
                    let v = s.add(s.mul(s.sub(s.load_part(&xs[j..]), vm), va), vb);
                    s.store_part(&mut y[j..], v);
                }
            }
        }
    }
}

/// Σg and Σg·x̂ of a block's units (`f32`; γ folded, absent, or one per line).
struct DSumsBlock<'a> {
    units: &'a Units,
    x: &'a [f32],
    dy: &'a [f32],
    bases: Bases<'a>,
    xhat: Coef3<'a, f32>,
    gamma: Option<&'a [f32]>,
    out: (&'a mut [f64], &'a mut [f64]),
    dp: (&'a mut [f64], &'a mut [f64]),
}

impl WithIsa for DSumsBlock<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let DSumsBlock {
            units,
            x,
            dy,
            bases,
            xhat,
            gamma,
            out: (sg, sgx),
            dp: (dg, db),
        } = self;
        let len = units.line.size;
        // −0 is the identity of the addition: the first add of a chain folds away.
        let z = s.splat_d(-0.0);
        if memory_order(units, gamma.is_some()) {
            // The chains of every unit of the block, added to in the order of `None` below.
            let mut acc = [z; 2 * BLOCK];
            for (lo, _) in units.lines_at((0, 0)) {
                for (i, (bx, _)) in bases.iter().map(UnitBase::at).enumerate() {
                    let k = (s.splat(xhat.0[i]), s.splat(xhat.1[i]), s.splat(xhat.2[i]));
                    let xo = bx + lo;
                    let (l1, l2) = line_dsums(s, (&x[xo..xo + len], &dy[xo..xo + len]), k);
                    acc[2 * i] = s.add_d(acc[2 * i], l1);
                    acc[2 * i + 1] = s.add_d(acc[2 * i + 1], l2);
                }
            }
            for i in 0..bases.len() {
                (sg[i], sgx[i]) = (s.sum_d(acc[2 * i]), s.sum_d(acc[2 * i + 1]));
            }
            return;
        }
        for (i, base) in bases.iter().map(UnitBase::at).enumerate() {
            let k = (s.splat(xhat.0[i]), s.splat(xhat.1[i]), s.splat(xhat.2[i]));
            let lines = units.lines_at(base);
            let (t1, t2) = match gamma {
                // Without γ the unit's lines share the chains.
                None => {
                    let (mut a1, mut a2) = (z, z);
                    for (xo, _) in lines {
                        let (l1, l2) = line_dsums(s, (&x[xo..xo + len], &dy[xo..xo + len]), k);
                        a1 = s.add_d(a1, l1);
                        a2 = s.add_d(a2, l2);
                    }
                    (s.sum_d(a1), s.sum_d(a2))
                }
                // One γ per line: each line's own sums go to γ's gradients.
                Some(g) => {
                    let (mut g1, mut g2) = (0.0, 0.0);
                    for (xo, po) in lines {
                        let (l1, l2) = line_dsums(s, (&x[xo..xo + len], &dy[xo..xo + len]), k);
                        let fold = RowFold::Scalar(f64::from(g[po]), &mut dg[po], &mut db[po]);
                        fold.apply((s.sum_d(l1), s.sum_d(l2)), &mut g1, &mut g2);
                    }
                    (g1, g2)
                }
            };
            (sg[i], sgx[i]) = (t1, t2);
        }
    }
}

/// Σdy and Σdy·x̂ of one line as `f64` vectors (`k`: m, a, b of x̂ = (x − m)·a + b).
#[inline(always)]
fn line_dsums<S: Isa>(
    s: S,
    (xs, ds): (&[f32], &[f32]),
    k: (S::F32, S::F32, S::F32),
) -> (S::F64, S::F64) {
    let (len, l) = (xs.len(), S::LANES);
    let ds = &ds[..len];
    let z = s.splat_d(-0.0);
    let mut a = [z; 4];
    let mut j = 0;
    while j + l <= len {
        add_dsums(s, (s.load(&xs[j..]), s.load(&ds[j..])), k, &mut a);
        j += l;
    }
    if j < len {
        // dy is zero in the lanes after the line's end.
        add_dsums(s, (s.load_part(&xs[j..]), s.load_part(&ds[j..])), k, &mut a);
    }
    (s.add_d(a[0], a[1]), s.add_d(a[2], a[3]))
}

/// Adds one vector of x and dy to the chains of Σdy (`a[0..2]`) and Σdy·x̂ (`a[2..4]`),
/// x̂ = (x − m)·a + b with `(vm, va, vb)` (a function, not a closure: it must inline into the
/// level's kernel).
#[inline(always)]
fn add_dsums<S: Isa>(
    s: S,
    (vx, vd): (S::F32, S::F32),
    (vm, va, vb): (S::F32, S::F32, S::F32),
    a: &mut [S::F64; 4],
) {
    let xh = s.add(s.mul(s.sub(vx, vm), va), vb);
    let (dl, dh) = s.widen(vd);
    let (pl, ph) = s.widen(s.mul(vd, xh));
    a[0] = s.add_d(a[0], dl);
    a[1] = s.add_d(a[1], dh);
    a[2] = s.add_d(a[2], pl);
    a[3] = s.add_d(a[3], ph);
}

/// dx = dy·(c·γ) + ((x − m)·a + b) over a block's units (`f32`; γ folded, absent, or one per
/// line): `reduce::row_dx_portable`'s operations.
struct DxBlock<'a, 'o> {
    units: &'a Units,
    x: &'a [f32],
    dy: &'a [f32],
    bases: Bases<'a>,
    coef: Coef4<'a, f32>,
    gamma: Option<&'a [f32]>,
    out: &'a mut TaskOut<'o, f32>,
}

impl WithIsa for DxBlock<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let DxBlock {
            units,
            x,
            dy,
            bases,
            coef,
            gamma,
            out,
        } = self;
        let len = units.line.size;
        if memory_order(units, gamma.is_some()) {
            for lo in out.line_offsets() {
                for (i, &b) in bases.iter().enumerate() {
                    let k = (coef.0[i], coef.1[i], coef.2[i], coef.3[i]);
                    let (xo, o) = out.line_in(b, lo);
                    let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
                    line_dx(s, (xs, ds), o, k);
                }
            }
            return;
        }
        for (i, &base) in bases.iter().enumerate() {
            for (xo, po, o) in out.unit_lines(base) {
                let c = gamma.map_or(coef.0[i], |g| coef.0[i] * g[po]);
                let k = (c, coef.1[i], coef.2[i], coef.3[i]);
                let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
                line_dx(s, (xs, ds), o, k);
            }
        }
    }
}

/// dx = dy·c + ((x − m)·a + b) over one line, `k` = (c, m, a, b).
#[inline(always)]
fn line_dx<S: Isa>(s: S, (xs, ds): (&[f32], &[f32]), o: &mut [f32], (c, m, a, b): Coef1) {
    let (len, l) = (o.len(), S::LANES);
    let (xs, ds) = (&xs[..len], &ds[..len]);
    let (vc, vm, va, vb) = (s.splat(c), s.splat(m), s.splat(a), s.splat(b));
    let mut j = 0;
    while j + l <= len {
        let (vx, vd) = (s.load(&xs[j..]), s.load(&ds[j..]));
        let xh = s.add(s.mul(s.sub(vx, vm), va), vb);
        s.store(&mut o[j..], s.add(s.mul(vd, vc), xh));
        j += l;
    }
    if j < len {
        let (vx, vd) = (s.load_part(&xs[j..]), s.load_part(&ds[j..]));
        let xh = s.add(s.mul(s.sub(vx, vm), va), vb);
        s.store_part(&mut o[j..], s.add(s.mul(vd, vc), xh));
    }
}

/// One unit's dx coefficients (c, m, a, b).
type Coef1 = (f32, f32, f32, f32);

// ---- portable loops (f64, and γ along the line) ----

/// The shifted sums of a block's units.
#[inline(always)]
fn sums_portable<T: Float>(
    units: &Units,
    x: &[T],
    bases: Bases<'_>,
    center: bool,
    (shift, sum, sq): (&mut [f64], &mut [f64], &mut [f64]),
) {
    let len = units.line.size;
    for (i, base) in bases.iter().map(UnitBase::at).enumerate() {
        let h = if center { x[base.0].to_acc() } else { 0.0 };
        let (mut s, mut q) = (0.0, 0.0);
        for (xo, _) in units.lines_at(base) {
            for &v in &x[xo..xo + len] {
                let d = v.to_acc() - h;
                s += d;
                q += d * d;
            }
        }
        (shift[i], sum[i], sq[i]) = (h, s, q);
    }
}

/// y = ((x − m)·a + b)·γ + β over a line: the operations of `lines::affine` (a scalar γ
/// folded into the coefficients).
#[inline(always)]
fn affine_line<T: Float>(x: &[T], y: &mut [T], (m, a, b): (T, T, T), p: ParamLine<'_, T>) {
    let n = y.len();
    let x = &x[..n];
    let (a, b) = match p {
        ParamLine::Vector(g, bt) => {
            let g = &g[..n];
            for i in 0..n {
                let v = ((x[i] - m) * a + b) * g[i];
                y[i] = bt.map_or(v, |bt| v + bt[i]);
            }
            return;
        }
        ParamLine::Scalar(g, bt) => (a * g, b * g + bt),
        ParamLine::None => (a, b),
    };
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - m) * a + b;
    }
}

/// The affine pass over a block's units.
#[inline(always)]
fn affine_portable<T: Float>(
    units: &Units,
    x: &[T],
    bases: Bases<'_>,
    coef: Coef3<'_, T>,
    params: Params<'_, T>,
    out: &mut TaskOut<'_, T>,
) {
    let len = units.line.size;
    for (i, &base) in bases.iter().enumerate() {
        let k = (coef.0[i], coef.1[i], coef.2[i]);
        for (xo, po, y) in out.unit_lines(base) {
            affine_line(&x[xo..xo + len], y, k, params.line(units.line, po));
        }
    }
}

/// Σg and Σg·x̂ of a block's units, and the parameter sums of unfolded γ (one per line:
/// per line; along the line: per element).
#[inline(always)]
fn dsums_portable<T: Float>(
    (units, x, dy, bases): (&Units, &[T], &[T], Bases<'_>),
    xhat: Coef3<'_, T>,
    gamma: Option<&[T]>,
    (sg, sgx): (&mut [f64], &mut [f64]),
    (dg, db): (&mut [f64], &mut [f64]),
) {
    let (len, line) = (units.line.size, units.line);
    for (i, base) in bases.iter().map(UnitBase::at).enumerate() {
        let (m, a, b) = (xhat.0[i], xhat.1[i], xhat.2[i]);
        let (mut g1, mut g2) = (0.0, 0.0);
        for (xo, po) in units.lines_at(base) {
            let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
            let (mut t1, mut t2) = (0.0, 0.0);
            for j in 0..len {
                let (d, xh) = (ds[j], (xs[j] - m) * a + b);
                match gamma {
                    Some(g) if line.ps != 0 => {
                        dg[po + j] += (d * xh).to_acc();
                        db[po + j] += d.to_acc();
                        let w = d * g[po + j];
                        t1 += w.to_acc();
                        t2 += (w * xh).to_acc();
                    }
                    _ => {
                        t1 += d.to_acc();
                        t2 += (d * xh).to_acc();
                    }
                }
            }
            let fold = match gamma {
                Some(g) if line.ps == 0 => {
                    RowFold::Scalar(g[po].to_acc(), &mut dg[po], &mut db[po])
                }
                _ => RowFold::Plain,
            };
            fold.apply((t1, t2), &mut g1, &mut g2);
        }
        (sg[i], sgx[i]) = (g1, g2);
    }
}

/// dx over a block's units.
#[inline(always)]
fn dx_portable<T: Float>(
    (units, x, dy, bases): (&Units, &[T], &[T], Bases<'_>),
    coef: Coef4<'_, T>,
    gamma: Option<&[T]>,
    out: &mut TaskOut<'_, T>,
) {
    let (len, line) = (units.line.size, units.line);
    for (i, &base) in bases.iter().enumerate() {
        let (m, a, b) = (coef.1[i], coef.2[i], coef.3[i]);
        for (xo, po, o) in out.unit_lines(base) {
            let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
            match gamma {
                Some(g) if line.ps != 0 => {
                    let (c, g) = (coef.0[i], &g[po..po + len]);
                    for j in 0..len {
                        o[j] = ds[j] * (c * g[j]) + ((xs[j] - m) * a + b);
                    }
                }
                _ => {
                    let c = gamma.map_or(coef.0[i], |g| coef.0[i] * g[po]);
                    for j in 0..len {
                        o[j] = ds[j] * c + ((xs[j] - m) * a + b);
                    }
                }
            }
        }
    }
}
