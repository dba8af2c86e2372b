//! Statistics: a group's moments from its raw sums, the variance estimator and 1/σ, the
//! running-statistics update and the fixed statistics of eval mode, the dx terms of the
//! backward pass, and `stats()`'s moments.

use ndarray::{ArrayD, ArrayViewMutD, IxDyn};
use norm_spec::{EpsMode, Momentum, Stage, Statistic};

use crate::kernels::exec::{self, Estimator, ShiftedSums, Stat, Units};
use crate::kernels::isa::multiversion;
use crate::plan::Plan;
use crate::state::{resize, values, LayerInfo, Running};
use crate::Float;

/// The variance estimator of a stage from a group's M2 over `n` values.
fn estimator(stage: &Stage, m2: f64, n: usize) -> f64 {
    if stage.statistic == Statistic::Sum {
        m2
    } else if !stage.center {
        m2 / n as f64
    } else if stage.unbiased {
        m2 / (n as f64 - 1.0)
    } else {
        m2 / n as f64
    }
}

fn rstd(stage: &Stage, var: f64) -> f64 {
    match stage.eps_mode {
        EpsMode::Var => 1.0 / (var + stage.eps).sqrt(),
        EpsMode::Std => 1.0 / (var.sqrt() + stage.eps),
    }
}

/// The statistics of a group of `n` values with mean `mean` and M2 `m2`.
pub(crate) fn group_stat(stage: &Stage, mean: f64, m2: f64, n: usize) -> Stat {
    let var = estimator(stage, m2, n);
    Stat {
        mean,
        var,
        m2,
        rstd: rstd(stage, var),
    }
}

/// What the batched finish of a run of groups ([`exec::finish_run`]) needs to compute
/// [`mean_m2`] and [`group_stat`] of groups of `n` values: the stage's choices, taken once.
pub(crate) fn estimator_of(stage: &Stage, n: usize) -> Estimator {
    Estimator {
        center: stage.center,
        eps_var: stage.eps_mode == EpsMode::Var,
        count: n as f64,
        // As `estimator` divides.
        denom: if stage.statistic == Statistic::Sum {
            1.0
        } else if stage.center && stage.unbiased {
            n as f64 - 1.0
        } else {
            n as f64
        },
        eps: stage.eps,
    }
}

/// Mean and M2 of a group from its raw shifted sums (M2 = Σx² without centering).
pub(crate) fn mean_m2(stage: &Stage, raw: ShiftedSums, n: usize) -> (f64, f64) {
    if stage.center {
        let d = raw.sum / n as f64;
        // Clamp rounding below zero, but keep NaN (f64::max would turn NaN into 0).
        let m2 = raw.sq - raw.sum * d;
        (raw.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    } else {
        (0.0, raw.sq)
    }
}

/// The fixed statistics of every group from the running statistics (eval mode).
pub(crate) fn running_stats<T: Float>(
    stage: &Stage,
    plan: &Plan,
    running: &Running<'_, T>,
    stats: &mut [Stat],
) {
    let (rm, rv) = (running.mean(), running.var());
    let (rm, rv) = (values(&rm), values(&rv));
    plan.for_each_group(|s, _, r| {
        let (mean, var) = (rm[r].to_acc(), rv[r].to_acc());
        stats[s] = Stat {
            mean,
            var,
            m2: 0.0,
            rstd: rstd(stage, var),
        };
    });
}

/// After a train-mode forward (which measured batch statistics; fixed statistics are eval
/// only), the running statistics, if any, move toward `stats`.
pub(crate) fn train_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    n: usize,
    stats: &[Stat],
    running: Option<&mut Running<'_, T>>,
    buf: &mut Vec<f64>,
) {
    if let Some(Running::Mut {
        mean: rm,
        var: rv,
        count,
    }) = running
    {
        // (The tuple is built in the call: its fields are coercion sites.)
        update_running(stage, plan, n, stats, (rm, rv, count), buf);
    }
}

multiversion! {
    /// The running update of one running value per group, in group order: running ←
    /// (1 − m)·running + m·batch, the variance the unbiased one of `n` values per group.
    /// Compiled per ISA level: its division by n − 1 runs in vectors.
    fn blend_groups<T: Float>(rm: &mut [T], rv: &mut [T], stats: &[Stat], m: f64, n: f64) {
        for ((vm, vv), st) in rm.iter_mut().zip(rv.iter_mut()).zip(stats) {
            *vm = T::from_acc((1.0 - m) * vm.to_acc() + m * (0.0 + st.mean));
            *vv = T::from_acc((1.0 - m) * vv.to_acc() + m * (0.0 + st.m2 / (n - 1.0)));
        }
    }
}

/// running ← (1 − m)·running + m·batch, the batch value averaged over `N` where the
/// statistics are per sample; the variance is the unbiased one (as PyTorch).
fn update_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    n: usize,
    stats: &[Stat],
    running: (
        &mut ArrayViewMutD<'_, T>,
        &mut ArrayViewMutD<'_, T>,
        &mut u64,
    ),
    buf: &mut Vec<f64>,
) {
    let (rmean, rvar, count) = running;
    if plan.groups == 0 {
        // An empty batch (a kept axis of size 0): nothing was measured, nothing changes.
        return;
    }
    let size = plan.running_shape.numel();
    let n = n as f64;
    let m = |count: u64| match stage.momentum {
        Momentum::Exponential(m) => m,
        Momentum::Cumulative => 1.0 / count as f64,
    };
    if plan.groups == size && plan.running_follow_groups() {
        // One group per running value, in the same order (BatchNorm): the general path
        // below with its sums of one term (0 + v) and its division by 1 (exact) written out,
        // without the buffer.
        if let (Some(rm), Some(rv)) = (rmean.as_slice_mut(), rvar.as_slice_mut()) {
            *count += 1;
            blend_groups(rm, rv, stats, m(*count), n);
            return;
        }
    }
    resize(buf, 2 * size, 0.0);
    plan.for_each_group(|s, _, r| {
        buf[r] += stats[s].mean;
        buf[size + r] += stats[s].m2 / (n - 1.0);
    });
    let per = (plan.groups / size.max(1)).max(1) as f64;
    *count += 1;
    let m = m(*count);
    let (mean_batch, var_batch) = buf.split_at(size);
    blend(rmean, mean_batch, m, per);
    blend(rvar, var_batch, m, per);
}

/// `running ← (1 − m)·running + m·batch/per`, element by element in logical order (a plain
/// slice loop where the running statistics are contiguous, as they are unless replaced by
/// hand: iterating a dynamic-rank view costs more than the update).
fn blend<T: Float>(running: &mut ArrayViewMutD<'_, T>, batch: &[f64], m: f64, per: f64) {
    let update = |v: &mut T, b: f64| *v = T::from_acc((1.0 - m) * v.to_acc() + m * b / per);
    match running.as_slice_mut() {
        Some(slice) => slice.iter_mut().zip(batch).for_each(|(v, &b)| update(v, b)),
        None => running
            .iter_mut()
            .zip(batch)
            .for_each(|(v, &b)| update(v, b)),
    }
}

/// The moments of stage `k` of a checked input.
pub(crate) fn moments<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    plan: &Plan,
    x: &[T],
) -> (ArrayD<T>, ArrayD<T>) {
    let stage = &info.spec.stages[k];
    let n = plan.group_len;
    let mut raws = vec![ShiftedSums::default(); plan.groups];
    exec::raw_sums(&Units::new(plan), x, stage.center, &mut raws);
    let mut mean = Vec::with_capacity(plan.groups);
    let mut var = Vec::with_capacity(plan.groups);
    for raw in raws {
        let (m, m2) = mean_m2(stage, raw, n);
        mean.push(T::from_acc(m));
        var.push(T::from_acc(estimator(stage, m2, n)));
    }
    let shape = IxDyn(plan.stat_shape.as_slice());
    (
        ArrayD::from_shape_vec(shape.clone(), mean).expect("groups = product of the stat shape"),
        ArrayD::from_shape_vec(shape, var).expect("groups = product of the stat shape"),
    )
}

pub(crate) fn fill_grad<T: Float>(slot: &mut Option<ArrayD<T>>, shape: &[usize], values: &[f64]) {
    let ok = slot
        .as_ref()
        .is_some_and(|a| a.shape() == shape && a.is_standard_layout());
    if !ok {
        *slot = Some(ArrayD::zeros(IxDyn(shape)));
    }
    if let Some(a) = slot.as_mut() {
        for (o, &v) in a.iter_mut().zip(values) {
            *o = T::from_acc(v);
        }
    }
}

/// The dx terms of a group of `n` values with statistics `st` and backward sums
/// `sg = Σg`, `sgx = Σg·x̂` (g = dy·γ): dx = g·r + x̂·c1 + c0; returns (c0, c1). Fixed
/// statistics (running statistics in eval) are constants: (0, 0).
pub(crate) fn dx_terms(
    stage: &Stage,
    st: &Stat,
    n: usize,
    fixed: bool,
    sg: f64,
    sgx: f64,
) -> (f64, f64) {
    if fixed {
        return (0.0, 0.0);
    }
    let d = if stage.statistic == Statistic::Sum {
        1.0
    } else if stage.center && stage.unbiased {
        n as f64 - 1.0
    } else {
        n as f64
    };
    let c1 = match stage.eps_mode {
        EpsMode::Var => -st.rstd * sgx / d,
        EpsMode::Std => -sgx / (d * st.var.sqrt()),
    };
    let c0 = if stage.center {
        -st.rstd * sg / n as f64
    } else {
        0.0
    };
    (c0, c1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::coef;
    use crate::kernels::exec::{finish_run, CoefMut, ColumnSums};

    /// The batched finish of a run of groups gives the bits of finishing them one by one
    /// (`mean_m2`, `group_stat`, `coef`), at every level, for every estimator.
    #[test]
    fn batched_finish_is_bit_identical_to_one_by_one() {
        let decls = [
            r#"input = "N,C", axes = "N""#,
            r#"input = "N,C", axes = "N", unbiased"#,
            r#"input = "N,C", axes = "N", center = false"#,
            r#"input = "N,C", axes = "N", unbiased, eps_mode = "std", eps = 0.001"#,
            r#"input = "N,C", axes = "N", center = false, eps_mode = "std""#,
        ];
        // A small xorshift: sums of a few values around an offset, some sums of squares
        // below sum²/n (rounding clamps them).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // The cap of this thread only: `simd::set_cap` would change the level under the
        // unit tests running beside this one (their bit-identity comparisons then mix levels).
        for level in crate::simd::available() {
            crate::kernels::simd::with_thread_cap(level, || {
                for decl in decls {
                    let spec = norm_spec::parse_str(decl).unwrap();
                    let stage = &spec.stages[0];
                    for n in [2usize, 7, 32] {
                        let len = 133; // more than one batch, not a multiple of the vector width
                        let shift: Vec<f64> = (0..len).map(|_| 100.0 * next() - 50.0).collect();
                        let sum: Vec<f64> = (0..len).map(|_| 4.0 * next() - 2.0).collect();
                        let sq: Vec<f64> = (0..len)
                            .map(|i| sum[i] * sum[i] / n as f64 * (0.999 + 3.0 * next()))
                            .collect();
                        let affine = |s: usize| (0.5 + s as f64 * 0.01, s as f64 * -0.02);
                        let mut stat = vec![Stat::default(); len];
                        let (mut m, mut a, mut b) =
                            (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
                        let raw = ColumnSums {
                            shift: &shift,
                            sum: &sum,
                            sq: &sq,
                        };
                        let out = CoefMut {
                            stat: &mut stat,
                            m: &mut m,
                            a: &mut a,
                            b: &mut b,
                        };
                        finish_run(3, raw, estimator_of(stage, n), affine, out);
                        for i in 0..len {
                            let r = ShiftedSums {
                                shift: shift[i],
                                sum: sum[i],
                                sq: sq[i],
                            };
                            let (mean, m2) = mean_m2(stage, r, n);
                            let st = group_stat(stage, mean, m2, n);
                            assert_eq!(stat[i], st, "{decl}, n = {n}, group {i}, {level:?}");
                            let (g, h) = affine(3 + i);
                            let (em, ea, eb) = coef::<f32>(mean, st.rstd * g, h);
                            assert_eq!(
                                (m[i].to_bits(), a[i].to_bits(), b[i].to_bits()),
                                (em.to_bits(), ea.to_bits(), eb.to_bits()),
                                "{decl}, n = {n}, group {i}, {level:?}"
                            );
                        }
                    }
                }
            });
        }
    }
}
