//! Statistics shared by the members of a data-parallel group (synchronized batch norm).
//!
//! Each member (a process, or a thread) holds one micro-batch. A layer called with
//! `forward_sync`/`backward_sync` computes, for every stage whose statistics run over the
//! batch axis `N`, its local per-group partials, exchanges them with [`Collective::all_gather`]
//! and merges them **in rank order** (Chan's formula for the moments; plain sums for the two
//! backward sums), so every member normalizes with the statistics of the whole global batch
//! and all members get bit-identical statistics.
//!
//! Cost per synchronized stage and step: one all-gather of 3 values per statistics group
//! forward (count, mean, M2) and one of 2 values per group backward (Σg, Σg·x̂).

/// A group of members that normalize one global batch together.
///
/// Every member must call the layer's `*_sync` methods in the same order with the same
/// layer configuration; micro-batch sizes may differ, and may be zero. A layer calls the
/// collective only on the thread that called the layer (never from its worker tasks), so
/// an implementation need not be `Send` or `Sync`.
pub trait Collective {
    /// This member's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of members.
    fn size(&self) -> usize;
    /// Gathers `local` from every member, in rank order: on return `out` holds
    /// `size() * local.len()` values, member 0's first. Every member passes the same length.
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String>;
}

/// The group of one: no communication (the layer behaves as without synchronization).
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        out.clear();
        out.extend_from_slice(local);
        Ok(())
    }
}

/// Merges per-member `(count, mean, M2)` triples, member after member, with Chan's formula.
/// `gathered` holds `members` blocks of `3 * groups` values.
pub(crate) fn merge_moments(gathered: &[f64], groups: usize, out: &mut [(f64, f64, f64)]) {
    let members = gathered.len() / (3 * groups).max(1);
    for (g, o) in out.iter_mut().enumerate().take(groups) {
        let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
        for r in 0..members {
            let base = r * 3 * groups + 3 * g;
            let (nb, mb, m2b) = (gathered[base], gathered[base + 1], gathered[base + 2]);
            if nb == 0.0 {
                continue;
            }
            merge((&mut n, &mut mean, &mut m2), (nb, mb, m2b));
        }
        *o = (n, mean, m2);
    }
}

/// Chan's formula: merges the moments `(count, mean, M2)` of `b` (count > 0) into `a`.
#[inline]
pub(crate) fn merge(a: (&mut f64, &mut f64, &mut f64), (nb, mb, m2b): (f64, f64, f64)) {
    let (n, mean, m2) = a;
    let total = *n + nb;
    let delta = mb - *mean;
    *mean += delta * nb / total;
    *m2 += m2b + delta * delta * *n * nb / total;
    *n = total;
}
