//! What one call borrows from a layer: its identity ([`LayerInfo`]) and each stage's
//! parameters and running statistics ([`StageState`]), plus the two buffer helpers every
//! step uses.

use std::borrow::Cow;

use ndarray::{ArrayViewD, ArrayViewMutD};
use norm_spec::Spec;

/// The identity of a layer: its spec, its name (for messages) and its fingerprint (for
/// `Saved` checks).
#[derive(Clone, Copy, Debug)]
pub struct LayerInfo<'a> {
    /// The validated configuration.
    pub spec: &'a Spec,
    /// The layer's name as shown in errors.
    pub name: &'a str,
    /// [`norm_spec::shapes::fingerprint`] of `spec`.
    pub fingerprint: u64,
}

/// Running statistics of a stage, borrowed from the layer: read-only for inference,
/// mutable for training.
#[derive(Debug)]
pub enum Running<'a, T> {
    /// Read-only (`forward_eval`, `stats`, `backward`).
    View {
        /// `running_mean`.
        mean: ArrayViewD<'a, T>,
        /// `running_var`.
        var: ArrayViewD<'a, T>,
    },
    /// Updatable (`forward` in train mode).
    Mut {
        /// `running_mean`.
        mean: ArrayViewMutD<'a, T>,
        /// `running_var`.
        var: ArrayViewMutD<'a, T>,
        /// `num_batches_tracked`.
        count: &'a mut u64,
    },
}

impl<T> Running<'_, T> {
    pub(crate) fn mean(&self) -> ArrayViewD<'_, T> {
        match self {
            Running::View { mean, .. } => mean.view(),
            Running::Mut { mean, .. } => mean.view(),
        }
    }
    pub(crate) fn var(&self) -> ArrayViewD<'_, T> {
        match self {
            Running::View { var, .. } => var.view(),
            Running::Mut { var, .. } => var.view(),
        }
    }
}

/// The parameters and state of one stage, borrowed from the layer for one call.
#[derive(Debug, Default)]
pub struct StageState<'a, T> {
    /// `gamma` (`affine` with axes).
    pub gamma: Option<ArrayViewD<'a, T>>,
    /// `beta` (`affine` with axes and `bias`).
    pub beta: Option<ArrayViewD<'a, T>>,
    /// The external scale and shift (`affine = external`).
    pub external: Option<(ArrayViewD<'a, T>, ArrayViewD<'a, T>)>,
    /// The running statistics (`running_stats`).
    pub running: Option<Running<'a, T>>,
    /// The TLU threshold `tau`, shaped like `gamma` (`tlu`).
    pub tau: Option<ArrayViewD<'a, T>>,
    /// Batch Renormalization's current limits `(rmax, dmax)` (`renorm`).
    pub renorm: Option<(f64, f64)>,
    /// Switchable Normalization's logits `(mean_weight, var_weight)`, one per alternative
    /// of `axes`.
    pub switch: Option<(ArrayViewD<'a, T>, ArrayViewD<'a, T>)>,
}

/// A view's values in standard (logical) order, borrowed when already contiguous.
pub(crate) fn values<'a, T: Copy>(a: &'a ArrayViewD<'_, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// `v` with `n` values for a pass that writes every one before it reads any: resized only
/// when its length changes (no zeroing pass per call).
pub(crate) fn sized<V: Clone>(v: &mut Vec<V>, n: usize, zero: V) {
    if v.len() != n {
        resize(v, n, zero);
    }
}

/// `v` as `n` copies of `zero`, reusing its allocation.
pub(crate) fn resize<V: Clone>(v: &mut Vec<V>, n: usize, zero: V) {
    v.clear();
    v.resize(n, zero);
}

/// The arrays of one backward pass (a stage's, or a fused chain's): its input, the
/// upstream gradient and dx.
pub(crate) struct BackwardIo<'a, T> {
    pub x: &'a [T],
    pub dy: &'a [T],
    pub dx: &'a mut [T],
}
