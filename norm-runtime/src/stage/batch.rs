//! What the generic stage (`stage::forward_plain` / `stage::backward_plain`) and the
//! monomorphized path (`path::train`) run alike: the folded affine of each group
//! ([`GroupAffine`]), the coefficients of given statistics ([`normalize_fixed`]) and the
//! call into the executor's batch-statistics forward ([`forward_batch`]). One piece of
//! code for both, so the two stay the same operations (and bits).
//!
//! Everything here is `#[inline(always)]`: the path's constants reach the per-group
//! arithmetic as they did when each caller spelled it out.

use crate::kernels::coef;
use crate::kernels::exec::{
    self, CoefMut, ColumnSums, Estimator, Finish, FwdIn, Params, Stat, Units,
};
use crate::plan::Plan;
use crate::scratch::Scratch;
use crate::state::Running;
use crate::stats::train_running;
use crate::types::{Mode, SavedStage};
use crate::Float;

/// γ and β of a stage as its groups see them: folded into each group's coefficients (the
/// plan's `foldable`: one parameter per group) or left to the elementwise pass.
#[derive(Clone, Copy)]
pub(crate) struct GroupAffine<'a, T> {
    plan: &'a Plan,
    gamma: Option<&'a [T]>,
    beta: Option<&'a [T]>,
    /// γ/β fold into the coefficients.
    fold: bool,
    /// They fold and group `s` has parameter `s` (read straight from the slices).
    direct: bool,
}

impl<'a, T: Float> GroupAffine<'a, T> {
    /// γ and β (each optional) of a stage over `plan`.
    #[inline(always)]
    pub(crate) fn new(plan: &'a Plan, gamma: Option<&'a [T]>, beta: Option<&'a [T]>) -> Self {
        let fold = plan.foldable;
        GroupAffine {
            plan,
            gamma,
            beta,
            fold,
            direct: fold && plan.params_follow_groups(),
        }
    }

    /// Whether γ is present and folds into the coefficients.
    #[inline(always)]
    pub(crate) fn folds(&self) -> bool {
        self.fold && self.gamma.is_some()
    }

    /// The parameter offset of group `s` (when the parameters fold).
    #[inline(always)]
    fn param(&self, s: usize) -> usize {
        if self.direct {
            s
        } else {
            self.plan.group_offsets(s).0
        }
    }

    /// The folded (scale, shift) of group `s`: (γ, β) where they fold, else (1, 0).
    #[inline(always)]
    pub(crate) fn group(&self, s: usize) -> (f64, f64) {
        match self.gamma {
            Some(g) if self.fold => {
                let p = self.param(s);
                (g[p].to_acc(), self.beta.map_or(0.0, |bt| bt[p].to_acc()))
            }
            _ => (1.0, 0.0),
        }
    }

    /// The folded scale of group `s`: γ where it folds, else 1.
    #[inline(always)]
    pub(crate) fn scale(&self, s: usize) -> f64 {
        match self.gamma {
            Some(g) if self.fold => g[self.param(s)].to_acc(),
            _ => 1.0,
        }
    }

    /// The parameters the elementwise pass applies: those that do not fold.
    #[inline(always)]
    pub(crate) fn unfolded(&self) -> Params<'a, T> {
        Params {
            gamma: self.gamma.filter(|_| !self.fold),
            beta: self.beta.filter(|_| !self.fold),
        }
    }

    /// [`exec::finish_run`] over the groups `s0..`: γ (and β) read straight from the
    /// slices where group `s` has parameter `s`, else each group's (scale, shift) from
    /// `affine` (this [`GroupAffine::group`], or a caller's that adds what else it folds).
    #[inline(always)]
    pub(crate) fn finish_run(
        &self,
        (s0, raw): (usize, ColumnSums<'_>),
        est: Estimator,
        affine: impl Fn(usize) -> (f64, f64),
        out: CoefMut<'_, T>,
    ) {
        match (self.gamma, self.beta) {
            (Some(g), Some(b)) if self.direct => {
                let affine = |s: usize| (g[s].to_acc(), b[s].to_acc());
                exec::finish_run(s0, raw, est, affine, out);
            }
            (Some(g), None) if self.direct => {
                exec::finish_run(s0, raw, est, |s: usize| (g[s].to_acc(), 0.0), out);
            }
            _ => exec::finish_run(s0, raw, est, affine, out),
        }
    }
}

/// y = x normalized with the given statistics: each group's coefficients with its folded
/// (scale, shift) from `affine` into the scratch's `m/a/b` (sized), then the elementwise
/// pass with the unfolded `params`.
#[inline(always)]
pub(crate) fn normalize_fixed<T: Float>(
    (units, x, out): (&Units, &[T], &mut [T]),
    stats: &[Stat],
    affine: impl Fn(usize) -> (f64, f64),
    params: Params<'_, T>,
    scratch: &mut Scratch<T>,
) {
    for (s, st) in stats.iter().enumerate() {
        let (g, h) = affine(s);
        (scratch.m[s], scratch.a[s], scratch.b[s]) = coef(st.mean, st.rstd * g, h);
    }
    let c = scratch.coef();
    exec::normalize(units, x, c, params, out);
}

/// The end of a stage's forward over `plan`: in train mode the running statistics take the
/// step's `saved.stats` (`stats::train_running`, `n` values per group); the count recorded,
/// the external scale emptied (the caller refills it).
#[inline(always)]
pub(crate) fn record_forward<T: Float>(
    (stage, plan): (&norm_spec::Stage, &Plan),
    (mode, n): (Mode, usize),
    running: Option<&mut Running<'_, T>>,
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
) {
    if mode == Mode::Train {
        train_running(stage, plan, n, &saved.stats, running, &mut scratch.run);
    }
    saved.count = n;
    saved.scale.clear();
}

/// The batch-statistics forward ([`exec::forward`], or for small plain columns
/// `stage::small`, the same operations) with sums shifted where `center`:
/// the statistics into `stats`, the coefficients into the scratch's `m/a/b` (sized), y
/// into `out`.
#[inline(always)]
pub(crate) fn forward_batch<T: Float>(
    (plan, units, x, out): (&Plan, &Units, &[T], &mut [T]),
    (center, params): (bool, Params<'_, T>),
    finish: &Finish<'_, T>,
    stats: &mut [Stat],
    scratch: &mut Scratch<T>,
) {
    let c = CoefMut {
        stat: stats,
        m: &mut scratch.m,
        a: &mut scratch.a,
        b: &mut scratch.b,
    };
    if let Some(cols) = super::small::columns(plan, params) {
        // Small plain columns: the executor's operations without its machinery.
        super::small::forward(cols, (x, out), center, finish, c, &mut scratch.acc.f);
        return;
    }
    let t = FwdIn {
        units,
        x,
        center,
        params,
        finish,
    };
    exec::forward(t, c, &mut scratch.acc, out);
}
