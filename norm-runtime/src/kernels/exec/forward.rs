//! The forward passes: shifted sums per group, the statistics (`Finish`), the elementwise
//! normalize/affine pass, fused per task or split into chunks.

mod rows;

use rayon::prelude::*;

use super::out::{SharedOut, Split, TaskOut};
use super::short::{self, ShortTask};
use super::units::{Acc, CoefMut, ColumnSums, FwdIn, Params, ShiftedSums, Units};
use super::Coef3;
use crate::kernels::elem::RowReduce;
use crate::kernels::isa::multiversion;
use crate::kernels::lines::{self, ParamLine};
use crate::Float;

/// The elementwise pass of unit `u` over `range` of its lines. A unit of several groups
/// without γ whose lines are contiguous runs as one `col_affine` run; where the level has
/// no kernel for the width, with `BLOCKS` in column blocks ([`col_blocks`]), else line by
/// line (`BLOCKS` only where the caller needs it: in the other passes' instantiation the
/// blocked path slowed the compiled per-line loop).
#[inline(always)]
fn elementwise<T: Float, const BLOCKS: bool>(
    e: Affine<'_, T>,
    out: &mut TaskOut<'_, T>,
    u: usize,
    g0: usize,
    range: (usize, usize),
) {
    let Affine {
        units,
        x,
        coef,
        params,
    } = e;
    let len = units.line.size;
    let w = units.groups_per_unit;
    let (m, a, b) = (
        &coef.0[g0..g0 + w],
        &coef.1[g0..g0 + w],
        &coef.2[g0..g0 + w],
    );
    let stream = out.stream;
    // `if`, not `bool::then` with a closure: the closure stays out of line (measured by
    // helper kspeed).
    let run = if w > 1 && params.gamma.is_none() {
        out.run(u, range)
    } else {
        None
    };
    if let Some((start, lines, o)) = run {
        // Columns: the line is the unit's `w` groups. (The length as `lines · w` lets the
        // compiler drop the kernel's length checks: 20 % fewer instructions at AVX2.)
        let o = &mut o[..lines * w];
        if T::col_affine(x, o, start, (m, a, b), stream) {
            return;
        }
        if BLOCKS {
            let n = o.len();
            col_blocks(&x[start..start + n], o, (m, a, b));
            return;
        }
    }
    for (xo, po, y) in out.lines(u, range) {
        // The line's length as `len`: the kernel's length checks fold away.
        let y = &mut y[..len];
        let xs = &x[xo..xo + len];
        let p = params.line(units.line, po);
        if w == 1 {
            lines::affine::<T, false>(xs, y, m, a, b, p);
        } else {
            lines::affine::<T, true>(xs, y, m, a, b, p);
        }
    }
}

/// The inputs of an elementwise pass y = ((x − m)·a + b)·γ + β with known per-group
/// coefficients `coef` = (m, a, b).
#[derive(Clone, Copy)]
struct Affine<'a, T> {
    units: &'a Units,
    x: &'a [T],
    coef: Coef3<'a, T>,
    params: Params<'a, T>,
}

/// Columns per block of [`col_blocks`]: 64 f32 (four AVX-512 vectors) of each coefficient
/// stay in registers across the lines.
const BLOCK_COLS: usize = 64;

/// Bytes of the lines [`col_blocks`] runs its column blocks over before moving on (they stay
/// in the L1 cache between blocks).
const BLOCK_BYTES: usize = 16 << 10;

/// `y = (x − m)·a + b` over contiguous lines of `w = m.len()` columns (the column path's
/// elementwise pass), in blocks of [`BLOCK_COLS`] columns whose coefficients are loaded once
/// per block rather than once per line: the same operations per element as
/// `lines::affine`.
#[inline(always)]
fn col_blocks<T: Float>(x: &[T], y: &mut [T], (m, a, b): Coef3<'_, T>) {
    let w = m.len();
    if w == 0 {
        return;
    }
    let per_chunk = (BLOCK_BYTES / std::mem::size_of_val(m).max(1)).max(1) * w;
    for (yc, xc) in y.chunks_mut(per_chunk).zip(x.chunks(per_chunk)) {
        let mut c0 = 0;
        while c0 + BLOCK_COLS <= w {
            let c = c0..c0 + BLOCK_COLS;
            col_block::<T, BLOCK_COLS>(xc, yc, w, c0, (&m[c.clone()], &a[c.clone()], &b[c]));
            c0 += BLOCK_COLS;
        }
        if c0 < w {
            for (yl, xl) in yc.chunks_exact_mut(w).zip(xc.chunks_exact(w)) {
                let it = yl[c0..].iter_mut().zip(&xl[c0..]);
                for (((o, &v), &m), (&a, &b)) in it.zip(&m[c0..]).zip(a[c0..].iter().zip(&b[c0..]))
                {
                    *o = (v - m) * a + b;
                }
            }
        }
    }
}

/// Columns `c0..c0 + W` of every line of `w` columns in `x`/`y`, the block's coefficients
/// copied to locals (registers) first.
#[inline(always)]
fn col_block<T: Float, const W: usize>(
    x: &[T],
    y: &mut [T],
    w: usize,
    c0: usize,
    (m, a, b): Coef3<'_, T>,
) {
    let (Ok(m), Ok(a), Ok(b)) = (
        <[T; W]>::try_from(m),
        <[T; W]>::try_from(a),
        <[T; W]>::try_from(b),
    ) else {
        return;
    };
    for (yl, xl) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
        let (Some(yb), Some(xb)) = (
            yl.get_mut(c0..c0 + W)
                .and_then(|s| <&mut [T; W]>::try_from(s).ok()),
            xl.get(c0..c0 + W).and_then(|s| <&[T; W]>::try_from(s).ok()),
        ) else {
            return;
        };
        for j in 0..W {
            yb[j] = (xb[j] - m[j]) * a[j] + b[j];
        }
    }
}

/// The first line's values (or zero) as the shifts of a unit's groups.
#[inline(always)]
fn shifts<T: Float>(units: &Units, x: &[T], u: usize, center: bool, out: &mut [f64]) {
    let (bx, _) = units.base(u);
    for (i, h) in out.iter_mut().enumerate() {
        *h = if center { x[bx + i].to_acc() } else { 0.0 };
    }
}

#[inline(always)]
fn unit_sums<T: Float>(
    units: &Units,
    x: &[T],
    u: usize,
    range: (usize, usize),
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let len = units.line.size;
    if units.groups_per_unit == 1 {
        let (mut s, mut q) = (0.0, 0.0);
        for (xo, _) in units.lines_of(u, range) {
            let (a, b) = lines::row_sums(&x[xo..xo + len], shift[0]);
            s += a;
            q += b;
        }
        sum[0] += s;
        sq[0] += q;
    } else {
        T::col_sums(
            x,
            units.lines_of(u, range).map(|(xo, _)| xo),
            shift,
            sum,
            sq,
        );
    }
}

multiversion! {
    /// Elementwise pass with known coefficients over tasks `t0..t1` (task t: chunk
    /// `t % cpu` of unit `t / cpu`).
    fn normalize_task<T: Float>(
        units: &Units,
        x: &[T],
        out: TaskOut<'_, T>,
        coef: Coef3<'_, T>,
        params: Params<'_, T>,
        t0: usize,
        t1: usize,
    ) {
        let mut out = out;
        let (_, cpu) = units.chunking();
        let e = Affine { units, x, coef, params };
        for t in t0..t1 {
            let (u, c) = (t / cpu, t % cpu);
            elementwise::<T, false>(e, &mut out, u, u * units.groups_per_unit, units.chunk(c));
        }
    }
}

multiversion! {
    /// Shifted sums of chunk `c` of unit `u`.
    fn sums_task<T: Float>(
        units: &Units,
        x: &[T],
        u: usize,
        c: usize,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        unit_sums(units, x, u, units.chunk(c), shift, sum, sq);
    }
}

multiversion! {
    /// Fused forward of units `u0..u1` (`range`): sums, `finish`, elementwise. The slices are
    /// this task's share of the per-group arrays.
    fn fused_forward_task<T: Float>(
        t: FwdIn<'_, T>,
        range: (usize, usize),
        c: CoefMut<'_, T>,
        acc: &mut [f64],
        out: TaskOut<'_, T>,
    ) {
        let mut out = out;
        let FwdIn { units, x, center, params, finish } = t;
        let (u0, u1) = range;
        let groups_per_unit = units.groups_per_unit;
        if short::applies(units) {
            let t = ShortTask { units, x, range: (u0, u1), out: &mut out };
            short::forward(t, center, params, finish, c);
            return;
        }
        if groups_per_unit == 1 {
            // Short contiguous rows: a tile of rows per step (`rows`).
            if let Some(tile) = rows::tile(units, params) {
                rows::forward(&t, &mut out, (u0, u1), tile, c, acc);
                return;
            }
            groups_forward(&t, (u0, u1), c, &mut out);
            return;
        }
        let n = c.m.len();
        let (shift, rest) = acc.split_at_mut(n);
        let (sum, sq) = rest.split_at_mut(n);
        let all = (0, units.lines);
        let mut c = c;
        for (ui, u) in (u0..u1).enumerate() {
            let l = ui * groups_per_unit..(ui + 1) * groups_per_unit;
            shifts(units, x, u, center, &mut shift[l.clone()]);
            sum[l.clone()].fill(0.0);
            sq[l.clone()].fill(0.0);
            unit_sums(units, x, u, all, &shift[l.clone()], &mut sum[l.clone()], &mut sq[l.clone()]);
            // The unit's groups at once: one call, a loop the compiler can vectorize.
            let sums = ColumnSums { shift: &shift[l.clone()], sum: &sum[l.clone()], sq: &sq[l.clone()] };
            (finish.many)(u * groups_per_unit, sums, c.part(l.clone()));
            // Contiguous lines of columns: `col_affine`, else column blocks.
            let e = Affine { units, x, coef: (&c.m[..], &c.a[..], &c.b[..]), params };
            elementwise::<T, true>(e, &mut out, u, l.start, all);
        }
    }
}

/// The fused forward of units that are one group each (rows, NCHW batch norm, …),
/// software-pipelined line by line: the affine pass of line j of unit u runs in the same loop
/// as the sums of line j of unit u + 1, so the loads of one overlap the stores of the other
/// (where the level has the pipelined kernel and the working set allows, `TaskOut::pipeline`;
/// else the two passes in turn, line by line). The per-line sums add up in line order:
/// bit-identical to the two separate passes.
#[inline(always)]
fn groups_forward<T: Float>(
    t: &FwdIn<'_, T>,
    (u0, u1): (usize, usize),
    c: CoefMut<'_, T>,
    out: &mut TaskOut<'_, T>,
) {
    if u0 >= u1 {
        return;
    }
    let &FwdIn {
        units,
        x,
        center,
        params,
        finish,
    } = t;
    let (stream, pipeline) = (out.stream, out.pipeline);
    let (len, all) = (units.line.size, (0, units.lines));
    let shift_of = |u: usize| {
        if center {
            x[units.base(u).0].to_acc()
        } else {
            0.0
        }
    };
    let mut raw = ShiftedSums {
        shift: shift_of(u0),
        ..ShiftedSums::default()
    };
    for (xo, _) in units.lines_of(u0, all) {
        let (s, q) = lines::row_sums(&x[xo..xo + len], raw.shift);
        raw.sum += s;
        raw.sq += q;
    }
    for (ui, u) in (u0..u1).enumerate() {
        let (m, a, b) = (finish.one)(u, raw, &mut c.stat[ui]);
        (c.m[ui], c.a[ui], c.b[ui]) = (m, a, b);
        raw = ShiftedSums {
            shift: if u + 1 < u1 { shift_of(u + 1) } else { 0.0 },
            ..ShiftedSums::default()
        };
        // The next unit's lines (none after the last unit). A plain `LineIter`: an iterator
        // adapter here copied its state through memory once per unit, and that load waited
        // for the store buffer full of this pass's output to drain.
        let mut next = units.lines_of((u + 1).min(u1 - 1), if u + 1 < u1 { all } else { (0, 0) });
        if !pipeline {
            // The two passes one after the other, in a loop of their own: without the
            // pipelined call in the loop, nothing needs the `black_box` below (its spills
            // cost 10–15 instructions per line at AVX2, which has no pipelined kernel).
            for (xo, po, y) in out.lines(u, all) {
                let y = &mut y[..len];
                let p = params.line(units.line, po);
                lines::affine::<T, false>(&x[xo..xo + len], y, &[m], &[a], &[b], p);
                if let Some((nxo, _)) = next.next() {
                    let (s, q) = lines::row_sums(&x[nxo..nxo + len], raw.shift);
                    raw.sum += s;
                    raw.sq += q;
                }
            }
            continue;
        }
        for (xo, po, y) in out.lines(u, all) {
            let y = &mut y[..len];
            let xs = &x[xo..xo + len];
            let p = params.line(units.line, po);
            // The fallbacks take the coefficients through `black_box`, an optimization
            // barrier: otherwise the compiler hoists their broadcasts above the pipelined
            // kernel's call (in this task's AVX-512 copy, where the fallback of the `None`
            // arm is dead code) and spills and reloads four vectors around every call. With
            // rows of 1024 values that cost 8–14 % of a one-thread LayerNorm forward.
            let Some((nxo, _)) = next.next() else {
                let (m, a, b) = std::hint::black_box((m, a, b));
                lines::affine::<T, false>(xs, y, &[m], &[a], &[b], p);
                continue;
            };
            let nx = &x[nxo..nxo + len];
            let (coef, vector) = match p {
                ParamLine::None => ((m, a, b), None),
                ParamLine::Scalar(g, bt) => ((m, a * g, b * g + bt), None),
                ParamLine::Vector(g, bt) => ((m, a, b), Some((g, bt))),
            };
            // One line per unit: the call after this one reduces the line of unit u + 2.
            let next_row = (nx, units.adjacent(u + 2, 1, u1, nxo + len));
            let shift = (raw.shift, center);
            let (s, q) = match T::affine_then_sums(xs, y, coef, vector, next_row, shift, stream) {
                Some(sums) => sums,
                None => {
                    let (m, a, b, shift) = std::hint::black_box((m, a, b, raw.shift));
                    lines::affine::<T, false>(xs, y, &[m], &[a], &[b], p);
                    lines::row_sums(nx, shift)
                }
            };
            raw.sum += s;
            raw.sq += q;
        }
    }
}

multiversion! {
    /// The elementwise pass in memory order over the task's items of the (line, unit) grid
    /// (item i: line `i / count` of unit `i % count`, `Split::Outer`), for one-group units whose reduced
    /// dims lie outside their kept dims (see `Units::reduced_outer`).
    fn normalize_outer_task<T: Float>(
        units: &Units,
        x: &[T],
        out: TaskOut<'_, T>,
        coef: Coef3<'_, T>,
        params: Params<'_, T>,
    ) {
        let mut out = out;
        let len = units.line.size;
        for (u, xo, po, y) in out.outer() {
            let y = &mut y[..len];
            let p = params.line(units.line, po);
            let (m, a, b) = (&coef.0[u..u + 1], &coef.1[u..u + 1], &coef.2[u..u + 1]);
            lines::affine::<T, false>(&x[xo..xo + len], y, m, a, b, p);
        }
    }
}

/// The elementwise pass with known coefficients (eval with running statistics, and the
/// second phase of the split path).
pub(crate) fn normalize<T: Float>(
    units: &Units,
    x: &[T],
    coef: Coef3<'_, T>,
    params: Params<'_, T>,
    out: &mut [T],
) {
    let mut shared = SharedOut::new(out, units, 2);
    if units.groups_per_unit == 1 && units.reduced_outer {
        let items = units.count * units.lines;
        let per = (super::TASK_ELEMS / units.line.size.max(1)).max(1);
        if items <= per {
            normalize_outer_task(units, x, shared.whole(Split::Outer), coef, params);
        } else {
            shared.tasks(Split::Outer, per).for_each(|claim| {
                normalize_outer_task(units, x, claim.open(), coef, params);
            });
        }
        return;
    }
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let per = units.per_job();
    if ntasks <= per {
        // One job: run it here, without handing it to the thread pool.
        normalize_task(
            units,
            x,
            shared.whole(Split::Cells),
            coef,
            params,
            0,
            ntasks,
        );
        return;
    }
    shared.tasks(Split::Cells, per).for_each(|claim| {
        let (t0, t1) = claim.range();
        normalize_task(units, x, claim.open(), coef, params, t0, t1);
    });
}

/// Raw shifted sums of every group into `raws`: fixed chunks of lines in parallel, merged in
/// chunk order. The first phase of the split path, and of synchronized statistics.
pub(crate) fn sums_all<T: Float>(
    units: &Units,
    x: &[T],
    center: bool,
    raws: &mut [ShiftedSums],
    acc: &mut Vec<f64>,
) {
    let groups_per_unit = units.groups_per_unit;
    let groups = units.count * groups_per_unit;
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    acc.clear();
    acc.resize(groups + 2 * groups_per_unit * ntasks, 0.0);
    let (shift, parts) = acc.split_at_mut(groups);
    if groups == 0 {
        // A zero-size axis: no unit or no group has values to sum.
        raws.fill(ShiftedSums::default());
        return;
    }
    for u in 0..units.count {
        shifts(
            units,
            x,
            u,
            center,
            &mut shift[u * groups_per_unit..(u + 1) * groups_per_unit],
        );
    }
    let shift = &*shift;
    let task = |(t, part): (usize, &mut [f64])| {
        let u = t / cpu;
        let (sum, sq) = part.split_at_mut(groups_per_unit);
        sums_task(
            units,
            x,
            u,
            t % cpu,
            &shift[u * groups_per_unit..(u + 1) * groups_per_unit],
            sum,
            sq,
        );
    };
    if ntasks == 1 {
        parts
            .chunks_mut(2 * groups_per_unit)
            .enumerate()
            .for_each(task);
    } else {
        parts
            .par_chunks_mut(2 * groups_per_unit)
            .enumerate()
            .for_each(task);
    }
    // Each unit's chunks added onto its first chunk's part, in chunk order, a whole part
    // at a time (contiguous loops; a walk across the parts per group strode them, 2 MiB
    // of them for BatchNorm1d [4096, 1024]). The same additions per group as adding the
    // parts in chunk order onto zero (a part, summed from +0, is never −0).
    let stride = 2 * groups_per_unit;
    for (u, unit) in parts.chunks_mut(cpu * stride).enumerate() {
        let (first, rest) = unit.split_at_mut(stride);
        for part in rest.chunks_exact(stride) {
            add_into(first, part);
        }
        let (sum, sq) = first.split_at(groups_per_unit);
        let g = u * groups_per_unit..(u + 1) * groups_per_unit;
        let it = raws[g.clone()]
            .iter_mut()
            .zip(&shift[g])
            .zip(sum.iter().zip(sq));
        for ((raw, &shift), (&sum, &sq)) in it {
            *raw = ShiftedSums { shift, sum, sq };
        }
    }
}

/// `acc[i] += part[i]`.
fn add_into(acc: &mut [f64], part: &[f64]) {
    for (a, &p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}

/// The batch-statistics forward pass: per group, raw shifted sums → `finish(group, raw)`
/// gives the statistics and coefficients → y = ((x − m)·a + b)·γ + β. `acc` is scratch.
pub(crate) fn forward<T: Float>(
    t: FwdIn<'_, T>,
    coef: CoefMut<'_, T>,
    acc: &mut Acc,
    out: &mut [T],
) {
    let FwdIn {
        units,
        x,
        center,
        params,
        finish,
    } = t;
    let groups_per_unit = units.groups_per_unit;
    let groups = units.count * groups_per_unit;
    if units.split() {
        let mut raws = std::mem::take(&mut acc.raws);
        raws.clear();
        raws.resize(groups, ShiftedSums::default());
        sums_all(units, x, center, &mut raws, &mut acc.f);
        for (g, &raw) in raws.iter().enumerate() {
            (coef.m[g], coef.a[g], coef.b[g]) = (finish.one)(g, raw, &mut coef.stat[g]);
        }
        acc.raws = raws;
        normalize(units, x, (coef.m, coef.a, coef.b), params, out);
        return;
    }
    let acc = &mut acc.f;
    let upt = units.per_task();
    let groups_per_task = upt * groups_per_unit;
    // Scratch the tasks write before they read (shifts, sums zeroed per unit).
    acc.resize(3 * groups, 0.0);
    let mut shared = SharedOut::new(out, units, 2);
    if units.count <= upt {
        // One task: run it here, without handing it to the thread pool.
        fused_forward_task(t, (0, units.count), coef, acc, shared.whole(Split::Units));
        return;
    }
    coef.m
        .par_chunks_mut(groups_per_task)
        .zip(coef.a.par_chunks_mut(groups_per_task))
        .zip(coef.b.par_chunks_mut(groups_per_task))
        .zip(coef.stat.par_chunks_mut(groups_per_task))
        .zip(acc.par_chunks_mut(3 * groups_per_task))
        .zip(shared.tasks(Split::Units, upt))
        .for_each(|(((((m, a), b), stat), acc), claim)| {
            let (u0, u1) = claim.range();
            let c = CoefMut { stat, m, a, b };
            let out = claim.open();
            fused_forward_task(t, (u0, u1), c, acc, out);
        });
}

multiversion! {
    /// Raw sums of unit `u` into `raws`, with `acc` as its 3·groups_per_unit scratch.
    fn raw_sums_task<T: Float>(
        units: &Units,
        x: &[T],
        center: bool,
        u: usize,
        raws: &mut [ShiftedSums],
        acc: &mut [f64],
    ) {
        let groups_per_unit = units.groups_per_unit;
        let (shift, rest) = acc.split_at_mut(groups_per_unit);
        let (sum, sq) = rest.split_at_mut(groups_per_unit);
        shifts(units, x, u, center, shift);
        unit_sums(units, x, u, (0, units.lines), shift, sum, sq);
        for (i, r) in raws.iter_mut().enumerate() {
            *r = ShiftedSums { shift: shift[i], sum: sum[i], sq: sq[i] };
        }
    }
}

multiversion! {
    /// Raw shifted sums of rows `u0..u0 + raws.len()` (units of one line each).
    fn row_raws_task<T: Float>(units: &Units, x: &[T], center: bool, u0: usize, raws: &mut [ShiftedSums]) {
        let len = units.line.size;
        for (i, r) in raws.iter_mut().enumerate() {
            let (xo, _) = units.base(u0 + i);
            let row = &x[xo..xo + len];
            let shift = if center { row[0].to_acc() } else { 0.0 };
            let (sum, sq) = lines::row_sums(row, shift);
            *r = ShiftedSums { shift, sum, sq };
        }
    }
}

/// Raw shifted sums of units of one line each (shift: the line's first value), in parallel
/// over fixed runs of rows; no allocation.
pub(crate) fn row_raws<T: Float>(units: &Units, x: &[T], center: bool, out: &mut [ShiftedSums]) {
    debug_assert!(
        units.lines == 1 && units.groups_per_unit == 1,
        "one line per unit"
    );
    let upt = units.per_task();
    if units.count <= upt {
        row_raws_task(units, x, center, 0, out);
        return;
    }
    out.par_chunks_mut(upt)
        .enumerate()
        .for_each(|(t, raws)| row_raws_task(units, x, center, t * upt, raws));
}

/// Raw shifted sums of every group (for `stats`), in the same order as the forward pass.
///
/// An input with a zero-size axis has no units (or no groups per unit): every group keeps
/// its default (zero) sums.
pub(crate) fn raw_sums<T: Float>(units: &Units, x: &[T], center: bool, out: &mut [ShiftedSums]) {
    let groups_per_unit = units.groups_per_unit;
    if units.count == 0 || groups_per_unit == 0 {
        out.fill(ShiftedSums::default());
        return;
    }
    let mut acc = vec![0.0f64; 3 * groups_per_unit * units.count];
    if units.count <= units.per_task() {
        // Small inputs: on the calling thread, without handing tasks to the pool.
        out.chunks_mut(groups_per_unit)
            .zip(acc.chunks_mut(3 * groups_per_unit))
            .enumerate()
            .for_each(|(u, (raws, acc))| raw_sums_task(units, x, center, u, raws, acc));
        return;
    }
    out.par_chunks_mut(groups_per_unit)
        .zip(acc.par_chunks_mut(3 * groups_per_unit))
        .enumerate()
        .for_each(|(u, (raws, acc))| raw_sums_task(units, x, center, u, raws, acc));
}
