//! The monomorphized paths (issue 13, item 8): the specialized eval pass with running
//! statistics gives the bits of the generic path (reached by the same call with `Saved`,
//! which always runs generic), the bits of `DynNorm`, and the reference formula
//! y = (x − μ_run)/√(σ²_run + eps)·γ + β computed here in f64.

use normkit::ndarray::{Array, ArrayD, IxDyn, ShapeBuilder};
use normkit::prelude::*;
use normkit::{DynNorm, NormSpec};

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
struct Bn2d;

#[norm(input = "N,C", axes = "N", affine, running_stats)]
struct Bn1d;

#[norm(input = "N,C,H,W", axes = "H,W", affine, running_stats)]
struct InAffine;

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    eps = 0.01,
    eps_mode = "std"
)]
struct BnStd;

/// Deterministic values in [lo, hi).
fn fill<Sh: ShapeBuilder>(shape: Sh, seed: u64, lo: f32, hi: f32) -> Array<f32, Sh::Dim> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array::from_shape_simple_fn(shape, || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
    })
}

/// The reference: channel `c` of every element, f64 arithmetic.
fn reference(
    x: &ArrayD<f32>,
    channel_axis: usize,
    p: [&[f32]; 4],
    eps: f64,
    eps_std: bool,
) -> ArrayD<f64> {
    let [g, b, rm, rv] = p;
    let mut y = ArrayD::<f64>::zeros(x.raw_dim());
    for (idx, &v) in x.indexed_iter() {
        let c = idx[channel_axis];
        let var = f64::from(rv[c]);
        let sd = if eps_std {
            var.sqrt() + eps
        } else {
            (var + eps).sqrt()
        };
        let gamma = g.get(c).map_or(1.0, |&g| f64::from(g));
        let beta = b.get(c).map_or(0.0, |&b| f64::from(b));
        y[&idx] = (f64::from(v) - f64::from(rm[c])) / sd * gamma + beta;
    }
    y
}

fn close(y: &ArrayD<f32>, r: &ArrayD<f64>) {
    for (&a, &b) in y.iter().zip(r) {
        assert!(
            (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{a} vs reference {b}"
        );
    }
}

macro_rules! case {
    ($layer:expr, $spec:expr, $shape:expr, $channel_axis:expr, $c:expr, $eps:expr, $std:expr) => {{
        let mut l = $layer;
        let c = $c;
        let shape = $shape;
        let g = fill(IxDyn(&[c]), 1, 0.5, 1.5).into_raw_vec_and_offset().0;
        let b = fill(IxDyn(&[c]), 2, -0.5, 0.5).into_raw_vec_and_offset().0;
        let rm = fill(IxDyn(&[c]), 3, -0.5, 0.5).into_raw_vec_and_offset().0;
        let rv = fill(IxDyn(&[c]), 4, 0.5, 2.0).into_raw_vec_and_offset().0;
        l.gamma = Array::from(g.clone());
        l.beta = Array::from(b.clone());
        l.running_mean = Array::from(rm.clone());
        l.running_var = Array::from(rv.clone());
        let x = fill(shape, 5, -2.0, 2.0);
        // Specialized: eval into a buffer, nothing saved.
        let fast = l.forward_eval(x.view()).expect("eval");
        // Generic: the same statistics, with `Saved` (always the generic path).
        let (generic, _) = l.forward(x.view(), Mode::Eval).expect("eval with saved");
        assert_eq!(fast, generic, "specialized and generic paths differ");
        // A strided view of the same values (generic path: it is not in standard layout).
        let xt = x.t().to_owned();
        let strided = l.forward_eval(xt.t()).expect("strided eval");
        assert_eq!(fast, strided);
        // DynNorm maps its spec onto the same path.
        let spec = NormSpec::parse($spec).expect("spec");
        let mut d = DynNorm::<f32>::new(&spec, &[("C", c)]).expect("dyn");
        {
            let st = &mut d.stages_mut()[0];
            st.gamma = Some(Array::from(g.clone()).into_dyn());
            st.beta = Some(Array::from(b.clone()).into_dyn());
            st.running_mean = Some(Array::from(rm.clone()).into_dyn());
            st.running_var = Some(Array::from(rv.clone()).into_dyn());
        }
        let xd = x.clone().into_dyn();
        let yd = d.forward_eval(xd.view()).expect("dyn eval");
        assert_eq!(
            fast.clone().into_dyn(),
            yd,
            "DynNorm differs from the macro layer"
        );
        let p = [&g[..], &b[..], &rm[..], &rv[..]];
        close(&yd, &reference(&xd, $channel_axis, p, $eps, $std));
    }};
}

#[test]
fn batch_norm_2d_eval_sandwich() {
    let s = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
    case!(Bn2d::new(6), s, (1, 6, 4, 5), 1, 6, 1e-5, false);
    case!(Bn2d::new(6), s, (3, 6, 4, 5), 1, 6, 1e-5, false);
    case!(Bn2d::new(3), s, (2, 3, 1, 1), 1, 3, 1e-5, false);
}

#[test]
fn batch_norm_1d_eval_columns() {
    let s = r#"input = "N,C", axes = "N", affine, running_stats"#;
    case!(Bn1d::new(7), s, (5, 7), 1, 7, 1e-5, false);
    case!(Bn1d::new(7), s, (1, 7), 1, 7, 1e-5, false);
}

#[test]
fn instance_norm_eval_rows() {
    let s = r#"input = "N,C,H,W", axes = "H,W", affine, running_stats"#;
    case!(InAffine::new(4), s, (3, 4, 3, 5), 1, 4, 1e-5, false);
}

#[test]
fn eps_added_to_the_standard_deviation() {
    let s =
        r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, eps = 0.01, eps_mode = "std""#;
    case!(BnStd::new(5), s, (2, 5, 3, 3), 1, 5, 0.01, true);
}

#[test]
fn larger_inputs_take_the_generic_path_with_the_same_results() {
    // Above the specialized size limit: the generic path; the values still follow the
    // reference (the path choice never changes results).
    let s = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
    case!(Bn2d::new(8), s, (2, 8, 48, 48), 1, 8, 1e-5, false);
}

#[test]
fn a_bad_state_gets_the_generic_error() {
    // The specialized pass defers to the checked path on anything unexpected: the same
    // error as the generic path (reached through `forward` with `Saved`).
    let mut l = Bn2d::new(4);
    l.running_var = Array::from(vec![1.0f32; 5]);
    let x = fill((2, 4, 3, 3), 6, -1.0, 1.0);
    let fast = l
        .forward_eval(x.view())
        .expect_err("running_var of 5 for 4 channels");
    let generic = l.forward(x.view(), Mode::Eval).expect_err("the same");
    assert_eq!(fast.to_string(), generic.to_string());
    let mut l = Bn2d::new(4);
    l.gamma = Array::from(vec![1.0f32; 3]);
    let fast = l
        .forward_eval(x.view())
        .expect_err("gamma of 3 for 4 channels");
    let generic = l.forward(x.view(), Mode::Eval).expect_err("the same");
    assert_eq!(fast.to_string(), generic.to_string());
}
