//! `NormLayer::backward_layer_into_grads`: the allocation-free backward. Its gradients equal
//! the allocating `backward_layer`'s and central finite differences of the forward pass;
//! the caller's buffers are the ones written (same addresses call after call); a `dx` of
//! the wrong shape is an error. For `#[norm]` layers (single stage and chain) and `DynNorm`.

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::{ChainGrads, NormError, NormLayer};

// The layers and specs of `layer_trait`.
use super::layer_trait::{input, Bcn, Bn, Gn, BCN, GN};

const SHAPE: [usize; 4] = [3, 4, 2, 3];

/// γ and β away from 1 and 0, so their gradients matter.
fn set_params<L: NormLayer<Elem = f64>>(layer: &mut L) {
    for (k, st) in layer.tensors_mut().into_iter().enumerate() {
        if let Some(mut g) = st.gamma {
            g.indexed_iter_mut()
                .for_each(|(i, v)| *v = 0.5 + 0.25 * (i[0] + k) as f64);
        }
        if let Some(mut b) = st.beta {
            b.indexed_iter_mut()
                .for_each(|(i, v)| *v = 0.1 * i[0] as f64 - 0.2 * k as f64);
        }
    }
}

/// The address of every buffer in `g` (dx, then each stage's dγ and dβ).
fn addresses(g: &ChainGrads<f64>) -> Vec<usize> {
    let mut v = vec![g.dx.as_ptr() as usize];
    for st in &g.stages {
        for a in [&st.dgamma, &st.dbeta].into_iter().flatten() {
            v.push(a.as_ptr() as usize);
        }
    }
    v
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// `sum(y(x) * dy)` of a train-mode forward (whose output does not depend on the running
/// statistics it moves).
fn loss<L: NormLayer<Elem = f64>>(layer: &mut L, x: &ArrayD<f64>, dy: &ArrayD<f64>) -> f64 {
    let (y, _) = layer.forward_layer(x.view(), None, Mode::Train).unwrap();
    (&y * dy).sum()
}

/// Two train steps through one `ChainGrads`: each equals `backward_layer`'s result, the
/// second reuses the first's buffers, and dx matches central finite differences of
/// `sum(y * dy)`.
fn check<L: NormLayer<Elem = f64>>(layer: &mut L) {
    set_params(layer);
    let mut grads = ChainGrads {
        dx: ArrayD::zeros(IxDyn(&SHAPE)),
        stages: Vec::new(),
    };
    let mut first = Vec::new();
    for step in 0..2u64 {
        let x = input(&SHAPE, 11 + step);
        let dy = input(&SHAPE, 29 + step);
        let (_, saved) = layer.forward_layer(x.view(), None, Mode::Train).unwrap();
        layer
            .backward_layer_into_grads(x.view(), dy.view(), &saved, &mut grads, None)
            .unwrap();
        let reference = layer.backward_layer(x.view(), dy.view(), &saved).unwrap();
        close(&grads.dx, &reference.dx, 1e-12, "dx");
        assert_eq!(grads.stages.len(), reference.stages.len());
        for (k, (a, b)) in grads.stages.iter().zip(&reference.stages).enumerate() {
            for (what, p, q) in [
                ("dgamma", &a.dgamma, &b.dgamma),
                ("dbeta", &a.dbeta, &b.dbeta),
            ] {
                match (p, q) {
                    (Some(p), Some(q)) => close(p, q, 1e-12, &format!("stage {k} {what}")),
                    (None, None) => {}
                    _ => panic!("stage {k} {what}: present in one result only"),
                }
            }
        }
        if step == 0 {
            first = addresses(&grads);
            assert!(first.len() > 1, "the layer has parameter gradients");
        } else {
            assert_eq!(addresses(&grads), first, "the buffers are reused");
        }

        // Central differences of sum(y(x) * dy).
        let h = 1e-6;
        for flat in [0usize, 7, 40, 71] {
            let idx = IxDyn(&unravel(flat, &SHAPE));
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[&idx] += h;
            xm[&idx] -= h;
            let fd = (loss(layer, &xp, &dy) - loss(layer, &xm, &dy)) / (2.0 * h);
            let got = grads.dx[&idx];
            assert!(
                (fd - got).abs() <= 1e-6 * (1.0 + fd.abs()),
                "dx[{flat}]: {got} vs finite difference {fd}"
            );
        }
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &n) in shape.iter().enumerate().rev() {
        idx[i] = flat % n;
        flat /= n;
    }
    idx
}

#[test]
fn macro_layers_fill_and_reuse_the_callers_buffers() {
    check(&mut Gn::<f64>::new(4));
    check(&mut Bn::<f64>::new(4));
    check(&mut Bcn::<f64>::new(4));
}

#[test]
fn dyn_norm_fills_and_reuses_the_callers_buffers() {
    for spec in [GN, BCN] {
        let spec = NormSpec::parse(spec).unwrap();
        check(&mut DynNorm::<f64>::new(&spec, &[("C", 4)]).unwrap());
    }
}

#[test]
fn a_dx_of_the_wrong_shape_is_an_error() {
    let x = input(&SHAPE, 3);
    let spec = NormSpec::parse(GN).unwrap();
    let mut dynamic = DynNorm::<f64>::new(&spec, &[("C", 4)]).unwrap();
    let mut generated = Gn::<f64>::new(4);
    let mut chain = Bcn::<f64>::new(4);
    let layers: [&mut dyn NormLayer<Elem = f64>; 3] = [&mut dynamic, &mut generated, &mut chain];
    for layer in layers {
        let (_, saved) = layer.forward_layer(x.view(), None, Mode::Train).unwrap();
        let mut grads = ChainGrads {
            dx: ArrayD::zeros(IxDyn(&[3, 4, 2, 2])),
            stages: Vec::new(),
        };
        let e = layer
            .backward_layer_into_grads(x.view(), x.view(), &saved, &mut grads, None)
            .unwrap_err();
        assert!(
            matches!(&e, NormError::Shape { what, .. } if what == "grads.dx"),
            "{e}"
        );
        // The caller's buffer is untouched by a refused call.
        assert_eq!(grads.dx.shape(), &[3, 4, 2, 2]);
        // A rank mismatch of x is the layer's rank error.
        let x3 = input(&[3, 4, 6], 5);
        let e = layer
            .backward_layer_into_grads(x3.view(), x3.view(), &saved, &mut grads, None)
            .unwrap_err();
        assert!(
            matches!(e, NormError::Rank { .. } | NormError::Shape { .. }),
            "{e}"
        );
    }
}
