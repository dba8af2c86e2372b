//! f64 on `Device::flex().autodiff()` (the Flex device configured for f64 once, for this test
//! binary): normkit-burn's modules against burn-nn's within 1e-10 (relative to
//! max(1, |reference|)) for outputs and the gradients of x, γ and β. burn-nn's RmsNorm
//! computes its statistic in f32 whatever the input type, so RmsNorm is checked against the
//! formula evaluated here in f64 instead.

#[macro_use]
mod common;

use std::sync::Once;

use burn::tensor::{Device, FloatDType, Gradients, Tensor};
use common::{assert_close, param, tensor, vals, Rng};
use normkit_burn::{BatchNormConfig, GroupNormConfig, LayerNormConfig, RmsNormConfig};

const TOL: f64 = 1e-10;

fn device() -> Device {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| {
        // Settings may be kept per device value: configure the plain and the autodiff device
        // (the second call reports `AlreadyInitialized` when they share settings).
        let mut d = Device::flex();
        d.configure(FloatDType::F64)
            .expect("configure the Flex device for f64");
        let mut a = Device::flex().autodiff();
        let _ = a.configure(FloatDType::F64);
    });
    Device::flex().autodiff()
}

fn grads_of<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<D>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
    params: impl FnOnce(&Gradients) -> Vec<Tensor<1>>,
) -> Vec<Vec<f64>> {
    let x = x.clone().detach().require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * w.clone()).sum().backward();
    let mut out = vec![vals(y), vals(x.grad(&grads).unwrap())];
    out.extend(params(&grads).into_iter().map(vals));
    out
}

fn compare(what: &str, a: &[Vec<f64>], b: &[Vec<f64>]) {
    for (k, (p, q)) in a.iter().zip(b).enumerate() {
        assert_close(&format!("{what} [{k}]"), p, q, TOL);
    }
}

#[test]
fn f64_layer_group_batch_norm_match_burn_nn_to_1e_10() {
    let dev = device();
    let mut rng = Rng::new(11);
    // LayerNorm, batch 1 and odd sizes
    for (rows, d) in [(1usize, 7usize), (5, 31)] {
        let x = tensor(&mut rng, [rows, d], -2.0, 3.0, &dev, true);
        assert_eq!(x.dtype(), burn::tensor::DType::F64);
        let w = tensor(&mut rng, [rows, d], -1.0, 1.0, &dev, true);
        let g = tensor(&mut rng, [d], 0.5, 1.5, &dev, true);
        let mut nk = LayerNormConfig::new(d).init(&dev);
        assert_eq!(nk.gamma.val().dtype(), burn::tensor::DType::F64);
        nk.gamma = param(g.clone());
        let mut nn = burn::nn::LayerNormConfig::new(d).init(&dev);
        nn.gamma = param(g);
        let [a, b] = on_each!(grads_of, (&x, &w), [nk, nn], |m, gr| vec![
            m.gamma.val().grad(gr).unwrap(),
            m.beta.as_ref().unwrap().val().grad(gr).unwrap()
        ]);
        compare("f64 LayerNorm", &a, &b);
    }
    // GroupNorm
    let x = tensor(&mut rng, [1, 6, 5, 3], -2.0, 3.0, &dev, true);
    let w = tensor(&mut rng, [1, 6, 5, 3], -1.0, 1.0, &dev, true);
    let nk = GroupNormConfig::new(3, 6).init(&dev);
    let nn = burn::nn::GroupNormConfig::new(3, 6).init(&dev);
    let pg = |m: &Option<burn::module::Param<Tensor<1>>>, gr: &Gradients| {
        m.as_ref().unwrap().val().grad(gr).unwrap()
    };
    let [a, b] = on_each!(grads_of, (&x, &w), [nk, nn], |m, gr| vec![
        pg(&m.gamma, gr),
        pg(&m.beta, gr)
    ]);
    compare("f64 GroupNorm", &a, &b);
    // BatchNorm, train
    let x = tensor(&mut rng, [3, 4, 5, 3], -2.0, 3.0, &dev, true);
    let w = tensor(&mut rng, [3, 4, 5, 3], -1.0, 1.0, &dev, true);
    let nk = BatchNormConfig::new(4).init(&dev);
    let nn = burn::nn::BatchNormConfig::new(4).init(&dev);
    let [a, b] = on_each!(grads_of, (&x, &w), [nk, nn], |m, gr| vec![
        m.gamma.val().grad(gr).unwrap(),
        m.beta.val().grad(gr).unwrap()
    ]);
    compare("f64 BatchNorm train", &a, &b);
    assert_close(
        "f64 running_mean",
        &vals(nk.running_mean.value_sync()),
        &vals(nn.running_mean.value_sync()),
        TOL,
    );
}

/// RmsNorm in f64 against y = x/√(mean(x²)+ε)·γ and its gradients, evaluated here.
#[test]
fn f64_rms_norm_matches_the_formula() {
    let dev = device();
    let mut rng = Rng::new(12);
    let (rows, d) = (3usize, 9usize);
    let eps = 1e-5;
    let x = tensor(&mut rng, [rows, d], -2.0, 2.0, &dev, true);
    let w = tensor(&mut rng, [rows, d], -1.0, 1.0, &dev, true);
    let g = tensor(&mut rng, [d], 0.5, 1.5, &dev, true);
    let mut nk = RmsNormConfig::new(d).init(&dev);
    nk.gamma = param(g.clone());
    let got = grads_of(
        &x,
        &w,
        |x| nk.forward(x),
        |gr| vec![nk.gamma.val().grad(gr).unwrap()],
    );
    let (xs, ws, gs) = (vals(x), vals(w), vals(g));
    let mut y = vec![0.0; rows * d];
    let mut dx = vec![0.0; rows * d];
    let mut dg = vec![0.0; d];
    for r in 0..rows {
        let row = &xs[r * d..(r + 1) * d];
        let ms = row.iter().map(|a| a * a).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        // dy = w; with u = dy·γ: dx = inv·u − x·inv³·mean(u·x)
        let mut ux = 0.0;
        for k in 0..d {
            let u = ws[r * d + k] * gs[k];
            ux += u * row[k];
        }
        ux /= d as f64;
        for k in 0..d {
            let u = ws[r * d + k] * gs[k];
            y[r * d + k] = row[k] * inv * gs[k];
            dx[r * d + k] = inv * u - row[k] * inv.powi(3) * ux;
            dg[k] += ws[r * d + k] * row[k] * inv;
        }
    }
    compare("f64 RmsNorm", &got, &[y, dx, dg]);
}
