//! One normalization stage on a checked input: statistics (batch, synchronized or
//! running) → coefficients → normalize/affine (forward), or gradient sums → dx and the
//! parameter gradients (backward). The checks are in [`crate::check`].

pub(crate) mod batch;
pub(crate) mod ghost;
pub(crate) mod small;

use norm_spec::Affine;

use crate::check::{check_count, syncs};
use crate::collective::{merge_moments, Collective};
use crate::kernels::coef;
use crate::kernels::exec::{
    self, BackIn, BackOut, CoefMut, ColumnSums, DxCoefMut, DxEstimator, DxFinish, Finish,
    ShiftedSums, Stat, Units,
};
use crate::plan::Plan;
use crate::scratch::Scratch;
use crate::state::{resize, sized, values, LayerInfo, StageState};
use crate::stats::{dx_terms, estimator_of, fill_grad, group_stat, mean_m2, running_stats};
use crate::types::{Mode, SavedStage, StageGrads};
use crate::variants::{renorm, switchable, tlu};
use crate::Float;
use crate::NormError;
use batch::{forward_batch, normalize_fixed, record_forward, GroupAffine};

/// Stage `k` of a layer in one call: what both passes of the stage need besides its
/// buffers.
#[derive(Clone, Copy)]
pub(crate) struct StageCall<'a> {
    /// The layer.
    pub info: &'a LayerInfo<'a>,
    /// The stage's index.
    pub k: usize,
    /// The stage's plan for this call's input.
    pub plan: &'a Plan,
    /// The collective of a `*_sync` call.
    pub sync: Option<&'a dyn Collective>,
}

impl<'a> StageCall<'a> {
    /// The same stage over `plan` (a `ghost` chunk's) and without a collective.
    pub(crate) fn local(self, plan: &'a Plan) -> StageCall<'a> {
        StageCall {
            plan,
            sync: None,
            ..self
        }
    }
}

/// Forward pass of stage `k` on a checked input.
pub(crate) fn forward<T: Float>(
    call: StageCall<'_>,
    state: &mut StageState<'_, T>,
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let stage = &call.info.spec.stages[call.k];
    let fixed = mode == Mode::Eval && stage.running_stats;
    if !stage.switch.is_empty() {
        let synced = call.sync.is_some();
        let call = (call.info, call.k, call.plan, synced);
        return switchable::forward(call, state, (x, out), mode, saved);
    }
    if stage.ghost.is_some() && !fixed {
        return ghost::forward(call, state, (x, out), mode, saved, scratch);
    }
    saved.chunks.clear();
    forward_plain(call, state, (x, out), mode, saved, scratch)
}

/// Forward pass of stage `k` (one chunk of a `ghost` stage) on a checked input.
pub(crate) fn forward_plain<T: Float>(
    call: StageCall<'_>,
    state: &mut StageState<'_, T>,
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let StageCall {
        info,
        k,
        plan,
        sync,
    } = call;
    let stage = &info.spec.stages[k];
    let groups = plan.groups;
    let mut n = plan.group_len;
    let units = Units::new(plan);
    // Every path below writes the statistics and coefficients of every group.
    sized(&mut saved.stats, groups, Stat::default());
    scratch.coef_for(groups);
    let fixed = mode == Mode::Eval && stage.running_stats;
    saved.fixed = fixed;
    // A group of one (`Solo`) exchanges nothing: it runs the unsynchronized kernels, so its
    // results are bit-identical to `forward`'s; `synced` still records the kind of call.
    let synced = sync.is_some() && !fixed && syncs(info.spec, stage);
    let comm = sync.filter(|c| synced && c.size() > 1);
    saved.synced = synced;
    // `renorm` in train mode: the running statistics before this step's update.
    let limits = state
        .renorm
        .filter(|_| stage.renorm.is_some() && mode == Mode::Train);
    let mut run = Vec::new();
    saved.renorm.clear();
    if let (Some(_), Some(r)) = (limits, state.running.as_ref()) {
        if synced {
            return Err(NormError::Unsupported {
                layer: info.name.to_string(),
                reason: "`renorm` is not synchronized across processes (use forward)".to_string(),
            });
        }
        run.resize(groups, Stat::default());
        running_stats(stage, plan, r, &mut run);
    }
    let r_d = |s: usize, st: &Stat| limits.map(|l| renorm::r_d(st, &run[s], l));

    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let external = state.external.as_ref().map(|(s, h)| (values(s), values(h)));
    // The affine of group s when it folds into the coefficients: (scale, shift); else
    // the external scale and shift. (As slices: a `Cow` asks which it is on every access.)
    let affine = GroupAffine::new(plan, gamma.as_deref(), beta.as_deref());
    let ext = external.as_ref().map(|(sc, sh)| (&sc[..], &sh[..]));
    let group_affine = |s: usize| -> (f64, f64) {
        match ext {
            Some((sc, sh)) if !affine.folds() => (sc[s].to_acc(), sh[s].to_acc()),
            _ => affine.group(s),
        }
    };
    let params = affine.unfolded();

    if fixed {
        let running = state
            .running
            .as_ref()
            .expect("checked: running statistics present");
        running_stats(stage, plan, running, &mut saved.stats);
        let io = (&units, x, &mut *out);
        normalize_fixed(io, &saved.stats, group_affine, params, scratch);
    } else if let Some(comm) = comm {
        // Local (count, mean, M2) per group → all members → merged in rank order.
        let mut raws = std::mem::take(&mut scratch.acc.raws);
        resize(&mut raws, groups, ShiftedSums::default());
        exec::sums_all(&units, x, stage.center, &mut raws, &mut scratch.acc.f);
        let mut local = std::mem::take(&mut scratch.sync_local);
        local.clear();
        for &raw in &raws {
            let (mean, m2) = if n == 0 {
                (0.0, 0.0)
            } else {
                mean_m2(stage, raw, n)
            };
            local.extend_from_slice(&[n as f64, mean, m2]);
        }
        scratch.acc.raws = raws;
        let gathered = gather(comm, info, (&mut local, &mut scratch.sync_all), groups, 3);
        scratch.sync_local = local;
        gathered?;
        let mut merged = std::mem::take(&mut scratch.sync_merged);
        resize(&mut merged, groups, (0.0, 0.0, 0.0));
        merge_moments(&scratch.sync_all, groups, &mut merged);
        n = merged.first().map_or(0, |m| m.0 as usize);
        check_count(info, stage, mode, n, plan)?;
        for (s, &(_, mean, m2)) in merged.iter().enumerate() {
            let st = group_stat(stage, mean, m2, n);
            saved.stats[s] = st;
            let (g, h) = group_affine(s);
            (scratch.m[s], scratch.a[s], scratch.b[s]) = coef(mean, st.rstd * g, h);
        }
        scratch.sync_merged = merged;
        let c = scratch.coef();
        exec::normalize(&units, x, c, params, out);
    } else {
        if synced {
            // The checks `check` leaves to the exchange of a synchronized stage.
            check_count(info, stage, mode, n, plan)?;
        }
        let one = |s: usize, raw: ShiftedSums, out: &mut Stat| {
            let (mean, m2) = mean_m2(stage, raw, n);
            let st = group_stat(stage, mean, m2, n);
            *out = st;
            let (g, h) = group_affine(s);
            match r_d(s, &st) {
                Some((r, d)) => coef(mean, st.rstd * r * g, h + d * g),
                None => coef(mean, st.rstd * g, h),
            }
        };
        // The same arithmetic for a run of groups: the statistics in one loop, then the
        // coefficients.
        let est = estimator_of(stage, n);
        let many = |s0: usize, raw: ColumnSums<'_>, out: CoefMut<'_, T>| {
            if limits.is_none() {
                return affine.finish_run((s0, raw), est, group_affine, out);
            }
            // `renorm`: r and d per group, one group at a time.
            for i in 0..out.stat.len() {
                let sums = ShiftedSums {
                    shift: raw.shift[i],
                    sum: raw.sum[i],
                    sq: raw.sq[i],
                };
                (out.m[i], out.a[i], out.b[i]) = one(s0 + i, sums, &mut out.stat[i]);
            }
        };
        let finish = Finish {
            one: &one,
            many: &many,
        };
        let io = (plan, &units, x, &mut *out);
        forward_batch(
            io,
            (stage.center, params),
            &finish,
            &mut saved.stats,
            scratch,
        );
    }
    if limits.is_some() {
        for (s, st) in saved.stats.iter().enumerate() {
            saved.renorm.extend(r_d(s, st));
        }
    }
    let running = state.running.as_mut();
    record_forward((stage, plan), (mode, n), running, saved, scratch);
    if let Some((sc, _)) = &external {
        saved.scale.extend_from_slice(sc);
    }
    match state.tau.as_ref().filter(|_| stage.tlu) {
        Some(tau) => tlu::forward(plan, &values(tau), out, &mut saved.tlu_pass),
        None => saved.tlu_pass.clear(),
    }
    Ok(())
}

pub(crate) use crate::state::BackwardIo;

/// Backward pass of stage `k`: writes dx and the stage's parameter gradients.
pub(crate) fn backward<T: Float>(
    call: StageCall<'_>,
    state: &StageState<'_, T>,
    io: BackwardIo<'_, T>,
    saved: &SavedStage<T>,
    grads: &mut StageGrads<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    if !call.info.spec.stages[call.k].switch.is_empty() {
        let synced = call.sync.is_some();
        let call = (call.info, call.k, call.plan, synced);
        return switchable::backward(call, state, (io.x, io.dy, io.dx), saved, grads);
    }
    if call.info.spec.stages[call.k].ghost.is_some() && !saved.fixed {
        return ghost::backward(call, state, io, saved, grads, scratch);
    }
    backward_plain(call, state, io, saved, grads, scratch)
}

/// Backward pass of stage `k` (one chunk of a `ghost` stage).
pub(crate) fn backward_plain<T: Float>(
    call: StageCall<'_>,
    state: &StageState<'_, T>,
    io: BackwardIo<'_, T>,
    saved: &SavedStage<T>,
    grads: &mut StageGrads<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let StageCall {
        info,
        k,
        plan,
        sync,
    } = call;
    let BackwardIo { x, dy, dx } = io;
    let stage = &info.spec.stages[k];
    // `tlu`: the gradient reaching z = the affine output, and dτ.
    let (mut dz, mut dtau) = (Vec::new(), Vec::new());
    let dy: &[T] = if stage.tlu {
        if saved.tlu_pass.len() != dy.len() {
            return Err(NormError::Saved {
                layer: info.name.to_string(),
                reason: "its statistics do not match this layer".to_string(),
            });
        }
        let nparams = plan.param_shape.numel();
        tlu::backward(plan, &saved.tlu_pass, dy, nparams, &mut dz, &mut dtau);
        &dz
    } else {
        dy
    };
    let groups = plan.groups;
    let n = saved.count;
    let units = Units::new(plan);
    let gamma = state.gamma.as_ref().map(values);
    let affine = GroupAffine::new(plan, gamma.as_deref(), None);
    let unfolded = affine.unfolded().gamma;
    let nparams = unfolded.map_or(0, |_| plan.param_shape.numel());

    let renormed = !saved.renorm.is_empty() && !saved.fixed;
    // The scale of g = dy·γ when γ folds per group (1 when unfolded or absent).
    let group_scale = |s: usize| -> f64 {
        match &stage.affine {
            Affine::Axes(_) => affine.scale(s),
            Affine::External => saved.scale[s].to_acc(),
            Affine::None => 1.0,
        }
    };
    // dx = g·r + x̂·c1 + c0 = dy·(γ r) + (x − m)·(r c1) + (c0 − (μ − m)·r·c1).
    let one = |s: usize, sg: f64, sgx: f64| {
        let st = saved.stats[s];
        let gs = group_scale(s);
        let r = st.rstd;
        if let Some(&rd) = saved.renorm.get(s).filter(|_| renormed) {
            let sgx0 = renorm::sgx0(rd, sg, sgx);
            let (c0, c1) = dx_terms(stage, &st, n, saved.fixed, gs * sg, gs * sgx0);
            let (m, a, b) = coef::<T>(st.mean, rd.0 * r * c1, rd.0 * c0);
            return (T::from_acc(rd.0 * r * gs), m, a, b);
        }
        let (c0, c1) = dx_terms(stage, &st, n, saved.fixed, gs * sg, gs * sgx);
        let (m, a, b) = coef::<T>(st.mean, r * c1, c0);
        (T::from_acc(r * gs), m, a, b)
    };
    // The same for a run of groups, without a call per group: vectorized (`renorm`: one
    // group at a time).
    let est = estimator_of(stage, n);
    let dx_est = DxEstimator {
        center: est.center,
        eps_var: est.eps_var,
        count: est.count,
        denom: est.denom,
        fixed: saved.fixed,
    };
    let many = |s0: usize, (sg, sgx): (&[f64], &[f64]), out: DxCoefMut<'_, T>| {
        if renormed {
            for (i, (&sg, &sgx)) in sg.iter().zip(sgx).enumerate() {
                (out.c[i], out.m[i], out.a[i], out.b[i]) = one(s0 + i, sg, sgx);
            }
            return;
        }
        let stats = &saved.stats[s0..s0 + out.c.len()];
        exec::dx_finish_run(s0, stats, dx_est, group_scale, (sg, sgx), out);
    };
    let finish = DxFinish {
        one: &one,
        many: &many,
    };
    if saved.synced && sync.is_none() {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "it comes from forward_sync: call backward_sync".to_string(),
        });
    }
    if !saved.synced && sync.is_some() && syncs(info.spec, stage) && !saved.fixed {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "it comes from forward, not forward_sync".to_string(),
        });
    }
    // x̂ = (x − m)·r + b per group.
    let xhat = saved.stats.iter().enumerate().map(|(s, st)| {
        match saved.renorm.get(s).filter(|_| renormed) {
            Some(&(r, d)) => coef::<T>(st.mean, st.rstd * r, d),
            None => coef::<T>(st.mean, st.rstd, 0.0),
        }
    });
    let bufs = back_buffers(scratch, xhat, groups, nparams);
    let BackBufs {
        xhat,
        out,
        acc,
        sync: exchange,
    } = bufs;
    let t = BackIn {
        units: &units,
        x,
        dy,
        xhat,
        gamma: unfolded,
    };
    // A group of one exchanges nothing (bit-identical to `backward`, as in `forward`).
    if let Some(comm) = sync.filter(|c| saved.synced && c.size() > 1) {
        // Local sums (kept for the local parameter gradients) → all members → summed in
        // rank order for the dx coefficients.
        exec::dsums_all(t, out.sg, out.sgx, out.dparams, acc.0);
        let (local, all) = exchange;
        local.clear();
        local.extend_from_slice(out.sg);
        local.extend_from_slice(out.sgx);
        gather(comm, info, (local, &mut *all), groups, 2)?;
        for g in 0..groups {
            let (mut sg, mut sgx) = (0.0, 0.0);
            for r in 0..comm.size() {
                sg += all[r * 2 * groups + g];
                sgx += all[r * 2 * groups + groups + g];
            }
            let (c, m, a, b) = one(g, sg, sgx);
            (out.c[g], out.m[g], out.a[g], out.b[g]) = (c, m, a, b);
        }
        let coef = (&out.c[..], &out.m[..], &out.a[..], &out.b[..]);
        exec::dx_all(&units, x, dy, coef, unfolded, dx);
    } else {
        exec::backward(t, &finish, out, acc, dx);
    }

    match &stage.affine {
        Affine::Axes(_) => axes_grads(plan, (plan.foldable, stage.bias), scratch, grads),
        Affine::External => {
            // One scale and shift per group: the group sums are their gradients.
            let shape = plan.stat_shape.as_slice();
            fill_grad(&mut grads.dgamma, shape, &scratch.sgx);
            fill_grad(&mut grads.dbeta, shape, &scratch.sg);
        }
        Affine::None => {
            grads.dgamma = None;
            grads.dbeta = None;
        }
    }
    if stage.tlu {
        fill_grad(&mut grads.dtau, plan.param_shape.as_slice(), &dtau);
    } else {
        grads.dtau = None;
    }
    Ok(())
}

/// Exchanges `local` with every member into `all` (rank order), checking that each member
/// sent `per_group` values for each of the `groups` groups.
fn gather(
    comm: &dyn Collective,
    info: &LayerInfo<'_>,
    (local, all): (&mut Vec<f64>, &mut Vec<f64>),
    groups: usize,
    per_group: usize,
) -> Result<(), NormError> {
    let error = |reason| NormError::Collective {
        layer: info.name.to_string(),
        reason,
    };
    comm.all_gather(local, all).map_err(error)?;
    let expected = per_group * groups * comm.size();
    if all.len() != expected {
        return Err(error(format!(
            "all_gather returned {} values, expected {expected} ({} members × {groups} groups × \
             {per_group})",
            all.len(),
            comm.size(),
        )));
    }
    Ok(())
}

/// The scratch of one backward pass, split into the parts the kernels read and write.
pub(crate) struct BackBufs<'s, T> {
    /// x̂ = (x − m)·a + b per group (`scratch.xm/xa/xb`).
    pub xhat: (&'s [T], &'s [T], &'s [T]),
    /// The kernels' outputs, sized for the call.
    pub out: BackOut<'s, T>,
    /// The executor's partial sums and its γ-gradient staging.
    pub acc: (&'s mut Vec<f64>, &'s mut Vec<T>),
    /// A synchronized backward's exchange: the local sums, all members'.
    pub sync: (&'s mut Vec<f64>, &'s mut Vec<f64>),
}

/// Sizes the buffers of a backward pass over `groups` groups with `nparams` unfolded
/// parameters, writes x̂ (the (m, a, b) of each group, from `xhat`) and splits the scratch
/// into the kernels' parts. Inlined, so that a caller's constants (the monomorphized
/// path's) reach the x̂ loop.
#[inline(always)]
pub(crate) fn back_buffers<T: Float>(
    scratch: &mut Scratch<T>,
    xhat: impl ExactSizeIterator<Item = (T, T, T)>,
    groups: usize,
    nparams: usize,
) -> BackBufs<'_, T> {
    // Sized, then written in one zipped loop: pushes kept each array's length in memory,
    // a chain through the store buffer once per group (rows: a tenth of a short-row
    // backward).
    for v in [&mut scratch.xm, &mut scratch.xa, &mut scratch.xb] {
        sized(v, xhat.len(), T::zero());
    }
    let xs = scratch
        .xm
        .iter_mut()
        .zip(&mut scratch.xa)
        .zip(&mut scratch.xb);
    for (mab, ((m, a), b)) in xhat.zip(xs) {
        (*m, *a, *b) = mab;
    }
    resize(&mut scratch.sg, groups, 0.0);
    resize(&mut scratch.sgx, groups, 0.0);
    resize(&mut scratch.dparams, 2 * nparams, 0.0);
    for v in [
        &mut scratch.c,
        &mut scratch.m,
        &mut scratch.a,
        &mut scratch.b,
    ] {
        resize(v, groups, T::zero());
    }
    BackBufs {
        xhat: (&scratch.xm, &scratch.xa, &scratch.xb),
        out: BackOut {
            sg: &mut scratch.sg,
            sgx: &mut scratch.sgx,
            dparams: &mut scratch.dparams,
            c: &mut scratch.c,
            m: &mut scratch.m,
            a: &mut scratch.a,
            b: &mut scratch.b,
            stage: &mut [],
        },
        acc: (&mut scratch.acc.f, &mut scratch.stage),
        sync: (&mut scratch.sync_local, &mut scratch.sync_all),
    }
}

/// dγ (and dβ with `bias`) of γ/β on the stage's parameter axes, from the backward sums in
/// `scratch`: each parameter's groups summed when γ folds into the coefficients
/// (`fold`), else the kernels' per-parameter sums.
#[inline(always)]
pub(crate) fn axes_grads<T: Float>(
    plan: &Plan,
    (fold, bias): (bool, bool),
    scratch: &mut Scratch<T>,
    grads: &mut StageGrads<T>,
) {
    let params = plan.param_shape.numel();
    let (sg, sgx) = (&scratch.sg, &scratch.sgx);
    let (dgamma, dbeta) = (&mut scratch.dgamma, &mut scratch.dbeta);
    resize(dgamma, params, 0.0);
    resize(dbeta, params, 0.0);
    if fold {
        plan.for_each_group(|s, p, _| {
            dgamma[p] += sgx[s];
            dbeta[p] += sg[s];
        });
    } else {
        dgamma.copy_from_slice(&scratch.dparams[..params]);
        dbeta.copy_from_slice(&scratch.dparams[params..]);
    }
    let shape = plan.param_shape.as_slice();
    fill_grad(&mut grads.dgamma, shape, dgamma);
    if bias {
        fill_grad(&mut grads.dbeta, shape, dbeta);
    } else {
        grads.dbeta = None;
    }
}
