//! normkit-burn's modules against burn-nn's (burn 0.22.1) in f32 on `Device::flex().autodiff()`:
//! outputs and the gradients of x, γ and β; the composed path against the fused path; the
//! running statistics after several training steps; errors.
//!
//! Tolerances (f32): outputs 1e-5 and gradients 1e-4, relative to max(1, |reference|).
//! burn-nn computes the statistics with different reductions (and its RmsNorm in f32), so
//! agreement is to rounding, not bit for bit. The f64 comparisons are in tests/f64.rs.

#[macro_use]
mod common;

use burn::tensor::{Device, Gradients, Tensor};
use common::{assert_close, param, tensor, vals, Rng};
use normkit_burn::{
    normalize, normalize_composed, path_for, BatchNormConfig, GroupNormConfig, InstanceNormConfig,
    LayerNormConfig, Mode, NormLayer, NormModuleConfig, NormTensors, Path, RmsNormConfig,
};

const OUT_TOL: f64 = 1e-5;
const GRAD_TOL: f64 = 1e-4;

fn device() -> Device {
    Device::flex().autodiff()
}

/// Output, dx and the parameter gradients of `forward` on `x` with the loss Σ w·y.
struct Run {
    y: Vec<f64>,
    dx: Vec<f64>,
    params: Vec<Vec<f64>>,
}

fn run<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<D>,
    forward: impl FnOnce(Tensor<D>) -> Tensor<D>,
    params: impl FnOnce(&Gradients) -> Vec<Option<Tensor<1>>>,
) -> Run {
    let x = x.clone().detach().require_grad();
    let y = forward(x.clone());
    let loss = (y.clone() * w.clone()).sum();
    let grads = loss.backward();
    Run {
        y: vals(y),
        dx: vals(x.grad(&grads).expect("dx")),
        params: params(&grads)
            .into_iter()
            .map(|g| vals(g.expect("parameter gradient")))
            .collect(),
    }
}

fn compare(what: &str, a: &Run, b: &Run) {
    assert_close(&format!("{what}: y"), &a.y, &b.y, OUT_TOL);
    assert_close(&format!("{what}: dx"), &a.dx, &b.dx, GRAD_TOL);
    assert_eq!(a.params.len(), b.params.len());
    for (k, (p, q)) in a.params.iter().zip(&b.params).enumerate() {
        assert_close(&format!("{what}: dparam {k}"), p, q, GRAD_TOL);
    }
}

#[test]
fn the_flex_device_takes_the_fused_path_others_the_composed() {
    use burn::tensor::DType;
    assert_eq!(path_for(&Device::flex(), DType::F32), Path::Fused);
    assert_eq!(
        path_for(&Device::flex().autodiff(), DType::F64),
        Path::Fused
    );
    assert_eq!(path_for(&Device::flex(), DType::F16), Path::Composed);
}

#[test]
fn layer_norm_matches_burn_nn() {
    let dev = device();
    let mut rng = Rng::new(1);
    for (rows, d) in [(1usize, 7usize), (6, 33), (16, 128)] {
        let x = tensor(&mut rng, [rows, d], -2.0, 3.0, &dev, false);
        let w = tensor(&mut rng, [rows, d], -1.0, 1.0, &dev, false);
        let g = tensor(&mut rng, [d], 0.5, 1.5, &dev, false);
        let b = tensor(&mut rng, [d], -0.5, 0.5, &dev, false);
        let mut nk = LayerNormConfig::new(d).init(&dev);
        nk.gamma = param(g.clone());
        nk.beta = Some(param(b.clone()));
        let mut nn = burn::nn::LayerNormConfig::new(d).init(&dev);
        nn.gamma = param(g);
        nn.beta = Some(param(b));
        let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![
            m.gamma.val().grad(gr),
            m.beta.as_ref().unwrap().val().grad(gr)
        ]);
        compare(&format!("LayerNorm [{rows}, {d}]"), &a, &r);
    }
    // rank 3: [..., d_model]
    let x = tensor(&mut rng, [2, 3, 9], -1.0, 1.0, &dev, false);
    let w = tensor(&mut rng, [2, 3, 9], -1.0, 1.0, &dev, false);
    let nk = LayerNormConfig::new(9).with_bias(false).init(&dev);
    let nn = burn::nn::LayerNormConfig::new(9)
        .with_bias(false)
        .init(&dev);
    let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![m
        .gamma
        .val()
        .grad(gr)]);
    compare("LayerNorm [2, 3, 9] without bias", &a, &r);
}

#[test]
fn rms_norm_matches_burn_nn() {
    let dev = device();
    let mut rng = Rng::new(2);
    for (rows, d) in [(1usize, 5usize), (7, 64)] {
        let x = tensor(&mut rng, [rows, d], -2.0, 2.0, &dev, false);
        let w = tensor(&mut rng, [rows, d], -1.0, 1.0, &dev, false);
        let g = tensor(&mut rng, [d], 0.5, 1.5, &dev, false);
        let mut nk = RmsNormConfig::new(d).init(&dev);
        nk.gamma = param(g.clone());
        let mut nn = burn::nn::RmsNormConfig::new(d).init(&dev);
        nn.gamma = param(g);
        let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![m
            .gamma
            .val()
            .grad(gr)]);
        compare(&format!("RmsNorm [{rows}, {d}]"), &a, &r);
    }
}

#[test]
fn group_norm_matches_burn_nn() {
    let dev = device();
    let mut rng = Rng::new(3);
    for (shape, groups) in [
        ([1usize, 6, 5, 3], 3usize),
        ([4, 8, 7, 7], 2),
        ([3, 4, 1, 9], 4),
    ] {
        let c = shape[1];
        let x = tensor(&mut rng, shape, -2.0, 3.0, &dev, false);
        let w = tensor(&mut rng, shape, -1.0, 1.0, &dev, false);
        let g = tensor(&mut rng, [c], 0.5, 1.5, &dev, false);
        let b = tensor(&mut rng, [c], -0.5, 0.5, &dev, false);
        let mut nk = GroupNormConfig::new(groups, c).init(&dev);
        nk.gamma = Some(param(g.clone()));
        nk.beta = Some(param(b.clone()));
        let mut nn = burn::nn::GroupNormConfig::new(groups, c).init(&dev);
        nn.gamma = Some(param(g));
        nn.beta = Some(param(b));
        let pg = |m: &Option<burn::module::Param<Tensor<1>>>, gr: &Gradients| {
            m.as_ref().unwrap().val().grad(gr)
        };
        let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![
            pg(&m.gamma, gr),
            pg(&m.beta, gr)
        ]);
        compare(&format!("GroupNorm {shape:?} groups {groups}"), &a, &r);
    }
}

#[test]
fn instance_norm_matches_burn_nn_and_group_norm_with_c_groups() {
    let dev = device();
    let mut rng = Rng::new(4);
    let shape = [2usize, 5, 3, 7];
    let x = tensor(&mut rng, shape, -2.0, 3.0, &dev, false);
    let w = tensor(&mut rng, shape, -1.0, 1.0, &dev, false);
    let g = tensor(&mut rng, [5], 0.5, 1.5, &dev, false);
    let b = tensor(&mut rng, [5], -0.5, 0.5, &dev, false);
    let mut nk = InstanceNormConfig::new(5).init(&dev);
    nk.gamma = Some(param(g.clone()));
    nk.beta = Some(param(b.clone()));
    let mut nn = burn::nn::InstanceNormConfig::new(5).init(&dev);
    nn.gamma = Some(param(g.clone()));
    nn.beta = Some(param(b.clone()));
    let mut gn = GroupNormConfig::new(5, 5).init(&dev);
    gn.gamma = Some(param(g));
    gn.beta = Some(param(b));
    let pg = |m: &Option<burn::module::Param<Tensor<1>>>, gr: &Gradients| {
        m.as_ref().unwrap().val().grad(gr)
    };
    let [a, r, q] = on_each!(run, (&x, &w), [nk, nn, gn], |m, gr| vec![
        pg(&m.gamma, gr),
        pg(&m.beta, gr)
    ]);
    compare("InstanceNorm vs burn-nn", &a, &r);
    compare("InstanceNorm vs GroupNorm(C, C)", &a, &q);
}

#[test]
fn batch_norm_train_and_eval_match_burn_nn() {
    let dev = device();
    let mut rng = Rng::new(5);
    for shape in [[1usize, 3, 4, 5], [6, 4, 3, 3], [5, 2, 1, 1]] {
        let c = shape[1];
        let x = tensor(&mut rng, shape, -2.0, 3.0, &dev, false);
        let w = tensor(&mut rng, shape, -1.0, 1.0, &dev, false);
        let g = tensor(&mut rng, [c], 0.5, 1.5, &dev, false);
        let b = tensor(&mut rng, [c], -0.5, 0.5, &dev, false);
        let mut nk = BatchNormConfig::new(c).init(&dev);
        nk.gamma = param(g.clone());
        nk.beta = param(b.clone());
        let mut nn = burn::nn::BatchNormConfig::new(c).init(&dev);
        nn.gamma = param(g);
        nn.beta = param(b);
        let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![
            m.gamma.val().grad(gr),
            m.beta.val().grad(gr)
        ]);
        compare(&format!("BatchNorm train {shape:?}"), &a, &r);
        // The running means agree (the variances differ by design, see running_stats test).
        // (`value_sync`: `RunningState::value` may lag one update behind.)
        assert_close(
            "running_mean after one step",
            &vals(nk.running_mean.value_sync()),
            &vals(nn.running_mean.value_sync()),
            OUT_TOL,
        );
        // Eval: the same running statistics in both, the training flag off.
        let rm = tensor(&mut rng, [c], -0.5, 0.5, &dev, false);
        let rv = tensor(&mut rng, [c], 0.5, 2.0, &dev, false);
        let mut nk_e = nk.clone();
        nk_e.running_mean = burn::module::RunningState::new(rm.clone());
        nk_e.running_var = burn::module::RunningState::new(rv.clone());
        nk_e.training = burn::module::Param::from_bool(false);
        let mut nn_e = nn.clone();
        nn_e.running_mean = burn::module::RunningState::new(rm);
        nn_e.running_var = burn::module::RunningState::new(rv);
        nn_e.training = burn::module::Param::from_bool(false);
        let [a, r] = on_each!(run, (&x, &w), [nk_e, nn_e], |m, gr| vec![
            m.gamma.val().grad(gr),
            m.beta.val().grad(gr)
        ]);
        compare(&format!("BatchNorm eval {shape:?}"), &a, &r);
    }
    // rank 2: [N, C]
    let x = tensor(&mut rng, [7, 3], -1.0, 1.0, &dev, false);
    let w = tensor(&mut rng, [7, 3], -1.0, 1.0, &dev, false);
    let nk = BatchNormConfig::new(3).init(&dev);
    let nn = burn::nn::BatchNormConfig::new(3).init(&dev);
    let [a, r] = on_each!(run, (&x, &w), [nk, nn], |m, gr| vec![m
        .gamma
        .val()
        .grad(gr)]);
    compare("BatchNorm train [7, 3]", &a, &r);
}

/// Running statistics after several training steps. The running mean equals burn-nn's. The
/// running variance follows PyTorch (unbiased batch variance): checked against the update
/// computed here from the batches in f64, and against burn-nn's (which uses the biased
/// variance) through the exact relation between the two recurrences.
#[test]
fn running_stats_after_training_steps() {
    let dev = device();
    let mut rng = Rng::new(6);
    let (n, c, l) = (4usize, 3usize, 5usize);
    let momentum = 0.2;
    let nk = BatchNormConfig::new(c).with_momentum(momentum).init(&dev);
    let nn = burn::nn::BatchNormConfig::new(c)
        .with_momentum(momentum)
        .init(&dev);
    let mut mean_ref = vec![0.0f64; c];
    let mut var_ref = vec![1.0f64; c];
    let mut var_biased_ref = vec![1.0f64; c];
    let steps = 5;
    for _ in 0..steps {
        let x = tensor(&mut rng, [n, c, l], -1.0, 4.0, &dev, false);
        let xs = vals(x.clone());
        nk.forward(x.clone()).sum().backward();
        nn.forward(x).sum().backward();
        for ch in 0..c {
            let v: Vec<f64> = (0..n)
                .flat_map(|i| (0..l).map(move |k| (i, k)))
                .map(|(i, k)| xs[(i * c + ch) * l + k])
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let m2: f64 = v.iter().map(|a| (a - m) * (a - m)).sum();
            let cnt = v.len() as f64;
            mean_ref[ch] = (1.0 - momentum) * mean_ref[ch] + momentum * m;
            var_ref[ch] = (1.0 - momentum) * var_ref[ch] + momentum * m2 / (cnt - 1.0);
            var_biased_ref[ch] = (1.0 - momentum) * var_biased_ref[ch] + momentum * m2 / cnt;
        }
    }
    // `value_sync`: `RunningState::value` may lag one update behind.
    let nk_mean = vals(nk.running_mean.value_sync());
    let nk_var = vals(nk.running_var.value_sync());
    let nn_var = vals(nn.running_var.value_sync());
    let nn_mean = vals(nn.running_mean.value_sync());
    assert_close("running_mean vs burn-nn", &nk_mean, &nn_mean, 1e-5);
    assert_close("running_mean vs reference", &nk_mean, &mean_ref, 1e-5);
    assert_close("running_var vs reference", &nk_var, &var_ref, 1e-5);
    assert_close(
        "burn-nn running_var vs biased reference",
        &nn_var,
        &var_biased_ref,
        1e-5,
    );
    // With a constant count n per step: (r_k − d) = ((n)/(n−1))·(b_k − d), d = (1−m)^k.
    let cnt = (n * l) as f64;
    let d = (1.0 - momentum).powi(steps);
    let predicted: Vec<f64> = nn_var
        .iter()
        .map(|b| d + (b - d) * cnt / (cnt - 1.0))
        .collect();
    assert_close(
        "running_var vs burn-nn's, corrected",
        &nk_var,
        &predicted,
        1e-5,
    );
}

/// The composed path (burn tensor ops, the path of every non-Flex device) against the fused
/// path on the CPU: outputs, gradients and running statistics, for the built-in layers and
/// for specs the built-in layers do not cover.
#[test]
fn composed_path_equals_fused_path() {
    let dev = device();
    let mut rng = Rng::new(7);
    type Case<'a> = (&'a str, &'a [(&'a str, usize)], [usize; 4], Mode);
    let cases: &[Case<'_>] = &[
        (
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
            &[("C", 4)],
            [3, 4, 5, 3],
            Mode::Train,
        ),
        (
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.3"#,
            &[("C", 3)],
            [4, 3, 2, 5],
            Mode::Train,
        ),
        (
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
            &[("C", 3)],
            [4, 3, 2, 5],
            Mode::Eval,
        ),
        (
            r#"input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W""#,
            &[("C", 2), ("H", 3), ("W", 4)],
            [2, 2, 3, 4],
            Mode::Train,
        ),
        (
            r#"input = "N,C,H,W", axes = "W", center = false, affine = "W", bias = false, eps = 1e-6"#,
            &[("W", 6)],
            [2, 3, 4, 6],
            Mode::Train,
        ),
        (
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine = "G", unbiased, eps_mode = "std""#,
            &[],
            [2, 4, 3, 3],
            Mode::Train,
        ),
        (
            r#"input = "N,C,H,W", axes = "H,W", running_stats, momentum = "cumulative""#,
            &[("C", 2)],
            [3, 2, 4, 4],
            Mode::Train,
        ),
    ];
    for &(spec, sizes, shape, mode) in cases {
        let layer = NormLayer::parse(spec, sizes, "case").unwrap();
        let numel = |s: &[usize]| s.iter().product::<usize>();
        let p = layer.param_shape().map(numel);
        let r = layer.running_shape().map(numel);
        let gamma = p.map(|n| tensor(&mut rng, [n], 0.5, 1.5, &dev, false).require_grad());
        let beta = p
            .filter(|_| layer.has_beta())
            .map(|n| tensor(&mut rng, [n], -0.5, 0.5, &dev, false).require_grad());
        let running = r.map(|n| {
            (
                tensor(&mut rng, [n], -0.5, 0.5, &dev, false),
                tensor(&mut rng, [n], 0.5, 2.0, &dev, false),
            )
        });
        let x = tensor(&mut rng, shape, -2.0, 3.0, &dev, false);
        let w = tensor(&mut rng, shape, -1.0, 1.0, &dev, false);
        let tensors = NormTensors {
            gamma: gamma.clone(),
            beta: beta.clone(),
            running: running.clone(),
            num_batches_tracked: 2,
        };
        let mut runs = Vec::new();
        for composed in [false, true] {
            let mut new_running = None;
            let out = run(
                &x,
                &w,
                |x| {
                    let o = if composed {
                        normalize_composed(x, tensors.clone(), &layer, mode).unwrap()
                    } else {
                        normalize(x, tensors.clone(), &layer, mode).unwrap()
                    };
                    new_running = o.running;
                    o.output
                },
                |gr| {
                    gamma
                        .iter()
                        .chain(beta.iter())
                        .map(|t| t.grad(gr))
                        .collect()
                },
            );
            runs.push((out, new_running));
        }
        let (fused, composed) = (&runs[0], &runs[1]);
        compare(&format!("{spec} ({mode:?})"), &fused.0, &composed.0);
        match (&fused.1, &composed.1) {
            (Some((fm, fv)), Some((cm, cv))) => {
                assert_close(
                    "running mean",
                    &vals(fm.clone()),
                    &vals(cm.clone()),
                    OUT_TOL,
                );
                assert_close("running var", &vals(fv.clone()), &vals(cv.clone()), OUT_TOL);
            }
            (None, None) => {}
            _ => panic!("{spec}: only one path updated the running statistics"),
        }
    }
}

/// normkit's error messages: returned by `try_forward`, carried by `forward`'s panic (burn's
/// module API has no `Result`), the same on both paths.
#[test]
fn wrong_channels_and_rank_report_normkit_errors() {
    let dev = device();
    let x = Tensor::<4>::ones([2, 5, 3, 3], &dev);
    let bn = BatchNormConfig::new(4).init(&dev);
    let err = bn.try_forward(x.clone()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("BatchNorm"), "{msg}");
    assert!(msg.contains('4') && msg.contains('5'), "{msg}");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bn.forward(x.clone())))
        .unwrap_err();
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(text, msg);

    // The composed path reports the very same error.
    let layer = NormLayer::parse(
        r#"input = "N,C,L", axes = "N,L", affine, running_stats"#,
        &[("C", 4)],
        "BatchNorm",
    )
    .unwrap();
    let t = NormTensors {
        gamma: Some(Tensor::ones([4], &dev)),
        beta: Some(Tensor::zeros([4], &dev)),
        running: Some((Tensor::zeros([4], &dev), Tensor::ones([4], &dev))),
        num_batches_tracked: 0,
    };
    let x3 = Tensor::<3>::ones([2, 5, 9], &dev);
    let fused = normalize(x3.clone(), t.clone(), &layer, Mode::Train).unwrap_err();
    let composed = normalize_composed(x3, t, &layer, Mode::Train).unwrap_err();
    assert_eq!(fused, composed);
    assert_eq!(fused.to_string(), msg);

    // A rank that disagrees with the spec.
    let m =
        NormModuleConfig::new(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2"#.into()).init(&dev);
    let e = m
        .try_forward(Tensor::<3>::ones([2, 4, 3], &dev))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "NormModule: expected an input with 4 axes, got 3"
    );
    // groups not dividing C
    let e = m
        .try_forward(Tensor::<4>::ones([2, 5, 3, 3], &dev))
        .unwrap_err();
    assert!(
        matches!(
            e,
            normkit::NormError::GroupsDivide {
                channels: 5,
                groups: 2,
                ..
            }
        ),
        "{e}"
    );
    // one value per channel in train mode
    let e = bn.try_forward(Tensor::<2>::ones([1, 4], &dev)).unwrap_err();
    assert!(matches!(e, normkit::NormError::TooFewValues { .. }), "{e}");
    // an invalid spec
    let e = NormModuleConfig::new(r#"axes = "C,H,X""#.into())
        .try_init(&dev)
        .unwrap_err();
    assert!(e.to_string().contains("invalid spec"), "{e}");
}

/// A `#[norm]` research variant declared by its spec trains in burn: its output equals
/// normkit's own `DynNorm` on the same data (bit for bit on the fused path).
#[test]
fn a_spec_declared_variant_equals_normkit_dyn_norm() {
    use normkit::ndarray::{ArrayD, IxDyn};
    let dev = Device::flex();
    let spec = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine = "G", eps_mode = "std""#;
    let m = NormModuleConfig::new(spec.into()).init(&dev);
    let mut rng = Rng::new(8);
    let shape = [3usize, 4, 5, 2];
    let x = tensor(&mut rng, shape, -1.0, 2.0, &dev, false);
    let y = vals(m.forward(x.clone()));
    let xs: Vec<f32> = x.into_data().iter::<f32>().collect();
    let mut dn =
        normkit::DynNorm::<f32>::new(&normkit::NormSpec::parse(spec).unwrap(), &[]).unwrap();
    let xa = ArrayD::from_shape_vec(IxDyn(&shape), xs).unwrap();
    let (yd, _) = dn.forward(xa.view(), Mode::Eval).unwrap();
    let yd: Vec<f64> = yd.iter().map(|&v| v as f64).collect();
    assert_eq!(y, yd);
}
