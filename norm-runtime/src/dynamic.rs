//! Layers configured at run time: [`NormSpec`] (the same parser and validator as the
//! `#[norm]` macro) and [`DynNorm`] (the same entry points as generated layers).

use std::fmt;
use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use norm_spec::{shapes, Affine, Spec, MAX_STAGES};

use crate::collective::Collective;
use crate::kernels::alloc;
use crate::layer::{self, BackwardArgs};
use crate::path::DynPath;
use crate::sizes;
use crate::state::{LayerInfo, Running, StageState};
use crate::types::{ChainGrads, Grads, Mode, Moments, Saved, StageGrads};
use crate::{Float, NormError};

/// One error of a configuration: the same message the `#[norm]` macro gives, and the byte
/// range of the offending text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecIssue {
    /// What is wrong and what would be valid.
    pub message: String,
    /// Byte range in the parsed text.
    pub span: Range<usize>,
}

/// Every error of a configuration text (all of them, not only the first).
///
/// The errors come in the order the validator reports them, which is also the order of the
/// `#[norm]` compile errors: syntax and single-key errors first, then the rules that relate
/// several keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The errors, in the validator's order (see the type's docs).
    pub errors: Vec<SpecIssue>,
    source: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, e) in self.errors.iter().enumerate() {
            if k > 0 {
                writeln!(f)?;
            }
            let at = self.source.get(e.span.clone()).unwrap_or("");
            write!(
                f,
                "{} (at {}..{}: `{at}`)",
                e.message, e.span.start, e.span.end
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// A validated layer configuration, parsed at run time.
///
/// ```
/// use norm_runtime::NormSpec;
/// let spec = NormSpec::parse(r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#)?;
/// assert!(NormSpec::parse(r#"axes = "C,H,X""#).is_err());
/// # Ok::<(), norm_runtime::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NormSpec {
    spec: Spec,
}

impl NormSpec {
    /// Parses and validates a configuration written with the attribute's syntax. Rejects
    /// what `#[norm(...)]` rejects, with the same messages.
    pub fn parse(src: &str) -> Result<NormSpec, SpecError> {
        norm_spec::parse_str(src)
            .map(|spec| NormSpec { spec })
            .map_err(|errors| SpecError {
                errors: errors
                    .into_iter()
                    .map(|e| SpecIssue {
                        message: e.message,
                        span: e.span,
                    })
                    .collect(),
                source: src.to_string(),
            })
    }

    /// The validated configuration.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }
}

impl fmt::Display for NormSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec.fmt(f)
    }
}

/// The parameters and running statistics of one stage of a [`DynNorm`].
#[derive(Clone, Debug, PartialEq)]
pub struct StageParams<T> {
    /// `gamma`, shaped by the affine axes (`affine` with axes).
    pub gamma: Option<ArrayD<T>>,
    /// `beta`, shaped by the affine axes (`affine` with axes and `bias`).
    pub beta: Option<ArrayD<T>>,
    /// `running_mean`, shaped by the kept axes minus `N` (`running_stats`).
    pub running_mean: Option<ArrayD<T>>,
    /// `running_var` (`running_stats`).
    pub running_var: Option<ArrayD<T>>,
    /// Number of training batches seen (`running_stats`).
    pub num_batches_tracked: u64,
    /// The TLU threshold `tau`, shaped like `gamma` (`tlu`); starts at 0.
    pub tau: Option<ArrayD<T>>,
    /// Batch Renormalization's `rmax` (`renorm`): r is clamped to [1/rmax, rmax]; starts at
    /// the declared value, and a training loop may ramp it.
    pub rmax: Option<f64>,
    /// Batch Renormalization's `dmax` (`renorm`): d is clamped to [−dmax, dmax].
    pub dmax: Option<f64>,
    /// Switchable Normalization's logits of the means' mixture, one per alternative of
    /// `axes` (`axes = "H,W" | "C,H,W"`); start at 0 (equal weights).
    pub mean_weight: Option<ArrayD<T>>,
    /// Switchable Normalization's logits of the variances' mixture; start at 0.
    pub var_weight: Option<ArrayD<T>>,
}

impl<T: Float> StageParams<T> {
    fn state<'s>(
        &'s self,
        external: Option<(ArrayViewD<'s, T>, ArrayViewD<'s, T>)>,
    ) -> StageState<'s, T> {
        StageState {
            gamma: self.gamma.as_ref().map(|a| a.view()),
            beta: self.beta.as_ref().map(|a| a.view()),
            external,
            running: match (&self.running_mean, &self.running_var) {
                (Some(m), Some(v)) => Some(Running::View {
                    mean: m.view(),
                    var: v.view(),
                }),
                _ => None,
            },
            tau: self.tau.as_ref().map(|a| a.view()),
            renorm: self.rmax.zip(self.dmax),
            switch: self
                .mean_weight
                .as_ref()
                .zip(self.var_weight.as_ref())
                .map(|(m, v)| (m.view(), v.view())),
        }
    }

    fn state_mut<'s>(
        &'s mut self,
        external: Option<(ArrayViewD<'s, T>, ArrayViewD<'s, T>)>,
    ) -> StageState<'s, T> {
        StageState {
            gamma: self.gamma.as_ref().map(|a| a.view()),
            beta: self.beta.as_ref().map(|a| a.view()),
            external,
            running: match (&mut self.running_mean, &mut self.running_var) {
                (Some(m), Some(v)) => Some(Running::Mut {
                    mean: m.view_mut(),
                    var: v.view_mut(),
                    count: &mut self.num_batches_tracked,
                }),
                _ => None,
            },
            tau: self.tau.as_ref().map(|a| a.view()),
            renorm: self.rmax.zip(self.dmax),
            switch: self
                .mean_weight
                .as_ref()
                .zip(self.var_weight.as_ref())
                .map(|(m, v)| (m.view(), v.view())),
        }
    }
}

/// A normalization layer configured at run time.
///
/// It runs the same kernels through the same entry points as a `#[norm]` layer with the
/// same spec, so the two give bit-identical results.
///
/// ```
/// use ndarray::Array4;
/// use norm_runtime::{DynNorm, Mode, NormSpec};
/// let spec = NormSpec::parse(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#)?;
/// let mut layer = DynNorm::<f32>::new(&spec, &[("C", 4)])?;
/// let x = Array4::<f32>::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| (n + c * h + w) as f32);
/// let (y, saved) = layer.forward(x.view().into_dyn(), Mode::Train)?;
/// let grads = layer.backward(x.view().into_dyn(), y.view(), &saved)?;
/// assert_eq!(grads.dx.shape(), x.shape());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct DynNorm<T> {
    spec: NormSpec,
    name: String,
    fingerprint: u64,
    stages: Vec<StageParams<T>>,
    /// The monomorphized path of the spec, chosen once here (`crate::path`).
    path: DynPath,
}

impl<T: Float> DynNorm<T> {
    /// A layer for `spec`, with the size of every axis that sizes a parameter or a running
    /// statistic (e.g. `&[("C", 256)]`): γ = 1, β = 0, running mean 0, running variance 1.
    pub fn new(spec: &NormSpec, sizes: &[(&str, usize)]) -> Result<Self, NormError> {
        let s = &spec.spec;
        let name = "DynNorm".to_string();
        let err = |reason: String| NormError::Size {
            layer: name.clone(),
            reason,
        };
        let mut known: Vec<Option<usize>> = s.input.iter().map(|a| a.size).collect();
        for (k, &(axis, _)) in sizes.iter().enumerate() {
            if sizes[..k].iter().any(|&(other, _)| other == axis) {
                return Err(err(format!("the size of axis `{axis}` is given twice")));
            }
        }
        for &(axis, n) in sizes {
            let Some(i) = s.input.iter().position(|a| a.name == axis) else {
                let names: Vec<&str> = s.input.iter().map(|a| a.name.as_ref()).collect();
                return Err(err(format!(
                    "no axis `{axis}` in the input; it has {}",
                    names.join(", ")
                )));
            };
            match known[i] {
                Some(m) if m != n && s.input[i].size.is_some() => {
                    return Err(err(format!(
                        "axis `{axis}` is fixed to {m} in `input`, got {n}"
                    )))
                }
                _ => known[i] = Some(n),
            }
        }
        for i in shapes::ctor_args(s) {
            if known[i].is_none() {
                return Err(err(format!(
                    "missing the size of axis `{}` (it sizes a parameter or running statistic)",
                    s.input[i].name
                )));
            }
        }
        let dims: Vec<usize> = known.iter().map(|k| k.unwrap_or(0)).collect();
        let mut stages = Vec::new();
        for stage in s.stages.iter() {
            if let (Some(g), Some(c)) = (stage.groups, s.channel) {
                if known[c].is_some_and(|n| !n.is_multiple_of(g)) {
                    return Err(NormError::GroupsDivide {
                        layer: name.clone(),
                        channels: dims[c],
                        groups: g,
                    });
                }
            }
            let shape_of = |axes: &[norm_spec::ParamAxis]| -> Vec<usize> {
                axes.iter()
                    .map(|&a| shapes::axis_size(stage, a, &dims))
                    .collect()
            };
            let params = shapes::param_axes(stage).map(&shape_of);
            let running = shapes::running_axes(s, stage).map(|a| shape_of(&a));
            let switch = (!stage.switch.is_empty()).then(|| vec![stage.switch.len()]);
            // Sizes come from the caller: every product is checked and every allocation
            // fallible, so an absurd size is a `NormError::Size`, never a panic or an abort.
            let make = |shape: Option<&Vec<usize>>, value: T, what: &str| {
                shape
                    .map(|p| sizes::filled(p, value, what).map_err(&err))
                    .transpose()
            };
            stages.push(StageParams {
                gamma: make(params.as_ref(), T::one(), "gamma")?,
                beta: make(params.as_ref().filter(|_| stage.bias), T::zero(), "beta")?,
                running_mean: make(running.as_ref(), T::zero(), "running_mean")?,
                running_var: make(running.as_ref(), T::one(), "running_var")?,
                num_batches_tracked: 0,
                tau: make(params.as_ref().filter(|_| stage.tlu), T::zero(), "tau")?,
                rmax: stage.renorm.map(|r| r.rmax),
                dmax: stage.renorm.map(|r| r.dmax),
                mean_weight: make(switch.as_ref(), T::zero(), "mean_weight")?,
                var_weight: make(switch.as_ref(), T::zero(), "var_weight")?,
            });
        }
        Ok(DynNorm {
            fingerprint: shapes::fingerprint(s),
            spec: spec.clone(),
            name,
            stages,
            path: DynPath::of(s),
        })
    }

    /// Sets the name shown in error messages (default `DynNorm`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The configuration.
    pub fn spec(&self) -> &NormSpec {
        &self.spec
    }

    /// The name shown in error messages (see [`DynNorm::with_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameters and running statistics of every stage (one unless a chain).
    pub fn stages(&self) -> &[StageParams<T>] {
        &self.stages
    }

    /// Mutable access to the parameters and running statistics of every stage.
    pub fn stages_mut(&mut self) -> &mut [StageParams<T>] {
        &mut self.stages
    }

    /// The spec and the stages' parameters at once (disjoint borrows for
    /// `NormLayer::tensors_mut`).
    pub(crate) fn parts_mut(&mut self) -> (&Spec, &mut [StageParams<T>]) {
        (&self.spec.spec, &mut self.stages)
    }

    fn info(&self) -> LayerInfo<'_> {
        LayerInfo {
            spec: &self.spec.spec,
            name: &self.name,
            fingerprint: self.fingerprint,
        }
    }

    fn is_external(&self) -> bool {
        self.spec
            .spec
            .stages
            .iter()
            .any(|s| s.affine == Affine::External)
    }

    fn external_error(&self, with: bool) -> Result<(), NormError> {
        if self.is_external() == with {
            return Ok(());
        }
        Err(NormError::Unsupported {
            layer: self.name.clone(),
            reason: if with {
                "this layer has no `affine = external`: call the method without scale and shift"
                    .to_string()
            } else {
                "this layer has `affine = external`: pass scale and shift (the *_external methods)"
                    .to_string()
            },
        })
    }

    fn run_forward(
        &mut self,
        x: ArrayViewD<'_, T>,
        ext: Option<(ArrayViewD<'_, T>, ArrayViewD<'_, T>)>,
        mode: Mode,
        out: ArrayViewMutD<'_, T>,
        saved: Option<&mut Saved<T>>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        let info = LayerInfo {
            spec: &self.spec.spec,
            name: &self.name,
            fingerprint: self.fingerprint,
        };
        // Eval never changes state: read-only views of the running statistics.
        let mut states: [StageState<'_, T>; MAX_STAGES] = Default::default();
        let n = self.stages.len();
        if mode == Mode::Train {
            for (slot, st) in states.iter_mut().zip(self.stages.iter_mut()) {
                *slot = st.state_mut(ext.clone());
            }
        } else {
            for (slot, st) in states.iter_mut().zip(self.stages.iter()) {
                *slot = st.state(ext.clone());
            }
        }
        self.path
            .forward_into(&info, &mut states[..n], (x, out), mode, saved, sync)
    }

    /// The forward pass of `NormLayer`: any external scale and shift, mode and sync.
    pub(crate) fn forward_any_into(
        &mut self,
        x: ArrayViewD<'_, T>,
        ext: Option<(ArrayViewD<'_, T>, ArrayViewD<'_, T>)>,
        mode: Mode,
        out: ArrayViewMutD<'_, T>,
        saved: &mut Saved<T>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        self.external_error(ext.is_some())?;
        self.run_forward(x, ext, mode, out, Some(saved), sync)
    }

    /// The backward pass of `NormLayer`: into the given `dx`, per-stage gradients.
    pub(crate) fn backward_any_into(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        mut dx: ArrayD<T>,
        sync: Option<&dyn Collective>,
    ) -> Result<ChainGrads<T>, NormError> {
        let states = self.states();
        let states = &states[..self.stages.len()];
        let mut stages = vec![StageGrads::default(); self.stages.len()];
        let info = self.info();
        let args = BackwardArgs {
            x,
            dy,
            saved,
            dx: dx.view_mut(),
            grads: &mut stages,
            sync,
        };
        self.path.backward_into(&info, states, args)?;
        Ok(ChainGrads { dx, stages })
    }

    /// Forward pass; `Mode::Train` updates the running statistics.
    pub fn forward(
        &mut self,
        x: ArrayViewD<'_, T>,
        mode: Mode,
    ) -> Result<(ArrayD<T>, Saved<T>), NormError> {
        self.external_error(false)?;
        let mut y = alloc::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.run_forward(x, None, mode, y.view_mut(), Some(&mut saved), None)?;
        Ok((y, saved))
    }

    /// `forward(x, Mode::Train)`.
    pub fn forward_train(
        &mut self,
        x: ArrayViewD<'_, T>,
    ) -> Result<(ArrayD<T>, Saved<T>), NormError> {
        self.forward(x, Mode::Train)
    }

    /// Inference: running statistics where the layer has them; no state change.
    pub fn forward_eval(&self, x: ArrayViewD<'_, T>) -> Result<ArrayD<T>, NormError> {
        self.external_error(false)?;
        let mut y = alloc::zeros(x.raw_dim());
        self.forward_eval_into(x, y.view_mut())?;
        Ok(y)
    }

    /// Forward pass with an external scale and shift (`affine = external`), shaped by the
    /// kept axes.
    pub fn forward_external(
        &mut self,
        x: ArrayViewD<'_, T>,
        scale: ArrayViewD<'_, T>,
        shift: ArrayViewD<'_, T>,
        mode: Mode,
    ) -> Result<(ArrayD<T>, Saved<T>), NormError> {
        self.external_error(true)?;
        let mut y = alloc::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.run_forward(
            x,
            Some((scale, shift)),
            mode,
            y.view_mut(),
            Some(&mut saved),
            None,
        )?;
        Ok((y, saved))
    }

    /// Train-mode forward pass into caller buffers (no allocation once `saved` has grown).
    pub fn forward_train_into(
        &mut self,
        x: ArrayViewD<'_, T>,
        out: ArrayViewMutD<'_, T>,
        saved: &mut Saved<T>,
    ) -> Result<(), NormError> {
        self.external_error(false)?;
        self.run_forward(x, None, Mode::Train, out, Some(saved), None)
    }

    /// Inference into a caller buffer.
    pub fn forward_eval_into(
        &self,
        x: ArrayViewD<'_, T>,
        out: ArrayViewMutD<'_, T>,
    ) -> Result<(), NormError> {
        self.external_error(false)?;
        let mut states = self.states();
        let n = self.stages.len();
        self.path.forward_into(
            &self.info(),
            &mut states[..n],
            (x, out),
            Mode::Eval,
            None,
            None,
        )
    }

    /// This layer on the generic path (tests: the reference of the monomorphized paths).
    #[cfg(test)]
    pub(crate) fn on_generic_path(mut self) -> Self {
        self.path = DynPath::Forced;
        self
    }

    /// Whether this layer's spec has a monomorphized path.
    #[cfg(test)]
    pub(crate) fn is_specialized(&self) -> bool {
        matches!(self.path, DynPath::Mono(_))
    }

    /// Read-only states of every stage (a fixed array: no allocation per call).
    fn states(&self) -> [StageState<'_, T>; MAX_STAGES] {
        let mut states: [StageState<'_, T>; MAX_STAGES] = Default::default();
        for (slot, st) in states.iter_mut().zip(self.stages.iter()) {
            *slot = st.state(None);
        }
        states
    }

    /// Backward pass of a single-stage layer (for a chain use [`DynNorm::backward_chain`]).
    pub fn backward(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
    ) -> Result<Grads<T, IxDyn>, NormError> {
        if self.stages.len() != 1 {
            return Err(NormError::Unsupported {
                layer: self.name.clone(),
                reason: format!(
                    "a chain of {} stages has per-stage gradients: use backward_chain",
                    self.stages.len()
                ),
            });
        }
        let mut grads = Grads::new(alloc::zeros(x.raw_dim()));
        self.backward_into(x, dy, saved, &mut grads)?;
        Ok(grads)
    }

    /// Backward pass into caller buffers: `grads.dx` must have `x`'s shape; `dgamma` and
    /// `dbeta` are reused when they already have the right shape.
    pub fn backward_into(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        grads: &mut Grads<T, IxDyn>,
    ) -> Result<(), NormError> {
        let states = self.states();
        let states = &states[..self.stages.len()];
        let mut slot = [grads.take_params()];
        let args = BackwardArgs {
            x,
            dy,
            saved,
            dx: grads.dx.view_mut(),
            grads: &mut slot,
            sync: None,
        };
        let r = self.path.backward_into(&self.info(), states, args);
        let [g] = slot;
        grads.set_params(g);
        r
    }

    /// Backward pass of any layer, with one entry of parameter gradients per stage.
    pub fn backward_chain(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
    ) -> Result<ChainGrads<T>, NormError> {
        let states = self.states();
        let states = &states[..self.stages.len()];
        let mut dx = alloc::zeros(x.raw_dim());
        let mut stages = vec![StageGrads::default(); self.stages.len()];
        let args = BackwardArgs {
            x,
            dy,
            saved,
            dx: dx.view_mut(),
            grads: &mut stages,
            sync: None,
        };
        self.path.backward_into(&self.info(), states, args)?;
        Ok(ChainGrads { dx, stages })
    }

    /// Forward pass with statistics synchronized across the members of `comm`: every stage
    /// whose statistics run over `N` normalizes with the statistics of the whole group's
    /// batch (see [`Collective`]). Every member must make the same call.
    pub fn forward_sync(
        &mut self,
        x: ArrayViewD<'_, T>,
        mode: Mode,
        comm: &dyn Collective,
    ) -> Result<(ArrayD<T>, Saved<T>), NormError> {
        self.external_error(false)?;
        let mut y = alloc::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.run_forward(x, None, mode, y.view_mut(), Some(&mut saved), Some(comm))?;
        Ok((y, saved))
    }

    /// Backward pass of a `forward_sync`: dx uses the group's sums; the parameter gradients
    /// are this member's contribution (sum them over the members, as data-parallel training
    /// does). One entry of parameter gradients per stage.
    pub fn backward_sync(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        comm: &dyn Collective,
    ) -> Result<ChainGrads<T>, NormError> {
        let states = self.states();
        let states = &states[..self.stages.len()];
        let mut dx = alloc::zeros(x.raw_dim());
        let mut stages = vec![StageGrads::default(); self.stages.len()];
        let info = self.info();
        let args = BackwardArgs {
            x,
            dy,
            saved,
            dx: dx.view_mut(),
            grads: &mut stages,
            sync: Some(comm),
        };
        self.path.backward_into(&info, states, args)?;
        Ok(ChainGrads { dx, stages })
    }

    /// Per-group mean and variance of the first stage, with the layer's estimator.
    pub fn stats(&self, x: ArrayViewD<'_, T>) -> Result<Moments<T>, NormError> {
        let states = self.states();
        layer::stats(&self.info(), &states[..self.stages.len()], x)
    }
}

/// Masked layers (`mask = "N,T"`): the statistics use only the positions where the mask is
/// `true` (see the README's "Masked statistics").
impl<T: Float> DynNorm<T> {
    /// Forward pass of a layer declared with `mask`: `mask` is shaped by the mask axes;
    /// `Mode::Train` updates the running statistics from the unmasked positions. The mask is
    /// kept in the returned `Saved`, so [`DynNorm::backward`] takes no mask.
    pub fn forward_masked(
        &mut self,
        x: ArrayViewD<'_, T>,
        mask: ArrayViewD<'_, bool>,
        mode: Mode,
    ) -> Result<(ArrayD<T>, Saved<T>), NormError> {
        let mut y = alloc::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.forward_masked_into(x, mask, mode, y.view_mut(), &mut saved)?;
        Ok((y, saved))
    }

    /// [`DynNorm::forward_masked`] into caller buffers (`saved` is refilled).
    pub fn forward_masked_into(
        &mut self,
        x: ArrayViewD<'_, T>,
        mask: ArrayViewD<'_, bool>,
        mode: Mode,
        out: ArrayViewMutD<'_, T>,
        saved: &mut Saved<T>,
    ) -> Result<(), NormError> {
        self.external_error(false)?;
        let info = LayerInfo {
            spec: &self.spec.spec,
            name: &self.name,
            fingerprint: self.fingerprint,
        };
        let mut states: [StageState<'_, T>; 1] = Default::default();
        let Some(stage) = self.stages.first_mut() else {
            return Err(crate::masked::no_mask(&info));
        };
        states[0] = if mode == Mode::Train {
            stage.state_mut(None)
        } else {
            stage.state(None)
        };
        crate::masked::forward_masked_into(
            &info,
            &mut states,
            (x, mask),
            mode,
            out,
            Some(saved),
            None,
        )
    }

    /// Inference of a masked layer: running statistics where the layer has them, else the
    /// statistics of the unmasked positions; no state change.
    pub fn forward_masked_eval(
        &self,
        x: ArrayViewD<'_, T>,
        mask: ArrayViewD<'_, bool>,
    ) -> Result<ArrayD<T>, NormError> {
        self.external_error(false)?;
        let mut y = alloc::zeros(x.raw_dim());
        let mut states: [StageState<'_, T>; 1] = Default::default();
        if let Some(stage) = self.stages.first() {
            states[0] = stage.state(None);
        }
        crate::masked::forward_masked_into(
            &self.info(),
            &mut states,
            (x, mask),
            Mode::Eval,
            y.view_mut(),
            None,
            None,
        )?;
        Ok(y)
    }
}

/// The allocation-free backward pass behind `NormLayer::backward_layer_into_grads`.
impl<T: Float> DynNorm<T> {
    /// Backward pass into `dx` and one gradient entry per stage (`stages` has the chain's
    /// length), reusing the parameter-gradient arrays already there.
    pub(crate) fn backward_stages_into(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        dx: ArrayViewMutD<'_, T>,
        stages: &mut [StageGrads<T>],
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        let states = self.states();
        let states = &states[..self.stages.len()];
        let args = BackwardArgs {
            x,
            dy,
            saved,
            dx,
            grads: stages,
            sync,
        };
        self.path.backward_into(&self.info(), states, args)
    }
}
