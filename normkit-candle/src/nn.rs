//! Drop-in replacements for candle-nn's normalization modules: the same constructors, the
//! same `VarBuilder` names (PyTorch's), normkit's kernels and fused backward on the CPU.
//!
//! On another device (CUDA, Metal) each module runs the same layer written with candle's
//! tensor ops ([`crate::composed`]), so a model moves between devices unchanged.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNormConfig, LayerNormConfig, VarBuilder};
use normkit::Mode;

use crate::composed;
use crate::error::msg;
use crate::module::NormModule;
use crate::SpecLayer;

fn spec_layer(spec: String, sizes: &[(&str, usize)], name: &str) -> Result<SpecLayer> {
    Ok(SpecLayer::new(&spec, sizes)?.with_name(name))
}

/// The shape `[N, C, L]` the layer sees an input `[N, C, …]` as (the op views the values;
/// no reshape node in candle's graph).
fn ncl(x: &Tensor, what: &str) -> Result<Vec<usize>> {
    let dims = x.dims();
    match dims {
        [] | [_] => Err(msg(format!(
            "{what}: expected an input [N, C, …] of rank 2 or more, got shape {dims:?}"
        ))),
        [n, c, rest @ ..] => Ok(vec![*n, *c, rest.iter().product()]),
    }
}

/// Layer normalization over the last axis, as `candle_nn::LayerNorm` (and RMS
/// normalization with `remove_mean = false`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    inner: NormModule<SpecLayer>,
    weight: Tensor,
    config: LayerNormConfig,
}

/// A [`LayerNorm`] over the last axis of size `size`: `weight` (and `bias` with
/// `config.affine`) from `vb`, as `candle_nn::layer_norm`.
pub fn layer_norm<C: Into<LayerNormConfig>>(
    size: usize,
    config: C,
    vb: VarBuilder<'_>,
) -> Result<LayerNorm> {
    let config = config.into();
    let spec = format!(
        r#"input = "N,D", axes = "D", affine = "D", bias = {}, center = {}, eps = {:e}"#,
        config.affine, config.remove_mean, config.eps
    );
    let layer = spec_layer(spec, &[("D", size)], "LayerNorm")?;
    let inner = NormModule::with_name(layer, vb, "LayerNorm")?;
    let weight = inner
        .weight(0)
        .cloned()
        .ok_or_else(|| msg("LayerNorm: the layer has no weight"))?;
    Ok(LayerNorm {
        inner,
        weight,
        config,
    })
}

impl LayerNorm {
    /// `weight` (γ).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `bias` (β), with `affine`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias(0)
    }

    /// The configuration.
    pub fn config(&self) -> LayerNormConfig {
        self.config
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(&d) = x.dims().last() else {
            return Err(msg(
                "LayerNorm: expected an input of rank 1 or more, got a scalar",
            ));
        };
        if !x.device().is_cpu() {
            let c = &self.config;
            return composed::layer_norm(x, Some(&self.weight), self.bias(), c.eps, c.remove_mean);
        }
        let rows = x.elem_count().checked_div(d).unwrap_or(0);
        self.inner.forward_viewed(x, vec![rows, d], Mode::Train)
    }
}

/// RMS normalization over the last axis, as `candle_nn::RmsNorm`.
#[derive(Clone, Debug)]
pub struct RmsNorm(LayerNorm);

/// An [`RmsNorm`] over the last axis of size `size`: `weight` from `vb`, as
/// `candle_nn::rms_norm`.
pub fn rms_norm(size: usize, eps: f64, vb: VarBuilder<'_>) -> Result<RmsNorm> {
    let config = LayerNormConfig {
        eps,
        remove_mean: false,
        affine: false,
    };
    Ok(RmsNorm(layer_norm(size, config, vb)?))
}

impl RmsNorm {
    /// `weight` (γ).
    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    /// The module as a [`LayerNorm`] with `remove_mean = false`.
    pub fn into_inner(self) -> LayerNorm {
        self.0
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// Group normalization of `[N, C, …]`, as `candle_nn::GroupNorm`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    inner: NormModule<SpecLayer>,
    groups: usize,
    channels: usize,
    eps: f64,
}

/// A [`GroupNorm`] with `groups` groups of `channels` channels: `weight` and `bias` from
/// `vb`, as `candle_nn::group_norm`.
pub fn group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder<'_>,
) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(msg(format!(
            "GroupNorm: groups = {groups} must be at least 1 and divide channels = {channels}"
        )));
    }
    let spec =
        format!(r#"input = "N,C,L", axes = "C,L", groups = {groups}, affine, eps = {eps:e}"#);
    let layer = spec_layer(spec, &[("C", channels)], "GroupNorm")?;
    Ok(GroupNorm {
        inner: NormModule::with_name(layer, vb, "GroupNorm")?,
        groups,
        channels,
        eps,
    })
}

impl GroupNorm {
    /// `weight` (γ), one per channel.
    pub fn weight(&self) -> Option<&Tensor> {
        self.inner.weight(0)
    }

    /// `bias` (β), one per channel.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias(0)
    }

    /// The number of groups and of channels.
    pub fn groups_channels(&self) -> (usize, usize) {
        (self.groups, self.channels)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return composed::group_norm(x, self.groups, self.weight(), self.bias(), self.eps);
        }
        self.inner
            .forward_viewed(x, ncl(x, "GroupNorm")?, Mode::Train)
    }
}

/// Batch normalization of `[N, C, …]`, as `candle_nn::BatchNorm`: batch statistics and a
/// running-statistics update in train mode, the running statistics in eval mode.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    inner: NormModule<SpecLayer>,
    config: BatchNormConfig,
}

/// A [`BatchNorm`] over `channels` channels: `running_mean`, `running_var`,
/// `num_batches_tracked` and (with `config.affine`) `weight` and `bias` from `vb`, as
/// `candle_nn::batch_norm` (plus `num_batches_tracked`, PyTorch's, when `vb` has or can make
/// it).
pub fn batch_norm<C: Into<BatchNormConfig>>(
    channels: usize,
    config: C,
    vb: VarBuilder<'_>,
) -> Result<BatchNorm> {
    let config = config.into();
    if !(config.momentum > 0.0 && config.momentum <= 1.0) {
        return Err(msg(format!(
            "BatchNorm: momentum must be in (0, 1], got {}",
            config.momentum
        )));
    }
    let spec = format!(
        r#"input = "N,C,L", axes = "N,L", {}center = {}, running_stats, momentum = {:?}, eps = {:e}"#,
        if config.affine { "affine, " } else { "" },
        config.remove_mean,
        config.momentum,
        config.eps
    );
    let layer = spec_layer(spec, &[("C", channels)], "BatchNorm")?;
    Ok(BatchNorm {
        inner: NormModule::with_name(layer, vb, "BatchNorm")?,
        config,
    })
}

impl BatchNorm {
    /// `running_mean`.
    pub fn running_mean(&self) -> Option<&Tensor> {
        self.inner.running_mean(0)
    }

    /// `running_var`.
    pub fn running_var(&self) -> Option<&Tensor> {
        self.inner.running_var(0)
    }

    /// Training batches seen.
    pub fn num_batches_tracked(&self) -> Option<u64> {
        self.inner.num_batches_tracked(0)
    }

    /// `weight` and `bias`, with `affine`.
    pub fn weight_and_bias(&self) -> Option<(&Tensor, &Tensor)> {
        Some((self.inner.weight(0)?, self.inner.bias(0)?))
    }

    /// The configuration.
    pub fn config(&self) -> BatchNormConfig {
        self.config
    }

    /// Train mode: batch statistics; the running statistics are updated.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, true)
    }

    /// Eval mode: the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        if !x.device().is_cpu() {
            let (w, b) = match self.weight_and_bias() {
                Some((w, b)) => (Some(w), Some(b)),
                None => (None, None),
            };
            let running = self.inner.running_vars(0);
            return if train {
                composed::batch_norm_train(x, w, b, running, c.momentum, c.eps)
            } else {
                let (m, v) = running.ok_or_else(|| msg("BatchNorm: no running statistics"))?;
                composed::batch_norm_eval(x, w, b, m.as_tensor(), v.as_tensor(), c.eps)
            };
        }
        let mode = if train { Mode::Train } else { Mode::Eval };
        self.inner.forward_viewed(x, ncl(x, "BatchNorm")?, mode)
    }
}

/// The configuration of an [`InstanceNorm`] (PyTorch's `InstanceNorm*d` defaults: no
/// affine parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Per-channel `weight` and `bias`.
    pub affine: bool,
}

impl Default for InstanceNormConfig {
    fn default() -> Self {
        InstanceNormConfig {
            eps: 1e-5,
            affine: false,
        }
    }
}

impl From<f64> for InstanceNormConfig {
    fn from(eps: f64) -> Self {
        InstanceNormConfig {
            eps,
            ..Default::default()
        }
    }
}

/// Instance normalization of `[N, C, …]`: statistics per sample and channel (PyTorch's
/// `InstanceNorm1d/2d/3d` without running statistics).
#[derive(Clone, Debug)]
pub struct InstanceNorm {
    inner: NormModule<SpecLayer>,
    config: InstanceNormConfig,
}

/// An [`InstanceNorm`] over `channels` channels (`weight` and `bias` from `vb` with
/// `config.affine`).
pub fn instance_norm<C: Into<InstanceNormConfig>>(
    channels: usize,
    config: C,
    vb: VarBuilder<'_>,
) -> Result<InstanceNorm> {
    let config = config.into();
    let spec = format!(
        r#"input = "N,C,L", axes = "L", {}eps = {:e}"#,
        if config.affine { "affine, " } else { "" },
        config.eps
    );
    let layer = spec_layer(spec, &[("C", channels)], "InstanceNorm")?;
    Ok(InstanceNorm {
        inner: NormModule::with_name(layer, vb, "InstanceNorm")?,
        config,
    })
}

impl InstanceNorm {
    /// `weight` (γ), with `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.inner.weight(0)
    }

    /// `bias` (β), with `affine`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias(0)
    }
}

impl Module for InstanceNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return composed::instance_norm(x, self.weight(), self.bias(), self.config.eps);
        }
        self.inner
            .forward_viewed(x, ncl(x, "InstanceNorm")?, Mode::Train)
    }
}
