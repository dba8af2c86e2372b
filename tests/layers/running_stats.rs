//! Running-statistics updates checked against values computed by hand in the test, and the
//! eval path that uses them.

use normkit::ndarray::{array, Array2, Array3, Array4, Axis};
use normkit::prelude::*;

fn assert_close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
        "{what}: {a} vs {b}"
    );
}

/// Per-column mean and unbiased variance of a matrix, by hand.
fn column_moments(x: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = x.nrows() as f64;
    let mut means = Vec::new();
    let mut vars = Vec::new();
    for col in x.columns() {
        let m = col.sum() / n;
        let v = col.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
        means.push(m);
        vars.push(v);
    }
    (means, vars)
}

#[norm(input = "N,C", axes = "N", affine, running_stats, momentum = 0.1)]
struct Bn;

#[test]
fn exponential_momentum_two_steps() -> Result<(), NormError> {
    let mut bn = Bn::<f64>::new(2);
    let x1 = array![[1.0, 10.0], [2.0, 20.0], [4.0, 60.0]];
    let x2 = array![[0.0, -5.0], [3.0, 5.0], [3.0, 15.0], [6.0, 1.0]];
    let (mut rm, mut rv) = (vec![0.0, 0.0], vec![1.0, 1.0]);
    for x in [&x1, &x2] {
        bn.forward(x.view(), Mode::Train)?;
        let (m, v) = column_moments(x);
        for c in 0..2 {
            rm[c] = 0.9 * rm[c] + 0.1 * m[c];
            rv[c] = 0.9 * rv[c] + 0.1 * v[c];
        }
    }
    for c in 0..2 {
        assert_close(bn.running_mean[c], rm[c], "running_mean");
        assert_close(bn.running_var[c], rv[c], "running_var");
    }
    assert_eq!(bn.num_batches_tracked, 2);
    // Hand values of the first channel: m1 = 7/3, v1 = 7/3; m2 = 3, v2 = 6.
    let m_expected = 0.9 * (0.1 * 7.0 / 3.0) + 0.1 * 3.0;
    assert_close(bn.running_mean[0], m_expected, "hand running_mean");
    let v_expected = 0.9 * (0.9 + 0.1 * 7.0 / 3.0) + 0.1 * 6.0;
    assert_close(bn.running_var[0], v_expected, "hand running_var");

    // Eval uses them: y = (x − rm)/√(rv + eps)·γ + β.
    bn.gamma = array![2.0, 0.5];
    bn.beta = array![1.0, -1.0];
    let y = bn.forward_eval(x1.view())?;
    for ((n, c), &v) in y.indexed_iter() {
        let expected = (x1[[n, c]] - rm[c]) / (rv[c] + 1e-5).sqrt() * bn.gamma[c] + bn.beta[c];
        assert_close(v, expected, "eval output");
    }
    // forward(.., Eval) changes nothing.
    let before = (bn.running_mean.clone(), bn.num_batches_tracked);
    bn.forward(x2.view(), Mode::Eval)?;
    assert_eq!((bn.running_mean.clone(), bn.num_batches_tracked), before);
    Ok(())
}

#[norm(input = "N,C", axes = "N", running_stats, momentum = "cumulative")]
struct BnCumulative;

#[test]
fn cumulative_momentum_is_the_plain_average() -> Result<(), NormError> {
    let mut bn = BnCumulative::<f64>::new(1);
    let batches = [
        array![[1.0], [3.0]],
        array![[2.0], [2.0], [8.0]],
        array![[-1.0], [0.0], [1.0], [4.0]],
    ];
    let mut means = Vec::new();
    let mut vars = Vec::new();
    for x in &batches {
        bn.forward(x.view(), Mode::Train)?;
        let (m, v) = column_moments(x);
        means.push(m[0]);
        vars.push(v[0]);
    }
    // m = 1/k makes the first update replace the initial value: the plain average.
    assert_close(
        bn.running_mean[0],
        means.iter().sum::<f64>() / 3.0,
        "cumulative mean",
    );
    assert_close(
        bn.running_var[0],
        vars.iter().sum::<f64>() / 3.0,
        "cumulative var",
    );
    assert_eq!(bn.num_batches_tracked, 3);
    Ok(())
}

#[norm(input = "N,C,L", axes = "L", running_stats, momentum = 0.5)]
struct InstanceRunning;

#[test]
fn instance_norm_running_stats_average_over_the_batch() -> Result<(), NormError> {
    let mut layer = InstanceRunning::<f64>::new(2);
    let x = Array3::from_shape_vec(
        (2, 2, 3),
        vec![1.0, 2.0, 6.0, 0.0, 0.0, 3.0, -2.0, 4.0, 1.0, 5.0, 5.0, 8.0],
    )
    .expect("shape");
    layer.forward(x.view(), Mode::Train)?;
    for c in 0..2 {
        let mut m = 0.0;
        let mut v = 0.0;
        for n in 0..2 {
            let row = x.index_axis(Axis(0), n);
            let row = row.index_axis(Axis(0), c);
            let mean = row.sum() / 3.0;
            m += mean / 2.0;
            v += row.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 2.0 / 2.0;
        }
        assert_close(layer.running_mean[c], 0.5 * m, "IN running mean");
        assert_close(layer.running_var[c], 0.5 + 0.5 * v, "IN running var");
    }
    // Eval normalizes every sample with the running statistics of its channel.
    let y = layer.forward_eval(x.view())?;
    for ((n, c, l), &v) in y.indexed_iter() {
        let expected =
            (x[[n, c, l]] - layer.running_mean[c]) / (layer.running_var[c] + 1e-5).sqrt();
        assert_close(v, expected, "IN eval");
    }
    Ok(())
}

#[norm(input = "N,C,H,W", axes = "N,H,W", running_stats)]
struct BnWithoutAffine;

#[test]
fn nchw_running_stats_match_per_channel_moments() -> Result<(), NormError> {
    let x = Array4::from_shape_fn((3, 2, 2, 2), |(n, c, h, w)| {
        ((n * 13 + c * 7 + h * 5 + w * 3) % 11) as f64 + c as f64 * 100.0
    });
    let mut bn = BnWithoutAffine::<f64>::new(2);
    bn.forward(x.view(), Mode::Train)?;
    for c in 0..2 {
        let vals: Vec<f64> = x.index_axis(Axis(1), c).iter().copied().collect();
        let n = vals.len() as f64;
        let m = vals.iter().sum::<f64>() / n;
        let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (n - 1.0);
        assert_close(bn.running_mean[c], 0.1 * m, "NCHW running mean");
        assert_close(bn.running_var[c], 0.9 + 0.1 * v, "NCHW running var");
    }
    Ok(())
}
