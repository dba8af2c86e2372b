//! Per-group moments: one pass of shifted sums in f64.
//!
//! Each group is shifted by its first value in memory order, so the sums stay small for
//! offset data and the variance keeps its precision; partial sums of a group add in a fixed
//! order, so results do not depend on how the lines are scheduled.

use super::shifted_sums;
use crate::plan::Plan;
use crate::Float;

/// Accumulators of one statistics pass, reused across calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct MomentAcc {
    pub shift: Vec<f64>,
    pub sum: Vec<f64>,
    pub sq: Vec<f64>,
    seen: Vec<bool>,
}

/// Per-group mean and M2 = Σ(x − mean)² (or Σx² for uncentered statistics).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupMoments {
    pub mean: f64,
    pub m2: f64,
}

impl MomentAcc {
    fn reset(&mut self, groups: usize) {
        for v in [&mut self.shift, &mut self.sum, &mut self.sq] {
            v.clear();
            v.resize(groups, 0.0);
        }
        self.seen.clear();
        self.seen.resize(groups, false);
    }

    /// Accumulates every group of `x` (standard layout, `plan.numel` values).
    pub fn accumulate<T: Float>(&mut self, plan: &Plan, x: &[T], center: bool) {
        self.reset(plan.groups);
        let line = plan.line();
        let len = line.size;
        for k in 0..plan.lines() {
            let (xo, so, _) = plan.line_offsets(k);
            let xs = &x[xo..xo + len];
            if line.ss == 0 {
                if !self.seen[so] {
                    self.seen[so] = true;
                    self.shift[so] = if center { xs[0].to_acc() } else { 0.0 };
                }
                let (s, q) = shifted_sums(xs, self.shift[so]);
                self.sum[so] += s;
                self.sq[so] += q;
            } else {
                let shift = &mut self.shift[so..so + len];
                if !self.seen[so] {
                    self.seen[so..so + len].fill(true);
                    for (h, v) in shift.iter_mut().zip(xs) {
                        *h = if center { v.to_acc() } else { 0.0 };
                    }
                }
                let sum = &mut self.sum[so..so + len];
                let sq = &mut self.sq[so..so + len];
                for i in 0..len {
                    let d = xs[i].to_acc() - shift[i];
                    sum[i] += d;
                    sq[i] += d * d;
                }
            }
        }
    }

    /// The moments of group `s` of `n` values.
    #[inline]
    pub fn group(&self, s: usize, n: usize) -> GroupMoments {
        let n = n as f64;
        let d = self.sum[s] / n;
        GroupMoments {
            mean: self.shift[s] + d,
            m2: (self.sq[s] - self.sum[s] * d).max(0.0),
        }
    }
}
