//! The timing method of `torch_suite.py`: warm-up (at least 3 calls and ~0.15 s, at most
//! 50 calls), then `reps` timed calls (auto: ~`budget` seconds, clamped to [10, 200]);
//! median and minimum.

use std::time::{Duration, Instant};

use crate::alloc_count;

/// What [`time_fn`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Median seconds per call.
    pub median: f64,
    /// Minimum seconds per call.
    pub min: f64,
    /// Timed calls.
    pub reps: usize,
    /// Minor page faults per timed call (whole process), where `/proc/self/stat` exists.
    pub minflt_per_call: Option<f64>,
    /// Heap allocations per timed call, when the binary counts them
    /// (see [`crate::alloc_count`]).
    pub allocs_per_call: Option<f64>,
}

/// Warm-up: at least this many calls…
pub const WARMUP_MIN_CALLS: usize = 3;
/// …and at least this long…
pub const WARMUP_TIME: Duration = Duration::from_millis(150);
/// …but at most this many calls.
pub const WARMUP_MAX_CALLS: usize = 50;
/// Auto reps are clamped to `[MIN_REPS, MAX_REPS]`.
pub const MIN_REPS: usize = 10;
/// See [`MIN_REPS`].
pub const MAX_REPS: usize = 200;

/// The number of timed calls for a `budget` in seconds given an estimate of one call.
pub fn auto_reps(budget: f64, estimate: f64) -> usize {
    let r = budget / estimate.max(1e-6);
    // Truncation as in Python's int(); the clamp keeps it in range (NaN maps to MIN_REPS).
    (r.min(MAX_REPS as f64).max(MIN_REPS as f64)) as usize
}

/// Times `f`: warm-up, then `reps` timed calls (`reps == 0`: auto from `budget` seconds).
pub fn time_fn<E>(
    mut f: impl FnMut() -> Result<(), E>,
    reps: usize,
    budget: f64,
) -> Result<Timing, E> {
    let t_end = Instant::now() + WARMUP_TIME;
    let mut est = Vec::with_capacity(WARMUP_MAX_CALLS);
    while est.len() < WARMUP_MIN_CALLS || Instant::now() < t_end {
        let t0 = Instant::now();
        f()?;
        est.push(t0.elapsed().as_secs_f64());
        if est.len() >= WARMUP_MAX_CALLS {
            break;
        }
    }
    let reps = if reps == 0 {
        auto_reps(budget, median(&mut est))
    } else {
        reps
    };
    let mut ts = Vec::with_capacity(reps);
    let flt0 = minor_faults();
    let allocs0 = alloc_count::allocations();
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    let allocs1 = alloc_count::allocations();
    let flt1 = minor_faults();
    let per_call = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / reps as f64;
    Ok(Timing {
        min: ts.iter().copied().fold(f64::INFINITY, f64::min),
        median: median(&mut ts),
        reps,
        minflt_per_call: flt0.zip(flt1).map(|(a, b)| per_call(a, b)),
        allocs_per_call: allocs0.zip(allocs1).map(|(a, b)| per_call(a, b)),
    })
}

/// The median (mean of the two middle values for an even count, as `statistics.median`).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Minor page faults of the whole process so far (`/proc/self/stat` field 10).
pub fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is parenthesized and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_like_python() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn auto_reps_clamped() {
        assert_eq!(auto_reps(0.8, 1.0), 10);
        assert_eq!(auto_reps(0.8, 1e-9), 200);
        assert_eq!(auto_reps(0.8, 0.02), 40);
    }

    #[test]
    fn times_and_counts() {
        let mut calls = 0usize;
        let t = time_fn(
            || {
                calls += 1;
                Ok::<(), ()>(())
            },
            12,
            0.0,
        )
        .unwrap();
        assert_eq!(t.reps, 12);
        assert!(calls >= 12 + WARMUP_MIN_CALLS);
        assert!(t.min <= t.median);
        if cfg!(target_os = "linux") {
            assert!(minor_faults().is_some());
        }
    }

    #[test]
    fn errors_propagate() {
        assert_eq!(time_fn(|| Err::<(), _>(7), 0, 0.1), Err(7));
    }
}
