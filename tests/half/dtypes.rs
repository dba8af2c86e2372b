//! Half-precision layers (`bf16`, `f16`).
//!
//! * Golden data (`tests/golden/half.py`, `tests/golden/data/half/`): every output of every
//!   step (forward train/eval, dx, parameter gradients, running statistics, moments) within
//!   2x PyTorch's own error in the same dtype, both measured against a float64 reference
//!   computed on the same (rounded) inputs.
//! * Every call path (generated layers and `DynNorm`; forward, backward, `_into`, chains,
//!   external affine, synchronized statistics, `stats`): a half-precision layer returns
//!   exactly the f32 layer's results on the same values, rounded once to nearest even (the
//!   f32 layers are checked against PyTorch in `tests/golden_tests/golden.rs`), and keeps
//!   its running statistics as the f32 layer's, rounded; the fused row path (layer, RMS,
//!   group norm), whose statistics are summed in f32 lanes, within one ulp of those (≥ 99 %
//!   identical) and its saved statistics within 1e-6 (`support::near`).
//! * State dicts: an f32 file loads into a bf16 layer, rounding each value.

use crate::golden_support::data;
use crate::golden_support::runner::{self, Prec, Report};
use crate::support::{adopt_running, input, near, near_opt, near_stats, rounded, rounded_opt};
use crate::support::{same_level, same_params};
use normkit::ndarray::{Array, ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::{bf16, f16, norm, Solo, StateDict, ThreadGroup};

fn golden<T: Float>(dtype: &str) {
    let file = data::load_half(dtype);
    assert!(
        file.cases.len() >= 16,
        "{dtype}: {} cases",
        file.cases.len()
    );
    let mut report = Report::new(dtype, Prec::Half);
    for case in &file.cases {
        runner::run_case::<T>(case, dtype, &mut report);
    }
    report.finish();
}

#[test]
fn golden_bf16_within_twice_torch_error() {
    golden::<bf16>("bf16");
}

#[test]
fn golden_f16_within_twice_torch_error() {
    golden::<f16>("f16");
}

fn stage_params_match<T: Float>(h: &DynNorm<T>, w: &DynNorm<f32>) {
    for (k, (sh, sw)) in h.stages().iter().zip(w.stages()).enumerate() {
        rounded_opt(
            &format!("stage {k} running_mean"),
            &sh.running_mean,
            &sw.running_mean,
        );
        rounded_opt(
            &format!("stage {k} running_var"),
            &sh.running_var,
            &sw.running_var,
        );
        assert_eq!(sh.num_batches_tracked, sw.num_batches_tracked);
    }
}

/// Train, train, eval steps through `forward`/`backward(_chain)`, `forward_*_into`,
/// `stats`, against the f32 layer: its results rounded, bit for bit; where `own` (the
/// fused row path of layer, RMS and group norm, whose statistics are summed in f32 lanes:
/// `norm-runtime/src/widen/rows.rs`), the outputs and gradients within one ulp of those
/// and identical for at least 99 % ([`near`]), the saved statistics within 1e-6.
fn dyn_paths<T: Float>(spec: &str, sizes: &[(&str, usize)], shape: &[usize], own: bool) {
    let rounded = |what: &str, h: &ArrayD<T>, w: &ArrayD<f32>| {
        if own {
            near(what, h, w)
        } else {
            rounded(what, h, w)
        }
    };
    let rounded_opt = |what: &str, h: &Option<ArrayD<T>>, w: &Option<ArrayD<f32>>| {
        if own {
            near_opt(what, h, w)
        } else {
            rounded_opt(what, h, w)
        }
    };
    let spec = NormSpec::parse(spec).unwrap();
    let mut h = DynNorm::<T>::new(&spec, sizes).unwrap();
    let mut w = DynNorm::<f32>::new(&spec, sizes).unwrap();
    same_params(&mut h, &mut w, 7);
    let chain = h.stages().len() > 1;
    for (step, mode) in [Mode::Train, Mode::Train, Mode::Eval]
        .into_iter()
        .enumerate()
    {
        let ctx = format!("{} {spec:?} step {step}", T::NAME);
        let (x, xw) = input::<T>(shape, 100 + step as u64, 0.5);
        let (dy, dyw) = input::<T>(shape, 200 + step as u64, 0.0);
        let (y, saved) = h.forward(x.view(), mode).unwrap();
        let (yw, savedw) = w.forward(xw.view(), mode).unwrap();
        rounded(&format!("{ctx}: y"), &y, &yw);
        if own {
            near_stats(&format!("{ctx}: saved"), &saved, &savedw);
        }
        stage_params_match(&h, &w);
        adopt_running(&h, &mut w);
        if chain {
            let g = h.backward_chain(x.view(), dy.view(), &saved).unwrap();
            let gw = w.backward_chain(xw.view(), dyw.view(), &savedw).unwrap();
            // The saved intermediate output is rounded to T (as between two half-precision
            // modules), so stage 1's recomputed x̂ differs from the f32 run by that rounding.
            let close = |what: &str, a: &ArrayD<T>, b: &ArrayD<f32>| {
                let scale = b.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                for (p, q) in a.iter().zip(b) {
                    let d = (p.to_acc() - f64::from(*q)).abs();
                    assert!(d <= 0.02 * scale, "{ctx}: {what}: {p} vs {q}");
                }
            };
            close("dx", &g.dx, &gw.dx);
            for (k, (s, sw)) in g.stages.iter().zip(&gw.stages).enumerate() {
                for (a, b) in [(&s.dgamma, &sw.dgamma), (&s.dbeta, &sw.dbeta)] {
                    match (a, b) {
                        (Some(a), Some(b)) => close(&format!("stage {k} dγ/dβ"), a, b),
                        (None, None) => {}
                        _ => panic!("{ctx}: stage {k}: gradient in one precision only"),
                    }
                }
            }
        } else {
            let g = h.backward(x.view(), dy.view(), &saved).unwrap();
            let gw = w.backward(xw.view(), dyw.view(), &savedw).unwrap();
            rounded(&format!("{ctx}: dx"), &g.dx, &gw.dx);
            rounded_opt(&format!("{ctx}: dgamma"), &g.dgamma, &gw.dgamma);
            rounded_opt(&format!("{ctx}: dbeta"), &g.dbeta, &gw.dbeta);
            // `_into` with reused buffers: the same values.
            let mut out = ArrayD::from_elem(IxDyn(shape), T::nan());
            h.forward_eval_into(x.view(), out.view_mut()).unwrap();
            let yw = w.forward_eval(xw.view()).unwrap();
            rounded(&format!("{ctx}: y (eval_into)"), &out, &yw);
            let mut grads = Grads::new(ArrayD::from_elem(IxDyn(shape), T::nan()));
            h.backward_into(x.view(), dy.view(), &saved, &mut grads)
                .unwrap();
            rounded(&format!("{ctx}: dx (into)"), &grads.dx, &gw.dx);
            rounded_opt(&format!("{ctx}: dgamma (into)"), &grads.dgamma, &gw.dgamma);
        }
        let m = h.stats(x.view()).unwrap();
        let mw = w.stats(xw.view()).unwrap();
        // `stats` converts the whole tensor around the f32 call: bit for bit everywhere.
        crate::support::rounded(&format!("{ctx}: stats mean"), &m.mean, &mw.mean);
        crate::support::rounded(&format!("{ctx}: stats var"), &m.var, &mw.var);
    }
}

fn all_dyn_paths<T: Float>() {
    let bn = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
    dyn_paths::<T>(bn, &[("C", 3)], &[4, 3, 5, 6], false);
    let bn_nhwc = r#"input = "N,H,W,C", axes = "N,H,W", affine, running_stats, momentum = 0.5"#;
    dyn_paths::<T>(bn_nhwc, &[("C", 16)], &[2, 3, 5, 16], false);
    let ln = r#"input = "N,T,D", axes = "D", affine = "D""#;
    dyn_paths::<T>(ln, &[("D", 40)], &[3, 5, 40], true);
    let gn = r#"input = "N,C,H,W", axes = "C,H,W", groups = 4, affine"#;
    dyn_paths::<T>(gn, &[("C", 8)], &[2, 8, 3, 3], true);
    let rms = r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false"#;
    dyn_paths::<T>(rms, &[("D", 24)], &[6, 24], true);
    let inorm = r#"input = "N,C,L", axes = "L", affine, running_stats"#;
    dyn_paths::<T>(inorm, &[("C", 4)], &[3, 4, 9], false);
    let ws = r#"input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std""#;
    dyn_paths::<T>(ws, &[], &[4, 3, 3, 3], false);
    // Large enough for the blocked forward (blocks of whole rows of axis 0, `widen.rs`).
    dyn_paths::<T>(ln, &[("D", 40)], &[8, 420, 40], true);
    dyn_paths::<T>(gn, &[("C", 8)], &[6, 8, 56, 56], true);
    let in_plain = r#"input = "N,C,H,W", axes = "H,W""#;
    dyn_paths::<T>(in_plain, &[], &[3, 10, 70, 66], false);
    dyn_paths::<T>(ws, &[], &[700, 16, 3, 5], false);
    let bcn = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine = "G"))"#;
    dyn_paths::<T>(bcn, &[("C", 4)], &[2, 4, 3, 3], false);
    // Columns longer than one block of the column kernels (chunks of rows), odd tail.
    let bn1d = r#"input = "N,C", axes = "N", affine, running_stats"#;
    dyn_paths::<T>(bn1d, &[("C", 150)], &[45, 150], false);
    // A fused chain (cells of 100 values, several blocks).
    dyn_paths::<T>(bcn, &[("C", 8)], &[3, 8, 10, 10], false);
}

#[test]
fn bf16_dyn_norm_is_the_f32_layer_rounded() {
    let _level = same_level();
    all_dyn_paths::<bf16>();
}

#[test]
fn f16_dyn_norm_is_the_f32_layer_rounded() {
    let _level = same_level();
    all_dyn_paths::<f16>();
}

fn external<T: Float>() {
    let spec =
        NormSpec::parse(r#"input = "N,C,H,W", axes = "H,W", unbiased, affine = external"#).unwrap();
    let mut h = DynNorm::<T>::new(&spec, &[]).unwrap();
    let mut w = DynNorm::<f32>::new(&spec, &[]).unwrap();
    let (x, xw) = input::<T>(&[2, 3, 4, 4], 1, 0.2);
    let (sc, scw) = input::<T>(&[2, 3], 2, 1.5);
    let (sh, shw) = input::<T>(&[2, 3], 3, 0.0);
    let (dy, dyw) = input::<T>(&[2, 3, 4, 4], 4, 0.0);
    let (y, saved) = h
        .forward_external(x.view(), sc.view(), sh.view(), Mode::Train)
        .unwrap();
    let (yw, savedw) = w
        .forward_external(xw.view(), scw.view(), shw.view(), Mode::Train)
        .unwrap();
    rounded("AdaIN y", &y, &yw);
    let g = h.backward(x.view(), dy.view(), &saved).unwrap();
    let gw = w.backward(xw.view(), dyw.view(), &savedw).unwrap();
    rounded("AdaIN dx", &g.dx, &gw.dx);
    rounded_opt("AdaIN dscale", &g.dgamma, &gw.dgamma);
    rounded_opt("AdaIN dshift", &g.dbeta, &gw.dbeta);
}

#[test]
fn half_external_affine_is_the_f32_layer_rounded() {
    let _level = same_level();
    external::<bf16>();
    external::<f16>();
}

fn sync<T: Float>() {
    let spec = NormSpec::parse(r#"input = "N,C", axes = "N", affine, running_stats"#).unwrap();
    let x_all = input::<T>(&[8, 5], 9, 1.0);
    let dy_all = input::<T>(&[8, 5], 10, 0.0);
    // Solo: the unsynchronized layer's results.
    let mut h = DynNorm::<T>::new(&spec, &[("C", 5)]).unwrap();
    let mut w = DynNorm::<f32>::new(&spec, &[("C", 5)]).unwrap();
    let (y, s) = h.forward_sync(x_all.0.view(), Mode::Train, &Solo).unwrap();
    let (yw, sw) = w.forward_sync(x_all.1.view(), Mode::Train, &Solo).unwrap();
    rounded("sync y", &y, &yw);
    let g = h
        .backward_sync(x_all.0.view(), dy_all.0.view(), &s, &Solo)
        .unwrap();
    let gw = w
        .backward_sync(x_all.1.view(), dy_all.1.view(), &sw, &Solo)
        .unwrap();
    rounded("sync dx", &g.dx, &gw.dx);
    rounded_opt("sync dgamma", &g.stages[0].dgamma, &gw.stages[0].dgamma);
    stage_params_match(&h, &w);
    // Two threads, each with half the batch: the statistics of the whole batch.
    let members = ThreadGroup::new(2);
    let halves: Vec<ArrayD<T>> = (0..2)
        .map(|r| {
            x_all
                .0
                .slice(normkit::ndarray::s![r * 4..(r + 1) * 4, ..])
                .to_owned()
                .into_dyn()
        })
        .collect();
    let ys: Vec<ArrayD<T>> = std::thread::scope(|sc| {
        let hs: Vec<_> = members
            .into_iter()
            .zip(&halves)
            .map(|(m, xh)| {
                let spec = spec.clone();
                sc.spawn(move || {
                    let mut l = DynNorm::<T>::new(&spec, &[("C", 5)]).unwrap();
                    l.forward_sync(xh.view(), Mode::Train, &m).unwrap().0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, yh) in ys.iter().enumerate() {
        let part = yw
            .slice(normkit::ndarray::s![r * 4..(r + 1) * 4, ..])
            .to_owned();
        rounded(&format!("ThreadGroup member {r} y"), yh, &part);
    }
}

#[test]
fn half_sync_is_the_f32_layer_rounded() {
    let _level = same_level();
    sync::<bf16>();
    sync::<f16>();
}

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct Bn;

#[norm(input = "N,T,D", axes = "D", affine = "D")]
pub struct Ln;

fn generated<T: Float>() {
    let mut h = Bn::<T>::new(3);
    let mut w = Bn::<f32>::new(3);
    let (x, xw) = input::<T>(&[2, 3, 4, 4], 11, -0.4);
    let x = x.into_dimensionality().unwrap();
    let xw = xw.into_dimensionality().unwrap();
    let (dy, dyw) = input::<T>(&[2, 3, 4, 4], 12, 0.0);
    let dy = dy.into_dimensionality().unwrap();
    let dyw = dyw.into_dimensionality().unwrap();
    let (y, s) = h.forward(x.view(), Mode::Train).unwrap();
    let (yw, sw) = w.forward(xw.view(), Mode::Train).unwrap();
    rounded("Bn y", &y, &yw);
    rounded("Bn running_mean", &h.running_mean, &w.running_mean);
    rounded("Bn running_var", &h.running_var, &w.running_var);
    w.running_mean = h.running_mean.mapv(|v| v.to_acc() as f32);
    w.running_var = h.running_var.mapv(|v| v.to_acc() as f32);
    let g = h.backward(x.view(), dy.view(), &s).unwrap();
    let gw = w.backward(xw.view(), dyw.view(), &sw).unwrap();
    rounded("Bn dx", &g.dx, &gw.dx);
    rounded_opt("Bn dgamma", &g.dgamma, &gw.dgamma);
    rounded_opt("Bn dbeta", &g.dbeta, &gw.dbeta);
    let mut out = Array::from_elem(x.raw_dim(), T::nan());
    let mut saved = Saved::new();
    h.forward_train_into(x.view(), out.view_mut(), &mut saved)
        .unwrap();
    w.forward_train_into(
        xw.view(),
        Array::zeros(xw.raw_dim()).view_mut(),
        &mut Saved::new(),
    )
    .unwrap();
    rounded("Bn running_mean (into)", &h.running_mean, &w.running_mean);
    rounded("Bn running_var (into)", &h.running_var, &w.running_var);
    // Eval with the same (rounded) running statistics.
    w.running_mean = h.running_mean.mapv(|v| v.to_acc() as f32);
    w.running_var = h.running_var.mapv(|v| v.to_acc() as f32);
    let yw = w.forward_eval(xw.view()).unwrap();
    rounded("Bn eval", &h.forward_eval(x.view()).unwrap(), &yw);

    let mut l = Ln::<T>::new(16);
    let mut lw = Ln::<f32>::new(16);
    let (g16, g16w) = input::<T>(&[16], 13, 1.0);
    l.gamma = g16.into_dimensionality().unwrap();
    lw.gamma = g16w.into_dimensionality().unwrap();
    // A strided (transposed) input takes the same path.
    let (x, xw) = input::<T>(&[16, 4, 3], 14, 2.0);
    let x = x.into_dimensionality::<normkit::ndarray::Ix3>().unwrap();
    let xw = xw.into_dimensionality::<normkit::ndarray::Ix3>().unwrap();
    let xt = x.view().reversed_axes();
    let xwt = xw.view().reversed_axes();
    let (y, _) = l.forward(xt, Mode::Train).unwrap();
    let (yw, _) = lw.forward(xwt, Mode::Train).unwrap();
    rounded("Ln y (strided input)", &y, &yw);
}

#[test]
fn generated_half_layers_are_the_f32_layer_rounded() {
    let _level = same_level();
    generated::<bf16>();
    generated::<f16>();
}

#[test]
fn half_errors_are_the_f32_errors_and_change_nothing() {
    let mut h = Bn::<bf16>::new(3);
    let before = h.running_mean.clone();
    let x = Array::from_elem((2, 4, 4, 4), bf16::ONE);
    let e = h.forward(x.view(), Mode::Train).unwrap_err();
    let ew = Bn::<f32>::new(3)
        .forward(Array::from_elem((2, 4, 4, 4), 1f32).view(), Mode::Train)
        .unwrap_err();
    assert_eq!(e.to_string(), ew.to_string());
    assert_eq!(h.running_mean, before);
    assert_eq!(h.num_batches_tracked, 0);
    // A wrong output buffer.
    let x = Array::from_elem((2, 3, 4, 4), bf16::ONE);
    let mut out = Array::from_elem((2, 3, 4, 5), bf16::ZERO);
    let err = h
        .forward_train_into(x.view(), out.view_mut(), &mut Saved::new())
        .unwrap_err();
    assert!(err.to_string().contains("output"), "{err}");
    assert_eq!(h.num_batches_tracked, 0);
}

#[test]
fn f32_state_dict_loads_into_bf16_layers_rounded() {
    let mut w = Bn::<f32>::new(3);
    w.gamma = normkit::ndarray::arr1(&[1.1f32, 0.7, 1.3]);
    w.beta = normkit::ndarray::arr1(&[0.1f32, -0.2, 0.33333334]);
    w.running_mean = normkit::ndarray::arr1(&[0.01f32, 0.2, -3.0]);
    w.running_var = normkit::ndarray::arr1(&[1.5f32, 0.9, 2.25]);
    w.num_batches_tracked = 7;
    let bytes = w.state_dict("bn.").to_bytes().unwrap();
    let sd = StateDict::from_bytes(&bytes).unwrap();
    let mut h = Bn::<bf16>::new(3);
    h.load_state_dict(&sd, "bn.").unwrap();
    rounded("gamma", &h.gamma, &w.gamma);
    rounded("beta", &h.beta, &w.beta);
    rounded("running_mean", &h.running_mean, &w.running_mean);
    rounded("running_var", &h.running_var, &w.running_var);
    assert_eq!(h.num_batches_tracked, 7);
    // And back: a bf16 layer writes BF16 tensors.
    let back = h.state_dict("");
    let t = back.get("bias").unwrap();
    assert_eq!(t.dtype().to_string(), "BF16");
    let want: Vec<f64> = h.beta.iter().map(|v| f64::from(v.to_f32())).collect();
    assert_eq!(t.to_f64_vec().unwrap(), want);
}
