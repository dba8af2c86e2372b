//! [`NormLayer`]: the one interface of every normalization layer — each `#[norm]`-generated
//! layer (the macro emits the impl) and [`DynNorm`] — over arrays of any rank, so that code
//! generic over layers (a framework bridge, a training loop, a test) is written once:
//! declare a variant, plug it anywhere.

use ndarray::{ArrayD, ArrayView, ArrayViewD, ArrayViewMut, ArrayViewMutD, Dimension};
use norm_spec::{Affine, Spec};

use crate::collective::Collective;
use crate::kernels::alloc;
use crate::state_dict::{load_stages, save_stages, StageTensors, StageTensorsMut, StateDict};
use crate::types::{ChainGrads, Mode, Saved, StageGrads};
use crate::{DynNorm, Float, NormError};

/// The external scale and shift of an `affine = external` layer (AdaIN, FiLM), shaped by
/// the kept axes.
pub type External<'a, T> = (ArrayViewD<'a, T>, ArrayViewD<'a, T>);

/// What [`NormLayer::forward_layer`] returns: the output and the state for the backward pass.
pub type Forward<T> = (ArrayD<T>, Saved<T>);

/// A normalization layer, whatever declared it: implemented by every `#[norm]` layer (the
/// macro emits the impl) and by [`DynNorm`].
///
/// Arrays have dynamic rank here; a wrong rank or shape is the same [`NormError`] the
/// layer's own methods give. The methods are named apart from the layers' own (`forward`,
/// `backward`, ...), which keep their static-rank signatures; in code generic over
/// `L: NormLayer` the trait's are the ones in scope.
///
/// Parameters and running statistics are reached by name, stage by stage
/// ([`NormLayer::tensors`], [`NormLayer::tensors_mut`], PyTorch's names in a state dict),
/// so generic code does not list a variant's fields. Masked layers (`mask = ...`) are not
/// run through this trait (their forward takes a mask): the forward methods return
/// [`NormError::Unsupported`] for them.
///
/// Generic code takes any layer, a `#[norm]` struct (its impl is generated) or a
/// [`DynNorm`](crate::DynNorm) alike (`tests/layers/layer_trait.rs` runs both through one function):
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use norm_runtime::{DynNorm, Mode, NormError, NormLayer, NormSpec};
///
/// /// Any layer: one train step's output and input gradient for dy = 1.
/// fn step<L: NormLayer<Elem = f64>>(
///     layer: &mut L,
///     x: &ArrayD<f64>,
/// ) -> Result<(ArrayD<f64>, ArrayD<f64>), NormError> {
///     let (y, saved) = layer.forward_layer(x.view(), None, Mode::Train)?;
///     let dy = ArrayD::ones(x.raw_dim());
///     Ok((y, layer.backward_layer(x.view(), dy.view(), &saved)?.dx))
/// }
///
/// let spec = NormSpec::parse(r#"input = "N,C,L", axes = "C,L", groups = 2, affine"#).unwrap();
/// let mut gn = DynNorm::<f64>::new(&spec, &[("C", 4)])?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[2, 4, 3]), |i| ((i[0] * 12 + i[1] * 3 + i[2]) as f64).sin());
/// let (y, dx) = step(&mut gn, &x)?;
/// // Each group (2 channels x 3 positions) is standardized, so its outputs sum to zero, and
/// // the sum of the outputs does not depend on x: dy = 1 gives dx = 0.
/// for n in 0..2 {
///     for g in 0..2 {
///         let s: f64 = (2 * g..2 * g + 2).flat_map(|c| (0..3).map(move |l| (c, l))).map(|(c, l)| y[[n, c, l]]).sum();
///         assert!(s.abs() < 1e-12);
///     }
/// }
/// assert!(dx.iter().all(|v| v.abs() < 1e-12));
/// # Ok::<(), NormError>(())
/// ```
pub trait NormLayer {
    /// The element type (`f32`, `f64`, `bf16`, `f16`).
    type Elem: Float;

    /// The validated configuration.
    fn layer_spec(&self) -> &Spec;

    /// The name shown in error messages (the struct's name for a `#[norm]` layer).
    fn layer_name(&self) -> &str;

    /// Forward pass into `out` (the shape of `x`); `saved` is refilled for the backward
    /// pass. `Mode::Train` updates the running statistics. `external`: the scale and shift
    /// of an `affine = external` layer (required there, refused elsewhere). `sync`: batch
    /// statistics synchronized across the members of a [`Collective`].
    fn forward_layer_into(
        &mut self,
        x: ArrayViewD<'_, Self::Elem>,
        external: Option<External<'_, Self::Elem>>,
        mode: Mode,
        out: ArrayViewMutD<'_, Self::Elem>,
        saved: &mut Saved<Self::Elem>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError>;

    /// Backward pass: `dx` (the shape of `x`, its contents overwritten) comes back as the
    /// input gradient, with one entry of parameter gradients per stage. `sync` as in the
    /// forward pass that made `saved`.
    fn backward_layer_into(
        &self,
        x: ArrayViewD<'_, Self::Elem>,
        dy: ArrayViewD<'_, Self::Elem>,
        saved: &Saved<Self::Elem>,
        dx: ArrayD<Self::Elem>,
        sync: Option<&dyn Collective>,
    ) -> Result<ChainGrads<Self::Elem>, NormError>;

    /// Backward pass into caller buffers, allocation-free once `grads` has grown (the
    /// training-loop form of [`NormLayer::backward_layer_into`]): `grads.dx` must have the
    /// shape of `x` (else [`NormError::Shape`]) and is overwritten with the input gradient;
    /// `grads.stages` is resized to one entry per stage, and each stage's parameter
    /// gradients are written into the arrays already there when they have the right shape
    /// (allocated otherwise: on the first call). Start from
    /// `ChainGrads { dx: ArrayD::zeros(x.raw_dim()), stages: Vec::new() }` and pass the same
    /// value to every call. On error `grads` is left valid but its values are unspecified.
    ///
    /// The default method (for layers implemented outside normkit) goes through
    /// [`NormLayer::backward_layer_into`] and so allocates the parameter gradients; every
    /// `#[norm]` layer and [`DynNorm`] override it without allocating.
    fn backward_layer_into_grads(
        &self,
        x: ArrayViewD<'_, Self::Elem>,
        dy: ArrayViewD<'_, Self::Elem>,
        saved: &Saved<Self::Elem>,
        grads: &mut ChainGrads<Self::Elem>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        check_grads_dx(self.layer_name(), x.shape(), &grads.dx)?;
        let dx = std::mem::take(&mut grads.dx);
        *grads = self.backward_layer_into(x, dy, saved, dx, sync)?;
        Ok(())
    }

    /// The parameters and running statistics of every stage, by name, in chain order (the
    /// stage name is empty for a single-stage layer).
    fn tensors(&self) -> Vec<StageTensors<'_, Self::Elem>>;

    /// [`NormLayer::tensors`], mutably: to set parameters or running statistics in place.
    fn tensors_mut(&mut self) -> Vec<StageTensorsMut<'_, Self::Elem>>;

    /// Forward pass into a new output array (allocated with [`crate::alloc::zeros`]).
    fn forward_layer(
        &mut self,
        x: ArrayViewD<'_, Self::Elem>,
        external: Option<External<'_, Self::Elem>>,
        mode: Mode,
    ) -> Result<Forward<Self::Elem>, NormError> {
        let mut y = alloc::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.forward_layer_into(x, external, mode, y.view_mut(), &mut saved, None)?;
        Ok((y, saved))
    }

    /// Backward pass into new gradient arrays.
    fn backward_layer(
        &self,
        x: ArrayViewD<'_, Self::Elem>,
        dy: ArrayViewD<'_, Self::Elem>,
        saved: &Saved<Self::Elem>,
    ) -> Result<ChainGrads<Self::Elem>, NormError> {
        let dx = alloc::zeros(x.raw_dim());
        self.backward_layer_into(x, dy, saved, dx, None)
    }

    /// Whether stage `k` takes its scale and shift from outside (`affine = external`).
    fn is_external(&self, k: usize) -> bool {
        self.layer_spec()
            .stages
            .get(k)
            .is_some_and(|s| s.affine == Affine::External)
    }

    /// Writes the parameters and running statistics into `sd` under PyTorch's names (as
    /// the layers' own `save_into`).
    fn save_layer_into(&self, sd: &mut StateDict, prefix: &str) {
        save_stages(sd, prefix, &self.tensors());
    }

    /// Loads the parameters and running statistics from `sd` under `prefix` (as the
    /// layers' own `load_state_dict`: strict, the layer unchanged on error).
    fn load_layer_state_dict(&mut self, sd: &StateDict, prefix: &str) -> Result<(), NormError> {
        let name = self.layer_name().to_string();
        load_stages(&name, sd, prefix, &mut self.tensors_mut())
    }
}

impl<T: Float> NormLayer for DynNorm<T> {
    type Elem = T;

    fn layer_spec(&self) -> &Spec {
        self.spec().spec()
    }

    fn layer_name(&self) -> &str {
        self.name()
    }

    fn forward_layer_into(
        &mut self,
        x: ArrayViewD<'_, T>,
        external: Option<External<'_, T>>,
        mode: Mode,
        out: ArrayViewMutD<'_, T>,
        saved: &mut Saved<T>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        self.forward_any_into(x, external, mode, out, saved, sync)
    }

    fn backward_layer_into(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        dx: ArrayD<T>,
        sync: Option<&dyn Collective>,
    ) -> Result<ChainGrads<T>, NormError> {
        self.backward_any_into(x, dy, saved, dx, sync)
    }

    fn backward_layer_into_grads(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
        grads: &mut ChainGrads<T>,
        sync: Option<&dyn Collective>,
    ) -> Result<(), NormError> {
        check_grads_dx(self.name(), x.shape(), &grads.dx)?;
        grads
            .stages
            .resize_with(self.stages().len(), StageGrads::default);
        let ChainGrads { dx, stages } = grads;
        self.backward_stages_into(x, dy, saved, dx.view_mut(), stages, sync)
    }

    fn tensors(&self) -> Vec<StageTensors<'_, T>> {
        let spec = self.spec().spec();
        spec.stages
            .iter()
            .zip(self.stages())
            .map(|(s, p)| StageTensors {
                name: if spec.chain { &s.name } else { "" },
                gamma: p.gamma.as_ref().map(|a| a.view()),
                beta: p.beta.as_ref().map(|a| a.view()),
                running_mean: p.running_mean.as_ref().map(|a| a.view()),
                running_var: p.running_var.as_ref().map(|a| a.view()),
                num_batches_tracked: p.running_mean.is_some().then_some(p.num_batches_tracked),
                mean_weight: p.mean_weight.as_ref().map(|a| a.view()),
                var_weight: p.var_weight.as_ref().map(|a| a.view()),
            })
            .collect()
    }

    fn tensors_mut(&mut self) -> Vec<StageTensorsMut<'_, T>> {
        let (spec, stages) = self.parts_mut();
        spec.stages
            .iter()
            .zip(stages)
            .map(|(s, p)| {
                let running = p.running_mean.is_some();
                StageTensorsMut {
                    name: if spec.chain { &s.name } else { "" },
                    gamma: p.gamma.as_mut().map(|a| a.view_mut()),
                    beta: p.beta.as_mut().map(|a| a.view_mut()),
                    running_mean: p.running_mean.as_mut().map(|a| a.view_mut()),
                    running_var: p.running_var.as_mut().map(|a| a.view_mut()),
                    num_batches_tracked: running.then_some(&mut p.num_batches_tracked),
                    mean_weight: p.mean_weight.as_mut().map(|a| a.view_mut()),
                    var_weight: p.var_weight.as_mut().map(|a| a.view_mut()),
                }
            })
            .collect()
    }
}

/// `x` with the static dimension `D` of a generated layer, or the rank error.
#[doc(hidden)]
pub fn fix_rank<'a, T, D: Dimension>(
    layer: &str,
    x: ArrayViewD<'a, T>,
) -> Result<ArrayView<'a, T, D>, NormError> {
    let actual = x.ndim();
    x.into_dimensionality::<D>()
        .map_err(|_| rank_error(layer, D::NDIM.unwrap_or(actual), actual))
}

/// [`fix_rank`] of an output view.
#[doc(hidden)]
pub fn fix_rank_mut<'a, T, D: Dimension>(
    layer: &str,
    x: ArrayViewMutD<'a, T>,
) -> Result<ArrayViewMut<'a, T, D>, NormError> {
    let actual = x.ndim();
    x.into_dimensionality::<D>()
        .map_err(|_| rank_error(layer, D::NDIM.unwrap_or(actual), actual))
}

/// [`fix_rank`] of an owned array.
#[doc(hidden)]
pub fn fix_rank_owned<T, D: Dimension>(
    layer: &str,
    x: ArrayD<T>,
) -> Result<ndarray::Array<T, D>, NormError> {
    let actual = x.ndim();
    x.into_dimensionality::<D>()
        .map_err(|_| rank_error(layer, D::NDIM.unwrap_or(actual), actual))
}

fn rank_error(layer: &str, expected: usize, actual: usize) -> NormError {
    NormError::Rank {
        layer: layer.to_string(),
        expected,
        actual,
    }
}

/// The error of a call that passes (or omits) an external scale and shift wrongly, or runs
/// a masked layer without its mask.
#[doc(hidden)]
pub fn call_mismatch(layer: &str, what: Mismatch) -> NormError {
    let reason = match what {
        Mismatch::NeedsExternal => "this layer has `affine = external`: pass scale and shift",
        Mismatch::NoExternal => "this layer has no `affine = external`: pass no scale and shift",
        Mismatch::Masked => {
            "a masked layer (`mask = ...`) runs through its own forward methods, which take the mask"
        }
    };
    NormError::Unsupported {
        layer: layer.to_string(),
        reason: reason.to_string(),
    }
}

/// What [`call_mismatch`] reports.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum Mismatch {
    /// `affine = external` without scale and shift.
    NeedsExternal,
    /// Scale and shift for a layer without `affine = external`.
    NoExternal,
    /// A masked layer.
    Masked,
}

/// The error of a `grads.dx` whose shape is not the input's.
#[doc(hidden)]
pub fn check_grads_dx<T>(layer: &str, x: &[usize], dx: &ArrayD<T>) -> Result<(), NormError> {
    if dx.shape() == x {
        return Ok(());
    }
    Err(NormError::Shape {
        layer: layer.to_string(),
        what: "grads.dx".to_string(),
        expected: x.to_vec(),
        actual: dx.shape().to_vec(),
    })
}

/// Moves a single-stage layer's buffers out of `grads` into the layer's own [`Grads`] (dx
/// checked against `x`'s shape and rank `D`; the parameter gradients reused), for
/// [`NormLayer::backward_layer_into_grads`]; [`put_single`] moves them back.
///
/// [`Grads`]: crate::Grads
#[doc(hidden)]
pub fn take_single<T: Float, D: Dimension>(
    layer: &str,
    x: &[usize],
    grads: &mut ChainGrads<T>,
) -> Result<crate::Grads<T, D>, NormError> {
    check_grads_dx(layer, x, &grads.dx)?;
    grads.stages.resize_with(1, StageGrads::default);
    let dx = fix_rank_owned::<T, D>(layer, std::mem::take(&mut grads.dx))?;
    let mut g = crate::Grads::new(dx);
    g.set_params(std::mem::take(&mut grads.stages[0]));
    Ok(g)
}

/// The inverse of [`take_single`].
#[doc(hidden)]
pub fn put_single<T: Float, D: Dimension>(grads: &mut ChainGrads<T>, mut g: crate::Grads<T, D>) {
    let stage = g.take_params();
    grads.stages.resize_with(1, StageGrads::default);
    grads.stages[0] = stage;
    grads.dx = g.dx.into_dyn();
}

/// The chain `grads` prepared for a `#[norm]` chain layer: dx checked against `x`'s shape,
/// one entry per stage, dx moved out (with rank `D`).
#[doc(hidden)]
pub fn take_chain<T: Float, D: Dimension>(
    layer: &str,
    x: &[usize],
    grads: &mut ChainGrads<T>,
    stages: usize,
) -> Result<ndarray::Array<T, D>, NormError> {
    check_grads_dx(layer, x, &grads.dx)?;
    grads.stages.resize_with(stages, StageGrads::default);
    fix_rank_owned::<T, D>(layer, std::mem::take(&mut grads.dx))
}

/// The stage gradients of a single-stage layer, as [`ChainGrads`].
#[doc(hidden)]
pub fn single_grads<T: Float, D: Dimension>(mut g: crate::Grads<T, D>) -> ChainGrads<T> {
    let stage: StageGrads<T> = g.take_params();
    ChainGrads {
        dx: g.dx.into_dyn(),
        stages: vec![stage],
    }
}
