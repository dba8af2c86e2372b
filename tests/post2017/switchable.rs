//! Switchable Normalization (`axes = "H,W" | "C,H,W" | "N,H,W"`, issue 18 item 5) against
//! float64 PyTorch autograd references of the paper's formulas
//! (`tests/golden/switchable.py`, data in `tests/golden/data/switchable/`), through `DynNorm`
//! and through `#[norm]` layers (bit-identical to each other), in f64 and f32; finite
//! differences (f64) of dx, dmean_weight and dvar_weight, in train-like (batch statistics)
//! and eval (running statistics) modes.
//!
//! Tolerances: f64 `1e-10 · max(1, max|ref|)`; f32 `2e-4 · max(1, max|ref|)`.

use normkit::ndarray::{Array1, ArrayD, ArrayViewD, Ix1, Ix3, Ix4, IxDyn};
use normkit::prelude::*;
use serde_json::Value;

use crate::support::{self, close, dyn_grads, same, tensor};

fn load(name: &str) -> Value {
    support::load("switchable", name)
}

// ---------------------------------------------------------------------------------------
// The same layers through #[norm]
// ---------------------------------------------------------------------------------------

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats)]
struct SwitchNorm2d;

#[norm(
    input = "N,T,D",
    axes = "D" | "T,D" | "N,T",
    affine = "D",
    running_stats,
    momentum = 0.2
)]
struct SwitchSeq;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W", affine)]
struct SwitchTwo;

/// What the tests need of a generated switchable layer, over dynamic views.
trait Switch<T: Float> {
    fn fwd(&mut self, x: ArrayViewD<'_, T>, mode: Mode) -> (ArrayD<T>, Saved<T>);
    fn bwd(&self, x: ArrayViewD<'_, T>, dy: ArrayViewD<'_, T>, s: &Saved<T>) -> Grads<T, IxDyn>;
    fn set(&mut self, gamma: ArrayD<T>, beta: ArrayD<T>, mw: ArrayD<T>, vw: ArrayD<T>);
    fn running(&self) -> Option<(ArrayD<T>, ArrayD<T>)>;
}

macro_rules! switch_impl {
    ($t:ident, $xd:ty, running: $r:tt) => {
        impl<T: Float> Switch<T> for $t<T> {
            fn fwd(&mut self, x: ArrayViewD<'_, T>, mode: Mode) -> (ArrayD<T>, Saved<T>) {
                let x = x.into_dimensionality::<$xd>().expect("rank");
                let (y, s) = self.forward(x, mode).expect("macro forward");
                (y.into_dyn(), s)
            }
            fn bwd(
                &self,
                x: ArrayViewD<'_, T>,
                dy: ArrayViewD<'_, T>,
                s: &Saved<T>,
            ) -> Grads<T, IxDyn> {
                let x = x.into_dimensionality::<$xd>().expect("rank");
                let dy = dy.into_dimensionality::<$xd>().expect("rank");
                dyn_grads(self.backward(x, dy, s).expect("macro backward"))
            }
            fn set(&mut self, gamma: ArrayD<T>, beta: ArrayD<T>, mw: ArrayD<T>, vw: ArrayD<T>) {
                self.gamma = gamma.into_dimensionality::<Ix1>().expect("rank 1");
                self.beta = beta.into_dimensionality::<Ix1>().expect("rank 1");
                self.mean_weight = mw.into_dimensionality::<Ix1>().expect("rank 1");
                self.var_weight = vw.into_dimensionality::<Ix1>().expect("rank 1");
            }
            switch_impl!(@running $r);
        }
    };
    (@running true) => {
        fn running(&self) -> Option<(ArrayD<T>, ArrayD<T>)> {
            Some((
                self.running_mean.clone().into_dyn(),
                self.running_var.clone().into_dyn(),
            ))
        }
    };
    (@running false) => {
        fn running(&self) -> Option<(ArrayD<T>, ArrayD<T>)> {
            None
        }
    };
}

switch_impl!(SwitchNorm2d, Ix4, running: true);
switch_impl!(SwitchSeq, Ix3, running: true);
switch_impl!(SwitchTwo, Ix4, running: false);

/// Every step of a case through DynNorm and the macro layer: both against the reference,
/// and bit-identical to each other.
fn run_case<T: Float>(name: &str, layer: &mut dyn Switch<T>) {
    let case = load(name);
    let spec = NormSpec::parse(case["spec"].as_str().expect("spec")).expect("spec parses");
    let sizes: Vec<(String, usize)> = case["sizes"]
        .as_array()
        .expect("sizes")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let sizes: Vec<(&str, usize)> = sizes.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let mut dynl = DynNorm::<T>::new(&spec, &sizes).expect("DynNorm");
    let [gamma, beta, mw, vw] =
        ["gamma", "beta", "mean_weight", "var_weight"].map(|k| tensor::<T>(&case[k]));
    // Fresh layers start with equal weights (zero logits).
    let st = &dynl.stages()[0];
    let k = mw.len();
    assert_eq!(
        st.mean_weight.as_ref().map(|a| a.shape().to_vec()),
        Some(vec![k])
    );
    assert!(st
        .var_weight
        .as_ref()
        .unwrap()
        .iter()
        .all(|v| v.to_acc() == 0.0));
    let st = &mut dynl.stages_mut()[0];
    st.gamma = Some(gamma.clone());
    st.beta = Some(beta.clone());
    st.mean_weight = Some(mw.clone());
    st.var_weight = Some(vw.clone());
    layer.set(gamma, beta, mw, vw);
    for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        let what = |o: &str| format!("{name} step {i} {o}");
        let x = tensor::<T>(&step["x"]);
        let dy = tensor::<T>(&step["dy"]);
        let mode = match step["mode"].as_str() {
            Some("train") => Mode::Train,
            _ => Mode::Eval,
        };
        let (y, saved) = dynl.forward(x.view(), mode).expect("forward");
        close(&what("y"), &y, &step["y"]);
        let g = dynl
            .backward(x.view(), dy.view(), &saved)
            .expect("backward");
        close(&what("dx"), &g.dx, &step["dx"]);
        let grads = [
            ("dgamma", &g.dgamma),
            ("dbeta", &g.dbeta),
            ("dmean_weight", &g.dmean_weight),
            ("dvar_weight", &g.dvar_weight),
        ];
        for (key, grad) in grads {
            close(&what(key), grad.as_ref().expect(key), &step[key]);
        }
        let (ym, sm) = layer.fwd(x.view(), mode);
        same(&what("y macro"), &ym, &y);
        let gm = layer.bwd(x.view(), dy.view(), &sm);
        same(&what("dx macro"), &gm.dx, &g.dx);
        let pairs = [
            (&gm.dgamma, &g.dgamma),
            (&gm.dmean_weight, &g.dmean_weight),
            (&gm.dvar_weight, &g.dvar_weight),
        ];
        for (a, b) in pairs {
            same(
                &what("grad macro"),
                a.as_ref().unwrap(),
                b.as_ref().unwrap(),
            );
        }
        if step.get("running_mean").is_some() {
            let st = &dynl.stages()[0];
            let (rm, rv) = (st.running_mean.as_ref(), st.running_var.as_ref());
            close(&what("running_mean"), rm.unwrap(), &step["running_mean"]);
            close(&what("running_var"), rv.unwrap(), &step["running_var"]);
            let (mrm, mrv) = layer.running().expect("macro running stats");
            same(&what("running_mean macro"), &mrm, rm.unwrap());
            same(&what("running_var macro"), &mrv, rv.unwrap());
        }
    }
}

#[test]
fn nchw_in_ln_bn_f64_and_f32() {
    run_case::<f64>("sn_nchw", &mut SwitchNorm2d::<f64>::new(4));
    run_case::<f32>("sn_nchw", &mut SwitchNorm2d::<f32>::new(4));
}

#[test]
fn batch_of_one_with_equal_weights() {
    run_case::<f64>("sn_batch1", &mut SwitchNorm2d::<f64>::new(3));
    run_case::<f32>("sn_batch1", &mut SwitchNorm2d::<f32>::new(3));
}

#[test]
fn sequence_layout() {
    run_case::<f64>("sn_ntd", &mut SwitchSeq::<f64>::new(3));
    run_case::<f32>("sn_ntd", &mut SwitchSeq::<f32>::new(3));
}

#[test]
fn two_alternatives_without_running_stats() {
    run_case::<f64>("sn_two", &mut SwitchTwo::<f64>::new(2));
    run_case::<f32>("sn_two", &mut SwitchTwo::<f32>::new(2));
}

// ---------------------------------------------------------------------------------------
// Finite differences (f64)
// ---------------------------------------------------------------------------------------

/// A deterministic pseudo-random value in [-1, 1).
fn noise(i: usize, seed: u64) -> f64 {
    let mut z = (i as u64)
        .wrapping_add(seed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 31;
    z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 29;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// dx, dmean_weight and dvar_weight against central differences of L = Σ y·dy, in `mode`
/// (eval: running statistics of the `N` alternative as constants when the layer has them).
fn finite_differences(spec: &str, shape: &[usize], c: usize, mode: Mode) {
    let spec = NormSpec::parse(spec).expect("spec");
    let mut l = DynNorm::<f64>::new(&spec, &[("C", c)]).expect("layer");
    let numel: usize = shape.iter().product();
    let per_sample = numel / shape[0];
    let xs = (0..numel).map(|i| noise(i, 1) * 1.3 + (i / per_sample) as f64 * 0.5);
    let x = ArrayD::from_shape_vec(IxDyn(shape), xs.collect()).unwrap();
    let dy =
        ArrayD::from_shape_vec(IxDyn(shape), (0..numel).map(|i| noise(i, 2)).collect()).unwrap();
    {
        let st = &mut l.stages_mut()[0];
        let k = st.mean_weight.as_ref().unwrap().len();
        st.mean_weight = Some(Array1::from_shape_fn(k, |i| noise(i, 3)).into_dyn());
        st.var_weight = Some(Array1::from_shape_fn(k, |i| noise(i, 4)).into_dyn());
        st.gamma = Some(Array1::from_shape_fn(c, |i| 1.0 + 0.3 * noise(i, 5)).into_dyn());
        if let Some(rm) = st.running_mean.as_mut() {
            rm.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 0.3 * noise(i, 6));
        }
        if let Some(rv) = st.running_var.as_mut() {
            rv.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 1.0 + 0.5 * noise(i, 7));
        }
    }
    let (_, saved) = l.clone().forward(x.view(), mode).unwrap();
    let g = l.backward(x.view(), dy.view(), &saved).unwrap();
    let loss = |l: &DynNorm<f64>, x: &ArrayD<f64>| -> f64 {
        let (y, _) = l.clone().forward(x.view(), mode).unwrap();
        y.iter().zip(dy.iter()).map(|(a, b)| a * b).sum()
    };
    let h = 1e-6;
    let check = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            (analytic - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{what}: analytic {analytic} vs finite difference {fd}"
        );
    };
    for e in (0..numel).step_by(7) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.as_slice_mut().unwrap()[e] += h;
        xm.as_slice_mut().unwrap()[e] -= h;
        let a = g.dx.as_slice().unwrap()[e];
        check(&format!("dx[{e}]"), a, loss(&l, &xp), loss(&l, &xm));
    }
    for (key, grad) in [
        ("mean_weight", &g.dmean_weight),
        ("var_weight", &g.dvar_weight),
    ] {
        let grad = grad.as_ref().expect("logit gradient");
        for k in 0..grad.len() {
            let shifted = |d: f64| {
                let mut l2 = l.clone();
                let st = &mut l2.stages_mut()[0];
                let w = if key == "mean_weight" {
                    st.mean_weight.as_mut()
                } else {
                    st.var_weight.as_mut()
                };
                w.unwrap()[k] += d;
                loss(&l2, &x)
            };
            check(&format!("d{key}[{k}]"), grad[k], shifted(h), shifted(-h));
        }
    }
}

#[test]
fn finite_differences_batch_statistics() {
    let spec = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine"#;
    finite_differences(spec, &[3, 2, 3, 2], 2, Mode::Eval);
    let four = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W" | "N,C,H,W", affine"#;
    finite_differences(four, &[2, 3, 2, 3], 3, Mode::Eval);
}

#[test]
fn finite_differences_running_statistics_in_eval() {
    let spec = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats"#;
    finite_differences(spec, &[2, 3, 2, 3], 3, Mode::Eval);
}

/// A dominant logit makes the layer its parent: IN, LN or BN.
#[test]
fn one_dominant_logit_is_the_parent_layer() {
    let sn = NormSpec::parse(r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W""#).unwrap();
    let shape = [3, 2, 4, 3];
    let x = ArrayD::from_shape_fn(IxDyn(&shape), |d| {
        noise(d[0] * 97 + d[1] * 13 + d[2] * 5 + d[3], 9) * 2.0 + d[1] as f64
    });
    for (k, parent) in ["H,W", "C,H,W", "N,H,W"].iter().enumerate() {
        let mut l = DynNorm::<f64>::new(&sn, &[]).unwrap();
        let logits = Array1::from_shape_fn(3, |i| if i == k { 60.0 } else { -60.0 }).into_dyn();
        l.stages_mut()[0].mean_weight = Some(logits.clone());
        l.stages_mut()[0].var_weight = Some(logits);
        let (y, _) = l.forward(x.view(), Mode::Train).unwrap();
        let p = NormSpec::parse(&format!(r#"input = "N,C,H,W", axes = "{parent}""#)).unwrap();
        let (yp, _) = DynNorm::<f64>::new(&p, &[])
            .unwrap()
            .forward(x.view(), Mode::Train)
            .unwrap();
        let err = y
            .iter()
            .zip(yp.iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "{parent}: {err}");
    }
}

/// The canonical text names every alternative and parses back to the same spec.
#[test]
fn canonical_text_roundtrips() {
    let s =
        NormSpec::parse(r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine"#).unwrap();
    let text = s.to_string();
    assert!(
        text.contains(r#"axes = "H,W" | "C,H,W" | "N,H,W""#),
        "{text}"
    );
    assert_eq!(NormSpec::parse(&text).unwrap(), s);
}

/// State dicts use the official SN implementation's names (`mean_weight`, `var_weight`) next
/// to PyTorch's BatchNorm names for the alternative over `N`; the round trip through
/// safetensors bytes restores every value, from the macro layer into `DynNorm` and back.
#[test]
fn state_dict_round_trip() {
    let mut a = SwitchNorm2d::<f32>::new(3);
    a.mean_weight = Array1::from(vec![0.5, -1.0, 2.0]);
    a.var_weight = Array1::from(vec![-0.25, 0.75, 0.0]);
    a.gamma = Array1::from(vec![1.5, 0.5, 2.0]);
    a.beta = Array1::from(vec![0.1, 0.2, 0.3]);
    let x = normkit::ndarray::Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| {
        noise(n * 12 + c * 4 + h * 2 + w, 11) as f32
    });
    a.forward(x.view(), Mode::Train).unwrap();
    let sd = a.state_dict("sn.");
    let mut keys: Vec<&str> = sd.iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "sn.bias",
            "sn.mean_weight",
            "sn.num_batches_tracked",
            "sn.running_mean",
            "sn.running_var",
            "sn.var_weight",
            "sn.weight"
        ]
    );
    let sd = normkit::StateDict::from_bytes(&sd.to_bytes().unwrap()).unwrap();
    let spec = NormSpec::parse(
        r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats"#,
    )
    .unwrap();
    let mut d = DynNorm::<f32>::new(&spec, &[("C", 3)]).unwrap();
    d.load_state_dict(&sd, "sn.").unwrap();
    let st = &d.stages()[0];
    assert_eq!(
        st.mean_weight.as_ref().unwrap(),
        &a.mean_weight.clone().into_dyn()
    );
    assert_eq!(
        st.var_weight.as_ref().unwrap(),
        &a.var_weight.clone().into_dyn()
    );
    assert_eq!(
        st.running_mean.as_ref().unwrap(),
        &a.running_mean.clone().into_dyn()
    );
    assert_eq!(st.num_batches_tracked, 1);
    let mut b = SwitchNorm2d::<f32>::new(3);
    b.load_state_dict(&d.state_dict(""), "").unwrap();
    assert_eq!(b.mean_weight, a.mean_weight);
    assert_eq!(b.var_weight, a.var_weight);
    assert_eq!(b.running_var, a.running_var);
    // A state dict without the logits is rejected, naming the key.
    let mut partial = normkit::StateDict::new();
    for (k, t) in sd.iter().filter(|(k, _)| !k.ends_with("var_weight")) {
        partial.insert_tensor(k.to_string(), t.clone());
    }
    let e = b.load_state_dict(&partial, "sn.").unwrap_err().to_string();
    assert!(e.contains("sn.var_weight"), "{e}");
}
