//! Inputs, parameters and checks shared by the half-precision tests (`dtypes`, `chain`,
//! `tiled`), and the lock that keeps their SIMD level fixed.

use std::sync::{RwLock, RwLockReadGuard};

use normkit::ndarray::{Array, ArrayD, Dimension, IxDyn};
use normkit::simd;
use normkit::{DynNorm, Float};

/// `simd::set_cap` is global to the process: the tests that run at every level hold this
/// lock for writing, the tests that compare two results computed one after the other hold
/// it for reading (so the level cannot change between the two).
static LEVEL: RwLock<()> = RwLock::new(());

/// Holds the SIMD level fixed (no test changes it) while the guard lives.
pub fn same_level() -> RwLockReadGuard<'static, ()> {
    LEVEL.read().unwrap_or_else(|e| e.into_inner())
}

/// Seeded values in `T` (mean `offset`, spread `spread`).
pub fn values<T: Float>(n: usize, seed: u64, offset: f64, spread: f64) -> Vec<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            T::from_acc(offset + spread * (u - 0.5))
        })
        .collect()
}

/// Seeded values of `shape`, already representable in `T` (so the f32 layer sees the same
/// input as the half one).
pub fn input<T: Float>(shape: &[usize], seed: u64, offset: f64) -> (ArrayD<T>, ArrayD<f32>) {
    let n: usize = shape.iter().product();
    let v: Vec<T> = values(n, seed, offset, 3.0);
    let wide: Vec<f32> = v.iter().map(|x| x.to_acc() as f32).collect();
    (
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap(),
        ArrayD::from_shape_vec(IxDyn(shape), wide).unwrap(),
    )
}

/// Sets every stage's parameters (and running statistics) of both layers to the same
/// `T`-representable values.
pub fn same_params<T: Float>(h: &mut DynNorm<T>, w: &mut DynNorm<f32>, seed: u64) {
    for (k, (sh, sw)) in h.stages_mut().iter_mut().zip(w.stages_mut()).enumerate() {
        let s = seed + 10 * k as u64;
        let pairs = [
            (&mut sh.gamma, &mut sw.gamma, 1.0),
            (&mut sh.beta, &mut sw.beta, 0.0),
            (&mut sh.running_mean, &mut sw.running_mean, 0.3),
            (&mut sh.running_var, &mut sw.running_var, 2.0),
        ];
        for (i, (ph, pw, offset)) in pairs.into_iter().enumerate() {
            if let (Some(ph), Some(pw)) = (ph.as_mut(), pw.as_mut()) {
                let (a, b) = input::<T>(ph.shape(), s + i as u64, offset);
                *ph = a;
                *pw = b;
            }
        }
    }
}

/// Asserts `half[i]` is `wide[i]` rounded to `T` (bit for bit, NaN never); returns the
/// bits (for the comparison across thread counts).
pub fn rounded<T: Float, D: Dimension, E: Dimension>(
    what: &str,
    half: &Array<T, D>,
    wide: &Array<f32, E>,
) -> Vec<u64> {
    assert_eq!(half.shape(), wide.shape(), "{what}: shape");
    let mut bits = Vec::with_capacity(half.len());
    for (i, (h, w)) in half.iter().zip(wide.iter()).enumerate() {
        let want = T::from_acc(f64::from(*w));
        assert!(
            h.to_acc() == want.to_acc() && !h.is_nan(),
            "{what}[{i}]: {h} is not {w} rounded to {} ({want})",
            T::NAME
        );
        bits.push(h.to_acc().to_bits());
    }
    bits
}

/// The half layer's result where its statistics are its own (the fused row path of layer,
/// RMS and group norm: f32 lanes, `norm-runtime/src/widen/rows.rs`) against the f32
/// layer's (f64 sums): every value within one ulp of `T` of `wide`'s value rounded to `T`,
/// or within 1e-6 of the array's largest magnitude (the f32 rounding of terms that cancel
/// into a small result), NaN never; and at least 99 % of them (all but one where fewer
/// than 100) exactly that. Returns the bits.
pub fn near<T: Float, D: Dimension, E: Dimension>(
    what: &str,
    half: &Array<T, D>,
    wide: &Array<f32, E>,
) -> Vec<u64> {
    assert_eq!(half.shape(), wide.shape(), "{what}: shape");
    let mut bits = Vec::with_capacity(half.len());
    let mut off = 0usize;
    let scale = wide.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
    for (i, (h, w)) in half.iter().zip(wide.iter()).enumerate() {
        let want = T::from_acc(f64::from(*w));
        let (hv, wv) = (h.to_acc(), want.to_acc());
        if hv != wv {
            // One ulp of T at the larger magnitude (the next value of T away from zero).
            let big = hv.abs().max(wv.abs());
            let up = T::from_acc(big).to_acc();
            let ulp = (next_up::<T>(up) - up).abs().max(1e-6 * scale);
            assert!(
                (hv - wv).abs() <= ulp && !h.is_nan(),
                "{what}[{i}]: {h} is not within one ulp of {w} rounded to {} ({want})",
                T::NAME
            );
            off += 1;
        }
        bits.push(hv.to_bits());
    }
    let allowed = if half.len() < 100 {
        1
    } else {
        half.len() / 100
    };
    assert!(
        off <= allowed,
        "{what}: {off} of {} values one ulp off (at most {allowed})",
        half.len()
    );
    bits
}

/// The next value of `T` above `v ≥ 0` (by bits: half types are 16-bit sign-magnitude).
fn next_up<T: Float>(v: f64) -> f64 {
    let t = T::from_acc(v);
    let mut step = v.max(f64::MIN_POSITIVE) * 2f64.powi(-12);
    loop {
        let u = T::from_acc(v + step);
        if u.to_acc() > t.to_acc() {
            return u.to_acc();
        }
        step *= 2.0;
    }
}

/// [`near`] where both are present; a value present in one precision only fails.
pub fn near_opt<T: Float>(
    what: &str,
    half: &Option<ArrayD<T>>,
    wide: &Option<ArrayD<f32>>,
) -> Vec<u64> {
    both_opt(what, half, wide, near)
}

/// `compare` where both are present (its bits); nothing where neither is; a value present
/// in one precision only fails.
fn both_opt<T: Float>(
    what: &str,
    half: &Option<ArrayD<T>>,
    wide: &Option<ArrayD<f32>>,
    compare: fn(&str, &ArrayD<T>, &ArrayD<f32>) -> Vec<u64>,
) -> Vec<u64> {
    match (half, wide) {
        (Some(h), Some(w)) => compare(what, h, w),
        (None, None) => Vec::new(),
        _ => panic!("{what}: present in one precision only"),
    }
}

/// The saved statistics of the half layer (its own, f32 lanes) within a relative 1e-6 of
/// the f32 layer's (the mean relative to |mean| + std).
pub fn near_stats<T: Float>(what: &str, h: &normkit::Saved<T>, w: &normkit::Saved<f32>) {
    let (mh, mw) = (h.mean(0).unwrap(), w.mean(0).unwrap());
    let (rh, rw) = (h.rstd(0).unwrap(), w.rstd(0).unwrap());
    assert_eq!(
        (mh.len(), rh.len()),
        (mw.len(), rw.len()),
        "{what}: statistics"
    );
    for i in 0..mh.len() {
        let sd = 1.0 / rw[i];
        assert!(
            (mh[i] - mw[i]).abs() <= 1e-6 * (mw[i].abs() + sd),
            "{what}: mean[{i}] {} vs {}",
            mh[i],
            mw[i]
        );
        assert!(
            (rh[i] - rw[i]).abs() <= 1e-6 * rw[i],
            "{what}: rstd[{i}] {} vs {}",
            rh[i],
            rw[i]
        );
    }
}

/// [`rounded`] where both are present; a value present in one precision only fails.
pub fn rounded_opt<T: Float>(
    what: &str,
    half: &Option<ArrayD<T>>,
    wide: &Option<ArrayD<f32>>,
) -> Vec<u64> {
    both_opt(what, half, wide, rounded)
}

/// The f32 layer takes the half layer's (rounded) running statistics, so the next steps of
/// both see the same values.
pub fn adopt_running<T: Float>(h: &DynNorm<T>, w: &mut DynNorm<f32>) {
    for (sh, sw) in h.stages().iter().zip(w.stages_mut()) {
        for (a, b) in [
            (&sh.running_mean, &mut sw.running_mean),
            (&sh.running_var, &mut sw.running_var),
        ] {
            if let (Some(a), Some(b)) = (a, b.as_mut()) {
                *b = a.mapv(|v| v.to_acc() as f32);
            }
        }
    }
}

/// Runs `run` on every case at every SIMD level the CPU has and at 1, 2 and 3 threads,
/// asserting bit-identical results across thread counts (`run` asserts the values).
pub fn at_every_level_and_thread_count<T: Float, C: Sync>(
    cases: &[C],
    label: impl Fn(&C) -> String,
    run: impl Fn(&C, &str) -> Vec<u64> + Sync,
) {
    levels_and_threads::<T, C>(cases, label, run, false);
}

/// [`at_every_level_and_thread_count`], asserting bit-identical results across levels too.
pub fn same_at_every_level_and_thread_count<T: Float, C: Sync>(
    cases: &[C],
    label: impl Fn(&C) -> String,
    run: impl Fn(&C, &str) -> Vec<u64> + Sync,
) {
    levels_and_threads::<T, C>(cases, label, run, true);
}

fn levels_and_threads<T: Float, C: Sync>(
    cases: &[C],
    label: impl Fn(&C) -> String,
    run: impl Fn(&C, &str) -> Vec<u64> + Sync,
    across_levels: bool,
) {
    let _guard = LEVEL.write().unwrap_or_else(|e| e.into_inner());
    let mut per_case: Vec<Option<Vec<u64>>> = cases.iter().map(|_| None).collect();
    for level in simd::available() {
        simd::set_cap(Some(level));
        for (k, case) in cases.iter().enumerate() {
            let mut first: Option<Vec<u64>> = if across_levels {
                per_case[k].clone()
            } else {
                None
            };
            for threads in [1, 2, 3] {
                let what = format!("{} {level:?} {} T={threads}", T::NAME, label(case));
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| run(case, &what));
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(*f == got, "{what}: results differ from the first run's"),
                }
            }
            per_case[k] = first;
        }
    }
    simd::set_cap(None);
}
