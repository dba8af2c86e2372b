//! Batch Renormalization (Ioffe 2017): in train mode
//! x̂ = (x − μ_B)/σ_B · r + d with r = clamp(σ_B/σ_run, 1/rmax, rmax) and
//! d = clamp((μ_B − μ_run)/σ_run, −dmax, dmax), from the running statistics before this
//! step's update, both constants for the gradient. The stage's kernels run unchanged:
//! forward folds r and d into the per-group coefficients; backward computes x̂ with them
//! (so dγ = Σ dy·x̂) and scales the batch-norm dx by r.

use crate::kernels::exec::Stat;

/// (r, d) of a group with batch statistics `batch` and running statistics `run` (both with
/// `rstd` = 1/σ as the stage computes it), under the limits `(rmax, dmax)`.
pub(crate) fn r_d(batch: &Stat, run: &Stat, (rmax, dmax): (f64, f64)) -> (f64, f64) {
    let r = (run.rstd / batch.rstd).clamp(1.0 / rmax, rmax);
    let d = ((batch.mean - run.mean) * run.rstd).clamp(-dmax, dmax);
    (r, d)
}

/// The dx coefficients of a renormalized group from the batch-norm ones: with
/// Σg·x̂₀ = (Σg·x̂ − d·Σg)/r, dx = r · (batch-norm dx). Returns Σg·x̂₀ for
/// `crate::stats::dx_terms`; the caller scales its result by r.
pub(crate) fn sgx0((r, d): (f64, f64), sg: f64, sgx: f64) -> f64 {
    (sgx - d * sg) / r
}
