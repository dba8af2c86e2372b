//! Monomorphized paths (issue 13, item 8): code specialized to a declaration's class.
//!
//! `norm_spec::path::classify` sorts a spec into a finite set of classes; the classes
//! with specialized code have a [`MonoKey`](norm_spec::path::MonoKey), named here as the type
//! [`Mono<LAYOUT, PARAMS, EPS_VAR, VARIANCE, CENTER>`](Mono). `#[norm]` writes that type into
//! the generated layer (the flags are constants of the generated code: the branches on them
//! fold away in the monomorphized code); [`DynNorm`](crate::DynNorm) maps its spec once, at
//! construction, onto a [`DynPath`], whose calls dispatch on the same key to the same
//! monomorphized functions. A macro layer and a `DynNorm` of the same spec therefore run the
//! same code, and the specialized code computes exactly the arithmetic of the generic path
//! (same coefficients, same kernels, same elementwise formula), so results do not depend on
//! which path ran.
//!
//! Specialized (a one-stage layer without variants, called without a collective, in f32 or
//! f64):
//! - **train forward, batch-statistics eval and backward** ([`train`]) for the rows,
//!   columns, sandwich and grouped layouts, without parameters or with per-channel or
//!   per-feature ones: the stage's arithmetic with the parameter kind, centering,
//!   estimator and eps mode as const generics, inside the generic layer shell (checks, plan,
//!   `Saved`: `layer::forward_with` / `layer::backward_with`);
//! - **eval with running statistics** (`forward_eval_into`) in the rows, columns or sandwich
//!   layout without parameters or with per-channel ones, on an input of at most [`SMALL`]
//!   values in standard layout: the per-call work is sizes only ((outer, kept, inner) from
//!   the shape and the class, the state's shapes compared against them, the coefficients of
//!   every group, one tight loop over the input on the calling thread, no `Plan`). Anything
//!   unexpected (a wrong shape, a parameter layout the sizes do not describe) goes to the
//!   checked pass (validation and the plan as on the generic path, hence its errors), which
//!   runs the same loop.
//!
//! Generic (the plan-interpreting stage code of [`crate::stage`]): chains, `ghost`,
//! `renorm`, `tlu`, `mask`, Switchable Normalization, `affine = external`, parameters indexed
//! by kept and reduced axes together, any other layout, synchronized (`*_sync`) calls, half
//! precision (which runs the f32 entry points), and `stats`.

#[cfg(test)]
mod tests;
mod train;

use ndarray::{ArrayView, ArrayViewMut, Dimension, IxDyn};
use norm_spec::path::{Layout, MonoKey, ParamKind, Variance};

use crate::check::Purpose;
use crate::collective::Collective;
use crate::kernels::coef;
use crate::kernels::exec::{self, Params, Units};
use crate::kernels::isa::multiversion;
use crate::layer::{self, BackwardArgs, StageBackward, StageForward};
use crate::plan::Plan;
use crate::stage::small::affine_lines;
use crate::state::{values, LayerInfo, StageState};
use crate::types::{Mode, Saved};
use crate::{Float, NormError};

/// A code path: the generic one ([`Generic`]) or a monomorphized one ([`Mono`]).
pub trait Path {
    /// Whether this is a specialized path (else every call runs the generic one).
    const SPECIALIZED: bool;
    /// `norm_spec::path::Layout as u8`.
    const LAYOUT: u8;
    /// `norm_spec::path::ParamKind as u8`.
    const PARAMS: u8;
    /// `eps` is added to the variance (else to the standard deviation).
    const EPS_VAR: bool;

    /// The forward pass on this path (the arguments of `layer::forward_into`, `io` as
    /// `(x, out)`).
    fn forward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &mut [StageState<'_, T>],
        io: (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
        mode: Mode,
        saved: Option<&mut Saved<T>>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError>;

    /// The backward pass on this path.
    fn backward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &[StageState<'_, T>],
        args: BackwardArgs<'_, T, D>,
    ) -> Result<(), NormError>;
}

/// The generic path: the plan interpreted on every call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Generic;

impl Path for Generic {
    const SPECIALIZED: bool = false;
    const LAYOUT: u8 = Layout::Generic as u8;
    const PARAMS: u8 = ParamKind::Mixed as u8;
    const EPS_VAR: bool = true;

    fn forward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &mut [StageState<'_, T>],
        (x, out): (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
        mode: Mode,
        saved: Option<&mut Saved<T>>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        layer::forward_into(info, states, x, mode, out, saved, sync)
    }

    fn backward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &[StageState<'_, T>],
        args: BackwardArgs<'_, T, D>,
    ) -> Result<(), NormError> {
        layer::backward_into(info, states, args)
    }
}

/// The monomorphized path of the class with this [`MonoKey`]: `LAYOUT` is
/// `Layout as u8`, `PARAMS` is `ParamKind as u8`, `VARIANCE` is `Variance as u8`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mono<
    const LAYOUT: u8,
    const PARAMS: u8,
    const EPS_VAR: bool,
    const VARIANCE: u8,
    const CENTER: bool,
>;

impl<
        const LAYOUT: u8,
        const PARAMS: u8,
        const EPS_VAR: bool,
        const VARIANCE: u8,
        const CENTER: bool,
    > Path for Mono<LAYOUT, PARAMS, EPS_VAR, VARIANCE, CENTER>
{
    const SPECIALIZED: bool = true;
    const LAYOUT: u8 = LAYOUT;
    const PARAMS: u8 = PARAMS;
    const EPS_VAR: bool = EPS_VAR;

    fn forward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &mut [StageState<'_, T>],
        (x, mut out): (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
        mode: Mode,
        saved: Option<&mut Saved<T>>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        if !takes_stage_path::<T>(info, sync.is_some()) {
            return layer::forward_into(info, states, x, mode, out, saved, sync);
        }
        let key = MonoKey {
            layout: LAYOUT,
            params: PARAMS,
            eps_var: EPS_VAR,
            variance: VARIANCE,
            center: CENTER,
        };
        if key.fixed_eval() && fixed_eval_call(info, mode, saved.is_none()) {
            // The eval pass reads the layout, the parameter kind and the eps mode only: the
            // path type with those (as `DynPath` names it) is the instance the crate ships.
            let eval = fixed_eval::<Mono<LAYOUT, PARAMS, EPS_VAR, 0, true>, T, D>;
            if let Some(r) = eval(info, states, &x, &mut out) {
                return r;
            }
        }
        let run: StageForward<T> = train::forward::<T, PARAMS, EPS_VAR, VARIANCE, CENTER>;
        layer::forward_with(info, states, (x, out), mode, saved, sync, run)
    }

    fn backward_into<T: Float, D: Dimension>(
        info: &LayerInfo<'_>,
        states: &[StageState<'_, T>],
        args: BackwardArgs<'_, T, D>,
    ) -> Result<(), NormError> {
        if !takes_stage_path::<T>(info, args.sync.is_some()) {
            return layer::backward_into(info, states, args);
        }
        let run: StageBackward<T> = train::backward::<T, PARAMS, EPS_VAR, VARIANCE, CENTER>;
        layer::backward_with(info, states, args, run)
    }
}

/// Whether a call of a layer whose class has a monomorphized path runs its stage code: a
/// one-stage layer without variants (the class's own test, repeated so that a spec that
/// does not match its path's class can never take it), without a collective, in a type the
/// stage code computes in (half precision runs the f32 entry points).
fn takes_stage_path<T: Float>(info: &LayerInfo<'_>, synced: bool) -> bool {
    let spec = info.spec;
    !synced
        && !T::WIDE
        && !spec.chain
        && spec.stages.len() == 1
        && !norm_spec::path::has_variant(&spec.stages[0])
        && !matches!(spec.stages[0].affine, norm_spec::Affine::External)
}

/// Whether a call may take the fixed-coefficient eval pass: eval with running statistics,
/// nothing saved for a backward.
fn fixed_eval_call(info: &LayerInfo<'_>, mode: Mode, unsaved: bool) -> bool {
    mode == Mode::Eval && unsaved && info.spec.stages[0].running_stats
}

/// The fixed-coefficient eval pass of path `P` on a small standard-layout input, or `None`
/// when the call is not one (the caller runs the stage path).
fn fixed_eval<P: Path, T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    x: &ArrayView<'_, T, D>,
    out: &mut ArrayViewMut<'_, T, D>,
) -> Option<Result<(), NormError>> {
    if x.len() > SMALL || out.shape() != x.shape() {
        return None;
    }
    let (xs, ys) = (x.as_slice()?, out.as_slice_mut()?);
    if let Some(sizes) = sizes_only::<P, T>(info, states, x.shape()) {
        sized_forward::<P, T>(info, &states[0], sizes, xs, ys);
        return Some(Ok(()));
    }
    Some(fixed_forward::<P, T>(info, states, x.shape(), xs, ys))
}

/// The most values a specialized eval pass runs on (on the calling thread); larger inputs
/// take the stage path, whose fixed cost no longer matters and which splits them into tasks.
pub const SMALL: usize = 1 << 15;

/// The forward entry point of path `P` (the generated layers' `forward_*`). The rank is
/// erased here: everything below runs on dynamic-rank views, in the instances this crate
/// compiles once per element type (`crate::instances`).
#[inline]
pub fn forward_into<P: Path, T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    x: ArrayView<'_, T, D>,
    mode: Mode,
    out: ArrayViewMut<'_, T, D>,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn Collective>,
) -> Result<(), NormError> {
    let io = (x.into_dyn(), out.into_dyn());
    P::forward_into::<T, IxDyn>(info, states, io, mode, saved, sync)
}

/// The backward entry point of path `P` (the generated layers' `backward_into`); the rank
/// is erased as in [`forward_into`].
#[inline]
pub fn backward_into<P: Path, T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    args: BackwardArgs<'_, T, D>,
) -> Result<(), NormError> {
    P::backward_into::<T, IxDyn>(info, states, args.into_dyn())
}

/// The enum of the monomorphized paths a [`DynNorm`](crate::DynNorm) maps its spec onto,
/// once, at construction (the same set `#[norm]` names as types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DynPath {
    /// No specialized path for this class.
    Generic,
    /// The monomorphized path with this key.
    Mono(MonoKey),
    /// The generic path for a spec whose class has a monomorphized one (tests: the
    /// reference the monomorphized path is compared with).
    #[cfg(test)]
    Forced,
}

/// The monomorphized stage functions of `key` (the same instances `Mono<…>` calls), or
/// `None` for a combination classify never produces.
fn stage_fns<T: Float>(key: MonoKey) -> Option<(StageForward<T>, StageBackward<T>)> {
    const N: u8 = ParamKind::None as u8;
    const C: u8 = ParamKind::PerChannel as u8;
    const F: u8 = ParamKind::PerFeature as u8;
    const B: u8 = Variance::Biased as u8;
    const U: u8 = Variance::Unbiased as u8;
    const R: u8 = Variance::RootMeanSquare as u8;
    const S: u8 = Variance::SumOfSquares as u8;
    macro_rules! fns {
        ($(($p:ident, $e:literal, $v:ident, $c:literal)),* $(,)?) => {
            match (key.params, key.eps_var, key.variance, key.center) {
                $(($p, $e, $v, $c) => Some((
                    train::forward::<T, $p, $e, $v, $c> as StageForward<T>,
                    train::backward::<T, $p, $e, $v, $c> as StageBackward<T>,
                )),)*
                _ => None,
            }
        };
    }
    macro_rules! per_params {
        ($($p:ident),*) => {
            fns!($(
                ($p, true, B, true), ($p, false, B, true),
                ($p, true, U, true), ($p, false, U, true),
                ($p, true, R, false), ($p, false, R, false),
                ($p, true, S, true), ($p, false, S, true),
                ($p, true, S, false), ($p, false, S, false),
            )*)
        };
    }
    per_params!(N, C, F)
}

impl DynPath {
    /// The path of `spec`.
    pub(crate) fn of(spec: &norm_spec::Spec) -> DynPath {
        match norm_spec::path::classify(spec).mono() {
            Some(key) => DynPath::Mono(key),
            None => DynPath::Generic,
        }
    }

    /// The key, when a call of this layer runs a monomorphized path.
    fn key<T: Float>(self, info: &LayerInfo<'_>, synced: bool) -> Option<MonoKey> {
        match self {
            DynPath::Mono(key) if takes_stage_path::<T>(info, synced) => Some(key),
            _ => None,
        }
    }

    /// The forward pass on this path, on `(x, out)`.
    pub(crate) fn forward_into<T: Float, D: Dimension>(
        self,
        info: &LayerInfo<'_>,
        states: &mut [StageState<'_, T>],
        (x, mut out): (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
        mode: Mode,
        saved: Option<&mut Saved<T>>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        let Some(key) = self.key::<T>(info, sync.is_some()) else {
            return layer::forward_into(info, states, x, mode, out, saved, sync);
        };
        if key.fixed_eval() && fixed_eval_call(info, mode, saved.is_none()) {
            const ROWS: u8 = Layout::Rows as u8;
            const COLUMNS: u8 = Layout::Columns as u8;
            const SANDWICH: u8 = Layout::Sandwich as u8;
            const NONE: u8 = ParamKind::None as u8;
            const CHANNEL: u8 = ParamKind::PerChannel as u8;
            // (The eval pass reads the layout, the parameter kind and the eps mode only.)
            macro_rules! paths {
                ($(($l:ident, $p:ident, $e:literal)),* $(,)?) => {
                    match (key.layout, key.params, key.eps_var) {
                        $(($l, $p, $e) => fixed_eval::<Mono<$l, $p, $e, 0, true>, T, D>(
                            info, states, &x, &mut out,
                        ),)*
                        _ => None,
                    }
                };
            }
            let r = paths!(
                (ROWS, NONE, true),
                (ROWS, NONE, false),
                (ROWS, CHANNEL, true),
                (ROWS, CHANNEL, false),
                (COLUMNS, NONE, true),
                (COLUMNS, NONE, false),
                (COLUMNS, CHANNEL, true),
                (COLUMNS, CHANNEL, false),
                (SANDWICH, NONE, true),
                (SANDWICH, NONE, false),
                (SANDWICH, CHANNEL, true),
                (SANDWICH, CHANNEL, false),
            );
            if let Some(r) = r {
                return r;
            }
        }
        match stage_fns::<T>(key) {
            Some((run, _)) => layer::forward_with(info, states, (x, out), mode, saved, sync, run),
            None => layer::forward_into(info, states, x, mode, out, saved, sync),
        }
    }

    /// The backward pass on this path.
    pub(crate) fn backward_into<T: Float, D: Dimension>(
        self,
        info: &LayerInfo<'_>,
        states: &[StageState<'_, T>],
        args: BackwardArgs<'_, T, D>,
    ) -> Result<(), NormError> {
        match self
            .key::<T>(info, args.sync.is_some())
            .and_then(stage_fns::<T>)
        {
            Some((_, run)) => layer::backward_with(info, states, args, run),
            None => layer::backward_into(info, states, args),
        }
    }
}

/// Eval with running statistics on a standard-layout input: the checks and the plan of
/// the generic path, the coefficients (m, a, b) per group as `stage::forward_plain`
/// computes them, then y = (x − m)·a + b in one loop.
fn fixed_forward<P: Path, T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    xs: &[T],
    ys: &mut [T],
) -> Result<(), NormError> {
    let purpose = (Purpose::Forward(Mode::Eval), false);
    layer::checked(info, states, shape, purpose, |states, plans, scratch| {
        let (stage, st, plan) = (&info.spec.stages[0], &states[0], &plans[0]);
        let Some(running) = st.running.as_ref() else {
            // Checked: a stage with running statistics has them (unreachable).
            return Err(NormError::Unsupported {
                layer: info.name.to_string(),
                reason: "running statistics missing from the layer state".to_string(),
            });
        };
        let (rm, rv) = (running.mean(), running.var());
        let (rm, rv) = (values(&rm), values(&rv));
        let gamma = st.gamma.as_ref().map(values);
        let beta = st.beta.as_ref().map(values);
        let (gs, bs) = (gamma.as_deref(), beta.as_deref());
        let params = running_params::<P, T>(gs, bs);
        let (m, a, b) = scratch.coef_for(plan.groups);
        plan.for_each_group(|s, p, r| {
            let at = RunningCoef { r, p };
            (m[s], a[s], b[s]) = at.coef((&rm, &rv), params, (stage.eps, P::EPS_VAR));
        });
        let c = scratch.coef();
        match sandwich(plan) {
            Some((_, k, 1)) if P::LAYOUT != Layout::Rows as u8 => columns(xs, ys, k, c),
            Some((_, k, l)) if P::LAYOUT != Layout::Columns as u8 => lines(xs, ys, (k, l), c),
            _ => {
                let none = Params {
                    gamma: None,
                    beta: None,
                };
                exec::normalize(&Units::new(plan), xs, c, none, ys);
            }
        }
        Ok(())
    })
}

/// What the sizes-only pass needs: (outer reduced, kept, inner reduced) sizes and the
/// number of distinct parameter / running-statistics entries (group `s` reads entry
/// `s % entries`).
#[derive(Clone, Copy, Debug)]
struct Sizes {
    outer: usize,
    kept: usize,
    inner: usize,
    entries: usize,
}

/// The sizes of the call when everything the generic checks would look at is as the
/// declaration expects (rank, fixed sizes, γ/β and running statistics shaped by the kept
/// axes, or by the kept axes without a leading `N`), computed from the shape alone;
/// `None` sends the call to the checked path, which gives the generic path's errors.
fn sizes_only<P: Path, T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
) -> Option<Sizes> {
    let spec = info.spec;
    let (stage, st) = (spec.stages.first()?, states.first()?);
    if spec.stages.len() != 1 || states.len() != 1 || shape.len() != spec.input.len() {
        return None;
    }
    let (mut outer, mut kept, mut inner, mut entries) = (1usize, 1usize, 1usize, 1usize);
    // Phase 0: leading reduced axes, 1: kept axes, 2: trailing reduced axes.
    let mut phase = 0;
    let mut running_rank = 0;
    for (i, (axis, &n)) in spec.input.iter().zip(shape).enumerate() {
        if axis.size.is_some_and(|f| f != n) {
            return None;
        }
        let reduced = stage.reduces(i);
        phase = match (phase, reduced) {
            (0, true) => 0,
            (0 | 1, false) => 1,
            (1 | 2, true) => 2,
            _ => return None,
        };
        match phase {
            0 => outer = outer.checked_mul(n)?,
            2 => inner = inner.checked_mul(n)?,
            _ => {
                kept = kept.checked_mul(n)?;
                // The running statistics (and per-channel γ/β) skip a leading kept `N`.
                if !(Some(i) == spec.batch && running_rank == 0) {
                    entries = entries.checked_mul(n)?;
                    running_rank += 1;
                }
            }
        }
    }
    outer.checked_mul(kept)?.checked_mul(inner)?;
    // The expected shape of γ, β and the running statistics: the kept axes after `N`.
    let expected = |a: &ndarray::ArrayViewD<'_, T>| {
        let dims = a.shape();
        dims.len() == running_rank
            && dims.iter().product::<usize>() == entries
            && spec
                .input
                .iter()
                .zip(shape)
                .enumerate()
                .filter(|&(i, _)| !stage.reduces(i))
                .skip(kept_skip(spec, stage))
                .zip(dims)
                .all(|((_, (_, &n)), &d)| n == d)
    };
    let running = st.running.as_ref()?;
    if !(expected(&running.mean()) && expected(&running.var())) {
        return None;
    }
    let per_channel = P::PARAMS == ParamKind::PerChannel as u8;
    if per_channel {
        // γ (and β) indexed exactly by the running statistics' axes.
        let param_axes = norm_spec::shapes::param_axes(stage)?;
        let same_axes = param_axes.len() == running_rank
            && param_axes.iter().all(|a| match a {
                norm_spec::ParamAxis::Input(i) => {
                    let skipped = Some(*i) == spec.batch && kept_skip(spec, stage) == 1;
                    !stage.reduces(*i) && !skipped
                }
                norm_spec::ParamAxis::Group => false,
            });
        if !same_axes || !st.gamma.as_ref().is_some_and(&expected) {
            return None;
        }
        if stage.bias != st.beta.as_ref().is_some_and(&expected) {
            return None;
        }
    }
    Some(Sizes {
        outer,
        kept,
        inner,
        entries,
    })
}

/// 1 when the first kept axis is `N` (the running statistics do not index it), else 0.
fn kept_skip(spec: &norm_spec::Spec, stage: &norm_spec::Stage) -> usize {
    let first_kept = (0..spec.input.len()).find(|&i| !stage.reduces(i));
    usize::from(first_kept.is_some() && first_kept == spec.batch)
}

/// The sizes-only pass: the coefficients of every group (entry `s % entries`) as
/// [`fixed_forward`] computes them, then y = (x − m)·a + b.
fn sized_forward<P: Path, T: Float>(
    info: &LayerInfo<'_>,
    st: &StageState<'_, T>,
    sz: Sizes,
    xs: &[T],
    ys: &mut [T],
) {
    let stage = &info.spec.stages[0];
    let Some(running) = st.running.as_ref() else {
        return;
    };
    let (rm, rv) = (running.mean(), running.var());
    let (rm, rv) = (values(&rm), values(&rv));
    let gamma = st.gamma.as_ref().map(values);
    let beta = st.beta.as_ref().map(values);
    let (gs, bs) = (gamma.as_deref(), beta.as_deref());
    debug_assert_eq!(xs.len(), sz.outer * sz.kept * sz.inner);
    crate::scratch::with_scratch(|scratch: &mut crate::scratch::Scratch<T>| {
        let (params, eps) = (running_params::<P, T>(gs, bs), (stage.eps, P::EPS_VAR));
        let (m, a, b) = scratch.coef_for(sz.kept);
        if sz.entries == sz.kept {
            // Entry s for group s: `RunningCoef::coef` of every group, in vectors.
            let k = sz.kept;
            let out = (&mut m[..k], &mut a[..k], &mut b[..k]);
            running_coefs((&rm, &rv), params, eps, out);
        } else {
            for s in 0..sz.kept {
                let r = s % sz.entries;
                let at = RunningCoef { r, p: r };
                (m[s], a[s], b[s]) = at.coef((&rm, &rv), params, eps);
            }
        }
        let c = scratch.coef();
        if sz.inner == 1 && P::LAYOUT != Layout::Rows as u8 {
            columns(xs, ys, sz.kept, c);
        } else {
            lines(xs, ys, (sz.kept, sz.inner), c);
        }
    });
}

/// The plan as (outer reduced, kept, inner reduced) sizes over a standard-layout input,
/// the statistics indexed by the kept index: `None` if it has another form.
fn sandwich(plan: &Plan) -> Option<(usize, usize, usize)> {
    let dims = &plan.dims[..plan.ndims];
    let (mut o, mut k, mut l) = (1, 1, 1);
    let mut at = 0;
    if let Some(d) = dims.get(at).filter(|d| d.ss == 0 && dims.len() > 1) {
        o = d.size;
        at += 1;
    }
    if let Some(d) = dims.get(at).filter(|d| d.ss == 1) {
        k = d.size;
        at += 1;
    }
    if let Some(d) = dims.get(at).filter(|d| d.ss == 0) {
        l = d.size;
        at += 1;
    }
    let standard = o.checked_mul(k)?.checked_mul(l)? == plan.numel;
    (at == dims.len() && standard && k == plan.groups).then_some((o, k, l))
}

/// Coefficient arrays (m, a, b), one per group.
type Coef<'a, T> = (&'a [T], &'a [T], &'a [T]);

multiversion! {
    /// y = (x − m)·a + b, group `i % k` for line `i` of `l` values (rows, sandwich).
    /// Compiled per ISA level (the same operations at each).
    fn lines<T: Float>(xs: &[T], ys: &mut [T], kl: (usize, usize), c: Coef<'_, T>) {
        let ((k, l), (m, a, b)) = (kl, c);
        if k == 0 || l == 0 {
            return;
        }
        for (xo, yo) in xs.chunks_exact(k * l).zip(ys.chunks_exact_mut(k * l)) {
            let it = xo.chunks_exact(l).zip(yo.chunks_exact_mut(l));
            for ((xl, yl), ((&m, &a), &b)) in it.zip(m.iter().zip(a).zip(b)) {
                for (y, &v) in yl.iter_mut().zip(xl) {
                    *y = (v - m) * a + b;
                }
            }
        }
    }
}

/// y = (x − m)·a + b with the `k` groups along the row (columns): the small column
/// forward's pass (`stage::small::affine_lines`).
#[inline(always)]
fn columns<T: Float>(xs: &[T], ys: &mut [T], k: usize, (m, a, b): Coef<'_, T>) {
    affine_lines(xs, ys, &m[..k], &a[..k], &b[..k]);
}

/// Where a group's coefficients come from in an eval with running statistics: the entry `r`
/// of the running mean and variance, the entry `p` of γ/β.
#[derive(Clone, Copy)]
struct RunningCoef {
    r: usize,
    p: usize,
}

impl RunningCoef {
    /// The group's coefficients (m, a, b): 1/σ of the running variance (as `stats::rstd`;
    /// `eps` = (eps, whether it is added to the variance)), γ/β folded in where given (as
    /// `stage::forward_plain`'s fixed statistics and folded affine). The one body of every
    /// eval coefficient: [`fixed_forward`], [`sized_forward`] and, in vectors, [`running_coefs`].
    #[inline(always)]
    fn coef<T: Float>(
        self,
        (rm, rv): (&[T], &[T]),
        (gs, bs): (Option<&[T]>, Option<&[T]>),
        (eps, eps_var): (f64, bool),
    ) -> (T, T, T) {
        let RunningCoef { r, p } = self;
        let (mean, var) = (rm[r].to_acc(), rv[r].to_acc());
        let rstd = if eps_var {
            1.0 / (var + eps).sqrt()
        } else {
            1.0 / (var.sqrt() + eps)
        };
        let (g, h) = match gs {
            Some(g) => (g[p].to_acc(), bs.map_or(0.0, |bt| bt[p].to_acc())),
            None => (1.0, 0.0),
        };
        coef(mean, rstd * g, h)
    }
}

/// γ/β as [`RunningCoef::coef`] takes them on path `P`: where they fold per channel (other
/// parameters do not reach the eval pass), else γ = 1, β = 0.
#[inline(always)]
fn running_params<'a, P: Path, T>(
    gs: Option<&'a [T]>,
    bs: Option<&'a [T]>,
) -> (Option<&'a [T]>, Option<&'a [T]>) {
    (gs.filter(|_| P::PARAMS == ParamKind::PerChannel as u8), bs)
}

multiversion! {
    /// The coefficients (m, a, b) of every group `s < m.len()` from entry `s` of the running
    /// statistics and of γ/β (given where they fold per channel): [`RunningCoef::coef`]
    /// with `r = p = s`, compiled per ISA level (a loop the compiler vectorizes). `eps` =
    /// (eps, whether it is added to the variance).
    fn running_coefs<T: Float>(
        run: (&[T], &[T]),
        params: (Option<&[T]>, Option<&[T]>),
        eps: (f64, bool),
        out: (&mut [T], &mut [T], &mut [T]),
    ) {
        let ((rm, rv), (m, a, b)) = (run, out);
        let k = m.len();
        let (rm, rv, a, b) = (&rm[..k], &rv[..k], &mut a[..k], &mut b[..k]);
        for s in 0..k {
            (m[s], a[s], b[s]) = RunningCoef { r: s, p: s }.coef((rm, rv), params, eps);
        }
    }
}
