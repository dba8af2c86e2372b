//! Issue 18 (part A) against PyTorch float64 autograd: `statistic = "sum"` (L2 norm),
//! Filter Response Normalization + TLU, Ghost Batch Norm. The data is written by
//! `tests/golden/post2017_a.py` (the papers' formulas in torch ops) into
//! `tests/golden/data/post2017_a/`; each case runs several training steps (and an eval step
//! with running statistics) through a `#[norm]` layer and through `DynNorm`, compares y,
//! dx, dγ, dβ, dτ and the running statistics with the reference, and checks the two
//! layers are bit-identical. Finite differences check dτ and the ghost/sum dx in f64.

use std::collections::BTreeMap;
use std::path::PathBuf;

use normkit::ndarray::{ArrayD, ArrayViewD, Dimension, Ix2, Ix3, Ix4, IxDyn};
use normkit::prelude::*;
use serde::Deserialize;

#[derive(Deserialize, Clone)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    fn array<T: Float>(&self) -> ArrayD<T> {
        ArrayD::from_shape_vec(
            IxDyn(&self.shape),
            self.data.iter().map(|&v| T::from_acc(v)).collect(),
        )
        .unwrap()
    }
}

#[derive(Deserialize)]
struct Step {
    mode: String,
    x: Tensor,
    dy: Tensor,
    y: Tensor,
    dx: Tensor,
    dgamma: Option<Tensor>,
    dbeta: Option<Tensor>,
    dtau: Option<Tensor>,
    running_mean: Option<Tensor>,
    running_var: Option<Tensor>,
}

#[derive(Deserialize)]
struct Case {
    spec: String,
    sizes: Vec<(String, usize)>,
    params: BTreeMap<String, Tensor>,
    steps: Vec<Step>,
}

fn load(name: &str) -> Case {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/data/post2017_a")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// What one step produced: y, dx, dγ, dβ, dτ, running mean and variance.
type Out<T> = [Option<ArrayD<T>>; 7];

/// A layer under test: `#[norm]` or `DynNorm`.
trait Layer<T: Float> {
    fn set(&mut self, name: &str, value: ArrayD<T>);
    fn step(&mut self, x: ArrayViewD<'_, T>, dy: ArrayViewD<'_, T>, mode: Mode) -> Out<T>;
}

impl<T: Float> Layer<T> for DynNorm<T> {
    fn set(&mut self, name: &str, value: ArrayD<T>) {
        let st = &mut self.stages_mut()[0];
        let slot = match name {
            "gamma" => &mut st.gamma,
            "beta" => &mut st.beta,
            "tau" => &mut st.tau,
            _ => panic!("unknown parameter {name}"),
        };
        assert_eq!(slot.as_ref().unwrap().shape(), value.shape(), "{name}");
        *slot = Some(value);
    }
    fn step(&mut self, x: ArrayViewD<'_, T>, dy: ArrayViewD<'_, T>, mode: Mode) -> Out<T> {
        let (y, saved) = self.forward(x.view(), mode).unwrap();
        let g = self.backward(x, dy, &saved).unwrap();
        let st = &self.stages()[0];
        [
            Some(y),
            Some(g.dx),
            g.dgamma,
            g.dbeta,
            g.dtau,
            st.running_mean.clone(),
            st.running_var.clone(),
        ]
    }
}

fn fixed<T: Float, D: Dimension>(a: ArrayViewD<'_, T>) -> normkit::ndarray::ArrayView<'_, T, D> {
    a.into_dimensionality::<D>().unwrap()
}

/// `Layer` for a generated layer type; `$running`/`$tau`: whether it has those fields.
macro_rules! generated {
    ($ty:ident, $d:ty, [$($p:ident),*], running: $running:tt) => {
        impl<T: Float> Layer<T> for $ty<T> {
            fn set(&mut self, name: &str, value: ArrayD<T>) {
                $(if name == stringify!($p) {
                    assert_eq!(self.$p.shape(), value.shape());
                    self.$p = value.into_dimensionality().unwrap();
                    return;
                })*
                panic!("unknown parameter {name}");
            }
            fn step(&mut self, x: ArrayViewD<'_, T>, dy: ArrayViewD<'_, T>, mode: Mode) -> Out<T> {
                let (y, saved) = self.forward(fixed::<T, $d>(x.view()), mode).unwrap();
                let g = self
                    .backward(fixed::<T, $d>(x), fixed::<T, $d>(dy), &saved)
                    .unwrap();
                let (rm, rv) = generated!(@running self, $running);
                [Some(y.into_dyn()), Some(g.dx.into_dyn()), g.dgamma, g.dbeta, g.dtau, rm, rv]
            }
        }
    };
    (@running $s:ident, true) => {
        (
            Some($s.running_mean.clone().into_dyn()),
            Some($s.running_var.clone().into_dyn()),
        )
    };
    (@running $s:ident, false) => {
        (None, None)
    };
}

#[norm(
    input = "N,D",
    axes = "D",
    center = false,
    statistic = "sum",
    affine = "D",
    eps = 1e-6
)]
struct L2Norm;
generated!(L2Norm, Ix2, [gamma, beta], running: false);

#[norm(input = "N,C,L", axes = "C,L", statistic = "sum", affine, eps = 1e-5)]
struct SumCentered;
generated!(SumCentered, Ix3, [gamma, beta], running: false);

#[norm(input = "N,C", axes = "N", statistic = "sum", affine)]
struct SumColumns;
generated!(SumColumns, Ix2, [gamma, beta], running: false);

#[norm(
    input = "N,C,H,W",
    axes = "H,W",
    center = false,
    affine,
    tlu,
    eps = 1e-6
)]
struct Frn;
generated!(Frn, Ix4, [gamma, beta, tau], running: false);

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    ghost = 4,
    affine,
    running_stats,
    momentum = 0.1
)]
struct GhostBn;
generated!(GhostBn, Ix4, [gamma, beta], running: true);

#[norm(
    input = "T,N,C",
    axes = "T,N",
    ghost = 3,
    affine,
    running_stats,
    momentum = 0.2
)]
struct GhostTnc;
generated!(GhostTnc, Ix3, [gamma, beta], running: true);

/// Compares `got` with the reference: |got − want| ≤ tol·(1 + |want|).
fn close<T: Float>(what: &str, got: &ArrayD<T>, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), &want.shape[..], "{what}: shape");
    for (i, (g, &w)) in got.iter().zip(&want.data).enumerate() {
        let g = g.to_acc();
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (tol {tol})"
        );
    }
}

/// Runs every step of `case` through `layer`; returns what each step produced.
fn run<T: Float>(case: &Case, layer: &mut dyn Layer<T>, tol: f64, label: &str) -> Vec<Out<T>> {
    for (name, t) in &case.params {
        layer.set(name, t.array());
    }
    let mut outs = Vec::new();
    for (k, step) in case.steps.iter().enumerate() {
        let mode = if step.mode == "train" {
            Mode::Train
        } else {
            Mode::Eval
        };
        let out = layer.step(step.x.array().view(), step.dy.array().view(), mode);
        let want = [
            Some(&step.y),
            Some(&step.dx),
            step.dgamma.as_ref(),
            step.dbeta.as_ref(),
            step.dtau.as_ref(),
            step.running_mean.as_ref(),
            step.running_var.as_ref(),
        ];
        let names = [
            "y",
            "dx",
            "dgamma",
            "dbeta",
            "dtau",
            "running_mean",
            "running_var",
        ];
        for ((got, want), name) in out.iter().zip(want).zip(names) {
            match (got, want) {
                (Some(g), Some(w)) => close(&format!("{label} step {k} {name}"), g, w, tol),
                (None, None) => {}
                (g, w) => panic!(
                    "{label} step {k} {name}: layer has {}, reference has {}",
                    g.is_some(),
                    w.is_some()
                ),
            }
        }
        outs.push(out);
    }
    outs
}

fn check<T: Float>(name: &str, generated: &mut dyn Layer<T>, tol: f64) {
    let prec = if std::mem::size_of::<T>() == 8 {
        "f64"
    } else {
        "f32"
    };
    let case = load(&format!("{name}_{prec}"));
    let spec = NormSpec::parse(&case.spec).unwrap();
    let sizes: Vec<(&str, usize)> = case.sizes.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let mut dynamic = DynNorm::<T>::new(&spec, &sizes).unwrap();
    let a = run(&case, generated, tol, &format!("{name}_{prec} #[norm]"));
    let b = run(&case, &mut dynamic, tol, &format!("{name}_{prec} DynNorm"));
    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            let bits = |x: &Option<ArrayD<T>>| {
                x.as_ref()
                    .map(|x| x.iter().map(|v| v.to_acc().to_bits()).collect::<Vec<_>>())
            };
            assert_eq!(
                bits(a),
                bits(b),
                "{name}_{prec} step {k} output {i}: macro ≠ DynNorm"
            );
        }
    }
}

const TOL_F64: f64 = 1e-11;
const TOL_F32: f64 = 2e-5;

#[test]
fn l2_norm() {
    check::<f64>("l2_norm", &mut L2Norm::new(5), TOL_F64);
    check::<f32>("l2_norm", &mut L2Norm::new(5), TOL_F32);
}

#[test]
fn sum_centered() {
    check::<f64>("sum_centered", &mut SumCentered::new(3), TOL_F64);
    check::<f32>("sum_centered", &mut SumCentered::new(3), TOL_F32);
}

#[test]
fn sum_columns() {
    check::<f64>("sum_columns", &mut SumColumns::new(70), TOL_F64);
    check::<f32>("sum_columns", &mut SumColumns::new(70), TOL_F32);
}

#[test]
fn frn_tlu() {
    check::<f64>("frn_tlu", &mut Frn::new(3), TOL_F64);
    check::<f32>("frn_tlu", &mut Frn::new(3), TOL_F32);
}

#[test]
fn ghost_bn() {
    check::<f64>("ghost_bn", &mut GhostBn::new(3), TOL_F64);
    check::<f32>("ghost_bn", &mut GhostBn::new(3), TOL_F32);
}

#[test]
fn ghost_strided_batch() {
    check::<f64>("ghost_tnc", &mut GhostTnc::new(4), TOL_F64);
    check::<f32>("ghost_tnc", &mut GhostTnc::new(4), TOL_F32);
}

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.5,
    renorm(rmax = 1.5, dmax = 0.5)
)]
struct Renorm;
generated!(Renorm, Ix4, [gamma, beta], running: true);

#[norm(
    input = "N,C",
    axes = "N",
    affine,
    running_stats,
    renorm(rmax = 3.0, dmax = 5.0)
)]
struct RenormNc;
generated!(RenormNc, Ix2, [gamma, beta], running: true);

#[test]
fn batch_renorm() {
    check::<f64>("batch_renorm", &mut Renorm::new(3), TOL_F64);
    check::<f32>("batch_renorm", &mut Renorm::new(3), TOL_F32);
}

#[test]
fn batch_renorm_nc() {
    check::<f64>("batch_renorm_nc", &mut RenormNc::new(5), TOL_F64);
    check::<f32>("batch_renorm_nc", &mut RenormNc::new(5), TOL_F32);
}

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.5
)]
struct PlainBn;

/// `rmax`/`dmax` are public fields a training loop ramps: at rmax = 1, dmax = 0 (r = 1,
/// d = 0) Batch Renorm is batch norm, bit for bit, on a layer declared with other limits.
#[test]
fn renorm_limits_ramp_to_batch_norm() {
    let case = load("batch_renorm_f64");
    let mut renorm = Renorm::<f64>::new(3);
    let mut plain = PlainBn::<f64>::new(3);
    let mut dynamic =
        DynNorm::<f64>::new(&NormSpec::parse(&case.spec).unwrap(), &[("C", 3)]).unwrap();
    renorm.rmax = 1.0;
    renorm.dmax = 0.0;
    dynamic.stages_mut()[0].rmax = Some(1.0);
    dynamic.stages_mut()[0].dmax = Some(0.0);
    let mut outs: Vec<Vec<Out<f64>>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for step in &case.steps[..3] {
        let (x, dy) = (step.x.array::<f64>(), step.dy.array::<f64>());
        outs[0].push(renorm.step(x.view(), dy.view(), Mode::Train));
        outs[2].push(dynamic.step(x.view(), dy.view(), Mode::Train));
        let (y, saved) = plain.forward(fixed(x.view()), Mode::Train).unwrap();
        let g = plain
            .backward(fixed(x.view()), fixed(dy.view()), &saved)
            .unwrap();
        outs[1].push([
            Some(y.into_dyn()),
            Some(g.dx.into_dyn()),
            g.dgamma,
            g.dbeta,
            g.dtau,
            Some(plain.running_mean.clone().into_dyn()),
            Some(plain.running_var.clone().into_dyn()),
        ]);
    }
    assert_eq!(
        outs[0], outs[1],
        "renorm at rmax = 1, dmax = 0 vs batch norm"
    );
    assert_eq!(
        outs[2], outs[1],
        "DynNorm renorm at rmax = 1, dmax = 0 vs batch norm"
    );
    // With the declared limits the same data gives another result (the limits matter).
    let mut declared = Renorm::<f64>::new(3);
    let step = &case.steps[0];
    let out = declared.step(step.x.array().view(), step.dy.array().view(), Mode::Train);
    assert_ne!(out[0], outs[1][0][0]);
}

// ------------------------------------------------------------------ finite differences

/// L = Σ y·w of a fresh copy of `layer` (train mode) at `x`.
fn loss(layer: &DynNorm<f64>, x: &ArrayD<f64>, w: &ArrayD<f64>) -> f64 {
    let mut l = layer.clone();
    let (y, _) = l.forward(x.view(), Mode::Train).unwrap();
    (&y * w).sum()
}

/// A deterministic pseudo-random array.
fn pseudo(shape: &[usize], seed: u64, scale: f64, shift: f64) -> ArrayD<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * scale + shift
    })
}

/// Checks dx (and dτ with `tlu`) of `spec` against central differences of L = Σ y·w.
fn gradcheck(spec: &str, sizes: &[(&str, usize)], shape: &[usize], scale: f64, shift: f64) {
    let spec_p = NormSpec::parse(spec).unwrap();
    let mut layer = DynNorm::<f64>::new(&spec_p, sizes).unwrap();
    let st = &mut layer.stages_mut()[0];
    if let Some(g) = st.gamma.as_mut() {
        *g = pseudo(g.shape(), 7, 0.4, 1.0);
    }
    if let Some(t) = st.tau.as_mut() {
        *t = pseudo(t.shape(), 8, 0.3, -0.1);
    }
    let x = pseudo(shape, 1, scale, shift);
    let w = pseudo(shape, 2, 1.0, 0.0);
    let (_, saved) = layer.clone().forward(x.view(), Mode::Train).unwrap();
    let grads = layer.backward(x.view(), w.view(), &saved).unwrap();
    let h = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.as_slice_mut().unwrap()[i] += h;
        xm.as_slice_mut().unwrap()[i] -= h;
        let fd = (loss(&layer, &xp, &w) - loss(&layer, &xm, &w)) / (2.0 * h);
        let an = grads.dx.as_slice().unwrap()[i];
        assert!(
            (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
            "{spec}: dx[{i}] {an} vs fd {fd}"
        );
    }
    if let Some(dtau) = &grads.dtau {
        for i in 0..dtau.len() {
            let shifted = |delta: f64| {
                let mut l = layer.clone();
                l.stages_mut()[0]
                    .tau
                    .as_mut()
                    .unwrap()
                    .as_slice_mut()
                    .unwrap()[i] += delta;
                loss(&l, &x, &w)
            };
            let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
            let an = dtau.as_slice().unwrap()[i];
            assert!(
                (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                "dtau[{i}] {an} vs fd {fd}"
            );
        }
    }
}

#[test]
fn finite_differences_tau_and_frn_dx() {
    gradcheck(
        r#"input = "N,C,H,W", axes = "H,W", center = false, affine, tlu, eps = 1e-6"#,
        &[("C", 3)],
        &[2, 3, 3, 3],
        1.5,
        0.2,
    );
}

#[test]
fn finite_differences_sum_statistic() {
    gradcheck(
        r#"input = "N,D", axes = "D", center = false, statistic = "sum", affine = "D""#,
        &[("D", 6)],
        &[3, 6],
        1.0,
        0.3,
    );
    gradcheck(
        r#"input = "N,C,L", axes = "C,L", statistic = "sum", affine"#,
        &[("C", 2)],
        &[2, 2, 3],
        1.0,
        0.3,
    );
}

#[test]
fn finite_differences_ghost() {
    // N = 7 in chunks of 3, 3, 1 (the last chunk still has H·W = 4 values per channel).
    gradcheck(
        r#"input = "N,C,H,W", axes = "N,H,W", ghost = 3, affine"#,
        &[("C", 2)],
        &[7, 2, 2, 2],
        1.0,
        0.3,
    );
}

#[test]
fn finite_differences_renorm_saturated() {
    // r and d are constants of the gradient; with both clamped (σ_B ≈ 3 ≫ rmax·σ_run,
    // |μ_B| ≫ dmax) small moves of x do not change them, so finite differences apply.
    gradcheck(
        r#"input = "N,C", axes = "N", affine, running_stats, renorm(rmax = 1.2, dmax = 0.5)"#,
        &[("C", 3)],
        &[6, 3],
        5.0,
        3.0,
    );
}
