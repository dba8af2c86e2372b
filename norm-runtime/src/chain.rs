//! Fused chains: every stage of a chain (Batch-Channel Normalization: batch norm, then group
//! norm) in two passes over the input, instead of two passes per stage plus a saved
//! intermediate.
//!
//! The idea is a common refinement of the stages' statistics groups. Take the longest
//! trailing run of `L` elements (the *cell*, e.g. the `H·W` plane of one sample and channel)
//! over which no stage's statistics group or parameter changes. Within a cell every stage
//! is an affine map of the chain's input: stage `s` sees `z_s = λ·x + ν` with per-cell
//! `λ`, `ν`. So
//!
//! * **forward**: one pass takes each cell's mean and M2 (exact shifted f64 sums); the
//!   statistics of every stage follow from those in f64 — a cell of `z_s` has mean
//!   `λ·mean + ν` and M2 `λ²·M2`, merged per group with Chan's formula in cell order — and a
//!   second pass writes `y = λ_out·x + ν_out`;
//! * **backward**: one pass takes each cell's `Σdy` and `Σdy·(x − m)`; the upstream gradient
//!   of every stage stays affine in `(dy, x)` per cell, so each stage's group sums and
//!   parameter gradients follow in f64, down to `dx = e·dy + f·(x − m) + h`, written by a
//!   second pass.
//!
//! The arithmetic is that of the stage-by-stage path (the same per-group statistics and dx
//! terms, [`stage::dx_terms`]), except that the intermediate is never rounded to the element
//! type; results agree to rounding. The fused path takes chains whose stages normalize
//! with batch statistics or fixed running statistics and carry axis parameters (or none);
//! synchronized calls and external affine run stage by stage.

use norm_spec::Affine;

use crate::collective::merge;
use crate::kernels::coef;
use crate::kernels::exec::{self, Acc, Params, Raw, Stat, Units};
use crate::plan::Plan;
use crate::stage::{self, resize, LayerInfo, StageState};
use crate::types::{Mode, Saved, StageGrads};
use crate::Float;

/// Cells shorter than this run stage by stage: per-cell bookkeeping would outweigh the pass
/// it saves.
const MIN_CELL: usize = 64;

/// Per-call scratch of the fused path (reused across calls: no allocation once grown).
#[derive(Debug, Default)]
pub(crate) struct ChainScratch<T> {
    raws: Vec<Raw>,
    /// Per stage and cell: statistics group, parameter offset.
    group: Vec<usize>,
    param: Vec<usize>,
    gparam: Vec<usize>,
    /// Per stage and cell: z_s = λ·x + ν (stage inputs; index `s · cells + k`).
    lam: Vec<f64>,
    nu: Vec<f64>,
    /// Per group: (count, mean, M2) or the backward sums (Σg, Σg·x̂).
    acc: Vec<(f64, f64, f64)>,
    /// Per cell: the backward sums Σdy, Σdy·(x − m), and the upstream gradient's terms.
    s1: Vec<f64>,
    s2: Vec<f64>,
    e: Vec<f64>,
    f: Vec<f64>,
    h: Vec<f64>,
    /// Per cell, for the stage at hand in the backward pass: x̂ = p·u + q, and γ.
    pqg: Vec<(f64, f64, f64)>,
    /// Per cell: the elementwise coefficients.
    c: Vec<T>,
    m: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
    dparams: Vec<f64>,
    run: Vec<f64>,
    exec: Acc,
}

/// The cell length of a chain on `shape`, if it takes the fused path: the longest trailing
/// run (a product of trailing dims, shorter than the input) over which, in every stage's
/// plan, neither the statistics group nor the parameters move.
pub(crate) fn cell_len(info: &LayerInfo<'_>, shape: &[usize]) -> Option<usize> {
    let spec = info.spec;
    if spec.stages.len() < 2 || spec.stages.iter().any(|s| s.affine == Affine::External) {
        return None;
    }
    let numel: usize = shape.iter().product();
    if numel == 0 {
        return None;
    }
    // Candidate k: the product of the last k + 1 dims; a bit per candidate every stage takes.
    let mut ok = u32::MAX;
    for st in spec.stages.iter() {
        let plan = Plan::new(spec, st, shape);
        let mut len = 1;
        for (k, &d) in shape.iter().rev().enumerate() {
            len *= d;
            if !constant_on(&plan, len) {
                ok &= !(1 << k);
            }
        }
    }
    let mut len = 1;
    let mut best = None;
    for (k, &d) in shape.iter().rev().enumerate() {
        len *= d;
        if len < numel && ok & (1 << k) != 0 {
            best = Some(len);
        }
    }
    best.filter(|&l| l >= MIN_CELL)
}

/// Whether runs of `len` elements (from multiples of `len`) lie in one statistics group and
/// one parameter offset of `plan`: every dim that moves either has a stride that is a
/// multiple of `len`.
fn constant_on(plan: &Plan, len: usize) -> bool {
    plan.dims[..plan.ndims]
        .iter()
        .filter(|d| moves(plan, d))
        .all(|d| d.xs >= len && d.xs % len == 0)
}

/// Whether `d` moves the statistics group or (unfolded) parameter offset of `plan`.
fn moves(plan: &Plan, d: &crate::plan::Dim) -> bool {
    d.ss != 0 || (!plan.foldable && d.ps != 0)
}

/// Statistics group and parameter offset of every cell of `len` elements, in cell order
/// (`plan` constant on cells: [`constant_on`]). `gparam` is scratch.
fn cell_map(
    plan: &Plan,
    len: usize,
    group: &mut [usize],
    param: &mut [usize],
    gparam: &mut Vec<usize>,
) {
    if plan.foldable {
        resize(gparam, plan.groups, 0);
        plan.for_each_group(|g, p, _| gparam[g] = p);
    }
    // Per moving dim: cells per index step, countdown, index.
    let mut dims = [(crate::plan::Dim::default(), 0usize, 0usize, 0usize); crate::plan::MAX_DIMS];
    let mut nd = 0;
    for d in plan.dims[..plan.ndims].iter().filter(|d| moves(plan, d)) {
        dims[nd] = (*d, d.xs / len, 0, 0);
        nd += 1;
    }
    let dims = &mut dims[..nd];
    let (mut g, mut p) = (0usize, 0usize);
    for (gk, pk) in group.iter_mut().zip(param.iter_mut()) {
        *gk = g;
        *pk = if plan.foldable { gparam[g] } else { p };
        for (d, period, count, idx) in dims.iter_mut() {
            *count += 1;
            if *count < *period {
                continue;
            }
            *count = 0;
            *idx += 1;
            g += d.ss;
            p += d.ps;
            if *idx == d.size {
                *idx = 0;
                g -= d.size * d.ss;
                p -= d.size * d.ps;
            }
        }
    }
}

/// γ and β of a stage at parameter offset `p` (1 and 0 where absent).
fn affine_at<T: Float>(gamma: Option<&[T]>, beta: Option<&[T]>, p: usize) -> (f64, f64) {
    (
        gamma.map_or(1.0, |g| g[p].to_acc()),
        beta.map_or(0.0, |b| b[p].to_acc()),
    )
}

/// The input of stage `s + 1` per cell from that of stage `s` (`λ`, `ν` at `s · cells`):
/// y = ((z − mean)·rstd)·γ + β with the stage's statistics `stats`.
fn advance<T: Float>(
    cs: &mut ChainScratch<T>,
    s: usize,
    cells: usize,
    stats: &[Stat],
    st: &StageState<'_, T>,
) {
    let gamma = st.gamma.as_ref().map(stage::values);
    let beta = st.beta.as_ref().map(stage::values);
    for k in 0..cells {
        let i = s * cells + k;
        let stat = stats[cs.group[i]];
        let (g, b) = affine_at(gamma.as_deref(), beta.as_deref(), cs.param[i]);
        let scale = stat.rstd * g;
        cs.lam[i + cells] = cs.lam[i] * scale;
        cs.nu[i + cells] = (cs.nu[i] - stat.mean) * scale + b;
    }
}

/// Forward pass of a fused chain with cells of `len` elements (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    shape: &[usize],
    len: usize,
    x: &[T],
    mode: Mode,
    out: &mut [T],
    saved: &mut Saved<T>,
    cs: &mut ChainScratch<T>,
) {
    let spec = info.spec;
    let nst = spec.stages.len();
    let cells = x.len() / len;
    let units = Units::rows(cells, len);
    resize(&mut cs.raws, cells, Raw::default());
    exec::row_raws(&units, x, true, &mut cs.raws);
    saved.cells.clear();
    saved.cells.extend(cs.raws.iter().map(|r| {
        let d = r.sum / len as f64;
        let m2 = r.sq - r.sum * d;
        (r.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    }));
    saved.cell_len = len;
    for v in &mut saved.intermediates {
        v.clear();
    }
    resize(&mut cs.group, nst * cells, 0);
    resize(&mut cs.param, nst * cells, 0);
    resize(&mut cs.lam, (nst + 1) * cells, 1.0);
    resize(&mut cs.nu, (nst + 1) * cells, 0.0);
    for (s, stage) in spec.stages.iter().enumerate() {
        let plan = Plan::new(spec, stage, shape);
        let n = plan.group_len;
        let cut = s * cells..(s + 1) * cells;
        cell_map(
            &plan,
            len,
            &mut cs.group[cut.clone()],
            &mut cs.param[cut.clone()],
            &mut cs.gparam,
        );
        let st = &mut states[s];
        let fixed = mode == Mode::Eval && stage.running_stats;
        let sv = &mut saved.stages[s];
        resize(&mut sv.stats, plan.groups, Stat::default());
        if fixed {
            let running = st
                .running
                .as_ref()
                .expect("checked: running statistics present");
            stage::running_stats(stage, &plan, running, &mut sv.stats);
        } else {
            // Cells of z_s merged per group in cell order (Chan's formula; plain sums of
            // squares without centering).
            resize(&mut cs.acc, plan.groups, (0.0, 0.0, 0.0));
            for k in 0..cells {
                let (lam, nu) = (cs.lam[s * cells + k], cs.nu[s * cells + k]);
                let (cm, cm2) = saved.cells[k];
                let (mb, m2b) = (lam * cm + nu, lam * lam * cm2);
                let nb = len as f64;
                let a = &mut cs.acc[cs.group[s * cells + k]];
                if stage.center {
                    merge((&mut a.0, &mut a.1, &mut a.2), (nb, mb, m2b));
                } else {
                    a.0 += nb;
                    a.2 += m2b + nb * mb * mb;
                }
            }
            for (g, &(_, mean, m2)) in cs.acc.iter().enumerate() {
                sv.stats[g] = stage::group_stat(stage, mean, m2, n);
            }
        }
        sv.fixed = fixed;
        sv.synced = false;
        sv.count = n;
        sv.scale.clear();
        advance(cs, s, cells, &sv.stats, st);
        let running = st.running.as_mut();
        stage::train_running(stage, &plan, mode, n, &sv.stats, running, &mut cs.run);
    }
    // y = λ·x + ν = (x − mean)·λ + (λ·mean + ν) per cell.
    for v in [&mut cs.m, &mut cs.a, &mut cs.b] {
        resize(v, cells, T::zero());
    }
    for k in 0..cells {
        let (lam, nu) = (cs.lam[nst * cells + k], cs.nu[nst * cells + k]);
        let mean = saved.cells[k].0;
        (cs.m[k], cs.a[k], cs.b[k]) = coef(mean, lam, lam * mean + nu);
    }
    let none = Params {
        gamma: None,
        beta: None,
    };
    exec::normalize(&units, x, (&cs.m, &cs.a, &cs.b), none, out);
}

/// Backward pass of a fused chain (`saved` from [`forward`]; see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    x: &[T],
    dy: &[T],
    saved: &Saved<T>,
    dx: &mut [T],
    grads: &mut [StageGrads<T>],
    cs: &mut ChainScratch<T>,
) {
    let spec = info.spec;
    let nst = spec.stages.len();
    let len = saved.cell_len;
    let cells = x.len() / len;
    let units = Units::rows(cells, len);
    let lf = len as f64;
    // Pass 1: Σdy and Σdy·(x − m) per cell, m = the cell's mean in the element type.
    for v in [&mut cs.m, &mut cs.a, &mut cs.b, &mut cs.c] {
        resize(v, cells, T::zero());
    }
    for (k, &(mean, _)) in saved.cells.iter().enumerate() {
        (cs.m[k], cs.a[k], cs.b[k]) = (T::from_acc(mean), T::one(), T::zero());
    }
    resize(&mut cs.s1, cells, 0.0);
    resize(&mut cs.s2, cells, 0.0);
    let xhat = (&cs.m[..], &cs.a[..], &cs.b[..]);
    exec::dsums_all(
        &units,
        x,
        dy,
        xhat,
        None,
        &mut cs.s1,
        &mut cs.s2,
        &mut [],
        &mut cs.exec.f,
    );
    // The stage inputs z_s = λ·x + ν per cell, as in the forward pass.
    resize(&mut cs.group, nst * cells, 0);
    resize(&mut cs.param, nst * cells, 0);
    resize(&mut cs.lam, nst * cells, 1.0);
    resize(&mut cs.nu, nst * cells, 0.0);
    for (s, stage) in spec.stages.iter().enumerate() {
        let plan = Plan::new(spec, stage, shape);
        let cut = s * cells..(s + 1) * cells;
        cell_map(
            &plan,
            len,
            &mut cs.group[cut.clone()],
            &mut cs.param[cut],
            &mut cs.gparam,
        );
        if s + 1 < nst {
            advance(cs, s, cells, &saved.stages[s].stats, &states[s]);
        }
    }
    // The upstream gradient δ = e·dy + f·u + h per cell, u = x − m; δ = dy at the output.
    resize(&mut cs.e, cells, 1.0);
    resize(&mut cs.f, cells, 0.0);
    resize(&mut cs.h, cells, 0.0);
    for s in (0..nst).rev() {
        let stage = &spec.stages[s];
        let plan = Plan::new(spec, stage, shape);
        let sv = &saved.stages[s];
        let st = &states[s];
        let gamma = st.gamma.as_ref().map(stage::values);
        let params = plan.param_shape.numel();
        let has_params = matches!(stage.affine, Affine::Axes(_));
        resize(&mut cs.dparams, 2 * params, 0.0);
        resize(&mut cs.acc, plan.groups, (0.0, 0.0, 0.0));
        // x̂ = p·u + q per cell; the cell's Σδ, Σδ·x̂ into the group and parameter sums.
        resize(&mut cs.pqg, cells, (0.0, 0.0, 0.0));
        for k in 0..cells {
            let i = s * cells + k;
            let stat = sv.stats[cs.group[i]];
            let (lam, nu) = (cs.lam[i], cs.nu[i]);
            let m = cs.m[k].to_acc();
            let (p, q) = (lam * stat.rstd, (lam * m + nu - stat.mean) * stat.rstd);
            let (g, _) = affine_at(gamma.as_deref(), None, cs.param[i]);
            cs.pqg[k] = (p, q, g);
            let (mean, m2) = saved.cells[k];
            let dm = mean - m;
            let (u1, u2) = (lf * dm, m2 + lf * dm * dm);
            let (e, f, h) = (cs.e[k], cs.f[k], cs.h[k]);
            let sd = e * cs.s1[k] + f * u1 + h * lf;
            let sdu = e * cs.s2[k] + f * u2 + h * u1;
            let sdx = p * sdu + q * sd;
            if has_params {
                cs.dparams[cs.param[i]] += sdx;
                cs.dparams[params + cs.param[i]] += sd;
            }
            let a = &mut cs.acc[cs.group[i]];
            a.0 += g * sd;
            a.1 += g * sdx;
        }
        // Per group: dz = g·r + x̂·c1 + c0 (the stage-by-stage path's terms).
        for (a, stat) in cs.acc.iter_mut().zip(&sv.stats) {
            let (c0, c1) = stage::dx_terms(stage, stat, sv.count, sv.fixed, a.0, a.1);
            *a = (c0, c1, 0.0);
        }
        for k in 0..cells {
            let i = s * cells + k;
            let stat = sv.stats[cs.group[i]];
            let (c0, c1, _) = cs.acc[cs.group[i]];
            let (p, q, g) = cs.pqg[k];
            let gr = g * stat.rstd;
            let (e, f, h) = (cs.e[k], cs.f[k], cs.h[k]);
            cs.e[k] = gr * e;
            cs.f[k] = gr * f + p * c1;
            cs.h[k] = gr * h + q * c1 + c0;
        }
        let gr = &mut grads[s];
        if has_params {
            let pshape = plan.param_shape.as_slice();
            stage::fill_grad(&mut gr.dgamma, pshape, &cs.dparams[..params]);
            if stage.bias {
                stage::fill_grad(&mut gr.dbeta, pshape, &cs.dparams[params..]);
            } else {
                gr.dbeta = None;
            }
        } else {
            gr.dgamma = None;
            gr.dbeta = None;
        }
    }
    // Pass 2: dx = e·dy + ((x − m)·f + h).
    for k in 0..cells {
        cs.c[k] = T::from_acc(cs.e[k]);
        cs.a[k] = T::from_acc(cs.f[k]);
        cs.b[k] = T::from_acc(cs.h[k]);
    }
    let coefs = (&cs.c[..], &cs.m[..], &cs.a[..], &cs.b[..]);
    exec::dx_all(&units, x, dy, coefs, None, dx);
}
