//! The element types a layer can compute in.

use std::fmt::{Debug, Display};

pub(crate) mod sealed {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::scratch::Scratch;

    /// What only this crate implements: the element types, each with its own thread-local
    /// scratch (a new element type cannot compile without naming one).
    pub trait Sealed: Sized + 'static {
        /// This type's thread-local scratch buffers.
        fn scratch() -> &'static LocalKey<RefCell<Scratch<Self>>>;
    }

    impl Sealed for f32 {
        fn scratch() -> &'static LocalKey<RefCell<Scratch<f32>>> {
            thread_local! {
                static SCRATCH: RefCell<Scratch<f32>> = RefCell::new(Scratch::default());
            }
            &SCRATCH
        }
    }

    impl Sealed for f64 {
        fn scratch() -> &'static LocalKey<RefCell<Scratch<f64>>> {
            thread_local! {
                static SCRATCH: RefCell<Scratch<f64>> = RefCell::new(Scratch::default());
            }
            &SCRATCH
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
    + crate::kernels::reduce::RowReduce
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
