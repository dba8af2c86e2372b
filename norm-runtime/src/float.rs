//! The element types a layer can compute in.

use std::fmt::{Debug, Display};

pub(crate) mod sealed {
    use super::Float;

    /// A value per element type, chosen at compile time: `Out<f32>` for `f32`, `Out<f64>`
    /// for `f64`. Modules that keep something per element type (the thread-local scratch,
    /// the kernels' view of the type) implement it; this module names none of them, so the
    /// numeric trait depends on nothing in the crate. A new element type adds one method
    /// here, and every map must then name its value for that type (nothing falls back).
    pub trait TypeMap {
        /// The value for element type `T`.
        type Out<T: Float>;
        /// The value for `f32`.
        fn f32() -> Self::Out<f32>;
        /// The value for `f64`.
        fn f64() -> Self::Out<f64>;
    }

    /// What only this crate implements: the element types, each selecting its entry of
    /// every [`TypeMap`].
    pub trait Sealed: Sized + 'static {
        /// This type's value of the map `M`.
        fn map<M: TypeMap>() -> M::Out<Self>
        where
            Self: Float;
    }

    impl Sealed for f32 {
        #[inline(always)]
        fn map<M: TypeMap>() -> M::Out<f32> {
            M::f32()
        }
    }

    impl Sealed for f64 {
        #[inline(always)]
        fn map<M: TypeMap>() -> M::Out<f64> {
            M::f64()
        }
    }
}

/// An element type of a normalization layer: `f32` or `f64`.
///
/// Statistics are accumulated in `f64` whatever the element type (shifted sums, exact for
/// `f32` inputs), so `f32` layers survive data with a large offset (mean 1e4, std 0.1)
/// without the cancellation of a naive `E[x²] − E[x]²`. The backward sums and parameter
/// gradients of `f32` layers add a handful of terms in `f32` before widening them into the
/// `f64` accumulators.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::ScalarOperand
    + ndarray::LinalgScalar
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// The type's name (`"f32"`, `"f64"`), for messages and benchmark labels.
    const NAME: &'static str;
    /// Widen to the accumulation type.
    fn to_acc(self) -> f64;
    /// Round from the accumulation type.
    fn from_acc(value: f64) -> Self;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn to_acc(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_acc(value: f64) -> Self {
        value as f32
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn to_acc(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_acc(value: f64) -> Self {
        value
    }
}
