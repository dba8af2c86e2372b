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

        /// Whether layers of this type compute in f32 (`crate::widen`): the half types,
        /// stored in 16 bits, their elementwise arithmetic in f32 and statistics in f64.
        const WIDE: bool = false;

        /// `dst[i] = src[i]` widened to f32 (exact for the half types; only called where
        /// [`Sealed::WIDE`]).
        fn widen(src: &[Self], dst: &mut [f32]) {
            let _ = (src, dst);
            unreachable!("only the WIDE types convert through f32")
        }

        /// `dst[i] = src[i]` rounded to nearest even (only called where [`Sealed::WIDE`]).
        fn narrow(src: &[f32], dst: &mut [Self]) {
            let _ = (src, dst);
            unreachable!("only the WIDE types convert through f32")
        }
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

    impl Sealed for half::bf16 {
        const WIDE: bool = true;
        fn scratch() -> &'static LocalKey<RefCell<Scratch<half::bf16>>> {
            thread_local! {
                static SCRATCH: RefCell<Scratch<half::bf16>> = RefCell::new(Scratch::default());
            }
            &SCRATCH
        }
        fn widen(src: &[Self], dst: &mut [f32]) {
            crate::kernels::convert::bf16_to_f32(src, dst);
        }
        fn narrow(src: &[f32], dst: &mut [Self]) {
            crate::kernels::convert::f32_to_bf16(src, dst);
        }
    }

    impl Sealed for half::f16 {
        const WIDE: bool = true;
        fn scratch() -> &'static LocalKey<RefCell<Scratch<half::f16>>> {
            thread_local! {
                static SCRATCH: RefCell<Scratch<half::f16>> = RefCell::new(Scratch::default());
            }
            &SCRATCH
        }
        fn widen(src: &[Self], dst: &mut [f32]) {
            crate::kernels::convert::f16_to_f32(src, dst);
        }
        fn narrow(src: &[f32], dst: &mut [Self]) {
            crate::kernels::convert::f32_to_f16(src, dst);
        }
    }
}

/// An element type of a normalization layer: `f32`, `f64`, or the half-precision
/// [`half::bf16`] and [`half::f16`] (`normkit::bf16`, `normkit::f16`).
///
/// Half-precision layers store everything in 16 bits (inputs, outputs, gradients,
/// parameters, running statistics, as PyTorch's `module.to(torch.bfloat16)`) and compute in
/// `f32` (elementwise passes, parameter gradients) and `f64` (statistics, backward sums), so
/// each value they return is rounded once, from the wide result.
///
/// Statistics are accumulated in `f64` whatever the element type (shifted sums, exact for
/// `f32` inputs), so `f32` layers survive data with a large offset (mean 1e4, std 0.1)
/// without the cancellation of a naive `E[x²] − E[x]²`. The backward sums and parameter
/// gradients of `f32` layers add a handful of terms in `f32` before widening them into the
/// `f64` accumulators.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
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

impl Float for half::bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn to_acc(self) -> f64 {
        f64::from(self.to_f32())
    }
    #[inline(always)]
    fn from_acc(value: f64) -> Self {
        crate::kernels::convert::f64_to_bf16(value)
    }
}

impl Float for half::f16 {
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn to_acc(self) -> f64 {
        f64::from(self.to_f32())
    }
    #[inline(always)]
    fn from_acc(value: f64) -> Self {
        crate::kernels::convert::f64_to_f16(value)
    }
}
