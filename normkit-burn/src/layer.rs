//! [`NormLayer`]: what a normkit layer is, independent of tensors — its validated spec, the
//! sizes of its parameters and running statistics, and the checks every call makes.

use std::sync::Arc;

use normkit::spec::{shapes, Affine, ParamAxis, Spec};
use normkit::{DynNorm, Float, Mode, NormError, NormSpec};

use crate::spare::Spare;

/// A single-stage normkit layer configuration: a validated [`NormSpec`] plus the sizes of the
/// axes that size its parameters and running statistics.
///
/// It is the host-side half of every normkit-burn module: the parameters themselves live in
/// burn tensors (flattened to rank 1, in the spec's parameter-axis order), this says how to
/// read them. Cloning is cheap (the spec is shared).
#[derive(Clone, Debug)]
pub struct NormLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: NormSpec,
    name: String,
    sizes: Vec<(String, usize)>,
    param_shape: Option<Vec<usize>>,
    has_beta: bool,
    running_shape: Option<Vec<usize>>,
    /// Buffers recycled from consumed gradients for the next outputs (see `spare`).
    spare: Spare,
}

impl NormLayer {
    /// A layer for `spec` with the size of every axis that sizes a parameter or a running
    /// statistic (e.g. `&[("C", 64)]`), named `name` in error messages.
    ///
    /// Errors: the sizes are missing or inconsistent (normkit's [`DynNorm::new`] messages);
    /// a `chain(...)` or `affine = external` spec ([`NormError::Unsupported`]: a burn module
    /// has one stage and owns its affine parameters).
    pub fn new(spec: &NormSpec, sizes: &[(&str, usize)], name: &str) -> Result<Self, NormError> {
        let s = spec.spec();
        if s.stages.len() != 1 {
            return Err(NormError::Unsupported {
                layer: name.to_string(),
                reason: format!(
                    "a chain of {} stages is not supported by normkit-burn: use one module per stage",
                    s.stages.len()
                ),
            });
        }
        if s.stages[0].affine == Affine::External {
            return Err(NormError::Unsupported {
                layer: name.to_string(),
                reason: "`affine = external` is not supported by normkit-burn modules".to_string(),
            });
        }
        let probe = DynNorm::<f32>::new(spec, sizes)?.with_name(name);
        let stage = &probe.stages()[0];
        Ok(NormLayer {
            inner: Arc::new(Inner {
                spec: spec.clone(),
                name: name.to_string(),
                sizes: sizes.iter().map(|&(a, n)| (a.to_string(), n)).collect(),
                param_shape: stage.gamma.as_ref().map(|g| g.shape().to_vec()),
                has_beta: stage.beta.is_some(),
                running_shape: stage.running_mean.as_ref().map(|m| m.shape().to_vec()),
                spare: Spare::default(),
            }),
        })
    }

    /// Parses `spec` (the `#[norm(...)]` attribute's syntax) and builds the layer.
    ///
    /// A parse error is reported as [`NormError::Unsupported`] carrying the parser's messages.
    pub fn parse(spec: &str, sizes: &[(&str, usize)], name: &str) -> Result<Self, NormError> {
        let parsed = NormSpec::parse(spec).map_err(|e| NormError::Unsupported {
            layer: name.to_string(),
            reason: format!("invalid spec: {e}"),
        })?;
        NormLayer::new(&parsed, sizes, name)
    }

    /// The configuration.
    pub fn spec(&self) -> &NormSpec {
        &self.inner.spec
    }

    /// The name used in error messages.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The shape of `gamma` (and `beta`), if the layer has learnable affine parameters.
    pub fn param_shape(&self) -> Option<&[usize]> {
        self.inner.param_shape.as_deref()
    }

    /// Whether the layer has `beta`.
    pub fn has_beta(&self) -> bool {
        self.inner.has_beta
    }

    /// The shape of `running_mean`/`running_var`, if the layer keeps running statistics.
    pub fn running_shape(&self) -> Option<&[usize]> {
        self.inner.running_shape.as_deref()
    }

    /// The momentum of the running statistics' update (`None`: cumulative average).
    pub fn momentum(&self) -> Option<f64> {
        match self.stage().momentum {
            normkit::spec::Momentum::Exponential(m) => Some(m),
            normkit::spec::Momentum::Cumulative => None,
        }
    }

    pub(crate) fn stage(&self) -> &normkit::spec::Stage {
        &self.inner.spec.spec().stages[0]
    }

    /// The layer's spare buffers (shared by its clones).
    pub(crate) fn spare(&self) -> &Spare {
        &self.inner.spare
    }

    pub(crate) fn raw(&self) -> &Spec {
        self.inner.spec.spec()
    }

    /// A fresh normkit layer with this configuration (γ = 1, β = 0, running 0/1).
    pub(crate) fn dyn_norm<T: Float>(&self) -> DynNorm<T> {
        let sizes: Vec<(&str, usize)> = self
            .inner
            .sizes
            .iter()
            .map(|(a, n)| (a.as_str(), *n))
            .collect();
        DynNorm::new(&self.inner.spec, &sizes)
            .expect("validated in NormLayer::new")
            .with_name(self.inner.name.clone())
    }

    /// The checks normkit makes before a call, in the same order and with the same
    /// messages: rank, fixed sizes, `groups` dividing `C`, empty statistics groups, too few
    /// values per group in train mode, then the sizes of `gamma`, `beta`, `running_mean`,
    /// `running_var` against the input.
    ///
    /// The fused path runs normkit itself (which checks again); the composed path has only
    /// this, so both report the same error for the same input.
    pub fn check(&self, shape: &[usize], mode: Mode) -> Result<(), NormError> {
        let spec = self.raw();
        let name = self.name();
        if shape.len() != spec.input.len() {
            return Err(NormError::Rank {
                layer: name.to_string(),
                expected: spec.input.len(),
                actual: shape.len(),
            });
        }
        for (axis, &n) in spec.input.iter().zip(shape) {
            if let Some(fixed) = axis.size {
                if fixed != n {
                    return Err(NormError::AxisSize {
                        layer: name.to_string(),
                        axis: axis.name.to_string(),
                        expected: fixed,
                        actual: n,
                        source: "the fixed size in `input`".to_string(),
                    });
                }
            }
        }
        let stage = self.stage();
        if let (Some(g), Some(c)) = (stage.groups, spec.channel) {
            if !shape[c].is_multiple_of(g) {
                return Err(NormError::GroupsDivide {
                    layer: name.to_string(),
                    channels: shape[c],
                    groups: g,
                });
            }
        }
        let (groups, group_len) = self.grouping(shape);
        let fixed = mode == Mode::Eval && stage.running_stats;
        if !fixed && group_len == 0 && groups > 0 {
            return Err(NormError::EmptyGroup {
                layer: name.to_string(),
                shape: shape.to_vec(),
            });
        }
        let needs_two = stage.running_stats || stage.unbiased;
        let uses_batch = mode == Mode::Train || !stage.running_stats;
        if needs_two && uses_batch && group_len <= 1 && groups > 0 {
            return Err(NormError::TooFewValues {
                layer: name.to_string(),
                per_group: group_len,
                shape: shape.to_vec(),
            });
        }
        if let (Some(axes), Some(p)) = (shapes::param_axes(stage), self.param_shape()) {
            self.check_indexed(shape, "gamma", axes, p)?;
            if self.has_beta() {
                self.check_indexed(shape, "beta", axes, p)?;
            }
        }
        if let (Some(axes), Some(r)) = (shapes::running_axes(spec, stage), self.running_shape()) {
            self.check_indexed(shape, "running_mean", &axes, r)?;
            self.check_indexed(shape, "running_var", &axes, r)?;
        }
        Ok(())
    }

    fn check_indexed(
        &self,
        shape: &[usize],
        what: &str,
        axes: &[ParamAxis],
        have: &[usize],
    ) -> Result<(), NormError> {
        for (&axis, &p) in axes.iter().zip(have) {
            if let ParamAxis::Input(i) = axis {
                if shape[i] != p {
                    return Err(NormError::AxisSize {
                        layer: self.name().to_string(),
                        axis: shapes::axis_name(self.raw(), axis).to_string(),
                        expected: p,
                        actual: shape[i],
                        source: what.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The number of statistics groups and the values per group for an input of `shape`
    /// (which passed the rank and `groups` checks).
    pub(crate) fn grouping(&self, shape: &[usize]) -> (usize, usize) {
        let spec = self.raw();
        let stage = self.stage();
        let mut groups = 1usize;
        let mut len = 1usize;
        for (i, &n) in shape.iter().enumerate() {
            match (stage.groups, Some(i) == spec.channel) {
                (Some(g), true) => {
                    groups *= g;
                    len *= n / g;
                }
                _ if stage.reduces(i) => len *= n,
                _ => groups *= n,
            }
        }
        (groups, len)
    }
}
