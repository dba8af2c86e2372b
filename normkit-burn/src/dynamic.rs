//! [`NormModule`]: any single-stage normkit layer — the `#[norm(...)]` attribute's text, or a
//! [`NormSpec`] — as a burn module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::{Device, Tensor};
use normkit::{Mode, NormError, NormSpec};

use crate::function::{normalize, NormTensors};
use crate::layer::NormLayer;

/// Configuration of a [`NormModule`]: the spec in the `#[norm(...)]` attribute's syntax and
/// the sizes of the axes that size its parameters and running statistics.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normkit_burn::NormModuleConfig;
///
/// let device = Device::flex();
/// // The declaration of `#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]`:
/// let gn = NormModuleConfig::new(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#.into())
///     .with_sizes(vec![("C".into(), 4)])
///     .init(&device);
/// let y = gn.forward(Tensor::<4>::ones([2, 4, 3, 3], &device));
/// assert_eq!(y.dims(), [2, 4, 3, 3]);
/// ```
#[derive(Config, Debug)]
pub struct NormModuleConfig {
    /// The spec, e.g. `input = "N,C,H,W", axes = "C,H,W", groups = 32, affine`.
    pub spec: String,
    /// `(axis, size)` for every axis that sizes a parameter or running statistic.
    #[config(default = "Vec::new()")]
    pub sizes: Vec<(String, usize)>,
}

/// A normkit layer declared by its spec, as a burn module: γ/β as parameters (flattened to
/// rank 1 in the spec's parameter-axis order), running statistics as [`RunningState`]s.
///
/// Train mode (batch statistics, running statistics updated) as burn-nn's `BatchNorm`: an
/// autodiff input and an enabled `training` flag. `DynNorm` gives bit-identical results to
/// the `#[norm]`-generated layer of the same spec, so this module computes exactly what the
/// user's own declaration computes.
///
/// `num_batches_tracked` (for `momentum = "cumulative"`) is kept in the module, not in its
/// record.
#[derive(Module, Debug)]
pub struct NormModule {
    /// γ (flattened), if the spec has `affine` parameters.
    pub gamma: Option<Param<Tensor<1>>>,
    /// β (flattened), if the spec has them and `bias`.
    pub beta: Option<Param<Tensor<1>>>,
    /// Whether training behavior is enabled.
    pub training: Param<Flag>,
    /// The running mean (flattened), with `running_stats`.
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// The running variance (flattened), with `running_stats`.
    pub running_var: Option<RunningState<Tensor<1>>>,
    #[module(skip)]
    layer: NormLayer,
    #[module(skip)]
    batches: Arc<AtomicU64>,
}

impl NormModuleConfig {
    /// A new [`NormModule`] on `device` (γ = 1, β = 0, running mean 0, running variance 1).
    /// Panics with normkit's message on an invalid spec or missing sizes (see
    /// [`NormModuleConfig::try_init`]).
    pub fn init(&self, device: &Device) -> NormModule {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NormModuleConfig::init`], returning normkit's error.
    pub fn try_init(&self, device: &Device) -> Result<NormModule, NormError> {
        let sizes: Vec<(&str, usize)> = self.sizes.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        let layer = NormLayer::parse(&self.spec, &sizes, "NormModule")?;
        Ok(NormModule::from_layer(layer, device))
    }
}

impl NormModule {
    /// A module for a parsed spec.
    pub fn new(
        spec: &NormSpec,
        sizes: &[(&str, usize)],
        device: &Device,
    ) -> Result<Self, NormError> {
        Ok(NormModule::from_layer(
            NormLayer::new(spec, sizes, "NormModule")?,
            device,
        ))
    }

    /// A module for a [`NormLayer`].
    pub fn from_layer(layer: NormLayer, device: &Device) -> Self {
        let numel = |s: &[usize]| s.iter().product::<usize>();
        let p = layer.param_shape().map(numel);
        let r = layer.running_shape().map(numel);
        NormModule {
            gamma: p.map(|n| Param::from_tensor(Tensor::ones([n], device))),
            beta: p
                .filter(|_| layer.has_beta())
                .map(|n| Param::from_tensor(Tensor::zeros([n], device))),
            training: Param::from_bool(true),
            running_mean: r.map(|n| RunningState::new(Tensor::zeros([n], device))),
            running_var: r.map(|n| RunningState::new(Tensor::ones([n], device))),
            layer,
            batches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The layer configuration.
    pub fn layer(&self) -> &NormLayer {
        &self.layer
    }

    /// Normalizes `x`, whose rank must be the spec's. Panics with normkit's message on
    /// invalid input (see [`NormModule::try_forward`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.try_forward(x).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NormModule::forward`], returning normkit's error.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let mode = if x.device().is_autodiff() && self.training.is_enabled() {
            Mode::Train
        } else {
            Mode::Eval
        };
        let running = match (&self.running_mean, &self.running_var, mode) {
            (Some(m), Some(v), Mode::Train) => Some((m.value_sync(), v.value_sync())),
            (Some(m), Some(v), Mode::Eval) => Some((m.value(), v.value())),
            _ => None,
        };
        let t = NormTensors {
            gamma: self.gamma.as_ref().map(|g| g.val()),
            beta: self.beta.as_ref().map(|b| b.val()),
            running,
            num_batches_tracked: self.batches.load(Ordering::Relaxed),
        };
        let out = normalize(x, t, &self.layer, mode)?;
        if let (Some((m, v)), Some(rm), Some(rv)) =
            (out.running, &self.running_mean, &self.running_var)
        {
            rm.update(m.detach());
            rv.update(v.detach());
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(out.output)
    }
}

impl NormModuleConfig {
    /// The configuration of the burn module that computes what `layer` computes: its spec
    /// (every `#[norm]` layer and [`normkit::DynNorm`] is a [`normkit::NormLayer`]), in the
    /// canonical text that parses back to the same spec. Add the sizes with
    /// [`NormModuleConfig::with_sizes`].
    ///
    /// ```
    /// use burn::tensor::{Device, Tensor};
    /// use normkit::prelude::*;
    /// use normkit_burn::NormModuleConfig;
    ///
    /// /// Group Norm with one γ/β per group and ε outside the square root.
    /// #[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine = "G", eps_mode = "std")]
    /// pub struct GroupStd;
    ///
    /// let device = Device::flex();
    /// let module = NormModuleConfig::of(&GroupStd::<f32>::default()).init(&device);
    /// let y = module.forward(Tensor::<4>::ones([2, 4, 3, 3], &device));
    /// assert_eq!(y.dims(), [2, 4, 3, 3]);
    /// ```
    pub fn of<L: normkit::NormLayer + ?Sized>(layer: &L) -> Self {
        NormModuleConfig::new(layer.layer_spec().to_string())
    }
}
