//! The column path on inputs of several tasks (and, where `x`, `dy` and `dx` exceed half
//! the last-level cache, with its streamed dx): a bf16 BatchNorm1d gives the f32 layer's
//! results on the widened values rounded once (forward in train and eval mode — eval with
//! the running statistics rounded as the bf16 layer keeps them —, dx, dγ, dβ, running
//! statistics), with the same bits at 1, 2 and 3 threads.

use half::bf16;
use ndarray::{ArrayD, IxDyn};

use crate::types::Mode;
use crate::{DynNorm, NormSpec};

/// What one train step, its backward and one eval forward give (as f32 values).
#[derive(Debug, PartialEq)]
struct Step {
    y: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    running: Vec<f32>,
    eval: Vec<f32>,
}

/// `n` values around `offset` (spread about ±3), as bf16.
fn values(n: usize, seed: usize, offset: f32) -> Vec<bf16> {
    (0..n)
        .map(|i| {
            let t = (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % 4096;
            bf16::from_f32(offset + (t as f32 / 4096.0 - 0.5) * 6.0)
        })
        .collect()
}

fn wide(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|v| v.to_f32()).collect()
}

/// One step of a batch norm with `k` channels (`spec`, input `shape`) in `T` (γ, β and the
/// inputs: the bf16 values).
fn step<T: crate::Float>(
    spec: &str,
    shape: &[usize],
    k: usize,
    of: impl Fn(&[bf16]) -> Vec<T>,
) -> Step {
    let spec = NormSpec::parse(spec).unwrap();
    let mut layer = DynNorm::<T>::new(&spec, &[("C", k)]).unwrap();
    let numel: usize = shape.iter().product();
    let arr = |v: Vec<T>, shape: &[usize]| ArrayD::from_shape_vec(IxDyn(shape), v).unwrap();
    let st = &mut layer.stages_mut()[0];
    st.gamma = Some(arr(of(&values(k, 1, 1.0)), &[k]));
    st.beta = Some(arr(of(&values(k, 2, 0.0)), &[k]));
    let x = arr(of(&values(numel, 3, 0.75)), shape);
    let dy = arr(of(&values(numel, 4, 0.0)), shape);
    let (y, saved) = layer.forward(x.view(), Mode::Train).unwrap();
    let g = layer.backward(x.view(), dy.view(), &saved).unwrap();
    let f = |v: &ArrayD<T>| v.iter().map(|v| v.to_acc() as f32).collect::<Vec<f32>>();
    let st = &mut layer.stages_mut()[0];
    let running = [&st.running_mean, &st.running_var]
        .iter()
        .flat_map(|r| f(r.as_ref().unwrap()))
        .collect();
    // Eval with the running statistics as the bf16 layer keeps them (rounded).
    for r in [&mut st.running_mean, &mut st.running_var] {
        for v in r.as_mut().unwrap().iter_mut() {
            *v = T::from_acc(bf16::from_f64(v.to_acc()).to_f64());
        }
    }
    let eval = layer.forward(x.view(), Mode::Eval).unwrap().0;
    Step {
        y: f(&y),
        dx: f(&g.dx),
        dgamma: f(g.dgamma.as_ref().unwrap()),
        dbeta: f(g.dbeta.as_ref().unwrap()),
        running,
        eval: f(&eval),
    }
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// The bf16 layer against the f32 layer rounded, at 1, 2 and 3 threads.
fn check(spec: &str, shape: &[usize], k: usize) {
    let f32_layer = step::<f32>(spec, shape, k, wide);
    let want = Step {
        y: rounded(&f32_layer.y),
        dx: rounded(&f32_layer.dx),
        dgamma: rounded(&f32_layer.dgamma),
        dbeta: rounded(&f32_layer.dbeta),
        running: rounded(&f32_layer.running),
        eval: rounded(&f32_layer.eval),
    };
    assert!(want.dx.iter().any(|&v| v != 0.0), "a real gradient");
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| step::<bf16>(spec, shape, k, |v| v.to_vec()));
        let diff = |name: &str, g: &[f32], w: &[f32]| {
            let bad: Vec<usize> = (0..g.len()).filter(|&i| g[i] != w[i]).collect();
            assert!(
                bad.is_empty() && g.len() == w.len(),
                "{shape:?} at {threads} threads: {name} differs at {} of {} values, first {:?}",
                bad.len(),
                g.len(),
                bad.first().map(|&i| (i, g[i], w[i]))
            );
        };
        diff("y", &got.y, &want.y);
        diff("dx", &got.dx, &want.dx);
        diff("dgamma", &got.dgamma, &want.dgamma);
        diff("dbeta", &got.dbeta, &want.dbeta);
        diff("running", &got.running, &want.running);
        diff("eval", &got.eval, &want.eval);
    }
}

#[test]
fn bf16_columns_of_several_tasks_are_the_f32_layer_rounded() {
    // Two tasks of rows (96 and 100 columns: rows of whole blocks and an odd tail), and 44
    // tasks of 1024 columns, 17 MB of x, dy and dx (streamed where that exceeds half the
    // last-level cache).
    for (a, k) in [(1100, 96), (1400, 100), (2800, 1024)] {
        check(
            r#"input = "N,C", axes = "N", affine, running_stats"#,
            &[a, k],
            k,
        );
    }
}

#[test]
fn bf16_tiled_batch_norms_of_several_tasks_are_the_f32_layer_rounded() {
    // BatchNorm2d (NCHW: channels between batch and spatial axes) and channels-last on
    // inputs of many tasks, planes shorter and longer than a task.
    let nchw = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
    let nhwc = r#"input = "N,H,W,C", axes = "N,H,W", affine, running_stats"#;
    check(nchw, &[8, 24, 40, 40], 24);
    check(nchw, &[3, 5, 150, 170], 5);
    check(nhwc, &[6, 30, 30, 40], 40);
}
