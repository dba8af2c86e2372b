//! The layers the candle op runs: [`TypedLayer`] (one element type, object safe) and
//! [`NormLayer`] (picks the element type of a call at run time).
//!
//! [`DynNorm`] implements both; [`SpecLayer`] holds an `f32` and an `f64` copy of one spec so
//! a module computes in whatever dtype its tensors have; a `#[norm]` declaration gets them
//! from [`crate::norm_layer!`].

use std::borrow::Cow;

use candle_core::Result;
use normkit::ndarray::{Array, ArrayD, ArrayViewD, ArrayViewMutD, Dimension};
use normkit::spec::Affine;
use normkit::{DynNorm, Float, Mode, NormError, NormSpec, Saved, StageGrads};

use crate::error::{msg, norm_err};

/// The state of one stage of a layer, borrowed mutably: what the candle op reads parameters
/// and running statistics into, and the updated running statistics out of.
///
/// The field names are those of the `#[norm]`-generated structs (the parameters keep the
/// PyTorch names `weight`/`bias` in a `VarBuilder`).
#[derive(Debug)]
pub struct StageMut<'a, T> {
    /// The stage's name in a chain (`""` for a single-stage layer): the `VarBuilder` prefix
    /// of its parameters.
    pub name: Cow<'static, str>,
    /// The stage takes its scale and shift from outside (`affine = external`).
    pub external: bool,
    /// `gamma` (PyTorch `weight`).
    pub gamma: Option<ArrayViewMutD<'a, T>>,
    /// `beta` (PyTorch `bias`).
    pub beta: Option<ArrayViewMutD<'a, T>>,
    /// `running_mean`.
    pub running_mean: Option<ArrayViewMutD<'a, T>>,
    /// `running_var`.
    pub running_var: Option<ArrayViewMutD<'a, T>>,
    /// `num_batches_tracked`.
    pub num_batches_tracked: Option<&'a mut u64>,
}

impl<T> StageMut<'_, T> {
    /// A stage with nothing borrowed yet.
    pub fn empty(name: impl Into<Cow<'static, str>>, external: bool) -> Self {
        StageMut {
            name: name.into(),
            external,
            gamma: None,
            beta: None,
            running_mean: None,
            running_var: None,
            num_batches_tracked: None,
        }
    }
}

/// A normalization layer in one element type `T`, over arrays of any rank (checked at run
/// time): the interface the candle op calls. Object safe.
pub trait TypedLayer<T: Float>: Send {
    /// Forward pass (`external`: scale and shift of an `affine = external` layer).
    fn forward(
        &mut self,
        x: ArrayViewD<'_, T>,
        external: Option<(ArrayViewD<'_, T>, ArrayViewD<'_, T>)>,
        mode: Mode,
    ) -> std::result::Result<(ArrayD<T>, Saved<T>), NormError>;

    /// Backward pass: dx and one entry of parameter gradients per stage.
    fn backward(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
    ) -> std::result::Result<(ArrayD<T>, Vec<StageGrads<T>>), NormError>;

    /// The parameters and running statistics of every stage, in chain order.
    fn stages(&mut self) -> Vec<StageMut<'_, T>>;
}

/// A layer the candle op can run: it hands out a [`TypedLayer`] for the element type of
/// the call (`None` for a type it does not compute in).
///
/// Implemented by [`DynNorm<f32>`], [`DynNorm<f64>`], [`SpecLayer`] (both) and, through
/// [`crate::norm_layer!`], by `#[norm]` declarations.
pub trait NormLayer: Send + 'static {
    /// The layer in `f32`, if it computes in `f32`.
    fn as_f32(&mut self) -> Option<&mut dyn TypedLayer<f32>> {
        None
    }
    /// The layer in `f64`, if it computes in `f64`.
    fn as_f64(&mut self) -> Option<&mut dyn TypedLayer<f64>> {
        None
    }
}

impl<T: Float> TypedLayer<T> for DynNorm<T> {
    fn forward(
        &mut self,
        x: ArrayViewD<'_, T>,
        external: Option<(ArrayViewD<'_, T>, ArrayViewD<'_, T>)>,
        mode: Mode,
    ) -> std::result::Result<(ArrayD<T>, Saved<T>), NormError> {
        match external {
            Some((scale, shift)) => self.forward_external(x, scale, shift, mode),
            None => DynNorm::forward(self, x, mode),
        }
    }

    fn backward(
        &self,
        x: ArrayViewD<'_, T>,
        dy: ArrayViewD<'_, T>,
        saved: &Saved<T>,
    ) -> std::result::Result<(ArrayD<T>, Vec<StageGrads<T>>), NormError> {
        let g = self.backward_chain(x, dy, saved)?;
        Ok((g.dx, g.stages))
    }

    fn stages(&mut self) -> Vec<StageMut<'_, T>> {
        let info: Vec<(Cow<'static, str>, bool)> = self
            .spec()
            .spec()
            .stages
            .iter()
            .map(|s| (Cow::Owned(s.name.to_string()), s.affine == Affine::External))
            .collect();
        self.stages_mut()
            .iter_mut()
            .zip(info)
            .map(|(p, (name, external))| {
                let tracked = p.running_mean.is_some();
                StageMut {
                    name,
                    external,
                    gamma: p.gamma.as_mut().map(|a| a.view_mut()),
                    beta: p.beta.as_mut().map(|a| a.view_mut()),
                    running_mean: p.running_mean.as_mut().map(|a| a.view_mut()),
                    running_var: p.running_var.as_mut().map(|a| a.view_mut()),
                    num_batches_tracked: tracked.then_some(&mut p.num_batches_tracked),
                }
            })
            .collect()
    }
}

impl NormLayer for DynNorm<f32> {
    fn as_f32(&mut self) -> Option<&mut dyn TypedLayer<f32>> {
        Some(self)
    }
}

impl NormLayer for DynNorm<f64> {
    fn as_f64(&mut self) -> Option<&mut dyn TypedLayer<f64>> {
        Some(self)
    }
}

/// A run-time configured layer in both element types: an `f32` and an `f64` [`DynNorm`] of
/// one spec, so the dtype of the tensors decides at each call. The engine of the drop-in
/// modules.
///
/// ```
/// use normkit_candle::SpecLayer;
/// let gn = SpecLayer::new(r#"input = "N,C,L", axes = "C,L", groups = 4, affine"#, &[("C", 16)])?;
/// assert!(gn.spec().to_string().contains("groups"));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SpecLayer {
    f32: DynNorm<f32>,
    f64: DynNorm<f64>,
}

impl SpecLayer {
    /// Parses `spec` (the `#[norm(...)]` syntax) and sizes its parameters (e.g.
    /// `&[("C", 64)]`). The parser's and the constructor's messages become the error.
    pub fn new(spec: &str, sizes: &[(&str, usize)]) -> Result<Self> {
        let spec = NormSpec::parse(spec).map_err(|e| msg(format!("normkit spec: {e}")))?;
        Self::from_spec(&spec, sizes)
    }

    /// A layer for an already parsed spec.
    pub fn from_spec(spec: &NormSpec, sizes: &[(&str, usize)]) -> Result<Self> {
        Ok(SpecLayer {
            f32: DynNorm::new(spec, sizes).map_err(norm_err)?,
            f64: DynNorm::new(spec, sizes).map_err(norm_err)?,
        })
    }

    /// Sets the name shown in error messages.
    pub fn with_name(self, name: &str) -> Self {
        SpecLayer {
            f32: self.f32.with_name(name),
            f64: self.f64.with_name(name),
        }
    }

    /// The configuration.
    pub fn spec(&self) -> &NormSpec {
        self.f32.spec()
    }
}

impl NormLayer for SpecLayer {
    fn as_f32(&mut self) -> Option<&mut dyn TypedLayer<f32>> {
        Some(&mut self.f32)
    }
    fn as_f64(&mut self) -> Option<&mut dyn TypedLayer<f64>> {
        Some(&mut self.f64)
    }
}

/// Borrows a field of a generated layer as a [`StageMut`] entry (used by
/// [`crate::norm_layer!`]).
#[doc(hidden)]
pub trait FieldMut<'a> {
    type Out;
    fn field_mut(self) -> Self::Out;
}

impl<'a, T: 'a, D: Dimension> FieldMut<'a> for &'a mut Array<T, D> {
    type Out = Option<ArrayViewMutD<'a, T>>;
    fn field_mut(self) -> Self::Out {
        Some(self.view_mut().into_dyn())
    }
}

impl<'a> FieldMut<'a> for &'a mut u64 {
    type Out = Option<&'a mut u64>;
    fn field_mut(self) -> Self::Out {
        Some(self)
    }
}

/// `x` as an array of the static dimension `D`, or the rank error a dynamic layer gives.
#[doc(hidden)]
pub fn fix_rank<'a, T, D: Dimension>(
    layer: &str,
    x: ArrayViewD<'a, T>,
) -> std::result::Result<normkit::ndarray::ArrayView<'a, T, D>, NormError> {
    let actual = x.ndim();
    x.into_dimensionality::<D>().map_err(|_| NormError::Rank {
        layer: layer.to_string(),
        expected: D::NDIM.unwrap_or(actual),
        actual,
    })
}

/// The error of a call that passes (or omits) an external scale and shift wrongly.
#[doc(hidden)]
pub fn external_mismatch(layer: &str, has_external: bool) -> NormError {
    NormError::Unsupported {
        layer: layer.to_string(),
        reason: if has_external {
            "this layer has `affine = external`: pass scale and shift".to_string()
        } else {
            "this layer has no `affine = external`: pass no scale and shift".to_string()
        },
    }
}

/// Implements [`TypedLayer`] and [`NormLayer`] for a `#[norm]` declaration, so that
/// [`crate::NormModule::new`] accepts it. List the declaration's static dimension and the
/// state fields it has (`gamma`, `beta`, `running_mean`, `running_var`,
/// `num_batches_tracked`):
///
/// ```
/// use normkit::prelude::*;
/// use normkit_candle::norm_layer;
///
/// #[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
/// pub struct MyGroupNorm;
/// norm_layer!(MyGroupNorm: Ix4 { gamma, beta });
///
/// #[norm(input = "N,C,H,W", axes = "H,W", unbiased, affine = external)]
/// pub struct AdaIn;
/// norm_layer!(AdaIn: Ix4 external(Ix2) {});
///
/// #[norm(input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats),
///                                 gn(axes = "C,H,W", groups = 2, affine)))]
/// pub struct Bcn;
/// norm_layer!(Bcn: Ix4 chain {
///     bn { gamma, beta, running_mean, running_var, num_batches_tracked },
///     gn { gamma, beta },
/// });
/// ```
///
/// The `#[norm]` macro does not (yet) emit this itself; a field listed that the declaration
/// lacks is a compile error, a field left out is not trained or saved.
#[macro_export]
macro_rules! norm_layer {
    (@dispatch $ty:ident) => {
        impl $crate::NormLayer for $ty<f32> {
            fn as_f32(&mut self) -> ::std::option::Option<&mut dyn $crate::TypedLayer<f32>> {
                ::std::option::Option::Some(self)
            }
        }
        impl $crate::NormLayer for $ty<f64> {
            fn as_f64(&mut self) -> ::std::option::Option<&mut dyn $crate::TypedLayer<f64>> {
                ::std::option::Option::Some(self)
            }
        }
    };
    (@common $ty:ident, $dim:ident) => {
        fn backward(
            &self,
            x: $crate::__private::ndarray::ArrayViewD<'_, T>,
            dy: $crate::__private::ndarray::ArrayViewD<'_, T>,
            saved: &$crate::__private::Saved<T>,
        ) -> ::std::result::Result<
            (
                $crate::__private::ndarray::ArrayD<T>,
                ::std::vec::Vec<$crate::__private::StageGrads<T>>,
            ),
            $crate::__private::NormError,
        > {
            let name = ::std::stringify!($ty);
            let x = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, x)?;
            let dy = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, dy)?;
            let g = <$ty<T>>::backward(self, x, dy, saved)?;
            $crate::norm_layer!(@grads g)
        }
    };
    (@grads $g:ident) => {{
        let mut g = $g;
        let stage = g.take_params();
        ::std::result::Result::Ok((g.dx.into_dyn(), ::std::vec![stage]))
    }};
    ($ty:ident : $dim:ident external($kd:ident) { $($f:ident),* $(,)? }) => {
        impl<T: $crate::__private::Float> $crate::TypedLayer<T> for $ty<T> {
            fn forward(
                &mut self,
                x: $crate::__private::ndarray::ArrayViewD<'_, T>,
                external: ::std::option::Option<(
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                )>,
                mode: $crate::__private::Mode,
            ) -> ::std::result::Result<
                ($crate::__private::ndarray::ArrayD<T>, $crate::__private::Saved<T>),
                $crate::__private::NormError,
            > {
                let name = ::std::stringify!($ty);
                let ::std::option::Option::Some((scale, shift)) = external else {
                    return ::std::result::Result::Err($crate::__private::external_mismatch(name, true));
                };
                let x = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, x)?;
                let scale = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$kd>(name, scale)?;
                let shift = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$kd>(name, shift)?;
                let (y, saved) = <$ty<T>>::forward(self, x, scale, shift, mode)?;
                ::std::result::Result::Ok((y.into_dyn(), saved))
            }
            $crate::norm_layer!(@common $ty, $dim);
            fn stages(&mut self) -> ::std::vec::Vec<$crate::StageMut<'_, T>> {
                #[allow(unused_mut)]
                let mut st = $crate::StageMut::empty("", true);
                $( st.$f = $crate::__private::FieldMut::field_mut(&mut self.$f); )*
                ::std::vec![st]
            }
        }
        $crate::norm_layer!(@dispatch $ty);
    };
    ($ty:ident : $dim:ident chain { $($stage:ident { $($f:ident),* $(,)? }),+ $(,)? }) => {
        impl<T: $crate::__private::Float> $crate::TypedLayer<T> for $ty<T> {
            fn forward(
                &mut self,
                x: $crate::__private::ndarray::ArrayViewD<'_, T>,
                external: ::std::option::Option<(
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                )>,
                mode: $crate::__private::Mode,
            ) -> ::std::result::Result<
                ($crate::__private::ndarray::ArrayD<T>, $crate::__private::Saved<T>),
                $crate::__private::NormError,
            > {
                let name = ::std::stringify!($ty);
                if external.is_some() {
                    return ::std::result::Result::Err($crate::__private::external_mismatch(name, false));
                }
                let x = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, x)?;
                let (y, saved) = <$ty<T>>::forward(self, x, mode)?;
                ::std::result::Result::Ok((y.into_dyn(), saved))
            }
            fn backward(
                &self,
                x: $crate::__private::ndarray::ArrayViewD<'_, T>,
                dy: $crate::__private::ndarray::ArrayViewD<'_, T>,
                saved: &$crate::__private::Saved<T>,
            ) -> ::std::result::Result<
                (
                    $crate::__private::ndarray::ArrayD<T>,
                    ::std::vec::Vec<$crate::__private::StageGrads<T>>,
                ),
                $crate::__private::NormError,
            > {
                let name = ::std::stringify!($ty);
                let x = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, x)?;
                let dy = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, dy)?;
                let g = <$ty<T>>::backward(self, x, dy, saved)?;
                ::std::result::Result::Ok((g.dx.into_dyn(), ::std::vec![$(g.$stage),+]))
            }
            fn stages(&mut self) -> ::std::vec::Vec<$crate::StageMut<'_, T>> {
                let mut all = ::std::vec::Vec::new();
                $(
                    #[allow(unused_mut)]
                    let mut st = $crate::StageMut::empty(::std::stringify!($stage), false);
                    $( st.$f = $crate::__private::FieldMut::field_mut(&mut self.$stage.$f); )*
                    all.push(st);
                )+
                all
            }
        }
        $crate::norm_layer!(@dispatch $ty);
    };
    ($ty:ident : $dim:ident { $($f:ident),* $(,)? }) => {
        impl<T: $crate::__private::Float> $crate::TypedLayer<T> for $ty<T> {
            fn forward(
                &mut self,
                x: $crate::__private::ndarray::ArrayViewD<'_, T>,
                external: ::std::option::Option<(
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                    $crate::__private::ndarray::ArrayViewD<'_, T>,
                )>,
                mode: $crate::__private::Mode,
            ) -> ::std::result::Result<
                ($crate::__private::ndarray::ArrayD<T>, $crate::__private::Saved<T>),
                $crate::__private::NormError,
            > {
                let name = ::std::stringify!($ty);
                if external.is_some() {
                    return ::std::result::Result::Err($crate::__private::external_mismatch(name, false));
                }
                let x = $crate::__private::fix_rank::<T, $crate::__private::ndarray::$dim>(name, x)?;
                let (y, saved) = <$ty<T>>::forward(self, x, mode)?;
                ::std::result::Result::Ok((y.into_dyn(), saved))
            }
            $crate::norm_layer!(@common $ty, $dim);
            fn stages(&mut self) -> ::std::vec::Vec<$crate::StageMut<'_, T>> {
                #[allow(unused_mut)]
                let mut st = $crate::StageMut::empty("", false);
                $( st.$f = $crate::__private::FieldMut::field_mut(&mut self.$f); )*
                ::std::vec![st]
            }
        }
        $crate::norm_layer!(@dispatch $ty);
    };
}
