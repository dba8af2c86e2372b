//! Fused chains against their stages run one after the other.
//!
//! A chain whose stages share cells (a trailing run over which no stage's statistics group or
//! parameter moves, e.g. the H·W plane of Batch-Channel Normalization) runs in two passes,
//! with every stage's statistics and gradients derived from per-cell sums in f64. Here the
//! same layer is run as separate single-stage layers — the first stage's output fed to the
//! second, its dx fed back — and every output must agree: y, the running statistics, dx and
//! each stage's dγ, dβ; in f64 to ~1e-11, in f32 to rounding of the unrounded intermediate.
//! The cases cover centered and uncentered stages, unbiased variance, ε on the standard
//! deviation, per-group and per-channel parameters, three stages, eval mode with running
//! statistics, and a channels-last chain that has no cells (the stage-by-stage path).
//!
//! The fused path runs independent blocks of cells back to back where it can; the last test
//! checks that this changes no bit of any result, at every SIMD level.

use std::sync::{PoisonError, RwLock, RwLockWriteGuard};

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::{ChainGrads, StageParams};

/// `simd::set_cap` and `simd::set_block_bytes` are global to the process, and the tests of
/// this binary run on parallel threads: the test that changes them holds this lock for
/// writing ([`Knobs`]), the tests that compare two results computed one after the other hold
/// it for reading (so neither knob can change between the two).
static KNOBS: RwLock<()> = RwLock::new(());

/// [`KNOBS`] held for writing; on drop (the end of the test, or its panic) the SIMD level and
/// the block size go back to their defaults before the lock is released.
struct Knobs {
    _write: RwLockWriteGuard<'static, ()>,
}

impl Knobs {
    fn lock() -> Self {
        Knobs {
            _write: KNOBS.write().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Drop for Knobs {
    fn drop(&mut self) {
        normkit::simd::set_cap(None);
        normkit::simd::set_block_bytes(None);
    }
}

fn lcg(seed: u64, n: usize, offset: f64, scale: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offset + ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale
        })
        .collect()
}

/// A chain declaration, the equivalent single-stage declarations, the named sizes and the
/// input shape.
struct Case {
    chain: &'static str,
    stages: &'static [&'static str],
    sizes: &'static [(&'static str, usize)],
    shape: &'static [usize],
}

const CASES: &[Case] = &[
    // Batch-Channel Normalization (cells: the 8×9 planes).
    Case {
        chain: r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#,
        stages: &[
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
        ],
        sizes: &[("C", 6)],
        shape: &[3, 6, 8, 9],
    },
    // Per-group parameters, an uncentered second stage with ε on the standard deviation,
    // an unbiased first stage.
    Case {
        chain: r#"input = "N,C,L", chain(inorm(axes = "L", unbiased), rms(axes = "C,L", center = false, eps_mode = "std", affine = "C"))"#,
        stages: &[
            r#"input = "N,C,L", axes = "L", unbiased"#,
            r#"input = "N,C,L", axes = "C,L", center = false, eps_mode = "std", affine = "C""#,
        ],
        sizes: &[("C", 4)],
        shape: &[3, 4, 70],
    },
    // Three stages; group parameters ("G") on the second.
    Case {
        chain: r#"input = "N,C,L", chain(bn(axes = "N,L", affine, running_stats), gn(axes = "C,L", groups = 3, affine = "G"), inorm(axes = "L", affine = "C", bias = false))"#,
        stages: &[
            r#"input = "N,C,L", axes = "N,L", affine, running_stats"#,
            r#"input = "N,C,L", axes = "C,L", groups = 3, affine = "G""#,
            r#"input = "N,C,L", axes = "L", affine = "C", bias = false"#,
        ],
        sizes: &[("C", 6)],
        shape: &[2, 6, 80],
    },
    // Channels-last: no cells (the last dim is kept), stage by stage.
    Case {
        chain: r#"input = "N,H,W,C", chain(bn(axes = "N,H,W", affine), gn(axes = "H,W,C", groups = 2))"#,
        stages: &[
            r#"input = "N,H,W,C", axes = "N,H,W", affine"#,
            r#"input = "N,H,W,C", axes = "H,W,C", groups = 2"#,
        ],
        sizes: &[("C", 8)],
        shape: &[2, 5, 6, 8],
    },
];

/// Random γ, β and running statistics, the same for the chain's stages and the separate
/// layers.
fn init<T: Float>(layers: &mut [&mut StageParams<T>], seed: u64) {
    for (i, st) in layers.iter_mut().enumerate() {
        let seed = seed + 10 * i as u64;
        let set = |a: &mut Option<ArrayD<T>>, k: u64, offset: f64, scale: f64| {
            if let Some(a) = a.as_mut() {
                let v = lcg(seed + k, a.len(), offset, scale);
                a.iter_mut()
                    .zip(v)
                    .for_each(|(o, v)| *o = T::from_f64(v).expect("finite"));
            }
        };
        set(&mut st.gamma, 1, 1.0, 1.0);
        set(&mut st.beta, 2, 0.0, 1.0);
        set(&mut st.running_mean, 3, 0.5, 1.0);
        set(&mut st.running_var, 4, 1.5, 1.0);
    }
}

/// max |a − b| over max(max |b|, 1): relative for the values of these tests (O(1) and
/// larger), absolute for gradients that vanish in exact arithmetic (dβ of a stage followed
/// by a centered one sums gradients that cancel).
fn rel(a: &ArrayD<impl Float>, b: &ArrayD<impl Float>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b
        .iter()
        .fold(1.0f64, |m, v| m.max(v.to_f64().expect("finite").abs()));
    a.iter().zip(b).fold(0.0, |m, (p, q)| {
        let d = (p.to_f64().expect("finite") - q.to_f64().expect("finite")).abs();
        m.max(d / scale)
    })
}

/// The input x and upstream gradient dy of a case.
fn inputs<T: Float>(case: &Case) -> (ArrayD<T>, ArrayD<T>) {
    let n: usize = case.shape.iter().product();
    let to_t = |v: Vec<f64>| {
        let v = v
            .into_iter()
            .map(|v| T::from_f64(v).expect("finite"))
            .collect();
        ArrayD::from_shape_vec(IxDyn(case.shape), v).expect("shape")
    };
    (to_t(lcg(5, n, 3.0, 4.0)), to_t(lcg(6, n, 0.1, 2.0)))
}

fn check<T: Float>(case: &Case, mode: Mode, tol: f64) {
    let what = format!("{} {} {mode:?}", case.chain, T::NAME);
    let mut chain =
        DynNorm::<T>::new(&NormSpec::parse(case.chain).expect("chain"), case.sizes).expect("chain");
    let mut parts: Vec<DynNorm<T>> = case
        .stages
        .iter()
        .map(|s| DynNorm::new(&NormSpec::parse(s).expect("stage"), case.sizes).expect("stage"))
        .collect();
    init(&mut chain.stages_mut().iter_mut().collect::<Vec<_>>(), 11);
    init(
        &mut parts
            .iter_mut()
            .map(|l| &mut l.stages_mut()[0])
            .collect::<Vec<_>>(),
        11,
    );
    let (x, dy) = inputs::<T>(case);

    let (y, saved) = chain.forward(x.view(), mode).expect("chain forward");
    let g = chain
        .backward_chain(x.view(), dy.view(), &saved)
        .expect("chain backward");

    // The stages one after the other, keeping each stage's input for its backward pass.
    let mut inputs = vec![x.clone()];
    let mut saves = Vec::new();
    for l in parts.iter_mut() {
        let (out, sv) = l
            .forward(inputs.last().expect("input").view(), mode)
            .expect("forward");
        inputs.push(out);
        saves.push(sv);
    }
    let ry = inputs.pop().expect("output");
    assert!(rel(&y, &ry) < tol, "{what}: y {:e}", rel(&y, &ry));
    let mut up = dy.clone();
    for (k, l) in parts.iter().enumerate().rev() {
        let gk = l
            .backward(inputs[k].view(), up.view(), &saves[k])
            .expect("backward");
        let (cs, ps) = (&g.stages[k], &gk);
        for (name, a, b) in [
            ("dgamma", &cs.dgamma, &ps.dgamma),
            ("dbeta", &cs.dbeta, &ps.dbeta),
        ] {
            match (a, b) {
                (Some(a), Some(b)) => {
                    assert!(
                        rel(a, b) < tol,
                        "{what}: stage {k} {name} {:e}\n{a}\n{b}",
                        rel(a, b)
                    )
                }
                (None, None) => {}
                _ => panic!("{what}: stage {k} {name} present in one only"),
            }
        }
        up = gk.dx;
    }
    assert!(rel(&g.dx, &up) < tol, "{what}: dx {:e}", rel(&g.dx, &up));
    for (k, l) in parts.iter().enumerate() {
        let (a, b) = (&chain.stages()[k], &l.stages()[0]);
        for (name, p, q) in [
            ("running_mean", &a.running_mean, &b.running_mean),
            ("running_var", &a.running_var, &b.running_var),
        ] {
            if let (Some(p), Some(q)) = (p, q) {
                assert!(rel(p, q) < tol, "{what}: stage {k} {name} {:e}", rel(p, q));
            }
        }
        assert_eq!(a.num_batches_tracked, b.num_batches_tracked, "{what}");
    }
}

#[test]
fn fused_chains_match_their_stages_in_f64() {
    let _knobs = KNOBS.read().unwrap_or_else(PoisonError::into_inner);
    for case in CASES {
        check::<f64>(case, Mode::Train, 1e-11);
        check::<f64>(case, Mode::Eval, 1e-11);
    }
}

#[test]
fn fused_chains_match_their_stages_in_f32() {
    let _knobs = KNOBS.read().unwrap_or_else(PoisonError::into_inner);
    for case in CASES {
        check::<f32>(case, Mode::Train, 2e-5);
        check::<f32>(case, Mode::Eval, 2e-5);
    }
}

/// Forward and backward of a chain in train and eval mode: y, the saved state, dx, every
/// stage's gradients and running statistics.
type Run<T> = (ArrayD<T>, Saved<T>, ChainGrads<T>, Vec<StageParams<T>>);

fn run_chain<T: Float>(case: &Case, mode: Mode) -> Run<T> {
    let mut chain =
        DynNorm::<T>::new(&NormSpec::parse(case.chain).expect("chain"), case.sizes).expect("chain");
    init(&mut chain.stages_mut().iter_mut().collect::<Vec<_>>(), 11);
    let (x, dy) = inputs::<T>(case);
    let (y, saved) = chain.forward(x.view(), mode).expect("forward");
    let g = chain
        .backward_chain(x.view(), dy.view(), &saved)
        .expect("backward");
    (y, saved, g, chain.stages().to_vec())
}

/// Runs of every case with blocks (of 8 KiB at most, which blocks the small cases, and the
/// default) and as one block (`set_block_bytes(0)`), at every SIMD level: bit for bit the
/// same, since every group's sums are taken in the same order. A Batch-Channel
/// Normalization whose blocks (merged components) spread over several tasks joins the
/// cases.
#[test]
fn blocking_does_not_change_results() {
    let bcn = Case {
        chain: r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 32, affine))"#,
        stages: &[],
        sizes: &[("C", 64)],
        shape: &[2, 64, 32, 32],
    };
    fn same<T: Float>(case: &Case, level: normkit::simd::Level) {
        for mode in [Mode::Train, Mode::Eval] {
            normkit::simd::set_block_bytes(Some(0));
            let one = run_chain::<T>(case, mode);
            // Blocks of single components (8 KiB: the small cases) and the default.
            for bytes in [Some(8 << 10), None] {
                let what = format!("{} {} {mode:?} {level:?} {bytes:?}", case.chain, T::NAME);
                normkit::simd::set_block_bytes(bytes);
                let blocked = run_chain::<T>(case, mode);
                assert!(one.0 == blocked.0, "{what}: y");
                assert!(one.1 == blocked.1, "{what}: saved state");
                assert!(one.2.dx == blocked.2.dx, "{what}: dx");
                for (k, (a, b)) in one.2.stages.iter().zip(&blocked.2.stages).enumerate() {
                    assert!(a.dgamma == b.dgamma, "{what}: stage {k} dgamma");
                    assert!(a.dbeta == b.dbeta, "{what}: stage {k} dbeta");
                }
                assert!(one.3 == blocked.3, "{what}: running statistics");
            }
        }
    }
    let _knobs = Knobs::lock();
    // Every level this machine runs: the pipelined block kernels and their fallbacks.
    for level in normkit::simd::available() {
        normkit::simd::set_cap(Some(level));
        for case in CASES.iter().chain([&bcn]) {
            same::<f32>(case, level);
            same::<f64>(case, level);
        }
    }
}
