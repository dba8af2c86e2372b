//! `NormLayer`: code generic over layers runs a `#[norm]` layer and a `DynNorm` of the same
//! spec alike, and the layer's results through the trait equal a reference formula and the
//! layer's own methods.

use normkit::ndarray::{Array, ArrayD, Axis, Ix4, IxDyn};
use normkit::prelude::*;
use normkit::{NormLayer, StateDict};

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct Gn;

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct Bn;

#[norm(input = "N,C,H,W", axes = "H,W", affine = external)]
pub struct AdaIn;

#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine)
    )
)]
pub struct Bcn;

pub const GN: &str = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#;
const BN: &str = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
const ADAIN: &str = r#"input = "N,C,H,W", axes = "H,W", affine = external"#;
pub const BCN: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#;

pub fn input(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut s = seed;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
    })
}

/// What a generic training step sees of any layer: parameters set by name, two train
/// steps (running statistics move), an eval step, the gradients and a state-dict round
/// trip.
struct Trace {
    y: Vec<ArrayD<f64>>,
    dx: ArrayD<f64>,
    dparams: Vec<ArrayD<f64>>,
    state: StateDict,
}

fn run<L: NormLayer<Elem = f64>>(layer: &mut L, x: &ArrayD<f64>, ext: bool) -> Trace {
    // γ and β away from 1 and 0, set by name through the trait.
    for (k, st) in layer.tensors_mut().into_iter().enumerate() {
        if let Some(mut g) = st.gamma {
            g.indexed_iter_mut()
                .for_each(|(i, v)| *v = 0.5 + 0.25 * (i[0] + k) as f64);
        }
        if let Some(mut b) = st.beta {
            b.indexed_iter_mut()
                .for_each(|(i, v)| *v = 0.1 * i[0] as f64 - 0.2);
        }
    }
    let (scale, shift) = (
        input(&[x.shape()[0], x.shape()[1]], 7),
        input(&[x.shape()[0], x.shape()[1]], 8),
    );
    let external = || ext.then(|| (scale.view(), shift.view()));
    let mut y = Vec::new();
    let (y1, _) = layer
        .forward_layer(x.view(), external(), Mode::Train)
        .expect("forward");
    y.push(y1);
    let (y2, saved) = layer
        .forward_layer(x.view(), external(), Mode::Train)
        .expect("forward");
    y.push(y2);
    let (y3, _) = layer
        .forward_layer(x.view(), external(), Mode::Eval)
        .expect("forward");
    y.push(y3);
    let dy = input(x.shape(), 3);
    let g = layer
        .backward_layer(x.view(), dy.view(), &saved)
        .expect("backward");
    let dparams = g
        .stages
        .into_iter()
        .flat_map(|s| [s.dgamma, s.dbeta])
        .flatten()
        .collect();
    let mut state = StateDict::new();
    layer.save_layer_into(&mut state, "m.");
    Trace {
        y,
        dx: g.dx,
        dparams,
        state,
    }
}

fn same(a: &Trace, b: &Trace) {
    assert_eq!(a.y, b.y);
    assert_eq!(a.dx, b.dx);
    assert_eq!(a.dparams, b.dparams);
    assert!(!a.dparams.is_empty() || a.dparams == b.dparams);
    assert_eq!(
        a.state.keys().collect::<Vec<_>>(),
        b.state.keys().collect::<Vec<_>>()
    );
}

fn dyn_of(spec: &str, c: usize) -> DynNorm<f64> {
    DynNorm::new(&NormSpec::parse(spec).expect("spec"), &[("C", c)]).expect("layer")
}

#[test]
fn macro_layers_and_dyn_norm_agree_through_the_trait() {
    let x = input(&[3, 4, 5, 3], 1);
    same(
        &run(&mut Gn::<f64>::new(4), &x, false),
        &run(&mut dyn_of(GN, 4), &x, false),
    );
    same(
        &run(&mut Bn::<f64>::new(4), &x, false),
        &run(&mut dyn_of(BN, 4), &x, false),
    );
    same(
        &run(&mut AdaIn::<f64>::default(), &x, true),
        &run(&mut dyn_of(ADAIN, 4), &x, true),
    );
    same(
        &run(&mut Bcn::<f64>::new(4), &x, false),
        &run(&mut dyn_of(BCN, 4), &x, false),
    );
}

/// Group Norm by its formula: (x - mean) / sqrt(var + eps) over each (n, group), then γ, β.
fn group_norm_reference(
    x: &ArrayD<f64>,
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
) -> ArrayD<f64> {
    let x4 = x.clone().into_dimensionality::<Ix4>().expect("rank 4");
    let (n, c) = (x4.shape()[0], x4.shape()[1]);
    let per = c / groups;
    let mut y = Array::zeros(x4.raw_dim());
    for i in 0..n {
        for g in 0..groups {
            let block = x4.index_axis(Axis(0), i);
            let vals: Vec<f64> = (g * per..(g + 1) * per)
                .flat_map(|ch| {
                    block
                        .index_axis(Axis(0), ch)
                        .iter()
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
            for ch in g * per..(g + 1) * per {
                let s = 1.0 / (v + 1e-5).sqrt();
                let src = x4.index_axis(Axis(0), i).index_axis(Axis(0), ch).to_owned();
                let mut dst = y.index_axis_mut(Axis(0), i);
                let mut dst = dst.index_axis_mut(Axis(0), ch);
                dst.zip_mut_with(&src, |d, &a| *d = (a - m) * s * gamma[ch] + beta[ch]);
            }
        }
    }
    y.into_dyn()
}

#[test]
fn trait_output_matches_the_formula_and_the_layers_own_methods() {
    let x = input(&[2, 4, 3, 5], 11);
    let mut gn = Gn::<f64>::new(4);
    let t = run(&mut gn, &x, false);
    let gamma: Vec<f64> = gn.gamma.iter().copied().collect();
    let beta: Vec<f64> = gn.beta.iter().copied().collect();
    assert_eq!(gamma, [0.5, 0.75, 1.0, 1.25]);
    let want = group_norm_reference(&x, 2, &gamma, &beta);
    for y in &t.y {
        let err = (y - &want).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(err < 1e-12, "max |y - reference| = {err}");
    }
    // The layer's own static-rank methods give bit-identical results.
    let x4 = x.view().into_dimensionality::<Ix4>().expect("rank 4");
    let (y, saved) = gn.forward(x4, Mode::Train).expect("forward");
    assert_eq!(y.into_dyn(), t.y[0]);
    let dy = input(x.shape(), 3);
    let g = gn
        .backward(x4, dy.view().into_dimensionality().expect("rank 4"), &saved)
        .expect("backward");
    assert_eq!(g.dx.into_dyn(), t.dx);
    assert_eq!(
        vec![g.dgamma.expect("dgamma"), g.dbeta.expect("dbeta")],
        t.dparams
    );
}

#[test]
fn state_dict_through_the_trait_loads_into_the_other_kind() {
    let x = input(&[3, 4, 2, 2], 5);
    let mut bn = Bcn::<f64>::new(4);
    let t = run(&mut bn, &x, false);
    let mut other = dyn_of(BCN, 4);
    other.load_layer_state_dict(&t.state, "m.").expect("load");
    let mine: Vec<_> = bn
        .tensors()
        .into_iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.gamma.map(|g| g.to_owned()),
                s.running_var.map(|v| v.to_owned()),
                s.num_batches_tracked,
            )
        })
        .collect();
    let theirs: Vec<_> = other
        .tensors()
        .into_iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.gamma.map(|g| g.to_owned()),
                s.running_var.map(|v| v.to_owned()),
                s.num_batches_tracked,
            )
        })
        .collect();
    assert_eq!(mine, theirs);
    assert_eq!(mine[0].3, Some(2));
    assert_eq!((mine[0].0.as_str(), mine[1].0.as_str()), ("bn", "gn"));
}

#[test]
fn wrong_calls_are_errors() {
    let x = input(&[2, 4, 3, 3], 2);
    let mut gn = Gn::<f64>::new(4);
    let x3 = input(&[2, 4, 9], 2);
    assert!(matches!(
        gn.forward_layer(x3.view(), None, Mode::Train),
        Err(NormError::Rank {
            expected: 4,
            actual: 3,
            ..
        })
    ));
    let s = input(&[2, 4], 3);
    assert!(matches!(
        gn.forward_layer(x.view(), Some((s.view(), s.view())), Mode::Train),
        Err(NormError::Unsupported { .. })
    ));
    let mut ada = AdaIn::<f64>::default();
    assert!(matches!(
        ada.forward_layer(x.view(), None, Mode::Train),
        Err(NormError::Unsupported { .. })
    ));
    let mut d = dyn_of(ADAIN, 4);
    assert!(matches!(
        d.forward_layer(x.view(), None, Mode::Train),
        Err(NormError::Unsupported { .. })
    ));
}
