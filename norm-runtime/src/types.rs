//! The values that flow between a layer's calls: mode, saved state, gradients, moments.

use ndarray::{Array, ArrayD, Dimension};

/// Whether a forward pass trains or infers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Batch statistics; running statistics (if any) are updated.
    Train,
    /// Running statistics where the layer has them, batch statistics otherwise; no state
    /// changes.
    Eval,
}

/// What one stage of a forward pass keeps for its backward pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SavedStage<T> {
    /// The statistics were fixed (running statistics in eval mode): backward does not
    /// differentiate through them.
    pub fixed: bool,
    /// Values per statistics group the statistics were computed over (the whole group's
    /// batch when synchronized).
    pub count: usize,
    /// The statistics were synchronized across a `Collective`.
    pub synced: bool,
    /// Per statistics group: mean, variance estimate, M2 and 1/σ as applied.
    pub stats: Vec<crate::kernels::exec::Stat>,
    /// `affine = external`: the scale used (the shift is not needed).
    pub scale: Vec<T>,
    /// `tlu`: per element, whether the normalized value passed the threshold (z > τ).
    pub tlu_pass: Vec<bool>,
    /// `renorm` in train mode: per statistics group, the (r, d) applied (empty otherwise).
    pub renorm: Vec<(f64, f64)>,
    /// `ghost`: what each chunk of the batch saved, in order (empty otherwise).
    pub chunks: Vec<SavedStage<T>>,
}

/// What a forward pass keeps for its backward pass: per statistics group the mean and the
/// reciprocal standard deviation, the input shape, and which layer made it.
///
/// `Saved::default()` is an empty value that `forward_train_into` fills, reusing its buffers
/// across calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Saved<T> {
    pub(crate) fingerprint: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) stages: Vec<SavedStage<T>>,
    /// A chain's intermediate outputs (the input of stage k + 1), in standard layout; empty
    /// on the fused path, which keeps `cells` instead.
    pub(crate) intermediates: Vec<Vec<T>>,
    /// A fused chain (`crate::chain`): the cell length (0 otherwise) and each cell's mean
    /// and M2.
    pub(crate) cell_len: usize,
    pub(crate) cells: Vec<(f64, f64)>,
    /// A masked layer (`mask = ...`): the mask of the forward pass, in standard order, and
    /// per statistics group the number of unmasked values (`crate::masked`).
    pub(crate) mask: Vec<bool>,
    pub(crate) counts: Vec<usize>,
}

impl<T> Saved<T> {
    /// An empty value, to be filled by a `forward_*_into` call.
    pub fn new() -> Self {
        Saved {
            fingerprint: 0,
            shape: Vec::new(),
            stages: Vec::new(),
            intermediates: Vec::new(),
            cell_len: 0,
            cells: Vec::new(),
            mask: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// The shape of the input this was saved for (empty before the first forward).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether the forward pass used fixed (running) statistics in its first stage.
    pub fn used_running_stats(&self) -> bool {
        self.stages.first().is_some_and(|s| s.fixed)
    }

    /// The per-group means of stage `stage` (flattened over the statistics axes), as
    /// accumulated (in f64).
    pub fn mean(&self, stage: usize) -> Option<Vec<f64>> {
        self.stages
            .get(stage)
            .map(|s| s.stats.iter().map(|g| g.mean).collect())
    }

    /// The per-group reciprocal standard deviations of stage `stage`.
    pub fn rstd(&self, stage: usize) -> Option<Vec<f64>> {
        self.stages
            .get(stage)
            .map(|s| s.stats.iter().map(|g| g.rstd).collect())
    }
}

/// The gradients of a backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads<T, D: Dimension> {
    /// The gradient with respect to the input.
    pub dx: Array<T, D>,
    /// The gradient with respect to `gamma` (or the external scale), if the layer has one.
    pub dgamma: Option<ArrayD<T>>,
    /// The gradient with respect to `beta` (or the external shift), if the layer has one.
    pub dbeta: Option<ArrayD<T>>,
    /// The gradient with respect to the TLU threshold `tau` (`tlu`), if the layer has one.
    pub dtau: Option<ArrayD<T>>,
    /// The gradient with respect to Switchable Norm's mean logits, if the layer has them.
    pub dmean_weight: Option<ArrayD<T>>,
    /// The gradient with respect to Switchable Norm's variance logits, if the layer has them.
    pub dvar_weight: Option<ArrayD<T>>,
}

impl<T, D: Dimension> Grads<T, D> {
    /// Gradients holding `dx` and no parameter gradient yet: the buffer to pass to a
    /// `backward_into`, which fills `dx` and sets the parameter gradients the layer has.
    pub fn new(dx: Array<T, D>) -> Self {
        Grads {
            dx,
            dgamma: None,
            dbeta: None,
            dtau: None,
            dmean_weight: None,
            dvar_weight: None,
        }
    }

    /// Moves the parameter gradients out (leaving `None`), as one stage's gradients.
    pub fn take_params(&mut self) -> StageGrads<T> {
        StageGrads {
            dgamma: self.dgamma.take(),
            dbeta: self.dbeta.take(),
            dtau: self.dtau.take(),
            dmean_weight: self.dmean_weight.take(),
            dvar_weight: self.dvar_weight.take(),
        }
    }

    /// Stores one stage's parameter gradients (the inverse of [`Grads::take_params`]).
    pub fn set_params(&mut self, stage: StageGrads<T>) {
        self.dgamma = stage.dgamma;
        self.dbeta = stage.dbeta;
        self.dtau = stage.dtau;
        self.dmean_weight = stage.dmean_weight;
        self.dvar_weight = stage.dvar_weight;
    }
}

/// The parameter gradients of one stage of a chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageGrads<T> {
    /// The gradient with respect to the stage's `gamma` (or external scale).
    pub dgamma: Option<ArrayD<T>>,
    /// The gradient with respect to the stage's `beta` (or external shift).
    pub dbeta: Option<ArrayD<T>>,
    /// The gradient with respect to the stage's TLU threshold `tau`.
    pub dtau: Option<ArrayD<T>>,
    /// The gradient with respect to the stage's Switchable Norm mean logits.
    pub dmean_weight: Option<ArrayD<T>>,
    /// The gradient with respect to the stage's Switchable Norm variance logits.
    pub dvar_weight: Option<ArrayD<T>>,
}

/// The gradients of a dynamic chain layer ([`crate::DynNorm::backward_chain`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ChainGrads<T> {
    /// The gradient with respect to the input.
    pub dx: ArrayD<T>,
    /// One entry per stage, in chain order.
    pub stages: Vec<StageGrads<T>>,
}

/// Per-group statistics of an input, shaped by the kept axes (and the group axis `G`).
#[derive(Clone, Debug, PartialEq)]
pub struct Moments<T> {
    /// The mean of each statistics group (zero for a layer with `center = false`).
    pub mean: ArrayD<T>,
    /// The variance of each group with the layer's estimator (biased, or unbiased with
    /// `unbiased`; the mean square with `center = false`).
    pub var: ArrayD<T>,
}
