//! Gradient checks of the `article` example's own layers (convolution via
//! im2col, linear, pooling, ReLU, softmax cross-entropy) and of the whole
//! CNN and the whole deep MLP, against central finite differences in f64.
//!
//! The normalization layers are normkit's and are tested by normkit; here the
//! network is checked with the identity normalizer, and then with every
//! normkit normalizer of the tour, which checks how the example wires
//! normkit's forward/backward passes and parameters into the network.

use crate::nn::{self, Identity, Normalizer, Phase, Rng, WeightTransform};
use crate::{mlp, model, norms};
use ndarray::{
    Array, Array1, Array2, Array4, ArrayView2, ArrayView4, Dimension, Ix2, Ix4, ShapeBuilder,
};

fn random<D: Dimension>(shape: impl ShapeBuilder<Dim = D>, rng: &mut Rng) -> Array<f64, D> {
    Array::from_shape_simple_fn(shape, || rng.normal())
}

/// Central finite differences of `loss` with respect to every entry of `x`,
/// compared with `analytic`.
fn check_grad<D: Dimension>(
    what: &str,
    x: &Array<f64, D>,
    analytic: &Array<f64, D>,
    loss: impl Fn(&Array<f64, D>) -> f64,
) {
    assert_eq!(x.shape(), analytic.shape(), "{what}: gradient shape");
    let h = 1e-6;
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        xm.as_slice_mut().unwrap()[i] -= h;
        let numeric = (loss(&xp) - loss(&xm)) / (2.0 * h);
        let a = analytic.as_slice().unwrap()[i];
        let err = (a - numeric).abs() / (1.0 + a.abs() + numeric.abs());
        worst = worst.max(err);
    }
    assert!(worst < 1e-6, "{what}: worst relative error {worst:e}");
}

fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The obvious convolution, for comparing the im2col path against.
fn conv_naive(x: &Array4<f64>, w: &Array4<f64>, b: &Array1<f64>, pad: usize) -> Array4<f64> {
    let (n, ci, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let (oh, ow) = (h + 2 * pad + 1 - k, wd + 2 * pad + 1 - k);
    Array4::from_shape_fn((n, o, oh, ow), |(bn, oc, oy, ox)| {
        let mut s = b[oc];
        for c in 0..ci {
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = (
                        oy as isize + ky as isize - pad as isize,
                        ox as isize + kx as isize - pad as isize,
                    );
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        s += w[[oc, c, ky, kx]] * x[[bn, c, iy as usize, ix as usize]];
                    }
                }
            }
        }
        s
    })
}

#[test]
fn conv_forward_matches_direct_convolution() {
    let mut rng = Rng::new(1);
    for pad in [0, 1, 2] {
        let x = random((2, 3, 5, 6), &mut rng);
        let w = random((4, 3, 3, 3), &mut rng);
        let b = random(4, &mut rng);
        let (y, _) = nn::conv2d_forward(x.view(), w.view(), Some(b.view()), pad);
        let want = conv_naive(&x, &w, &b, pad);
        assert_eq!(y.dim(), want.dim());
        let err = (&y - &want).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
        assert!(err < 1e-12, "pad {pad}: max error {err:e}");
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    let mut rng = Rng::new(2);
    let x = random((2, 3, 4, 5), &mut rng);
    let cols = nn::im2col(x.view(), 3, 1);
    let g = random(cols.raw_dim(), &mut rng);
    let back = nn::col2im(g.view(), x.dim(), 3, 1);
    let (lhs, rhs) = (dot(&cols, &g), dot(&x, &back));
    assert!(
        (lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn conv_gradients() {
    let mut rng = Rng::new(3);
    let x = random((2, 3, 5, 4), &mut rng);
    let w = random((4, 3, 3, 3), &mut rng);
    let b = random(4, &mut rng);
    let (y, cache) = nn::conv2d_forward(x.view(), w.view(), Some(b.view()), 1);
    let r = random(y.raw_dim(), &mut rng);
    let (dx, dw, db) = nn::conv2d_backward(r.view(), w.view(), &cache, 1);
    let loss = |x: &Array4<f64>, w: &Array4<f64>, b: &Array1<f64>| {
        dot(
            &nn::conv2d_forward(x.view(), w.view(), Some(b.view()), 1).0,
            &r,
        )
    };
    check_grad("conv dx", &x, &dx, |x| loss(x, &w, &b));
    check_grad("conv dw", &w, &dw, |w| loss(&x, w, &b));
    check_grad("conv db", &b, &db, |b| loss(&x, &w, b));
}

#[test]
fn linear_gradients() {
    let mut rng = Rng::new(4);
    let x = random((5, 7), &mut rng);
    let w = random((3, 7), &mut rng);
    let b = random(3, &mut rng);
    let r = random((5, 3), &mut rng);
    let (dx, dw, db) = nn::linear_backward(x.view(), w.view(), r.view());
    let loss = |x: &Array2<f64>, w: &Array2<f64>, b: &Array1<f64>| {
        dot(&nn::linear_forward(x.view(), w.view(), b.view()), &r)
    };
    check_grad("linear dx", &x, &dx, |x| loss(x, &w, &b));
    check_grad("linear dw", &w, &dw, |w| loss(&x, w, &b));
    check_grad("linear db", &b, &db, |b| loss(&x, &w, b));
}

#[test]
fn softmax_cross_entropy_value_and_gradient() {
    let mut rng = Rng::new(5);
    let logits = random((6, 10), &mut rng);
    let labels = [0, 3, 9, 9, 1, 5];
    let (loss, grad) = nn::softmax_cross_entropy(logits.view(), &labels);
    let mut want = 0.0;
    for (i, row) in logits.outer_iter().enumerate() {
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        want -= (row[labels[i]].exp() / z).ln();
    }
    want /= 6.0;
    assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    check_grad("softmax-ce dlogits", &logits, &grad, |l| {
        nn::softmax_cross_entropy(l.view(), &labels).0
    });
    // Large logits do not overflow.
    let big = logits.mapv(|v| 1000.0 * v);
    let (loss, grad) = nn::softmax_cross_entropy(big.view(), &labels);
    assert!(loss.is_finite() && grad.iter().all(|g| g.is_finite()));
}

#[test]
fn pooling_and_relu_gradients() {
    let mut rng = Rng::new(6);
    let x = random((2, 3, 4, 6), &mut rng);
    let (y, arg) = nn::maxpool2_forward(x.view());
    assert_eq!(y.dim(), (2, 3, 2, 3));
    let r = random(y.raw_dim(), &mut rng);
    let dx = nn::maxpool2_backward(r.view(), &arg, x.dim());
    check_grad("maxpool dx", &x, &dx, |x| {
        dot(&nn::maxpool2_forward(x.view()).0, &r)
    });

    // ReLU, away from the kink.
    let x = x.mapv(|v| if v.abs() < 1e-3 { 0.5 } else { v });
    let r = random(x.raw_dim(), &mut rng);
    let y = nn::relu(x.clone());
    let dx = nn::relu_backward(y.view(), r.view());
    check_grad("relu dx", &x, &dx, |x| dot(&nn::relu(x.clone()), &r));
}

#[test]
fn sgd_momentum_step() {
    let mut opt = nn::Sgd::new(0.1, 0.9);
    let mut p = [1.0f64, 2.0];
    for _ in 0..2 {
        opt.begin();
        opt.update(&mut p, &[1.0, -1.0]);
    }
    // v1 = g, v2 = 0.9 g + g = 1.9 g; p = p0 − 0.1 (1 + 1.9) g
    assert!((p[0] - (1.0 - 0.29)).abs() < 1e-12 && (p[1] - (2.0 + 0.29)).abs() < 1e-12);
}

#[test]
fn rng_is_reproducible_and_roughly_normal() {
    let (mut a, mut b) = (Rng::new(7), Rng::new(7));
    let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
    let ys: Vec<f64> = (0..20_000).map(|_| b.normal()).collect();
    assert_eq!(xs, ys);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    assert!(
        mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
        "mean {mean}, var {var}"
    );
    let mut v: Vec<usize> = (0..50).collect();
    a.shuffle(&mut v);
    let mut s = v.clone();
    s.sort_unstable();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
}

/// A weight transform that scales by 2, to check the network's chain rule
/// through the weight reparametrization hook.
struct Double;

impl WeightTransform<f64> for Double {
    fn forward(&mut self, w: ArrayView4<'_, f64>) -> Result<Array4<f64>, nn::Error> {
        Ok(w.mapv(|v| 2.0 * v))
    }
    fn backward(
        &mut self,
        _w: ArrayView4<'_, f64>,
        dw: ArrayView4<'_, f64>,
    ) -> Result<Array4<f64>, nn::Error> {
        Ok(dw.mapv(|v| 2.0 * v))
    }
}

/// What the whole-network gradient check needs of a network (the CNN, the deep MLP) and the
/// inputs it is checked on.
trait Net {
    /// The input's dimension (`[N, 1, 8, 8]` images, `[N, F]` features).
    type Dim: Dimension;
    /// The input gradient's name in failure messages.
    const DX: &'static str;
    /// The seed of the parameter perturbation and of the input.
    const SEED: u64;
    /// The input's labels, one per sample.
    const LABELS: &'static [usize];
    /// How many entries of each parameter tensor are checked (about: every
    /// `len.div_ceil(SAMPLES)`-th).
    const SAMPLES: usize;
    /// The input, drawn from `rng` after the parameters.
    fn input(rng: &mut Rng) -> Array<f64, Self::Dim>;
    fn logits(&mut self, x: &Array<f64, Self::Dim>) -> Array2<f64>;
    fn dx(&mut self, dlogits: ArrayView2<'_, f64>) -> Array<f64, Self::Dim>;
    fn visit(&mut self, f: &mut dyn FnMut(&mut [f64], &[f64]));
}

impl Net for model::Cnn<f64> {
    type Dim = Ix4;
    const DX: &'static str = "network dx";
    const SEED: u64 = 9;
    const LABELS: &'static [usize] = &[1, 7, 4];
    const SAMPLES: usize = 7;
    fn input(rng: &mut Rng) -> Array4<f64> {
        random((3, 1, 8, 8), rng)
    }
    fn logits(&mut self, x: &Array4<f64>) -> Array2<f64> {
        self.forward(x.view(), Phase::Train).unwrap()
    }
    fn dx(&mut self, dlogits: ArrayView2<'_, f64>) -> Array4<f64> {
        self.backward(dlogits).unwrap()
    }
    fn visit(&mut self, f: &mut dyn FnMut(&mut [f64], &[f64])) {
        self.visit_params(f);
    }
}

impl Net for mlp::Mlp<f64> {
    type Dim = Ix2;
    const DX: &'static str = "MLP dx";
    const SEED: u64 = 11;
    const LABELS: &'static [usize] = &[1, 2, 0, 2];
    const SAMPLES: usize = 5;
    fn input(rng: &mut Rng) -> Array2<f64> {
        random((4, 6), rng)
    }
    fn logits(&mut self, x: &Array2<f64>) -> Array2<f64> {
        self.forward(x.view(), Phase::Train).unwrap()
    }
    fn dx(&mut self, dlogits: ArrayView2<'_, f64>) -> Array2<f64> {
        self.backward(dlogits).unwrap()
    }
    fn visit(&mut self, f: &mut dyn FnMut(&mut [f64], &[f64])) {
        self.visit_params(f);
    }
}

/// Gradient of the whole network with respect to its input and a sample of
/// every parameter tensor, against central differences. `build` makes the
/// network; its parameters are then randomized (γ around 1, β around 0).
fn check_network<N: Net>(what: &str, build: &dyn Fn() -> N) {
    let mut rng = Rng::new(N::SEED);
    let mut net = build();
    let mut snapshot: Vec<Vec<f64>> = Vec::new();
    net.visit(&mut |p, _| {
        for v in p.iter_mut() {
            *v += 0.3 * rng.normal();
        }
        snapshot.push(p.to_vec());
    });
    let with_snapshot = || {
        let mut n = build();
        let mut k = 0;
        n.visit(&mut |p, _| {
            p.copy_from_slice(&snapshot[k]);
            k += 1;
        });
        n
    };
    let x = N::input(&mut rng);
    let loss_of = |net: &mut N, x: &Array<f64, N::Dim>| {
        let logits = net.logits(x);
        nn::softmax_cross_entropy(logits.view(), N::LABELS).0
    };
    let logits = net.logits(&x);
    let (_, dlogits) = nn::softmax_cross_entropy(logits.view(), N::LABELS);
    let dx = net.dx(dlogits.view());
    check_grad(&format!("{what}: {}", N::DX), &x, &dx, |x| {
        loss_of(&mut with_snapshot(), x)
    });

    // Parameter gradients: perturb entries of every visited tensor.
    let mut grads: Vec<Vec<f64>> = Vec::new();
    net.visit(&mut |_p, g| grads.push(g.to_vec()));
    assert_eq!(
        grads.len(),
        snapshot.len(),
        "{what}: every parameter has a gradient"
    );
    let h = 1e-6;
    for (t, g) in grads.iter().enumerate() {
        for i in (0..g.len()).step_by(g.len().div_ceil(N::SAMPLES)) {
            let eval = |delta: f64| {
                let mut n = with_snapshot();
                let mut k = 0;
                n.visit(&mut |p, _| {
                    if k == t {
                        p[i] += delta;
                    }
                    k += 1;
                });
                loss_of(&mut n, &x)
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (g[i] - numeric).abs() / (1.0 + g[i].abs() + numeric.abs());
            assert!(
                err < 1e-6,
                "{what}: tensor {t} entry {i}: {} vs {numeric}",
                g[i]
            );
        }
    }
}

#[test]
fn whole_network_gradients() {
    for with_ws in [false, true] {
        let build = || {
            let norm = |_c: usize| -> Box<dyn Normalizer<f64>> { Box::new(Identity) };
            let ws = || -> Option<Box<dyn WeightTransform<f64>>> {
                if with_ws {
                    Some(Box::new(Double))
                } else {
                    None
                }
            };
            model::Cnn::<f64>::new(3, 4, &norm, &ws, &mut Rng::new(8))
        };
        check_network(&format!("identity, ws {with_ws}"), &build);
    }
}

/// The same check with normkit's layers, in f64: the example's wiring of
/// normkit's backward passes, parameters and Weight Standardization.
#[test]
fn whole_network_gradients_with_normkit_layers() {
    for kind in model::NormKind::ALL {
        let build = || {
            let norm = |c: usize| norms::make_norm::<f64>(kind, c);
            let ws = || norms::make_ws::<f64>(kind);
            // Four channels: divisible by GN's four groups.
            model::Cnn::<f64>::new(4, 4, &norm, &ws, &mut Rng::new(10))
        };
        check_network(kind.label(), &build);
    }
}

/// The deep MLP (three hidden layers of 8 units, three classes) with every
/// normalizer of parts 2–4: the `N,C` ↔ `N,C,1,1` reshapes, the weight
/// reparametrization of `O,I` weights and the parameter order.
#[test]
fn mlp_gradients_with_normkit_layers() {
    for kind in [
        model::NormKind::None,
        model::NormKind::Batch,
        model::NormKind::Layer,
        model::NormKind::Group,
        model::NormKind::GroupWs,
        model::NormKind::BatchChannelWs,
    ] {
        let build = || {
            let norm = |c: usize| norms::make_norm::<f64>(kind, c);
            let ws = || norms::make_ws::<f64>(kind);
            mlp::Mlp::<f64>::new(6, 8, 3, 3, &norm, &ws, &mut Rng::new(12))
        };
        check_network(kind.label(), &build);
    }
}

/// Every normalizer starts from the same weights: the raw weight matrices
/// depend on the seed only.
#[test]
fn mlp_initial_weights_do_not_depend_on_the_normalizer() {
    let weights = |kind: model::NormKind| {
        let norm = |c: usize| norms::make_norm::<f64>(kind, c);
        let ws = || norms::make_ws::<f64>(kind);
        let net = mlp::Mlp::<f64>::new(6, 8, 3, 3, &norm, &ws, &mut Rng::new(5));
        let mut w: Vec<Array2<f64>> = net.hidden.iter().map(|h| h.w.clone()).collect();
        w.push(net.out_w.clone());
        w
    };
    let reference = weights(model::NormKind::None);
    for kind in [
        model::NormKind::Batch,
        model::NormKind::GroupWs,
        model::NormKind::BatchChannelWs,
    ] {
        assert_eq!(weights(kind), reference, "{}", kind.label());
    }
    let dims: Vec<(usize, usize)> = reference.iter().map(|w| w.dim()).collect();
    assert_eq!(dims, [(8, 6), (8, 8), (8, 8), (3, 8)]);
}

/// The pixel standardization layer: per pixel, the training set's mean and
/// unbiased standard deviation, applied alike to both sets.
#[test]
fn pixel_standardization_uses_training_statistics() {
    let mut rng = Rng::new(13);
    let train = Array4::from_shape_simple_fn((50, 1, 2, 3), || (3.0 + 2.0 * rng.normal()) as f32);
    let test = Array4::from_shape_simple_fn((7, 1, 2, 3), || rng.normal() as f32);
    let (zt, zs) = norms::standardize_pixels(train.view(), test.view()).unwrap();
    for y in 0..2 {
        for x in 0..3 {
            let col: Vec<f64> = (0..50).map(|n| f64::from(train[[n, 0, y, x]])).collect();
            let mean = col.iter().sum::<f64>() / 50.0;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 49.0;
            let sd = (var + 1e-5).sqrt();
            for n in 0..50 {
                let want = (f64::from(train[[n, 0, y, x]]) - mean) / sd;
                assert!((f64::from(zt[[n, 0, y, x]]) - want).abs() < 1e-4);
            }
            for n in 0..7 {
                let want = (f64::from(test[[n, 0, y, x]]) - mean) / sd;
                assert!((f64::from(zs[[n, 0, y, x]]) - want).abs() < 1e-4);
            }
        }
    }
}
