//! The backward passes: the gradient sums per group (and per unfolded parameter), the dx
//! coefficients (`DxFinish`), and dx, fused per task or split into chunks.

mod rows;

use rayon::prelude::*;

use super::out::{SharedOut, Split, TaskOut};
use super::short::{self, ShortTask};
use super::units::{BackIn, BackOut, DxCoefMut, DxFinish, Units};
use super::Coef4;
use crate::kernels::elem::RowReduce;
use crate::kernels::isa::multiversion;
use crate::kernels::lines::{self, DParam, GammaLine, RowFold};
use crate::kernels::reduce::{row_dx_portable, DxRows, RowParam, Rows};
use crate::plan::Dim;
use crate::Float;

/// γ of the line at parameter offset `po`, with its gradient accumulators.
#[inline(always)]
fn dparam_line<'a, T: Float>(
    gamma: Option<&'a [T]>,
    line: Dim,
    po: usize,
    dg: &'a mut [f64],
    db: &'a mut [f64],
) -> DParam<'a, T> {
    let len = line.size;
    match gamma {
        None => DParam::None,
        Some(g) if line.ps == 0 => DParam::Scalar(g[po], &mut dg[po], &mut db[po]),
        Some(g) => DParam::Vector(
            &g[po..po + len],
            &mut dg[po..po + len],
            &mut db[po..po + len],
        ),
    }
}

/// γ of the line at parameter offset `po`, for the dx pass.
#[inline(always)]
fn gamma_line<T: Float>(gamma: Option<&[T]>, line: Dim, po: usize) -> GammaLine<'_, T> {
    match gamma {
        None => GammaLine::None,
        Some(g) if line.ps == 0 => GammaLine::Scalar(g[po]),
        Some(g) => GammaLine::Vector(&g[po..po + line.size]),
    }
}

/// The backward sums of lines `range` of unit `u` into its groups' `sg`, `sgx` and the
/// parameter sums `dparams`.
#[inline(always)]
fn unit_dsums<T: Float>(
    t: &BackIn<'_, T>,
    u: usize,
    range: (usize, usize),
    (sg, sgx): (&mut [f64], &mut [f64]),
    dparams: &mut [f64],
) {
    let &BackIn {
        units,
        x,
        dy,
        xhat,
        gamma,
    } = t;
    let len = units.line.size;
    let groups_per_unit = units.groups_per_unit;
    let g0 = u * groups_per_unit;
    let (m, a, b) = (
        &xhat.0[g0..g0 + groups_per_unit],
        &xhat.1[g0..g0 + groups_per_unit],
        &xhat.2[g0..g0 + groups_per_unit],
    );
    if groups_per_unit > 1 && gamma.is_none() {
        // Columns with γ folded (or absent): register-blocked over the lines.
        let lines = units.lines_of(u, range).map(|(xo, _)| xo);
        T::col_dsums(x, dy, lines, (m, a, b), sg, sgx);
        return;
    }
    let np = dparams.len() / 2;
    let (dg, db) = dparams.split_at_mut(np);
    for (xo, po) in units.lines_of(u, range) {
        let p = dparam_line(gamma, units.line, po, dg, db);
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        if groups_per_unit == 1 {
            lines::dsums::<T, false>((xs, ds), (m, a, b), p, (sg, sgx));
        } else {
            lines::dsums::<T, true>((xs, ds), (m, a, b), p, (sg, sgx));
        }
    }
}

/// dx of lines `range` of unit `u`, whose groups start at `g0` in `coef` (c, m, a, b).
#[inline(always)]
fn unit_dx<T: Float>(
    t: &BackIn<'_, T>,
    out: &mut TaskOut<'_, T>,
    coef: Coef4<'_, T>,
    g0: usize,
    u: usize,
    range: (usize, usize),
) {
    let &BackIn {
        units,
        x,
        dy,
        gamma,
        ..
    } = t;
    let len = units.line.size;
    let w = units.groups_per_unit;
    let (c, m, a, b) = (
        &coef.0[g0..g0 + w],
        &coef.1[g0..g0 + w],
        &coef.2[g0..g0 + w],
        &coef.3[g0..g0 + w],
    );
    let stream = out.stream;
    let run = if w > 1 && gamma.is_none() {
        out.run(u, range)
    } else {
        None
    };
    if let Some((start, lines, o)) = run {
        // Columns: the line is the unit's `w` groups (see `forward::elementwise`).
        let o = &mut o[..lines * w];
        if T::col_dx(x, dy, o, start, (c, m, a, b), stream) {
            return;
        }
    }
    for (xo, po, o) in out.lines(u, range) {
        // The line's length as `len`: the kernel's length checks fold away.
        let o = &mut o[..len];
        let g = gamma_line(gamma, units.line, po);
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        if w == 1 {
            lines::dx::<T, false>((xs, ds), o, (c, m, a, b), g);
        } else {
            lines::dx::<T, true>((xs, ds), o, (c, m, a, b), g);
        }
    }
}

multiversion! {
    /// Backward sums of tasks `t0..` (as `normalize_task`), one part of `acc` each: Σg, Σg·x̂
    /// of the unit's groups, then the parameter sums.
    fn dsums_task<T: Float>(t: BackIn<'_, T>, t0: usize, stride: usize, acc: &mut [f64]) {
        let units = t.units;
        let (groups_per_unit, (_, cpu)) = (units.groups_per_unit, units.chunking());
        for (i, part) in acc.chunks_mut(stride).enumerate() {
            let (u, c) = ((t0 + i) / cpu, (t0 + i) % cpu);
            let (sg, rest) = part.split_at_mut(groups_per_unit);
            let (sgx, dp) = rest.split_at_mut(groups_per_unit);
            unit_dsums(&t, u, units.chunk(c), (sg, sgx), dp);
        }
    }
}

multiversion! {
    /// dx with known coefficients over tasks `t0..t1` (as `normalize_task`).
    fn dx_task<T: Float>(
        units: &Units,
        io: (&[T], &[T]),
        out: TaskOut<'_, T>,
        coef: Coef4<'_, T>,
        gamma: Option<&[T]>,
        range: (usize, usize),
    ) {
        let mut out = out;
        let ((x, dy), (t0, t1)) = (io, range);
        let (_, cpu) = units.chunking();
        // x̂ is not read by dx.
        let t = BackIn { units, x, dy, xhat: (&[], &[], &[]), gamma };
        for k in t0..t1 {
            let (u, c) = (k / cpu, k % cpu);
            unit_dx(&t, &mut out, coef, u * units.groups_per_unit, u, units.chunk(c));
        }
    }
}

multiversion! {
    /// Fused backward of units `u0..u1` (`range`): sums, `finish`, dx. The slices are this
    /// task's share of the per-group arrays; `dparams` is its own parameter-sum accumulator.
    fn fused_backward_task<T: Float>(
        t: BackIn<'_, T>,
        finish: &DxFinish<'_, T>,
        range: (usize, usize),
        o: BackOut<'_, T>,
        out: TaskOut<'_, T>,
    ) {
        let mut out = out;
        let BackIn { units, x, dy, xhat, gamma } = t;
        let (u0, u1) = range;
        let groups_per_unit = units.groups_per_unit;
        let all = (0, units.lines);
        o.sg.fill(0.0);
        o.sgx.fill(0.0);
        if groups_per_unit == 1 {
            // Short contiguous rows: a tile of rows per step (`rows`).
            if let Some(tile) = rows::tile(units, gamma) {
                rows::backward(&t, finish, (u0, u1), tile, o, &mut out);
                return;
            }
            if units.lines == 1 && gamma_along(gamma, units.line) && units.shared_params() {
                // A level without the pipelined multi-row kernels (AVX2), rows streaming
                // from memory: one row at a time, dx of row u in the loop that sums row
                // u + 1 and prefetches row u + 2 across its 4 KiB pages (the one-row
                // pipelined kernel; same bits: that level sums two rows one at a time).
                // AMD Zen 3, LayerNorm / RMSNorm [8192, 1024] backward, 1 thread: see
                // `rows_backward`. Levels that pipeline keep two rows per block.
                if !out.pipelined && out.stream {
                    rows_backward::<T, 1>(&t, finish, (u0, u1), o, &mut out, true);
                } else {
                    rows_backward::<T, ROW_BLOCK>(&t, finish, (u0, u1), o, &mut out, false);
                }
            } else if short::applies(units) {
                let t = ShortTask { units, x, range: (u0, u1), out: &mut out };
                short::backward(t, (dy, xhat), gamma, finish, o);
            } else {
                groups_backward(&t, finish, (u0, u1), o, &mut out);
            }
            return;
        }
        for (ui, u) in (u0..u1).enumerate() {
            let l = ui * groups_per_unit..(ui + 1) * groups_per_unit;
            unit_dsums(&t, u, all, (&mut o.sg[l.clone()], &mut o.sgx[l.clone()]), o.dparams);
            // The unit's groups at once: one call, no per-group dispatch.
            let run = DxCoefMut {
                c: &mut o.c[l.clone()],
                m: &mut o.m[l.clone()],
                a: &mut o.a[l.clone()],
                b: &mut o.b[l.clone()],
            };
            (finish.many)(u * groups_per_unit, (&o.sg[l.clone()], &o.sgx[l.clone()]), run);
            let coef = (&o.c[..], &o.m[..], &o.a[..], &o.b[..]);
            unit_dx(&t, &mut out, coef, l.start, u, all);
        }
    }
}

/// Rows per block where rows share a γ along the line.
const ROW_BLOCK: usize = 2;

/// Whether γ runs along the line (unfolded, a value per element): its gradient sums are
/// staged per element.
#[inline(always)]
fn gamma_along<T>(gamma: Option<&[T]>, line: Dim) -> bool {
    gamma.is_some() && line.ps != 0
}

/// Rows per flush of the staged γ-gradient sums: each element-type partial sums at most this
/// many terms before it is added into f64.
const STAGE_ROWS: usize = 8;

/// The parameter gradients of a task's rows: a scalar γ per row accumulates straight into
/// f64; a γ along the row stages its per-element sums in the element type (`stage`: two
/// rows' worth) and flushes them into f64 every [`STAGE_ROWS`] rows, or when the next row
/// has other parameters.
struct RowGrads<'a, T> {
    gamma: Option<&'a [T]>,
    line: Dim,
    dg: &'a mut [f64],
    db: &'a mut [f64],
    stage: (&'a mut [T], &'a mut [T]),
    staged: Option<usize>,
    rows: usize,
}

impl<'a, T: Float> RowGrads<'a, T> {
    /// Takes the task's parameter sums (`o.dparams`: Σdy·x̂ then Σdy per parameter) and
    /// staging (`o.stage`: at least two lines when γ runs along the line) out of `o`.
    #[inline(always)]
    fn take<'o: 'a>(gamma: Option<&'a [T]>, line: Dim, o: &mut BackOut<'o, T>) -> Self {
        let dparams = std::mem::take(&mut o.dparams);
        let stage = std::mem::take(&mut o.stage);
        let np = dparams.len() / 2;
        let (dg, db) = dparams.split_at_mut(np);
        let n = if gamma_along(gamma, line) {
            line.size
        } else {
            0
        };
        let (sg, rest) = stage.split_at_mut(n);
        let sb = &mut rest[..n];
        sg.fill(T::zero());
        sb.fill(T::zero());
        RowGrads {
            gamma,
            line,
            dg,
            db,
            stage: (sg, sb),
            staged: None,
            rows: 0,
        }
    }

    /// Adds the staged sums into f64 and clears them.
    #[inline(always)]
    fn flush(&mut self) {
        if let Some(po) = self.staged.take() {
            let len = self.line.size;
            let (sg, sb) = (&mut *self.stage.0, &mut *self.stage.1);
            for (d, s) in self.dg[po..po + len].iter_mut().zip(sg.iter_mut()) {
                *d += s.to_acc();
                *s = T::zero();
            }
            for (d, s) in self.db[po..po + len].iter_mut().zip(sb.iter_mut()) {
                *d += s.to_acc();
                *s = T::zero();
            }
            self.rows = 0;
        }
    }

    /// The row kernels' parameter for `rows` rows at parameter offset `po`: γ along the
    /// line with its staging (flushed first if it holds other parameters or is full).
    #[inline(always)]
    fn param(&mut self, po: usize, rows: usize) -> Option<RowParam<'_, T>> {
        let g = self.gamma.filter(|_| gamma_along(self.gamma, self.line))?;
        if self.staged.is_some_and(|p| p != po) || self.rows + rows > STAGE_ROWS {
            self.flush();
        }
        self.staged = Some(po);
        self.rows += rows;
        let stage = (&mut *self.stage.0, &mut *self.stage.1);
        Some((&g[po..po + self.line.size], Some(stage)))
    }

    /// Folds a row's sums (Σw·dy, Σw·dy·x̂) into its group's `sg`, `sgx` as the line kernels
    /// do ([`RowFold`]): a scalar γ gets the sums of dy as its gradients and scales the
    /// group's.
    #[inline(always)]
    fn fold(&mut self, po: usize, sums: (f64, f64), sg: &mut f64, sgx: &mut f64) {
        let fold = match self.gamma {
            Some(g) if self.line.ps == 0 => {
                RowFold::Scalar(g[po].to_acc(), &mut self.dg[po], &mut self.db[po])
            }
            _ => RowFold::Plain,
        };
        fold.apply(sums, sg, sgx);
    }
}

/// The output side of `R` rows of the dx pass: their bases (line offset, parameter
/// offset), their output lines, whether those may be streamed, and whether a level
/// without the pipelined multi-row kernels runs its one-row pipelined kernel on them
/// ([`DxRows::pipeline`]).
struct OutRows<'o, T, const R: usize> {
    base: [(usize, usize); R],
    dx: [&'o mut [T]; R],
    stream: bool,
    pipeline: bool,
}

impl<'a, T: Float> BackIn<'a, T> {
    /// Rows `u..u + R` for the sums, and their parameter offsets.
    #[inline(always)]
    fn rows<const R: usize>(&self, u: usize) -> (Rows<'a, T, R>, [usize; R]) {
        let len = self.units.line.size;
        let (x, dy, xh) = (self.x, self.dy, self.xhat);
        let zero = T::zero();
        let mut rows = Rows {
            x: [&x[..0]; R],
            dy: [&dy[..0]; R],
            c: [(zero, zero, zero); R],
            ahead: false,
        };
        let mut po = [0usize; R];
        for (r, p) in po.iter_mut().enumerate() {
            let xo;
            (xo, *p) = self.units.base(u + r);
            rows.x[r] = &x[xo..xo + len];
            rows.dy[r] = &dy[xo..xo + len];
            rows.c[r] = (xh.0[u + r], xh.1[u + r], xh.2[u + r]);
        }
        (rows, po)
    }

    /// Rows `u..u + R` for dx (`o`: their bases and output lines), with their coefficients
    /// (c, m, a, b) (`k`: the rows' index in the task's coefficient arrays).
    #[inline(always)]
    fn dx_rows<'o, const R: usize>(
        &self,
        o: OutRows<'o, T, R>,
        coef: Coef4<'_, T>,
        k: usize,
    ) -> DxRows<'o, T, R>
    where
        'a: 'o,
    {
        let OutRows {
            base,
            dx,
            stream,
            pipeline,
        } = o;
        let (len, line) = (self.units.line.size, self.units.line);
        let mut g = None;
        let zero = T::zero();
        let mut c = [(zero, zero, zero, zero); R];
        for (r, cr) in c.iter_mut().enumerate() {
            let (c, gv) = gamma_line(self.gamma, line, base[r].1).row(coef.0[k + r]);
            g = gv;
            *cr = (c, coef.1[k + r], coef.2[k + r], coef.3[k + r]);
        }
        DxRows {
            x: base.map(|(xo, _)| &self.x[xo..xo + len]),
            dy: base.map(|(xo, _)| &self.dy[xo..xo + len]),
            dx,
            c,
            g,
            stream,
            // Rows of one line each: the two loops stay in cache unless asked
            // (`rows_backward`).
            pipeline,
        }
    }

    /// The sums of rows `u..u + R` (task indices `k..`) into `sg`, `sgx`.
    #[inline(always)]
    fn sums<const R: usize>(
        &self,
        u: usize,
        k: usize,
        grads: &mut RowGrads<'_, T>,
        o: &mut BackOut<'_, T>,
    ) {
        let (rows, po) = self.rows::<R>(u);
        let sums = T::dsums_rows(rows, grads.param(po[0], R));
        for r in 0..R {
            grads.fold(po[r], sums[r], &mut o.sg[k + r], &mut o.sgx[k + r]);
        }
    }

    /// dx of rows `u..u + R` (task indices `k..`; `rows`: their bases and output lines)
    /// with the sums of rows `u + R..u + 2R`; the task's rows end at `end`.
    #[inline(always)]
    fn dx_then_sums<const R: usize>(
        &self,
        (u, end): (usize, usize),
        k: usize,
        rows: OutRows<'_, T, R>,
        grads: &mut RowGrads<'_, T>,
        o: &mut BackOut<'_, T>,
    ) {
        let coef = (&o.c[..], &o.m[..], &o.a[..], &o.b[..]);
        let cur = self.dx_rows::<R>(rows, coef, k);
        let (mut next, po) = self.rows::<R>(u + R);
        let after = self.units.base(u + 2 * R - 1).0 + self.units.line.size;
        next.ahead = self.units.adjacent(u + 2 * R, R, end, after);
        let sums = T::dx_then_dsums(cur, next, grads.param(po[0], R));
        for r in 0..R {
            grads.fold(po[r], sums[r], &mut o.sg[k + R + r], &mut o.sgx[k + R + r]);
        }
    }
}

/// The fused backward of rows (one contiguous line per group) that share a γ along the line,
/// in blocks of `RB` rows ([`ROW_BLOCK`], or 1; a block's staged γ-gradient terms are
/// summed in registers before one update of the staging), software-pipelined: dx of a
/// block runs in the same loop as the sums of the next block (`RowReduce::dx_then_dsums`),
/// which are those of the plain kernel. `pipeline`: ask a level without the pipelined
/// multi-row kernels for its one-row pipelined kernel (`DxRows::pipeline`) on every block
/// (AMD Zen 3, AVX2, 1 thread, rows of 4 KiB streaming from memory, in-process alternating
/// rounds under load: LayerNorm [8192, 1024] backward −21 %, RMSNorm −11 %, vs two rows
/// per block in two loops). `o.sg`, `o.sgx` must be zero; `o.stage` holds two lines.
#[inline(always)]
fn rows_backward<T: Float, const RB: usize>(
    t: &BackIn<'_, T>,
    finish: &DxFinish<'_, T>,
    (u0, u1): (usize, usize),
    mut o: BackOut<'_, T>,
    out: &mut TaskOut<'_, T>,
    pipeline: bool,
) {
    if u0 >= u1 {
        return;
    }
    let (line, rb, stream) = (t.units.line, RB, out.stream);
    let mut grads = RowGrads::take(t.gamma, line, &mut o);
    let block = |b: usize| (b, (b + rb).min(u1));
    let (b0, b1) = block(u0);
    if b1 - b0 == RB {
        t.sums::<RB>(b0, 0, &mut grads, &mut o);
    } else {
        (0..b1 - b0).for_each(|r| t.sums::<1>(b0 + r, r, &mut grads, &mut o));
    }
    let mut b = u0;
    while b < u1 {
        let (b0, b1) = block(b);
        for u in b0..b1 {
            let k = u - u0;
            (o.c[k], o.m[k], o.a[k], o.b[k]) = (finish.one)(u, o.sg[k], o.sgx[k]);
        }
        let (n0, n1) = block(b1);
        let k = b0 - u0;
        match (b1 - b0, n1 - n0) {
            (w, v) if w == RB && v == RB => {
                let (base, dx) = out.rows::<RB>(b0);
                let rows = OutRows {
                    base,
                    dx,
                    stream,
                    pipeline,
                };
                t.dx_then_sums::<RB>((b0, u1), k, rows, &mut grads, &mut o)
            }
            // The last block, short or followed by a short one.
            (w, rest) => {
                for r in 0..w {
                    let coef = (&o.c[..], &o.m[..], &o.a[..], &o.b[..]);
                    let (base, dx) = out.rows::<1>(b0 + r);
                    let rows = OutRows {
                        base,
                        dx,
                        stream,
                        pipeline,
                    };
                    let cur = t.dx_rows::<1>(rows, coef, k + r);
                    let DxRows {
                        x,
                        dy,
                        dx: [dx],
                        c,
                        g,
                        ..
                    } = cur;
                    row_dx_portable(x[0], dy[0], dx, c[0], g);
                }
                for r in 0..rest {
                    t.sums::<1>(n0 + r, n0 + r - u0, &mut grads, &mut o);
                }
            }
        }
        b = b1;
    }
    grads.flush();
}

/// The fused backward of groups of several lines (one group per unit: NCHW batch norm, a
/// layer norm over T,D, …), software-pipelined line by line: dx of line j of unit u runs in
/// the same loop as the sums of line j of unit u + 1. The per-line sums add up in line order,
/// as in the plain path. `o.sg`, `o.sgx` must be zero; `o.stage` holds two lines when γ runs
/// along the line.
#[inline(always)]
fn groups_backward<T: Float>(
    t: &BackIn<'_, T>,
    finish: &DxFinish<'_, T>,
    (u0, u1): (usize, usize),
    mut o: BackOut<'_, T>,
    out: &mut TaskOut<'_, T>,
) {
    if u0 >= u1 {
        return;
    }
    let &BackIn {
        units,
        x,
        dy,
        xhat,
        gamma,
    } = t;
    let (len, line, all) = (units.line.size, units.line, (0, units.lines));
    let stream = out.stream;
    // Units of several lines: where the CPU asks for it, dx of a line in one loop with the
    // next unit's line sums even at a level that does not pipeline (`DxRows::pipeline`).
    let pipeline = units.lines > 1 && crate::cpu::tuning().pipeline_group_backward;
    let mut grads = RowGrads::take(gamma, line, &mut o);
    let xh = |u: usize| (xhat.0[u], xhat.1[u], xhat.2[u]);
    for (xo, po) in units.lines_of(u0, all) {
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        let sums = T::row_dsums(xs, ds, xh(u0), grads.param(po, 1));
        grads.fold(po, sums, &mut o.sg[0], &mut o.sgx[0]);
    }
    for (ui, u) in (u0..u1).enumerate() {
        let (c, m, a, b) = (finish.one)(u, o.sg[ui], o.sgx[ui]);
        (o.c[ui], o.m[ui], o.a[ui], o.b[ui]) = (c, m, a, b);
        // The next unit's lines (none after the last unit). A plain `LineIter`: an iterator
        // adapter here copied its state through memory once per unit, and that load waited
        // for the store buffer full of this pass's output to drain.
        let mut next = units.lines_of((u + 1).min(u1 - 1), if u + 1 < u1 { all } else { (0, 0) });
        for (xo, po, dx) in out.lines(u, all) {
            let dx = &mut dx[..len];
            let (c, g) = gamma_line(gamma, line, po).row(c);
            let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
            let Some((nxo, npo)) = next.next() else {
                row_dx_portable(xs, ds, dx, (c, m, a, b), g);
                continue;
            };
            let cur = DxRows {
                x: [xs],
                dy: [ds],
                dx: [dx],
                c: [(c, m, a, b)],
                g,
                stream,
                pipeline,
            };
            let rows = Rows {
                x: [&x[nxo..nxo + len]],
                dy: [&dy[nxo..nxo + len]],
                c: [xh(u + 1)],
                // One line per unit: the call after this one reduces the line of unit u + 2.
                ahead: units.adjacent(u + 2, 1, u1, nxo + len),
            };
            let [sums] = T::dx_then_dsums(cur, rows, grads.param(npo, 1));
            grads.fold(npo, sums, &mut o.sg[ui + 1], &mut o.sgx[ui + 1]);
        }
    }
    grads.flush();
}

/// Backward sums of every group (and per unfolded parameter) into `sg`, `sgx`, `dparams`:
/// fixed chunks of lines in parallel, merged in chunk order. The first phase of the split
/// path, and of synchronized statistics. `acc` is scratch.
///
/// (The outputs stay separate arguments: references inside a tuple passed by pointer lose
/// their `noalias`, and the merge loop below was compiled with more instructions.)
pub(crate) fn dsums_all<T: Float>(
    t: BackIn<'_, T>,
    sg: &mut [f64],
    sgx: &mut [f64],
    dparams: &mut [f64],
    acc: &mut Vec<f64>,
) {
    let units = t.units;
    let groups_per_unit = units.groups_per_unit;
    let np2 = dparams.len();
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let stride = 2 * groups_per_unit + np2;
    sg.fill(0.0);
    sgx.fill(0.0);
    dparams.fill(0.0);
    if ntasks == 0 || stride == 0 {
        // A zero-size axis: every sum is over no values.
        return;
    }
    acc.clear();
    acc.resize(stride * ntasks, 0.0);
    let per = units.per_job();
    if ntasks <= per {
        dsums_task(t, 0, stride, acc);
    } else {
        acc.par_chunks_mut(stride * per)
            .enumerate()
            .for_each(|(j, parts)| dsums_task(t, j * per, stride, parts));
    }
    for (t, part) in acc.chunks(stride).enumerate() {
        let g0 = (t / cpu) * groups_per_unit;
        for i in 0..groups_per_unit {
            sg[g0 + i] += part[i];
            sgx[g0 + i] += part[groups_per_unit + i];
        }
        for (d, &v) in dparams.iter_mut().zip(&part[2 * groups_per_unit..]) {
            *d += v;
        }
    }
}

/// dx with known per-group coefficients, over fixed chunks of lines in parallel.
pub(crate) fn dx_all<T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    coef: Coef4<'_, T>,
    gamma: Option<&[T]>,
    dx: &mut [T],
) {
    let mut shared = SharedOut::new(dx, units, 3);
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let per = units.per_job();
    if ntasks <= per {
        let out = shared.whole(Split::Cells);
        dx_task(units, (x, dy), out, coef, gamma, (0, ntasks));
        return;
    }
    shared.tasks(Split::Cells, per).for_each(|claim| {
        let range = claim.range();
        dx_task(units, (x, dy), claim.open(), coef, gamma, range);
    });
}

/// The backward pass: sums per group (and per unfolded parameter), `finish` → per-group dx
/// coefficients, then dx. `(acc, stage)` is scratch.
pub(crate) fn backward<'a, T: Float>(
    t: BackIn<'_, T>,
    finish: &DxFinish<'_, T>,
    mut o: BackOut<'a, T>,
    (acc, stage): (&mut Vec<f64>, &'a mut Vec<T>),
    dx: &mut [T],
) {
    let BackIn {
        units,
        x,
        dy,
        gamma,
        ..
    } = t;
    let groups_per_unit = units.groups_per_unit;
    let groups = units.count * groups_per_unit;
    let np2 = o.dparams.len();
    // Groups with γ along the line stage its gradient sums: two lines per task.
    let staged = gamma_along(gamma, units.line) && groups_per_unit == 1;
    let sstride = if staged { 2 * units.line.size } else { 0 };
    if units.split() {
        dsums_all(t, o.sg, o.sgx, o.dparams, acc);
        for g in 0..groups {
            let (c, m, a, b) = (finish.one)(g, o.sg[g], o.sgx[g]);
            (o.c[g], o.m[g], o.a[g], o.b[g]) = (c, m, a, b);
        }
        dx_all(
            units,
            x,
            dy,
            (&o.c[..], &o.m[..], &o.a[..], &o.b[..]),
            gamma,
            dx,
        );
        return;
    }
    let mut shared = SharedOut::new(dx, units, 3);
    let upt = units.per_task();
    let groups_per_task = upt * groups_per_unit;
    let ntasks = units.count.div_ceil(upt);
    // Sized only: each task clears the part it uses (`RowGrads::take`).
    stage.resize(ntasks * sstride.max(1), T::zero());
    if units.count <= upt {
        // One task: run it here, without handing it to the thread pool.
        o.dparams.fill(0.0);
        o.stage = &mut stage[..];
        fused_backward_task(t, finish, (0, units.count), o, shared.whole(Split::Units));
        return;
    }
    let dstride = np2.max(1);
    acc.clear();
    acc.resize(dstride * ntasks, 0.0);
    o.sg.par_chunks_mut(groups_per_task)
        .zip(o.sgx.par_chunks_mut(groups_per_task))
        .zip(o.c.par_chunks_mut(groups_per_task))
        .zip(o.m.par_chunks_mut(groups_per_task))
        .zip(o.a.par_chunks_mut(groups_per_task))
        .zip(o.b.par_chunks_mut(groups_per_task))
        .zip(acc.par_chunks_mut(dstride))
        .zip(stage.par_chunks_mut(sstride.max(1)))
        .zip(shared.tasks(Split::Units, upt))
        .for_each(|((((((((sg, sgx), c), m), a), b), dp), stage), claim)| {
            let (u0, u1) = claim.range();
            let dparams = &mut dp[..np2];
            let part = BackOut {
                sg,
                sgx,
                dparams,
                c,
                m,
                a,
                b,
                stage,
            };
            fused_backward_task(t, finish, (u0, u1), part, claim.open());
        });
    o.dparams.fill(0.0);
    for part in acc.chunks(dstride) {
        for (d, &v) in o.dparams.iter_mut().zip(&part[..np2]) {
            *d += v;
        }
    }
}
