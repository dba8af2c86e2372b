//! Filter Response Normalization's thresholded linear unit (Singh & Krishnan 2019):
//! y = max(z, τ) after the affine, with a learned τ shaped like γ. The forward pass records
//! which elements passed (z > τ); backward routes dy to dx where they did and to dτ where
//! they did not.

use crate::plan::{Plan, MAX_DIMS};
use crate::Float;

/// Calls `f(e, p)` for every element `e` of the input (standard-layout offset, in order)
/// with the offset `p` of its affine parameters (γ, β, τ).
fn for_each_param(plan: &Plan, mut f: impl FnMut(usize, usize)) {
    if plan.numel == 0 {
        return;
    }
    let dims = &plan.dims[..plan.ndims];
    // Folded parameters vary only with the statistics group: one offset per group.
    let mut per_group = Vec::new();
    if plan.foldable {
        per_group.resize(plan.groups, 0);
        plan.for_each_group(|s, p, _| per_group[s] = p);
    }
    let mut idx = [0usize; MAX_DIMS];
    let (mut s, mut p) = (0usize, 0usize);
    for e in 0..plan.numel {
        f(e, if plan.foldable { per_group[s] } else { p });
        // The odometer over the merged dims (last fastest), keeping s and p in step.
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            s += dims[k].ss;
            p += dims[k].ps;
            if idx[k] < dims[k].size {
                break;
            }
            s -= dims[k].ss * dims[k].size;
            p -= dims[k].ps * dims[k].size;
            idx[k] = 0;
        }
    }
}

/// y = max(z, τ) in place on `out` (= z); `pass[e]` records z > τ (NaN passes through).
pub(crate) fn forward<T: Float>(plan: &Plan, tau: &[T], out: &mut [T], pass: &mut Vec<bool>) {
    pass.clear();
    pass.resize(out.len(), true);
    for_each_param(plan, |e, p| {
        let (z, t) = (out[e], tau[p]);
        if z <= t {
            out[e] = t;
            pass[e] = false;
        }
    });
}

/// The upstream gradient of z (dy where z passed, 0 elsewhere) into `dz`, and
/// dτ = Σ dy where it did not, per parameter, into `dtau` (`nparams` values).
pub(crate) fn backward<T: Float>(
    plan: &Plan,
    pass: &[bool],
    dy: &[T],
    nparams: usize,
    dz: &mut Vec<T>,
    dtau: &mut Vec<f64>,
) {
    dz.clear();
    dz.resize(dy.len(), T::zero());
    dtau.clear();
    dtau.resize(nparams, 0.0);
    for_each_param(plan, |e, p| {
        if pass[e] {
            dz[e] = dy[e];
        } else {
            dtau[p] += dy[e].to_acc();
        }
    });
}
