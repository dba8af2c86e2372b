//! The finite set of code paths a declaration runs on (issue 13, item 8).
//!
//! [`classify`] sorts a validated [`Spec`] into a [`PathClass`]: its layout class, the kind
//! of its parameters, centering, the variance estimator, where `eps` enters and whether it
//! keeps running statistics. `#[norm]` classifies at macro time and names the monomorphized
//! path of [`PathClass::mono`] as a type (the runtime's `Mono<LAYOUT, PARAMS, EPS_VAR>`), so
//! the flags that path reads are constants of the generated code; `DynNorm` classifies once,
//! at construction, and maps the same [`MonoKey`] onto the same monomorphized path. Both
//! sides use this one function, so a macro layer and a `DynNorm` of the same spec always run
//! the same code.

use crate::{Affine, EpsMode, ParamAxis, Spec, Stage, Statistic};

/// How the reduced axes of a stage lie in the input (memory order, outer to inner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Kept axes, then reduced axes (layer, instance, RMS norm): one statistics group per
    /// contiguous row.
    Rows = 0,
    /// Reduced axes, then kept axes (BatchNorm1d, channels-last batch norm): the groups lie
    /// along the row.
    Columns = 1,
    /// Reduced, kept, reduced (NCHW batch norm): a group is a set of lines.
    Sandwich = 2,
    /// `groups = g` (group norm): `C` split into groups.
    Grouped = 3,
    /// Any other arrangement, a chain, or a stage with a variant (`ghost`, `renorm`, `tlu`,
    /// `mask`): the generic, plan-interpreting path.
    Generic = 4,
}

/// What indexes the affine parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// No scale or shift.
    None = 0,
    /// γ/β indexed by kept axes only (BatchNorm's per-channel γ): they fold into the
    /// per-group coefficients.
    PerChannel = 1,
    /// γ/β indexed by reduced axes only (LayerNorm's per-feature γ): applied per element.
    PerFeature = 2,
    /// `affine = external`: scale and shift passed to the call.
    External = 3,
    /// Indexed by kept and reduced axes together.
    Mixed = 4,
}

/// The variance estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variance {
    /// Centered, divided by n.
    Biased = 0,
    /// Centered, divided by n − 1.
    Unbiased = 1,
    /// Not centered (`center = false`): the mean square.
    RootMeanSquare = 2,
    /// `statistic = "sum"`: the sum of squares (centered or not, as [`PathClass::center`]).
    SumOfSquares = 3,
}

/// The class of a declaration: the choices its compute path depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathClass {
    /// Where the reduced axes lie.
    pub layout: Layout,
    /// What indexes the parameters.
    pub params: ParamKind,
    /// Whether the mean is subtracted.
    pub center: bool,
    /// The variance estimator.
    pub variance: Variance,
    /// `eps` added to the variance (`true`) or to the standard deviation.
    pub eps_var: bool,
    /// Whether the stage keeps running statistics.
    pub running: bool,
}

/// The key of a monomorphized path: the part of a [`PathClass`] that its code reads, as
/// the const generic arguments of the runtime's
/// `Mono<LAYOUT, PARAMS, EPS_VAR, VARIANCE, CENTER>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MonoKey {
    /// `Layout as u8`: [`Layout::Rows`], [`Layout::Columns`], [`Layout::Sandwich`] or
    /// [`Layout::Grouped`].
    pub layout: u8,
    /// `ParamKind as u8`: [`ParamKind::None`], [`ParamKind::PerChannel`] or
    /// [`ParamKind::PerFeature`].
    pub params: u8,
    /// Where `eps` enters (`true`: added to the variance).
    pub eps_var: bool,
    /// `Variance as u8`: the estimator.
    pub variance: u8,
    /// Whether the mean is subtracted.
    pub center: bool,
}

impl MonoKey {
    /// Whether the specialized eval pass with running statistics (the fixed coefficients of
    /// every group in one loop) covers this key: the rows, columns and sandwich layouts,
    /// without parameters or with per-channel ones. (Whether the stage keeps running
    /// statistics is the call's question: without them, eval measures batch statistics.)
    pub fn fixed_eval(&self) -> bool {
        let layout_ok = self.layout <= Layout::Sandwich as u8;
        let params_ok = self.params <= ParamKind::PerChannel as u8;
        layout_ok && params_ok
    }
}

impl PathClass {
    /// The monomorphized path of this class, or `None` for the generic path.
    ///
    /// Specialized: a one-stage layer without variants in the rows, columns, sandwich or
    /// grouped layout, without parameters or with per-channel or per-feature ones — its
    /// train forward, batch-statistics eval and backward (the stage's arithmetic with the
    /// parameter kind, centering, estimator and eps mode as constants), and, where
    /// [`MonoKey::fixed_eval`] holds, its eval with running statistics. Everything else
    /// (external or mixed parameters, chains, any other layout, `ghost`, `renorm`, `tlu`,
    /// `mask`, Switchable Normalization) runs the generic path.
    pub fn mono(&self) -> Option<MonoKey> {
        let layout_ok = matches!(
            self.layout,
            Layout::Rows | Layout::Columns | Layout::Sandwich | Layout::Grouped
        );
        let params_ok = matches!(
            self.params,
            ParamKind::None | ParamKind::PerChannel | ParamKind::PerFeature
        );
        (layout_ok && params_ok).then_some(MonoKey {
            layout: self.layout as u8,
            params: self.params as u8,
            eps_var: self.eps_var,
            variance: self.variance as u8,
            center: self.center,
        })
    }
}

/// The class of `spec` (a chain, or a stage with a variant — see [`has_variant`] — is
/// [`Layout::Generic`]).
pub fn classify(spec: &Spec) -> PathClass {
    let stage = &spec.stages[0];
    let variance = if stage.statistic == Statistic::Sum {
        Variance::SumOfSquares
    } else if !stage.center {
        Variance::RootMeanSquare
    } else if stage.unbiased {
        Variance::Unbiased
    } else {
        Variance::Biased
    };
    let plain = !spec.chain && spec.stages.len() == 1 && !has_variant(stage);
    let params = param_kind(stage);
    let layout = if !plain || params == ParamKind::Mixed {
        Layout::Generic
    } else {
        layout_of(spec, stage)
    };
    PathClass {
        layout,
        params,
        center: stage.center,
        variance,
        eps_var: stage.eps_mode == EpsMode::Var,
        running: stage.running_stats,
    }
}

/// Whether a stage has a variant that changes its arithmetic (`ghost`, `renorm`, `tlu`,
/// `mask`, Switchable Normalization's alternatives): such a stage runs the generic path.
/// A new variant key adds its test here.
pub fn has_variant(stage: &Stage) -> bool {
    stage.ghost.is_some()
        || stage.renorm.is_some()
        || stage.tlu
        || stage.mask != 0
        || !stage.switch.is_empty()
}

fn param_kind(stage: &Stage) -> ParamKind {
    match &stage.affine {
        Affine::None => ParamKind::None,
        Affine::External => ParamKind::External,
        Affine::Axes(axes) => {
            let reduced = |a: &ParamAxis| match a {
                ParamAxis::Group => false,
                ParamAxis::Input(i) => stage.reduces(*i),
            };
            if axes.iter().all(|a| !reduced(a)) {
                ParamKind::PerChannel
            } else if axes.iter().all(reduced) {
                ParamKind::PerFeature
            } else {
                ParamKind::Mixed
            }
        }
    }
}

/// The layout from the runs of reduced and kept axes (outer to inner).
fn layout_of(spec: &Spec, stage: &Stage) -> Layout {
    if stage.groups.is_some() {
        return Layout::Grouped;
    }
    // The runs of equal "reduced" flags, e.g. [true, false, true] for N,C,H,W over N,H,W.
    let mut runs: Vec<bool> = Vec::new();
    for i in 0..spec.input.len() {
        let r = stage.reduces(i);
        if runs.last() != Some(&r) {
            runs.push(r);
        }
    }
    match runs.as_slice() {
        [false, true] | [true] => Layout::Rows,
        [true, false] => Layout::Columns,
        [true, false, true] => Layout::Sandwich,
        _ => Layout::Generic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str) -> Spec {
        crate::parse_str(src).expect("valid spec")
    }

    #[test]
    fn batch_norm_2d_is_a_sandwich_with_per_channel_parameters() {
        let c = classify(&spec(
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
        ));
        assert_eq!(c.layout, Layout::Sandwich);
        assert_eq!(c.params, ParamKind::PerChannel);
        assert_eq!(c.variance, Variance::Biased);
        assert!(c.center && c.eps_var && c.running);
        let key = c.mono().expect("specialized");
        assert_eq!((key.layout, key.params, key.eps_var), (2, 1, true));
        assert_eq!((key.variance, key.center), (Variance::Biased as u8, true));
        assert!(key.fixed_eval());
    }

    #[test]
    fn layouts_of_the_common_declarations() {
        let bn1d = classify(&spec(r#"input = "N,C", axes = "N", affine"#));
        assert_eq!(bn1d.layout, Layout::Columns);
        let key = bn1d.mono().expect("train and backward are specialized");
        assert_eq!(key.layout, Layout::Columns as u8);
        let ln = classify(&spec(r#"input = "N,T,D", axes = "D", affine = "D""#));
        assert_eq!(
            (ln.layout, ln.params),
            (Layout::Rows, ParamKind::PerFeature)
        );
        assert_eq!(ln.mono().map(|k| k.fixed_eval()), Some(false));
        let gn = classify(&spec(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2"#));
        assert_eq!(gn.layout, Layout::Grouped);
        assert_eq!(gn.mono().map(|k| k.fixed_eval()), Some(false));
        let ext = classify(&spec(r#"input = "N,D", axes = "D", affine = external"#));
        assert_eq!((ext.params, ext.mono()), (ParamKind::External, None));
        let rms = classify(&spec(r#"input = "N,D", axes = "D", center = false"#));
        assert_eq!(rms.variance, Variance::RootMeanSquare);
        let key = rms.mono().expect("specialized");
        assert_eq!(
            (key.variance, key.center),
            (Variance::RootMeanSquare as u8, false)
        );
        let odd = classify(&spec(r#"input = "N,C,H,W", axes = "C,W""#));
        assert_eq!(odd.layout, Layout::Generic);
        let ghost = classify(&spec(
            r#"input = "N,C,H,W", axes = "N,H,W", ghost = 2, affine, running_stats"#,
        ));
        assert_eq!((ghost.layout, ghost.mono()), (Layout::Generic, None));
        let switchable = classify(&spec(
            r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats"#,
        ));
        assert_eq!(
            (switchable.layout, switchable.mono()),
            (Layout::Generic, None)
        );
        let inst = classify(&spec(
            r#"input = "N,C,H,W", axes = "H,W", affine, running_stats"#,
        ));
        assert_eq!(inst.mono().map(|k| k.layout), Some(Layout::Rows as u8));
    }
}
