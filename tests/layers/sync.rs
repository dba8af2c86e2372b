//! Synchronized batch statistics: a layer synchronized over k members (threads of a
//! `ThreadGroup`, each with its own copy of the layer and its own micro-batch B_r) gives the
//! same outputs, input gradients, summed parameter gradients and running statistics as the
//! plain layer on the concatenated batch B_1 ‖ … ‖ B_k — for k = 1…8, uneven micro-batch
//! sizes, and a member with an EMPTY micro-batch.

use normkit::ndarray::{Array, ArrayD, ArrayViewD, Axis, Ix2, Ix4, IxDyn, Slice};
use normkit::prelude::*;
use normkit::{ChainGrads, Collective, NormLayer, Solo, ThreadGroup};

/// BN over N,C,H,W: per channel, γ/β, running statistics.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
#[derive(Clone)]
struct Bn2d;

/// BN over [N, C] (BatchNorm1d on features), cumulative momentum.
#[norm(
    input = "N,C",
    axes = "N",
    affine,
    running_stats,
    momentum = "cumulative"
)]
#[derive(Clone)]
struct Bn1d;

/// BN on channels-last data.
#[norm(input = "N,H,W,C", axes = "N,H,W", affine, running_stats)]
#[derive(Clone)]
struct BnNhwc;

/// Batch-Channel Normalization: only the `bn` stage reduces over N and synchronizes.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine = "G")
    )
)]
#[derive(Clone)]
struct Bcn;

/// Batch statistics with the unbiased variance, no running statistics (eval mode uses the
/// batch statistics, synchronized too), γ per (C, L) position (not foldable).
#[norm(input = "N,C,L", axes = "N,L", affine = "C,L", unbiased)]
#[derive(Clone)]
struct BnUnbiased;

/// RMS over the batch (`center = false`), grouped channels, γ per group.
#[norm(
    input = "N,C,L",
    axes = "N,C,L",
    groups = 2,
    center = false,
    affine = "G"
)]
#[derive(Clone)]
struct BatchRms;

/// The calls a test makes on every kind of layer, over dynamic-rank arrays: written once
/// for every `NormLayer` (the `#[norm]` layers and `DynNorm`).
trait Layer: NormLayer<Elem = f64> + Clone + Send {
    fn fwd(
        &mut self,
        x: ArrayViewD<'_, f64>,
        mode: Mode,
        comm: Option<&dyn Collective>,
    ) -> Result<(ArrayD<f64>, Saved<f64>), NormError> {
        let mut y = ArrayD::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.forward_layer_into(x, None, mode, y.view_mut(), &mut saved, comm)?;
        Ok((y, saved))
    }
    /// dx and every parameter gradient, in a fixed order.
    fn bwd(
        &self,
        x: ArrayViewD<'_, f64>,
        dy: ArrayViewD<'_, f64>,
        saved: &Saved<f64>,
        comm: Option<&dyn Collective>,
    ) -> Result<(ArrayD<f64>, Vec<ArrayD<f64>>), NormError> {
        let dx = ArrayD::zeros(x.raw_dim());
        let ChainGrads { dx, stages } = self.backward_layer_into(x, dy, saved, dx, comm)?;
        let all = stages.into_iter().flat_map(|g| [g.dgamma, g.dbeta]);
        Ok((dx, grads_of(all.collect())))
    }
    /// Running statistics and batch counters (empty without running statistics).
    fn state(&self) -> Vec<ArrayD<f64>> {
        let mut out = Vec::new();
        for st in self.tensors() {
            if let (Some(m), Some(v)) = (st.running_mean, st.running_var) {
                let n = st.num_batches_tracked.unwrap_or(0);
                out.extend([m.to_owned(), v.to_owned(), count(n)]);
            }
        }
        out
    }
}

impl<L: NormLayer<Elem = f64> + Clone + Send> Layer for L {}

fn grads_of(g: Vec<Option<ArrayD<f64>>>) -> Vec<ArrayD<f64>> {
    g.into_iter().flatten().collect()
}

fn count(n: u64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), n as f64)
}

/// SplitMix64 → deterministic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// An array of `shape` with values offset + spread·U(−1, 1), different per channel index.
fn data(shape: &[usize], seed: u64, offset: f64) -> ArrayD<f64> {
    let mut rng = Rng(seed);
    let mut a = ArrayD::zeros(IxDyn(shape));
    for (i, v) in a.iter_mut().enumerate() {
        *v = offset + (i % 5) as f64 * 0.3 + 1.5 * rng.next();
    }
    a
}

/// Rows `start..start + len` of `a` along the batch axis.
fn rows(a: &ArrayD<f64>, start: usize, len: usize) -> ArrayD<f64> {
    a.slice_axis(Axis(0), Slice::from(start..start + len))
        .to_owned()
}

fn concat(parts: &[ArrayD<f64>]) -> ArrayD<f64> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    normkit::ndarray::concatenate(Axis(0), &views).expect("same trailing shape")
}

fn assert_close(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * scale,
            "{what}[{i}]: synchronized {x} vs reference {y} (|Δ| = {:e})",
            (x - y).abs()
        );
    }
}

/// What one member computed: per step (y, dx, parameter gradients), then the state after
/// training, and an eval-mode step (y, dx, parameter gradients).
type MemberRun = (
    Vec<(ArrayD<f64>, ArrayD<f64>, Vec<ArrayD<f64>>)>,
    Vec<ArrayD<f64>>,
);

/// Runs `steps` training steps and one eval step, synchronized over `sizes.len()` members
/// with micro-batch sizes `sizes`, and compares with `layer` on the concatenated batches.
fn check_equivalence<L: Layer>(layer: &L, rest: &[usize], sizes: &[usize], steps: usize) {
    let k = sizes.len();
    let total: usize = sizes.iter().sum();
    let mut shape = vec![total];
    shape.extend_from_slice(rest);
    // Step s uses batch (x_s, dy_s); the last "step" is the eval-mode one.
    let batches: Vec<(ArrayD<f64>, ArrayD<f64>)> = (0..=steps)
        .map(|s| {
            let seed = 1000 * s as u64 + 7 * total as u64 + k as u64;
            (
                data(&shape, seed, 3.0 + s as f64),
                data(&shape, seed ^ 0xABCD, 0.0),
            )
        })
        .collect();
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, &n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();

    // The reference: the plain layer on the concatenated batch.
    let mut reference = layer.clone();
    let mut expected = Vec::new();
    for (s, (x, dy)) in batches.iter().enumerate() {
        let mode = if s < steps { Mode::Train } else { Mode::Eval };
        let (y, saved) = reference.fwd(x.view(), mode, None).unwrap();
        let (dx, g) = reference.bwd(x.view(), dy.view(), &saved, None).unwrap();
        expected.push((y, dx, g));
    }

    // k members, each with its own copy of the layer and its own rows.
    let members = ThreadGroup::new(k);
    let runs: Vec<MemberRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .into_iter()
            .map(|comm| {
                let mut local = layer.clone();
                let batches = &batches;
                let (start, len) = (starts[comm.rank()], sizes[comm.rank()]);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for (s, (x, dy)) in batches.iter().enumerate() {
                        let mode = if s < steps { Mode::Train } else { Mode::Eval };
                        let (x, dy) = (rows(x, start, len), rows(dy, start, len));
                        let (y, saved) = local.fwd(x.view(), mode, Some(&comm)).unwrap();
                        let (dx, g) = local.bwd(x.view(), dy.view(), &saved, Some(&comm)).unwrap();
                        out.push((y, dx, g));
                    }
                    (out, local.state())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let ctx = format!("k = {k}, sizes = {sizes:?}");
    for (s, (y, dx, g)) in expected.iter().enumerate() {
        let ys: Vec<_> = runs.iter().map(|r| r.0[s].0.clone()).collect();
        let dxs: Vec<_> = runs.iter().map(|r| r.0[s].1.clone()).collect();
        assert_close(&concat(&ys), y, &format!("{ctx}, step {s}: y"));
        assert_close(&concat(&dxs), dx, &format!("{ctx}, step {s}: dx"));
        assert_eq!(runs[0].0[s].2.len(), g.len(), "{ctx}: parameter count");
        for (p, gp) in g.iter().enumerate() {
            // Sum of the members' local contributions, in rank order.
            let mut sum = Array::zeros(gp.raw_dim());
            for r in &runs {
                sum += &r.0[s].2[p];
            }
            assert_close(
                &sum,
                gp,
                &format!("{ctx}, step {s}: parameter gradient {p}"),
            );
        }
    }
    // Running statistics (eval mode changed nothing): every member holds the global ones.
    let state = reference.state();
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(run.1.len(), state.len());
        for (i, (a, b)) in run.1.iter().zip(&state).enumerate() {
            assert_close(a, b, &format!("{ctx}: member {r} state {i}"));
        }
        // Identical on every member, bit for bit (rank-order merge everywhere).
        assert_eq!(run.1, runs[0].1, "{ctx}: members' states differ");
    }
}

/// Micro-batch sizes for k members: uneven, all non-empty.
fn uneven(k: usize) -> Vec<usize> {
    (0..k).map(|r| [3, 1, 4, 2, 5, 1, 2, 3][r % 8]).collect()
}

/// Micro-batch sizes for k members with member 1 (or the only member) EMPTY… except k = 1.
fn with_empty(k: usize) -> Vec<usize> {
    let mut s = uneven(k);
    if k > 1 {
        s[1] = 0;
    }
    s
}

fn all_splits(mut f: impl FnMut(&[usize])) {
    for k in 1..=8 {
        f(&uneven(k));
        if k > 1 {
            f(&with_empty(k));
        }
    }
    // Everything on the last member.
    f(&[0, 0, 0, 5]);
}

#[test]
fn bn_nchw_matches_the_concatenated_batch() {
    let layer = Bn2d::<f64>::new(3);
    all_splits(|sizes| check_equivalence(&layer, &[3, 4, 5], sizes, 3));
}

#[test]
fn bn_nchw_with_trained_affine_parameters() {
    let mut layer = Bn2d::<f64>::new(3);
    layer.gamma = normkit::ndarray::array![0.5, -1.25, 2.0];
    layer.beta = normkit::ndarray::array![0.1, 0.0, -3.0];
    layer.running_mean = normkit::ndarray::array![0.3, 1.0, -2.0];
    layer.num_batches_tracked = 4;
    check_equivalence(&layer, &[3, 2, 3], &[2, 0, 3, 1], 2);
}

#[test]
fn bn_over_n_c_matches_the_concatenated_batch() {
    let layer = Bn1d::<f64>::new(6);
    all_splits(|sizes| check_equivalence(&layer, &[6], sizes, 3));
}

#[test]
fn channels_last_matches_the_concatenated_batch() {
    let layer = BnNhwc::<f64>::new(4);
    all_splits(|sizes| check_equivalence(&layer, &[3, 2, 4], sizes, 2));
}

#[test]
fn bcn_chain_syncs_its_bn_stage_only() {
    let mut layer = Bcn::<f64>::new(4);
    layer.gn.gamma = normkit::ndarray::array![1.5, -0.5];
    all_splits(|sizes| check_equivalence(&layer, &[4, 3, 3], sizes, 2));
}

#[test]
fn unbiased_batch_statistics_without_running_stats_sync_in_eval_too() {
    let layer = BnUnbiased::<f64>::new(2, 3);
    all_splits(|sizes| check_equivalence(&layer, &[2, 3], sizes, 2));
}

#[test]
fn rms_over_the_batch_matches() {
    let layer = BatchRms::<f64>::new();
    for k in [1, 3, 5] {
        check_equivalence(&layer, &[4, 3], &with_empty(k), 2);
    }
}

#[test]
fn dynamic_layer_matches() {
    let spec = NormSpec::parse(
        r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#,
    )
    .unwrap();
    let layer = DynNorm::<f64>::new(&spec, &[("C", 4)]).unwrap();
    for k in [1, 2, 4, 7] {
        check_equivalence(&layer, &[4, 2, 3], &with_empty(k), 2);
    }
}

/// Every call bit-identical between `forward`/`backward` and the `*_sync` calls with `Solo`.
fn check_solo<L: Layer>(layer: &L, shape: &[usize]) {
    let (mut plain, mut solo) = (layer.clone(), layer.clone());
    for s in 0..3u64 {
        let mode = if s < 2 { Mode::Train } else { Mode::Eval };
        let x = data(shape, 11 + s, 2.0);
        let dy = data(shape, 99 + s, 0.0);
        let (y1, s1) = plain.fwd(x.view(), mode, None).unwrap();
        let (y2, s2) = solo.fwd(x.view(), mode, Some(&Solo)).unwrap();
        assert_eq!(y1, y2, "y, step {s}");
        let (dx1, g1) = plain.bwd(x.view(), dy.view(), &s1, None).unwrap();
        let (dx2, g2) = solo.bwd(x.view(), dy.view(), &s2, Some(&Solo)).unwrap();
        assert_eq!(dx1, dx2, "dx, step {s}");
        assert_eq!(g1, g2, "parameter gradients, step {s}");
        assert_eq!(plain.state(), solo.state(), "running statistics, step {s}");
    }
}

#[test]
fn solo_is_bit_identical_to_the_unsynchronized_calls() {
    check_solo(&Bn2d::<f64>::new(3), &[4, 3, 5, 6]);
    check_solo(&Bn1d::<f64>::new(5), &[7, 5]);
    check_solo(&BnNhwc::<f64>::new(4), &[2, 3, 3, 4]);
    check_solo(&Bcn::<f64>::new(4), &[3, 4, 2, 5]);
    check_solo(&BnUnbiased::<f64>::new(2, 3), &[5, 2, 3]);
    check_solo(&BatchRms::<f64>::new(), &[5, 4, 3]);
}

#[test]
fn saved_of_forward_is_rejected_by_backward_sync_and_vice_versa() {
    let mut bn = Bn2d::<f64>::new(3);
    let x = data(&[4, 3, 2, 2], 5, 1.0)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let (y, plain) = bn.forward(x.view(), Mode::Train).unwrap();
    let err = bn
        .backward_sync(x.view(), y.view(), &plain, &Solo)
        .unwrap_err();
    assert!(matches!(err, NormError::Saved { .. }), "{err}");
    assert!(err.to_string().contains("forward_sync"), "{err}");

    let (y, synced) = bn.forward_sync(x.view(), Mode::Train, &Solo).unwrap();
    let err = bn.backward(x.view(), y.view(), &synced).unwrap_err();
    assert!(matches!(err, NormError::Saved { .. }), "{err}");
    assert!(err.to_string().contains("backward_sync"), "{err}");

    // The chain (the BN stage is reached last in backward) and a real group: every member
    // fails the same way, none waits forever.
    let bcn = Bcn::<f64>::new(4);
    let outs: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(3)
            .into_iter()
            .map(|comm| {
                let mut layer = bcn.clone();
                s.spawn(move || {
                    let x = data(&[2, 4, 2, 2], comm.rank() as u64, 0.0)
                        .into_dimensionality::<Ix4>()
                        .unwrap();
                    let (y, saved) = layer.forward(x.view(), Mode::Train).unwrap();
                    let r = layer.backward_sync(x.view(), y.view(), &saved, &comm);
                    matches!(r, Err(NormError::Saved { .. }))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs, [true, true, true]);

    // Eval mode with running statistics exchanges nothing: its Saved works with both.
    let (y, fixed) = bn.forward(x.view(), Mode::Eval).unwrap();
    let a = bn.backward(x.view(), y.view(), &fixed).unwrap();
    let b = bn.backward_sync(x.view(), y.view(), &fixed, &Solo).unwrap();
    assert_eq!(a, b);
}

#[test]
fn too_few_values_are_counted_over_the_whole_group() {
    // One value per channel on each of two members: 2 in the global batch → fine; one value
    // in total (the other member empty) → the usual error, on every member.
    let layer = Bn1d::<f64>::new(2);
    check_equivalence(&layer, &[2], &[1, 1], 1);
    let outs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .map(|comm| {
                let mut layer = layer.clone();
                s.spawn(move || {
                    let n = if comm.rank() == 0 { 1 } else { 0 };
                    let x = Array::<f64, Ix2>::ones((n, 2));
                    let err = layer
                        .forward_sync(x.view(), Mode::Train, &comm)
                        .unwrap_err();
                    assert!(matches!(err, NormError::TooFewValues { .. }), "{err}");
                    assert_eq!(layer.num_batches_tracked, 0, "no state change on error");
                    err.to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs.len(), 2);
}
