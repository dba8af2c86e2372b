//! The scratch memory of layer calls, kept per thread and per element type.
//!
//! Each element type has its own thread-local [`Scratch`], selected through the sealed part
//! of [`crate::Float`] (`float::sealed::TypeMap`): a new element type must name one to
//! compile, so it can never fall back to allocating on every call.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::chain::ChainScratch;
use crate::float::sealed::TypeMap;
use crate::kernels::exec::Acc;
use crate::plan::{Plan, PlanCache};
use crate::state::sized;
use crate::types::Saved;
use crate::Float;

/// The scratch buffers of one thread's layer calls in element type `T`, reused across calls
/// so that a `*_into` call does not allocate once they have grown.
#[derive(Debug, Default)]
pub struct Scratch<T> {
    /// The plan of every stage of the current call (built once by the checks).
    pub(crate) plans: Vec<Plan>,
    /// The plans of the last few shapes and stages this thread checked.
    pub(crate) plan_cache: PlanCache,
    /// The `Saved` of an inference call, which the caller does not keep.
    pub(crate) saved: Saved<T>,
    /// A chain's backward: the upstream gradient of the stage being processed.
    pub(crate) up: Vec<T>,
    /// A chain's backward: the gradient written by that stage.
    pub(crate) down: Vec<T>,
    /// x̂ = (x − m)·a + b per group (backward).
    pub(crate) xm: Vec<T>,
    pub(crate) xa: Vec<T>,
    pub(crate) xb: Vec<T>,
    /// Per-group coefficients of the elementwise passes.
    pub(crate) m: Vec<T>,
    pub(crate) a: Vec<T>,
    pub(crate) b: Vec<T>,
    pub(crate) c: Vec<T>,
    /// The executor's partial sums.
    pub(crate) acc: Acc,
    /// Per-group backward sums Σg, Σg·x̂.
    pub(crate) sg: Vec<f64>,
    pub(crate) sgx: Vec<f64>,
    /// Per-parameter backward sums (unfolded γ).
    pub(crate) dparams: Vec<f64>,
    /// The staged γ-gradient sums of the backward pass (element type).
    pub(crate) stage: Vec<T>,
    /// The running-statistics update.
    pub(crate) run: Vec<f64>,
    pub(crate) dgamma: Vec<f64>,
    pub(crate) dbeta: Vec<f64>,
    /// Synchronized statistics: the local values, all members' and the merged moments.
    pub(crate) sync_local: Vec<f64>,
    pub(crate) sync_all: Vec<f64>,
    pub(crate) sync_merged: Vec<(f64, f64, f64)>,
    /// The fused path of chains.
    pub(crate) chain: ChainScratch<T>,
}

impl<T: Float> Scratch<T> {
    /// The per-group coefficients (m, a, b) of the elementwise pass, `groups` values each,
    /// for a pass that writes every one before it reads any (resized only when the length
    /// changes).
    #[inline(always)]
    pub(crate) fn coef_for(&mut self, groups: usize) -> (&mut [T], &mut [T], &mut [T]) {
        for v in [&mut self.m, &mut self.a, &mut self.b] {
            sized(v, groups, T::zero());
        }
        (&mut self.m, &mut self.a, &mut self.b)
    }

    /// The coefficients [`Scratch::coef_for`] sized, as the elementwise pass reads them.
    #[inline(always)]
    pub(crate) fn coef(&self) -> (&[T], &[T], &[T]) {
        (&self.m, &self.a, &self.b)
    }
}

/// Each element type's thread-local scratch (the map every `Float` selects from).
struct PerType;

impl TypeMap for PerType {
    type Out<T: Float> = &'static LocalKey<RefCell<Scratch<T>>>;
    fn f32() -> Self::Out<f32> {
        thread_local! {
            static SCRATCH: RefCell<Scratch<f32>> = RefCell::new(Scratch::default());
        }
        &SCRATCH
    }
    fn f64() -> Self::Out<f64> {
        thread_local! {
            static SCRATCH: RefCell<Scratch<f64>> = RefCell::new(Scratch::default());
        }
        &SCRATCH
    }
    fn bf16() -> Self::Out<half::bf16> {
        thread_local! {
            static SCRATCH: RefCell<Scratch<half::bf16>> = RefCell::new(Scratch::default());
        }
        &SCRATCH
    }
    fn f16() -> Self::Out<half::f16> {
        thread_local! {
            static SCRATCH: RefCell<Scratch<half::f16>> = RefCell::new(Scratch::default());
        }
        &SCRATCH
    }
}

/// Runs `f` with this thread's scratch buffers for `T` (the ones `T` selects).
pub(crate) fn with_scratch<T: Float, R>(f: impl FnOnce(&mut Scratch<T>) -> R) -> R {
    T::map::<PerType>().with(|cell: &RefCell<Scratch<T>>| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // A layer called from inside another layer's call on this thread (e.g. from a rayon
        // task that this thread picked up while waiting): fresh buffers.
        Err(_) => f(&mut Scratch::default()),
    })
}
