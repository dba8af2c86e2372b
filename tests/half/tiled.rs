//! The tiled half-precision path (`norm-runtime/src/widen/tiled.rs`): batch norm (NCHW,
//! BatchNorm1d, channels-last), instance norm and layer norm without parameters in bf16 and
//! f16, against a float64 reference computed here from the same (rounded) inputs, at every
//! SIMD level this CPU runs, with lengths below one vector, odd lengths and groups longer
//! than a tile (2048 values); and bit for bit the same results for 1, 2 and 3 threads.

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::{bf16, f16};

use crate::support::{
    at_every_level_and_thread_count, same_at_every_level_and_thread_count, values,
};

/// A case: the declaration, the input shape and the input as `[A, K, B]` with
/// statistics group `k` (the reference's view).
struct Case {
    spec: &'static str,
    shape: &'static [usize],
    akb: (usize, usize, usize),
    /// γ, β per group `k` (batch norm) and running statistics.
    bn: bool,
}

const CASES: &[Case] = &[
    // NCHW batch norm, planes of 2500 (a tile and a part), and planes below one vector.
    Case {
        spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
        shape: &[2, 3, 50, 50],
        akb: (2, 3, 2500),
        bn: true,
    },
    Case {
        spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
        shape: &[7, 5, 1, 3],
        akb: (7, 5, 3),
        bn: true,
    },
    // BatchNorm1d: columns (B = 1), rows of 19 values, more rows than one tile holds.
    Case {
        spec: r#"input = "N,C", axes = "N", affine, running_stats"#,
        shape: &[301, 19],
        akb: (301, 19, 1),
        bn: true,
    },
    // Channels-last batch norm.
    Case {
        spec: r#"input = "N,H,W,C", axes = "N,H,W", affine, running_stats"#,
        shape: &[3, 4, 5, 6],
        akb: (60, 6, 1),
        bn: true,
    },
    // Instance norm: rows of 33 (odd) and of 4100 (two tiles and a part).
    Case {
        spec: r#"input = "N,C,H,W", axes = "H,W""#,
        shape: &[3, 4, 3, 11],
        akb: (1, 12, 33),
        bn: false,
    },
    Case {
        spec: r#"input = "N,C,H,W", axes = "H,W""#,
        shape: &[2, 2, 41, 100],
        akb: (1, 4, 4100),
        bn: false,
    },
    // Layer norm without parameters, rows of 5 (below one vector).
    Case {
        spec: r#"input = "N,D", axes = "D""#,
        shape: &[9, 5],
        akb: (1, 9, 5),
        bn: false,
    },
];

const EPS: f64 = 1e-5;

/// The float64 reference of one train step (biased variance) or eval step (running
/// statistics): y, dx, dγ, dβ per group, and the updated running statistics.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
    running: Option<(Vec<f64>, Vec<f64>)>,
}

fn reference(
    (a, k, b): (usize, usize, usize),
    x: &[f64],
    dy: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running: Option<(&[f64], &[f64])>,
    train: bool,
) -> Reference {
    let n = (a * b) as f64;
    let group = |i: usize| (i / b) % k;
    let (mut mean, mut var) = (vec![0.0; k], vec![0.0; k]);
    for (i, &v) in x.iter().enumerate() {
        mean[group(i)] += v / n;
    }
    for (i, &v) in x.iter().enumerate() {
        let d = v - mean[group(i)];
        var[group(i)] += d * d / n;
    }
    let (m, s2) = if train {
        (mean.clone(), var.clone())
    } else {
        let (rm, rv) = running.expect("eval uses running statistics");
        (rm.to_vec(), rv.to_vec())
    };
    let rstd: Vec<f64> = s2.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
    let xhat: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - m[group(i)]) * rstd[group(i)])
        .collect();
    let y = xhat
        .iter()
        .enumerate()
        .map(|(i, &h)| h * gamma[group(i)] + beta[group(i)])
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0; k], vec![0.0; k]);
    for (i, (&d, &h)) in dy.iter().zip(&xhat).enumerate() {
        dgamma[group(i)] += d * h;
        dbeta[group(i)] += d;
    }
    let dx = dy
        .iter()
        .zip(&xhat)
        .enumerate()
        .map(|(i, (&d, &h))| {
            let g = group(i);
            if train {
                gamma[g] * rstd[g] * (d - dbeta[g] / n - h * dgamma[g] / n)
            } else {
                gamma[g] * rstd[g] * d
            }
        })
        .collect();
    let running = running.filter(|_| train).map(|(rm, rv)| {
        let m: Vec<f64> = (0..k).map(|g| 0.9 * rm[g] + 0.1 * mean[g]).collect();
        let v: Vec<f64> = (0..k)
            .map(|g| 0.9 * rv[g] + 0.1 * var[g] * n / (n - 1.0))
            .collect();
        (m, v)
    });
    Reference {
        y,
        dx,
        dgamma,
        dbeta,
        running,
    }
}

/// Asserts `got` is `want` within `ulps` units of `T`'s precision relative to each value,
/// plus `floor` times the largest `|want|` (the f32 rounding of cancelling terms).
fn close<T: Float>(what: &str, got: &[T], want: &[f64], ulps: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let eps = if T::NAME == "bf16" {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    };
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_acc();
        let tol = ulps * eps * w.abs() + floor * scale;
        assert!(
            (g - w).abs() <= tol && g.is_finite(),
            "{what}[{i}]: {g} vs {w} (tolerance {tol:e})"
        );
    }
}

/// Everything one train or eval step returns, as bits (for the thread-count comparison).
fn bits<T: Float>(arrays: &[&ArrayD<T>]) -> Vec<u64> {
    arrays
        .iter()
        .flat_map(|a| a.iter().map(|v| v.to_acc().to_bits()))
        .collect()
}

/// One case in `T`: a train step then an eval step on a fresh layer, checked against the
/// reference; returns the bits of every result.
fn run_case<T: Float>(case: &Case, what: &str) -> Vec<u64> {
    let spec = NormSpec::parse(case.spec).unwrap();
    let sizes: &[(&str, usize)] = if case.bn { &[("C", case.akb.1)] } else { &[] };
    let mut layer = DynNorm::<T>::new(&spec, sizes).unwrap();
    let numel: usize = case.shape.iter().product();
    let k = case.akb.1;
    let (mut gamma, mut beta) = (vec![1.0; k], vec![0.0; k]);
    let mut running = None;
    if case.bn {
        let st = &mut layer.stages_mut()[0];
        let g = values::<T>(k, 11, 1.0, 1.0);
        let b = values::<T>(k, 12, 0.0, 1.0);
        let rm = values::<T>(k, 13, 0.3, 1.0);
        let rv = values::<T>(k, 14, 2.0, 1.0);
        gamma = g.iter().map(|v| v.to_acc()).collect();
        beta = b.iter().map(|v| v.to_acc()).collect();
        let arr = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&[k]), v).unwrap();
        st.gamma = Some(arr(g));
        st.beta = Some(arr(b));
        running = Some((
            rm.iter().map(|v| v.to_acc()).collect::<Vec<_>>(),
            rv.iter().map(|v| v.to_acc()).collect::<Vec<_>>(),
        ));
        st.running_mean = Some(arr(rm));
        st.running_var = Some(arr(rv));
    }
    let x = values::<T>(numel, 1, 3.0, 4.0);
    let dy = values::<T>(numel, 2, 0.0, 2.0);
    let (xw, dyw): (Vec<f64>, Vec<f64>) = (
        x.iter().map(|v| v.to_acc()).collect(),
        dy.iter().map(|v| v.to_acc()).collect(),
    );
    let x = ArrayD::from_shape_vec(IxDyn(case.shape), x).unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(case.shape), dy).unwrap();
    let run_ref = running
        .as_ref()
        .map(|(m, v): &(Vec<f64>, Vec<f64>)| (&m[..], &v[..]));
    let want = reference(case.akb, &xw, &dyw, &gamma, &beta, run_ref, true);

    // Train.
    let mut y = ArrayD::from_elem(IxDyn(case.shape), T::nan());
    let mut saved = Saved::new();
    layer
        .forward_train_into(x.view(), y.view_mut(), &mut saved)
        .unwrap();
    let mut grads = Grads::new(ArrayD::from_elem(IxDyn(case.shape), T::nan()));
    layer
        .backward_into(x.view(), dy.view(), &saved, &mut grads)
        .unwrap();
    close(
        &format!("{what} y"),
        y.as_slice().unwrap(),
        &want.y,
        1.0,
        1e-6,
    );
    close(
        &format!("{what} dx"),
        grads.dx.as_slice().unwrap(),
        &want.dx,
        1.0,
        1e-4,
    );
    let mut out = bits(&[&y, &grads.dx]);
    if case.bn {
        let dg = grads.dgamma.as_ref().expect("dgamma");
        let db = grads.dbeta.as_ref().expect("dbeta");
        close(
            &format!("{what} dgamma"),
            dg.as_slice().unwrap(),
            &want.dgamma,
            1.0,
            1e-5,
        );
        close(
            &format!("{what} dbeta"),
            db.as_slice().unwrap(),
            &want.dbeta,
            1.0,
            1e-5,
        );
        let st = &layer.stages()[0];
        let (rm, rv) = want.running.as_ref().expect("running");
        let (lm, lv) = (
            st.running_mean.as_ref().unwrap(),
            st.running_var.as_ref().unwrap(),
        );
        close(
            &format!("{what} running_mean"),
            lm.as_slice().unwrap(),
            rm,
            1.0,
            0.0,
        );
        close(
            &format!("{what} running_var"),
            lv.as_slice().unwrap(),
            rv,
            1.0,
            0.0,
        );
        assert_eq!(st.num_batches_tracked, 1, "{what}");
        out.extend(bits(&[dg, db, lm, lv]));

        // Eval with the updated running statistics (read back from the layer).
        let rm: Vec<f64> = lm.iter().map(|v| v.to_acc()).collect();
        let rv: Vec<f64> = lv.iter().map(|v| v.to_acc()).collect();
        let want = reference(case.akb, &xw, &dyw, &gamma, &beta, Some((&rm, &rv)), false);
        layer.forward_eval_into(x.view(), y.view_mut()).unwrap();
        close(
            &format!("{what} eval y"),
            y.as_slice().unwrap(),
            &want.y,
            1.0,
            1e-6,
        );
        let (ye, saved) = layer.forward(x.view(), Mode::Eval).unwrap();
        assert_eq!(
            bits(&[&ye]),
            bits(&[&y]),
            "{what}: eval with and without Saved"
        );
        let g = layer.backward(x.view(), dy.view(), &saved).unwrap();
        close(
            &format!("{what} eval dx"),
            g.dx.as_slice().unwrap(),
            &want.dx,
            1.0,
            1e-6,
        );
        out.extend(bits(&[&y, &g.dx]));
    }
    out
}

/// A case's declaration and input shape: its label in failure messages.
trait Declared: Sync {
    fn declared(&self) -> (&str, &[usize]);
}

impl Declared for Case {
    fn declared(&self) -> (&str, &[usize]) {
        (self.spec, self.shape)
    }
}

/// `run` on every case of a table at every SIMD level and thread count (see
/// [`at_every_level_and_thread_count`]), each case labelled by its declaration and shape.
fn every<T: Float, C: Declared>(cases: &[C], run: impl Fn(&C, &str) -> Vec<u64> + Sync) {
    at_every_level_and_thread_count::<T, _>(
        cases,
        |c| {
            let (spec, shape) = c.declared();
            format!("{spec} {shape:?}")
        },
        run,
    );
}

#[test]
fn bf16_tiled_layers_match_the_f64_reference_at_every_level_and_thread_count() {
    every::<bf16, _>(CASES, run_case::<bf16>);
}

#[test]
fn f16_tiled_layers_match_the_f64_reference_at_every_level_and_thread_count() {
    every::<f16, _>(CASES, run_case::<f16>);
}

/// A row case with parameters along the rows (`widen/rows.rs`): the declaration, its sizes,
/// the shape, `n` values per group, the parameter index of element `i`, centering, eps, bias.
struct RowCase {
    spec: &'static str,
    sizes: &'static [(&'static str, usize)],
    shape: &'static [usize],
    n: usize,
    param: fn(usize) -> usize,
    center: bool,
    eps: f64,
    bias: bool,
}

const ROW_CASES: &[RowCase] = &[
    // Layer norm, rows of 2500 (a tile and a part) and of 5 (below one vector).
    RowCase {
        spec: r#"input = "N,D", axes = "D", affine = "D""#,
        sizes: &[("D", 2500)],
        shape: &[3, 2500],
        n: 2500,
        param: |i| i % 2500,
        center: true,
        eps: 1e-5,
        bias: true,
    },
    RowCase {
        spec: r#"input = "N,D", axes = "D", affine = "D""#,
        sizes: &[("D", 5)],
        shape: &[9, 5],
        n: 5,
        param: |i| i % 5,
        center: true,
        eps: 1e-5,
        bias: true,
    },
    // RMS norm, odd rows.
    RowCase {
        spec: r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
        sizes: &[("D", 37)],
        shape: &[5, 37],
        n: 37,
        param: |i| i % 37,
        center: false,
        eps: 1e-6,
        bias: false,
    },
    // Group norm: γ per channel, lines of 15 and of 2500.
    RowCase {
        spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 4, affine"#,
        sizes: &[("C", 8)],
        shape: &[2, 8, 3, 5],
        n: 30,
        param: |i| (i / 15) % 8,
        center: true,
        eps: 1e-5,
        bias: true,
    },
    RowCase {
        spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
        sizes: &[("C", 4)],
        shape: &[2, 4, 50, 50],
        n: 5000,
        param: |i| (i / 2500) % 4,
        center: true,
        eps: 1e-5,
        bias: true,
    },
];

/// The float64 reference of a train step of a row case: y, dx, dγ, dβ.
fn row_reference(c: &RowCase, x: &[f64], dy: &[f64], gamma: &[f64], beta: &[f64]) -> Reference {
    let n = c.n as f64;
    let np = gamma.len();
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut dgamma, mut dbeta) = (vec![0.0; np], vec![0.0; np]);
    for g0 in (0..x.len()).step_by(c.n) {
        let r = g0..g0 + c.n;
        let mean = if c.center {
            x[r.clone()].iter().sum::<f64>() / n
        } else {
            0.0
        };
        let var = x[r.clone()]
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        let rstd = 1.0 / (var + c.eps).sqrt();
        let (mut sg, mut sgx) = (0.0, 0.0);
        for i in r.clone() {
            let (p, h) = ((c.param)(i), (x[i] - mean) * rstd);
            y[i] = h * gamma[p] + if c.bias { beta[p] } else { 0.0 };
            dgamma[p] += dy[i] * h;
            dbeta[p] += dy[i];
            sg += dy[i] * gamma[p];
            sgx += dy[i] * gamma[p] * h;
        }
        for i in r {
            let (p, h) = ((c.param)(i), (x[i] - mean) * rstd);
            let centered = if c.center { sg / n } else { 0.0 };
            dx[i] = rstd * (dy[i] * gamma[p] - centered - h * sgx / n);
        }
    }
    Reference {
        y,
        dx,
        dgamma,
        dbeta,
        running: None,
    }
}

/// A row case's layer with γ set (`values(np, 21, 1.0, 1.0)`): the layer, the input's
/// length, γ widened, and the parameters' shape.
fn row_layer<T: Float>(c: &RowCase) -> (DynNorm<T>, usize, Vec<f64>, Vec<usize>) {
    let spec = NormSpec::parse(c.spec).unwrap();
    let mut layer = DynNorm::<T>::new(&spec, c.sizes).unwrap();
    let numel: usize = c.shape.iter().product();
    let st = &mut layer.stages_mut()[0];
    let pshape = st.gamma.as_ref().expect("gamma").shape().to_vec();
    let np: usize = pshape.iter().product();
    let g = values::<T>(np, 21, 1.0, 1.0);
    let gamma: Vec<f64> = g.iter().map(|v| v.to_acc()).collect();
    st.gamma = Some(ArrayD::from_shape_vec(IxDyn(&pshape), g).unwrap());
    (layer, numel, gamma, pshape)
}

fn run_row_case<T: Float>(c: &RowCase, what: &str) -> Vec<u64> {
    let (mut layer, numel, gamma, pshape) = row_layer::<T>(c);
    let st = &mut layer.stages_mut()[0];
    let np = gamma.len();
    let mut beta = vec![0.0; np];
    if c.bias {
        let b = values::<T>(np, 22, 0.0, 1.0);
        beta = b.iter().map(|v| v.to_acc()).collect();
        st.beta = Some(ArrayD::from_shape_vec(IxDyn(&pshape), b).unwrap());
    }
    let x = values::<T>(numel, 3, -2.0, 3.0);
    let dy = values::<T>(numel, 4, 0.0, 2.0);
    let (xw, dyw): (Vec<f64>, Vec<f64>) = (
        x.iter().map(|v| v.to_acc()).collect(),
        dy.iter().map(|v| v.to_acc()).collect(),
    );
    let want = row_reference(c, &xw, &dyw, &gamma, &beta);
    let x = ArrayD::from_shape_vec(IxDyn(c.shape), x).unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(c.shape), dy).unwrap();
    let mut y = ArrayD::from_elem(IxDyn(c.shape), T::nan());
    let mut saved = Saved::new();
    layer
        .forward_train_into(x.view(), y.view_mut(), &mut saved)
        .unwrap();
    let mut grads = Grads::new(ArrayD::from_elem(IxDyn(c.shape), T::nan()));
    layer
        .backward_into(x.view(), dy.view(), &saved, &mut grads)
        .unwrap();
    close(
        &format!("{what} y"),
        y.as_slice().unwrap(),
        &want.y,
        1.0,
        1e-6,
    );
    let dx = grads.dx.as_slice().unwrap();
    close(&format!("{what} dx"), dx, &want.dx, 1.0, 1e-4);
    let dg = grads.dgamma.as_ref().expect("dgamma");
    close(
        &format!("{what} dgamma"),
        dg.as_slice().unwrap(),
        &want.dgamma,
        1.0,
        1e-5,
    );
    let mut out = bits(&[&y, &grads.dx, dg]);
    match (&grads.dbeta, c.bias) {
        (Some(db), true) => {
            close(
                &format!("{what} dbeta"),
                db.as_slice().unwrap(),
                &want.dbeta,
                1.0,
                1e-5,
            );
            out.extend(bits(&[db]));
        }
        (None, false) => {}
        _ => panic!("{what}: dbeta present without bias or missing"),
    }
    out
}

impl Declared for RowCase {
    fn declared(&self) -> (&str, &[usize]) {
        (self.spec, self.shape)
    }
}

#[test]
fn bf16_rows_with_parameters_match_the_f64_reference_at_every_level_and_thread_count() {
    every::<bf16, _>(ROW_CASES, run_row_case::<bf16>);
}

#[test]
fn f16_rows_with_parameters_match_the_f64_reference_at_every_level_and_thread_count() {
    every::<f16, _>(ROW_CASES, run_row_case::<f16>);
}

/// The forward pass of a row case (`y` and the saved mean and rstd) as bits, for the
/// comparison across levels.
fn row_forward_bits<T: Float>(c: &RowCase, _: &str) -> Vec<u64> {
    let (mut layer, numel, _, _) = row_layer::<T>(c);
    let x = ArrayD::from_shape_vec(IxDyn(c.shape), values::<T>(numel, 3, -2.0, 3.0)).unwrap();
    let (y, saved) = layer.forward(x.view(), Mode::Train).unwrap();
    let mut out = bits(&[&y]);
    out.extend(saved.mean(0).unwrap().iter().map(|v| v.to_bits()));
    out.extend(saved.rstd(0).unwrap().iter().map(|v| v.to_bits()));
    out
}

/// The fused row path's statistics are summed in f32 lanes in a structure fixed across
/// levels (`fused::row_stats`): its forward output and saved statistics are the same bits
/// at every SIMD level and thread count.
#[test]
fn half_rows_forward_is_the_same_bits_at_every_level() {
    let label = |c: &RowCase| format!("{} {:?}", c.spec, c.shape);
    same_at_every_level_and_thread_count::<bf16, _>(ROW_CASES, label, row_forward_bits::<bf16>);
    same_at_every_level_and_thread_count::<f16, _>(ROW_CASES, label, row_forward_bits::<f16>);
}
