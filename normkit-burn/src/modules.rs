//! The standard layers with burn-nn's conventions: `*Config::new(..).with_*(..).init(&device)`,
//! `forward(Tensor<D>) -> Tensor<D>`, parameters named `gamma`/`beta` and running statistics
//! `running_mean`/`running_var` (burn-nn's record names; PyTorch's `weight`/`bias` load through
//! burn-store's PyTorch adapter, see the crate docs).
//!
//! Every layer has `forward` (panics on invalid input, as burn-nn's modules do, with normkit's
//! message) and `try_forward` (returns normkit's [`NormError`]).

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use normkit::{Mode, NormError};

use crate::function::{normalize, NormTensors};
use crate::layer::NormLayer;

/// Builds a layer from a spec written by this crate; a bad configuration (e.g. `groups` not
/// dividing the channels, a momentum outside (0, 1]) panics with normkit's message, as
/// burn-nn's `init` panics on invalid configurations.
fn layer(spec: &str, sizes: &[(&str, usize)], name: &str) -> NormLayer {
    NormLayer::parse(spec, sizes, name).unwrap_or_else(|e| panic!("{e}"))
}

/// `forward`'s panic: normkit's message.
fn or_panic<T>(r: Result<T, NormError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `x` as `[N, C, L]` (L = the product of the axes after `C`, 1 for a rank-2 input).
fn as_ncl<const D: usize>(x: Tensor<D>, name: &str) -> Result<Tensor<3>, NormError> {
    let dims = x.dims();
    if D < 2 {
        return Err(NormError::Rank {
            layer: name.to_string(),
            expected: 3,
            actual: D,
        });
    }
    let l: usize = dims[2..].iter().product();
    Ok(x.reshape([dims[0], dims[1], l]))
}

/// `x` as `[rows, d]` over its last axis.
fn as_rows<const D: usize>(x: Tensor<D>) -> Result<Tensor<2>, NormError> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    Ok(x.reshape([rows, d]))
}

/// γ and β, `[C]` each, of a layer whose parameters are optional (`affine`).
type ChannelAffine = (Option<Param<Tensor<1>>>, Option<Param<Tensor<1>>>);

/// The initial [`ChannelAffine`] of `c` channels on `device` (γ = 1, β = 0): `None` without
/// `affine`.
fn channel_affine(affine: bool, c: usize, device: &Device) -> ChannelAffine {
    let params = |init: Initializer| affine.then(|| init.init([c], device));
    (params(Initializer::Ones), params(Initializer::Zeros))
}

/// γ and β (each optional) as [`normalize`] takes them, without running statistics.
fn affine_tensors(
    gamma: Option<&Param<Tensor<1>>>,
    beta: Option<&Param<Tensor<1>>>,
) -> NormTensors {
    NormTensors {
        gamma: gamma.map(|g| g.val()),
        beta: beta.map(|b| b.val()),
        ..Default::default()
    }
}

/// [`normalize`] on `x` viewed as `view` shapes it ([`as_ncl`], [`as_rows`]): the output
/// in `x`'s shape and the updated running statistics (train mode with running statistics).
fn run<const D: usize, const R: usize>(
    x: Tensor<D>,
    view: impl FnOnce(Tensor<D>) -> Result<Tensor<R>, NormError>,
    t: NormTensors,
    layer: &NormLayer,
    mode: Mode,
) -> Result<(Tensor<D>, Option<(Tensor<1>, Tensor<1>)>), NormError> {
    let dims = x.dims();
    let out = normalize(view(x)?, t, layer, mode)?;
    Ok((out.output.reshape(dims), out.running))
}

/// A forward of `x` viewed as `[N, C, L]` in train mode without running statistics, with
/// [`ChannelAffine`] parameters (GroupNorm, InstanceNorm).
fn channel_forward<const D: usize>(
    x: Tensor<D>,
    (gamma, beta): (&Option<Param<Tensor<1>>>, &Option<Param<Tensor<1>>>),
    layer: &NormLayer,
) -> Result<Tensor<D>, NormError> {
    let t = affine_tensors(gamma.as_ref(), beta.as_ref());
    Ok(run(x, |x| as_ncl(x, layer.name()), t, layer, Mode::Train)?.0)
}

/// Train mode as burn-nn decides it: an autodiff input and an enabled `training` flag.
fn mode_of<const D: usize>(x: &Tensor<D>, training: bool) -> Mode {
    if x.device().is_autodiff() && training {
        Mode::Train
    } else {
        Mode::Eval
    }
}

// ---------------------------------------------------------------------------------------
// LayerNorm

/// Configuration of a [`LayerNorm`] (the fields and defaults of burn-nn's `LayerNormConfig`).
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// The size of the last axis.
    pub d_model: usize,
    /// Added to the variance. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether the layer has β. Default: true.
    #[config(default = true)]
    pub bias: bool,
}

/// Layer normalization over the last axis: `y = (x − mean)/√(var + ε)·γ + β`.
///
/// normkit spec: `input = "N,D", axes = "D", affine = "D"` on the input viewed as
/// `[rows, d_model]`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// γ, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// β, `[d_model]`.
    pub beta: Option<Param<Tensor<1>>>,
    /// ε.
    pub epsilon: f64,
    #[module(skip)]
    layer: NormLayer,
}

impl LayerNormConfig {
    /// A new [`LayerNorm`] on `device` (γ = 1, β = 0).
    pub fn init(&self, device: &Device) -> LayerNorm {
        let spec = format!(
            r#"input = "N,D", axes = "D", affine = "D", bias = {}, eps = {:?}"#,
            self.bias, self.epsilon
        );
        LayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: self
                .bias
                .then(|| Initializer::Zeros.init([self.d_model], device)),
            epsilon: self.epsilon,
            layer: layer(&spec, &[("D", self.d_model)], "LayerNorm"),
        }
    }
}

impl LayerNorm {
    /// Normalizes over the last axis. Panics with normkit's message when the last axis is not
    /// `d_model`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        or_panic(self.try_forward(x))
    }

    /// [`LayerNorm::forward`], returning normkit's error instead of panicking.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let t = affine_tensors(Some(&self.gamma), self.beta.as_ref());
        Ok(run(x, as_rows, t, &self.layer, Mode::Train)?.0)
    }
}

// ---------------------------------------------------------------------------------------
// RmsNorm

/// Configuration of an [`RmsNorm`] (the fields and defaults of burn-nn's `RmsNormConfig`).
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// The size of the last axis.
    pub d_model: usize,
    /// Added to the mean square. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// RMS normalization over the last axis: `y = x/√(mean(x²) + ε)·γ`.
///
/// normkit spec: `input = "N,D", axes = "D", center = false, affine = "D", bias = false`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// γ, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// ε.
    pub epsilon: f64,
    #[module(skip)]
    layer: NormLayer,
}

impl RmsNormConfig {
    /// A new [`RmsNorm`] on `device` (γ = 1).
    pub fn init(&self, device: &Device) -> RmsNorm {
        let spec = format!(
            r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = {:?}"#,
            self.epsilon
        );
        RmsNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            epsilon: self.epsilon,
            layer: layer(&spec, &[("D", self.d_model)], "RmsNorm"),
        }
    }
}

impl RmsNorm {
    /// Normalizes over the last axis. Panics with normkit's message when the last axis is not
    /// `d_model`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        or_panic(self.try_forward(x))
    }

    /// [`RmsNorm::forward`], returning normkit's error instead of panicking.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let t = affine_tensors(Some(&self.gamma), None);
        Ok(run(x, as_rows, t, &self.layer, Mode::Train)?.0)
    }
}

// ---------------------------------------------------------------------------------------
// GroupNorm

/// Configuration of a [`GroupNorm`] (the fields and defaults of burn-nn's `GroupNormConfig`).
#[derive(Config, Debug)]
pub struct GroupNormConfig {
    /// The number of groups; must divide `num_channels`.
    pub num_groups: usize,
    /// The number of channels (axis 1 of the input).
    pub num_channels: usize,
    /// Added to the variance. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Per-channel γ and β. Default: true.
    #[config(default = true)]
    pub affine: bool,
}

/// Group normalization of `[N, C, ...]`: statistics per sample and group of `C/groups`
/// channels.
///
/// normkit spec: `input = "N,C,L", axes = "C,L", groups = g, affine` on the input viewed as
/// `[N, C, L]`.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// γ, `[num_channels]` (with `affine`).
    pub gamma: Option<Param<Tensor<1>>>,
    /// β, `[num_channels]` (with `affine`).
    pub beta: Option<Param<Tensor<1>>>,
    /// The number of groups.
    pub num_groups: usize,
    /// The number of channels.
    pub num_channels: usize,
    /// ε.
    pub epsilon: f64,
    /// Whether the layer has γ and β.
    pub affine: bool,
    #[module(skip)]
    layer: NormLayer,
}

impl GroupNormConfig {
    /// A new [`GroupNorm`] on `device`. Panics (normkit's message) when `num_groups` does not
    /// divide `num_channels`.
    pub fn init(&self, device: &Device) -> GroupNorm {
        let spec = format!(
            r#"input = "N,C,L", axes = "C,L", groups = {}{}, eps = {:?}"#,
            self.num_groups,
            if self.affine { ", affine" } else { "" },
            self.epsilon
        );
        let (gamma, beta) = channel_affine(self.affine, self.num_channels, device);
        GroupNorm {
            gamma,
            beta,
            num_groups: self.num_groups,
            num_channels: self.num_channels,
            epsilon: self.epsilon,
            affine: self.affine,
            layer: layer(&spec, &[("C", self.num_channels)], "GroupNorm"),
        }
    }
}

impl GroupNorm {
    /// Normalizes `[N, C, ...]`. Panics with normkit's message on a wrong channel count.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        or_panic(self.try_forward(x))
    }

    /// [`GroupNorm::forward`], returning normkit's error instead of panicking.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        channel_forward(x, (&self.gamma, &self.beta), &self.layer)
    }
}

// ---------------------------------------------------------------------------------------
// InstanceNorm

/// Configuration of an [`InstanceNorm`] (the fields and defaults of burn-nn's
/// `InstanceNormConfig`).
#[derive(Config, Debug)]
pub struct InstanceNormConfig {
    /// The number of channels (axis 1 of the input).
    pub num_channels: usize,
    /// Added to the variance. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Per-channel γ and β. Default: true.
    #[config(default = true)]
    pub affine: bool,
}

/// Instance normalization of `[N, C, ...]`: statistics per sample and channel.
///
/// normkit spec: `input = "N,C,L", axes = "L", affine` on the input viewed as `[N, C, L]`.
#[derive(Module, Debug)]
pub struct InstanceNorm {
    /// γ, `[num_channels]` (with `affine`).
    pub gamma: Option<Param<Tensor<1>>>,
    /// β, `[num_channels]` (with `affine`).
    pub beta: Option<Param<Tensor<1>>>,
    /// The number of channels.
    pub num_channels: usize,
    /// ε.
    pub epsilon: f64,
    /// Whether the layer has γ and β.
    pub affine: bool,
    #[module(skip)]
    layer: NormLayer,
}

impl InstanceNormConfig {
    /// A new [`InstanceNorm`] on `device`.
    pub fn init(&self, device: &Device) -> InstanceNorm {
        let spec = format!(
            r#"input = "N,C,L", axes = "L"{}, eps = {:?}"#,
            if self.affine { ", affine" } else { "" },
            self.epsilon
        );
        let (gamma, beta) = channel_affine(self.affine, self.num_channels, device);
        InstanceNorm {
            gamma,
            beta,
            num_channels: self.num_channels,
            epsilon: self.epsilon,
            affine: self.affine,
            layer: layer(&spec, &[("C", self.num_channels)], "InstanceNorm"),
        }
    }
}

impl InstanceNorm {
    /// Normalizes `[N, C, ...]`. Panics with normkit's message on a wrong channel count.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        or_panic(self.try_forward(x))
    }

    /// [`InstanceNorm::forward`], returning normkit's error instead of panicking.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        channel_forward(x, (&self.gamma, &self.beta), &self.layer)
    }
}

// ---------------------------------------------------------------------------------------
// BatchNorm

/// Configuration of a [`BatchNorm`] (the fields and defaults of burn-nn's `BatchNormConfig`).
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// The number of channels (axis 1 of the input).
    pub num_features: usize,
    /// Added to the variance. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// The running statistics' momentum, in (0, 1]. Default: 0.1.
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Batch normalization of `[N, C, ...]`: statistics per channel over the batch and the
/// spatial axes; running statistics for inference.
///
/// Train mode, as burn-nn's `BatchNorm`: the input is on an autodiff device and `training`
/// is enabled (`Module::valid()` disables it). The running variance is updated with the
/// **unbiased** batch variance, as PyTorch does; burn-nn 0.22.1's `BatchNorm` uses the
/// biased one, so the two running variances differ by the factor n/(n−1) per update.
///
/// normkit spec: `input = "N,C,L", axes = "N,L", affine, running_stats, momentum = m`.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// γ, `[num_features]`.
    pub gamma: Param<Tensor<1>>,
    /// β, `[num_features]`.
    pub beta: Param<Tensor<1>>,
    /// Whether training behavior is enabled (burn-nn's flag).
    pub training: Param<Flag>,
    /// The running mean, `[num_features]`.
    pub running_mean: RunningState<Tensor<1>>,
    /// The running variance, `[num_features]`.
    pub running_var: RunningState<Tensor<1>>,
    /// The momentum.
    pub momentum: f64,
    /// ε.
    pub epsilon: f64,
    #[module(skip)]
    layer: NormLayer,
}

impl BatchNormConfig {
    /// A new [`BatchNorm`] on `device` (γ = 1, β = 0, running mean 0, running variance 1).
    /// Panics (normkit's message) on a momentum outside (0, 1] or a negative ε.
    pub fn init(&self, device: &Device) -> BatchNorm {
        let spec = format!(
            r#"input = "N,C,L", axes = "N,L", affine, running_stats, momentum = {:?}, eps = {:?}"#,
            self.momentum, self.epsilon
        );
        let c = self.num_features;
        BatchNorm {
            gamma: Initializer::Ones.init([c], device),
            beta: Initializer::Zeros.init([c], device),
            training: Param::from_bool(true),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
            layer: layer(&spec, &[("C", c)], "BatchNorm"),
        }
    }
}

impl BatchNorm {
    /// Normalizes `[N, C, ...]` (train or eval, see [`BatchNorm`]). Panics with normkit's
    /// message on a wrong channel count or a batch with one value per channel in train mode.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        or_panic(self.try_forward(x))
    }

    /// [`BatchNorm::forward`], returning normkit's error instead of panicking.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let mode = mode_of(&x, self.training.is_enabled());
        let running = match mode {
            Mode::Train => (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            ),
            Mode::Eval => (self.running_mean.value(), self.running_var.value()),
        };
        let t = NormTensors {
            running: Some(running),
            ..affine_tensors(Some(&self.gamma), Some(&self.beta))
        };
        let (y, running) = run(x, |x| as_ncl(x, self.layer.name()), t, &self.layer, mode)?;
        if let Some((m, v)) = running {
            self.running_mean.update(m.detach());
            self.running_var.update(v.detach());
        }
        Ok(y)
    }
}
