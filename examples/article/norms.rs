//! Every normalization of the tour, declared with normkit's `#[norm]`.
//!
//! This is the only file that knows about normkit: it adapts the generated
//! layers to the small [`Normalizer`] / [`WeightTransform`] traits the CNN is
//! written against, so swapping a normalizer is one line in [`make_norm`].
//! All normalization gradients come from normkit's generated `backward`.

use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayView4};
use normkit::prelude::*;

use crate::model::NormKind;
use crate::nn::{Error, Identity, Normalizer, Phase, Scalar, WeightTransform};

/// Channel groups of GN and of BCN's channel stage.
pub const GROUPS: usize = 4;

/// Batch Normalization: statistics over the batch and the image, per channel.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm;

/// Layer Normalization (as in the GN paper: over `C,H,W`, one γ/β per channel).
#[norm(input = "N,C,H,W", axes = "C,H,W", affine)]
pub struct LayerNorm;

/// Instance Normalization: over the image, per example and channel.
#[norm(input = "N,C,H,W", axes = "H,W", affine)]
pub struct InstanceNorm;

/// Group Normalization with 4 groups of channels.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 4, affine)]
pub struct GroupNorm;

/// Batch-Channel Normalization: BN, then a GN stage with one γ/β per group.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 4, affine = "G")
    )
)]
pub struct BatchChannelNorm;

/// Weight Standardization of a convolution weight: per output channel, zero
/// mean and unit (unbiased) standard deviation, ŵ = (w − μ) / (σ + eps).
#[norm(input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std")]
pub struct WeightStd;

/// Input standardization of tabular features (part 1). `eps = 0`: exact
/// standardization — the default 1e-5 would exceed the variance of the wine
/// density (≈ 3.6e-6) and leave that feature at half its unit scale.
#[norm(input = "N,F", axes = "N", eps = 0.0)]
pub struct Standardize;

/// Standardizes each column of `x` to zero mean and unit variance.
pub fn standardize(x: ArrayView2<'_, f64>) -> Result<Array2<f64>, Error> {
    let mut layer = Standardize::<f64>::new();
    let (z, _saved) = layer.forward(x, Mode::Train)?;
    Ok(z)
}

/// Per-pixel standardization of images, fitted on a training set: one
/// training-mode pass stores each pixel's mean and (unbiased) variance as the
/// running statistics (`momentum = 1.0`), and inference mode then applies
/// that same affine map to any set of images.
#[norm(input = "N,C,H,W", axes = "N", running_stats, momentum = 1.0)]
pub struct PixelStandardize;

/// Standardizes every pixel of `train` and `test` (`N,C,H,W`) with the
/// mean and standard deviation of that pixel over `train`.
pub fn standardize_pixels(
    train: ArrayView4<'_, f32>,
    test: ArrayView4<'_, f32>,
) -> Result<(Array4<f32>, Array4<f32>), Error> {
    let (_, c, h, w) = train.dim();
    let mut layer = PixelStandardize::<f32>::new(c, h, w);
    layer.forward(train, Mode::Train)?;
    Ok((layer.forward_eval(train)?, layer.forward_eval(test)?))
}

/// The float types the CNN can run on with normkit layers.
pub trait NormFloat: Scalar + Float {}
impl<T: Scalar + Float> NormFloat for T {}

type Fwd<L, T> = fn(&mut L, ArrayView4<'_, T>, Mode) -> Result<(Array4<T>, Saved<T>), NormError>;
type Bwd<L, T> = fn(
    &L,
    ArrayView4<'_, T>,
    ArrayView4<'_, T>,
    &Saved<T>,
) -> Result<(Array4<T>, Vec<Option<ArrayD<T>>>), NormError>;
type Fields<L, T> = for<'a> fn(&'a mut L) -> Vec<&'a mut [T]>;

/// Adapts one generated layer `L` to [`Normalizer`]: keeps the input and
/// `Saved` of the last forward pass and the parameter gradients of the last
/// backward pass.
struct Adapter<T: NormFloat, L> {
    name: &'static str,
    layer: L,
    forward: Fwd<L, T>,
    backward: Bwd<L, T>,
    /// γ and β of every stage, in a fixed order.
    params: Fields<L, T>,
    /// Running statistics (saved and restored around [`Phase::BatchStats`]).
    running: Fields<L, T>,
    cache: Option<(Array4<T>, Saved<T>)>,
    grads: Vec<Option<ArrayD<T>>>,
}

fn slice<T, D: ndarray::Dimension>(a: &mut ndarray::Array<T, D>) -> &mut [T] {
    a.as_slice_mut().expect("normkit parameters are contiguous")
}

impl<T: NormFloat, L: Send> Normalizer<T> for Adapter<T, L> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn forward(&mut self, x: Array4<T>, phase: Phase) -> Result<Array4<T>, Error> {
        let (y, saved) = match phase {
            Phase::Train => (self.forward)(&mut self.layer, x.view(), Mode::Train)?,
            Phase::Eval => (self.forward)(&mut self.layer, x.view(), Mode::Eval)?,
            Phase::BatchStats => {
                let keep: Vec<Vec<T>> = (self.running)(&mut self.layer)
                    .into_iter()
                    .map(|s| s.to_vec())
                    .collect();
                let out = (self.forward)(&mut self.layer, x.view(), Mode::Train)?;
                for (dst, src) in (self.running)(&mut self.layer).into_iter().zip(&keep) {
                    dst.copy_from_slice(src);
                }
                out
            }
        };
        self.cache = Some((x, saved));
        Ok(y)
    }

    fn backward(&mut self, dy: ArrayView4<'_, T>) -> Result<Array4<T>, Error> {
        let (x, saved) = self.cache.take().ok_or("backward without a forward pass")?;
        let (dx, grads) = (self.backward)(&self.layer, x.view(), dy, &saved)?;
        self.grads = grads;
        Ok(dx)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut [T], &[T])) {
        let grads = &self.grads;
        for (i, p) in (self.params)(&mut self.layer).into_iter().enumerate() {
            match grads.get(i) {
                Some(Some(g)) => f(p, g.as_slice().expect("normkit gradients are contiguous")),
                // Before the first backward pass: a zero gradient, so that the
                // visiting order never changes.
                _ => {
                    let zero = vec![T::zero(); p.len()];
                    f(p, &zero);
                }
            }
        }
    }
}

/// The normalizer of `kind` for `channels` channels.
pub fn make_norm<T: NormFloat>(kind: NormKind, channels: usize) -> Box<dyn Normalizer<T>> {
    fn adapter<T: NormFloat, L: Send + 'static>(
        name: &'static str,
        layer: L,
        forward: Fwd<L, T>,
        backward: Bwd<L, T>,
        params: Fields<L, T>,
        running: Fields<L, T>,
    ) -> Box<dyn Normalizer<T>> {
        Box::new(Adapter {
            name,
            layer,
            forward,
            backward,
            params,
            running,
            cache: None,
            grads: Vec::new(),
        })
    }
    // The plain (non-chain) layers share their method and field names.
    macro_rules! plain {
        ($name:literal, $ty:ident, running: [$($r:ident),*]) => {
            adapter(
                $name,
                $ty::<T>::new(channels),
                |l, x, m| l.forward(x, m),
                |l, x, dy, s| l.backward(x, dy, s).map(|g| (g.dx, vec![g.dgamma, g.dbeta])),
                |l| vec![slice(&mut l.gamma), slice(&mut l.beta)],
                |_l| vec![$(slice(&mut _l.$r)),*],
            )
        };
    }
    match kind {
        NormKind::None => Box::new(Identity),
        NormKind::Batch => plain!("BN", BatchNorm, running: [running_mean, running_var]),
        NormKind::Layer => plain!("LN", LayerNorm, running: []),
        NormKind::Instance => plain!("IN", InstanceNorm, running: []),
        NormKind::Group | NormKind::GroupWs => plain!("GN", GroupNorm, running: []),
        NormKind::BatchChannelWs => adapter(
            "BCN",
            BatchChannelNorm::<T>::new(channels),
            |l, x, m| l.forward(x, m),
            |l, x, dy, s| {
                l.backward(x, dy, s)
                    .map(|g| (g.dx, vec![g.bn.dgamma, g.bn.dbeta, g.gn.dgamma, g.gn.dbeta]))
            },
            |l| {
                vec![
                    slice(&mut l.bn.gamma),
                    slice(&mut l.bn.beta),
                    slice(&mut l.gn.gamma),
                    slice(&mut l.gn.beta),
                ]
            },
            |l| vec![slice(&mut l.bn.running_mean), slice(&mut l.bn.running_var)],
        ),
    }
}

/// Weight Standardization through normkit: the forward pass standardizes the
/// raw weight, the backward pass maps the gradient of the standardized weight
/// back to the raw weight.
struct Ws<T: NormFloat> {
    layer: WeightStd<T>,
    saved: Option<Saved<T>>,
}

impl<T: NormFloat> WeightTransform<T> for Ws<T> {
    fn forward(&mut self, w: ArrayView4<'_, T>) -> Result<Array4<T>, Error> {
        let (w_hat, saved) = self.layer.forward(w, Mode::Train)?;
        self.saved = Some(saved);
        Ok(w_hat)
    }

    fn backward(
        &mut self,
        w: ArrayView4<'_, T>,
        dw_hat: ArrayView4<'_, T>,
    ) -> Result<Array4<T>, Error> {
        let saved = self.saved.take().ok_or("backward without a forward pass")?;
        Ok(self.layer.backward(w, dw_hat, &saved)?.dx)
    }
}

/// Weight Standardization for the variants that use it.
pub fn make_ws<T: NormFloat>(kind: NormKind) -> Option<Box<dyn WeightTransform<T>>> {
    kind.uses_ws().then(|| {
        Box::new(Ws {
            layer: WeightStd::<T>::new(),
            saved: None,
        }) as Box<dyn WeightTransform<T>>
    })
}
