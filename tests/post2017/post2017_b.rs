//! Issue 18 part B: masked statistics (`mask = "N,T"`) and Switchable Normalization,
//! against float64 PyTorch autograd references of the papers' formulas
//! (`tests/golden/post2017_b.py`, data in `tests/golden/data/post2017_b/`), through
//! `DynNorm` and through `#[norm]` layers (bit-identical to each other), in f64 and f32;
//! finite-difference checks in f64.
//!
//! Tolerances: f64 `1e-10 · max(1, max|ref|)`; f32 `2e-4 · max(1, max|ref|)` (the data are
//! O(1), the f32 error of one normalization is a few ulps of the largest value).

use normkit::ndarray::{ArrayD, ArrayViewD, Ix1, Ix2, Ix3, IxDyn};
use normkit::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Reading the data
// ---------------------------------------------------------------------------------------

use crate::support::{self, close, dyn_grads, same, shape_of, tensor};

fn load(name: &str) -> Value {
    support::load("post2017_b", name)
}

fn mask(v: &Value) -> ArrayD<bool> {
    let data: Vec<bool> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d.as_bool().expect("bool"))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape_of(v)), data).expect("shape matches data")
}

fn sizes(case: &Value) -> Vec<(String, usize)> {
    case["sizes"]
        .as_array()
        .expect("sizes")
        .iter()
        .map(|p| {
            (
                p[0].as_str().expect("axis").to_string(),
                p[1].as_u64().expect("size") as usize,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The same layers through #[norm]
// ---------------------------------------------------------------------------------------

#[norm(input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D")]
struct MaskedLayerNorm;

#[norm(input = "N,T,D", axes = "D", mask = "N,T", affine = "D")]
struct MaskedTokenNorm;

#[norm(
    input = "N,T,C",
    axes = "N,T",
    mask = "N,T",
    affine = "C",
    running_stats
)]
struct MaskedBatchNorm;

#[norm(
    input = "N,C,L",
    axes = "N,L",
    mask = "N",
    running_stats,
    momentum = 0.2
)]
struct MaskedBatchNormRows;

/// What the tests need of a generated masked layer, over dynamic views.
trait Masked<T: Float> {
    fn fwd(
        &mut self,
        x: ArrayViewD<'_, T>,
        m: ArrayViewD<'_, bool>,
        mode: Mode,
    ) -> (ArrayD<T>, Saved<T>);
    fn bwd(&self, x: ArrayViewD<'_, T>, dy: ArrayViewD<'_, T>, s: &Saved<T>) -> Grads<T, IxDyn>;
    fn set_params(&mut self, gamma: Option<ArrayD<T>>, beta: Option<ArrayD<T>>);
    fn running(&self) -> Option<(ArrayD<T>, ArrayD<T>)>;
}

macro_rules! masked_impl {
    ($t:ident, $xd:ty, $md:ty, gamma: $g:tt, running: $r:tt) => {
        impl<T: Float> Masked<T> for $t<T> {
            fn fwd(
                &mut self,
                x: ArrayViewD<'_, T>,
                m: ArrayViewD<'_, bool>,
                mode: Mode,
            ) -> (ArrayD<T>, Saved<T>) {
                let x = x.into_dimensionality::<$xd>().expect("rank");
                let m = m.into_dimensionality::<$md>().expect("mask rank");
                let (y, s) = self.forward(x, m, mode).expect("macro forward");
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
            masked_impl!(@params $g);
            masked_impl!(@running $r);
        }
    };
    (@params true) => {
        fn set_params(&mut self, gamma: Option<ArrayD<T>>, beta: Option<ArrayD<T>>) {
            let g = gamma.expect("gamma");
            self.gamma = g.into_dimensionality::<Ix1>().expect("rank 1");
            self.beta = beta.expect("beta").into_dimensionality::<Ix1>().expect("rank 1");
        }
    };
    (@params false) => {
        fn set_params(&mut self, _: Option<ArrayD<T>>, _: Option<ArrayD<T>>) {}
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

masked_impl!(MaskedLayerNorm, Ix3, Ix2, gamma: true, running: false);
masked_impl!(MaskedTokenNorm, Ix3, Ix2, gamma: true, running: false);
masked_impl!(MaskedBatchNorm, Ix3, Ix2, gamma: true, running: true);
masked_impl!(MaskedBatchNormRows, Ix3, Ix1, gamma: false, running: true);

/// Every step of a masked case through DynNorm (against the reference) and the macro layer
/// (bit-identical to DynNorm).
fn run_masked<T: Float>(name: &str, layer: &mut dyn Masked<T>) {
    let case = load(name);
    let spec = NormSpec::parse(case["spec"].as_str().expect("spec")).expect("spec parses");
    let sizes = sizes(&case);
    let sizes: Vec<(&str, usize)> = sizes.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let mut dynl = DynNorm::<T>::new(&spec, &sizes).expect("DynNorm");
    let gamma = case["gamma"]
        .as_object()
        .map(|_| tensor::<T>(&case["gamma"]));
    let beta = case["beta"].as_object().map(|_| tensor::<T>(&case["beta"]));
    dynl.stages_mut()[0].gamma = gamma.clone();
    dynl.stages_mut()[0].beta = beta.clone();
    layer.set_params(gamma, beta);
    for (k, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        let what = |o: &str| format!("{name} step {k} {o}");
        let x = tensor::<T>(&step["x"]);
        let dy = tensor::<T>(&step["dy"]);
        let m = mask(&step["mask"]);
        let mode = if step["train"].as_bool() == Some(true) {
            Mode::Train
        } else {
            Mode::Eval
        };
        let (y, saved) = dynl
            .forward_masked(x.view(), m.view(), mode)
            .expect("forward_masked");
        close(&what("y"), &y, &step["y"]);
        let g = dynl
            .backward(x.view(), dy.view(), &saved)
            .expect("backward");
        close(&what("dx"), &g.dx, &step["dx"]);
        if step.get("dgamma").is_some() {
            close(
                &what("dgamma"),
                g.dgamma.as_ref().expect("dgamma"),
                &step["dgamma"],
            );
            close(
                &what("dbeta"),
                g.dbeta.as_ref().expect("dbeta"),
                &step["dbeta"],
            );
        }
        if step.get("running_mean").is_some() {
            let st = &dynl.stages()[0];
            close(
                &what("running_mean"),
                st.running_mean.as_ref().expect("rm"),
                &step["running_mean"],
            );
            close(
                &what("running_var"),
                st.running_var.as_ref().expect("rv"),
                &step["running_var"],
            );
        }
        // The macro layer: bit-identical.
        let (ym, sm) = layer.fwd(x.view(), m.view(), mode);
        same(&what("y (macro)"), &ym, &y);
        let gm = layer.bwd(x.view(), dy.view(), &sm);
        same(&what("dx (macro)"), &gm.dx, &g.dx);
        if let (Some(a), Some(b)) = (&gm.dgamma, &g.dgamma) {
            same(&what("dgamma (macro)"), a, b);
        }
        if let Some((rm, rv)) = layer.running() {
            let st = &dynl.stages()[0];
            same(
                &what("running_mean (macro)"),
                &rm,
                st.running_mean.as_ref().expect("rm"),
            );
            same(
                &what("running_var (macro)"),
                &rv,
                st.running_var.as_ref().expect("rv"),
            );
        }
    }
}

macro_rules! masked_golden {
    ($($test:ident: $file:literal => $layer:expr;)*) => {
        mod masked_golden {
            use super::*;
            $(
                #[test]
                fn $test() {
                    run_masked::<f64>($file, &mut $layer);
                    run_masked::<f32>($file, &mut $layer);
                }
            )*
        }
    };
}

masked_golden! {
    layer_norm: "masked_layer_norm" => MaskedLayerNorm::new(6);
    token_norm: "masked_token_norm" => MaskedTokenNorm::new(5);
    batch_norm: "masked_batch_norm" => MaskedBatchNorm::new(3);
    batch_norm_rows: "masked_batch_norm_rows" => MaskedBatchNormRows::new(2);
}

// ---------------------------------------------------------------------------------------
// Finite differences and behaviour
// ---------------------------------------------------------------------------------------

/// A deterministic value in [-1, 1) per index (a small LCG; no extra dependency).
fn noise(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Central differences of L = Σ w·y against dx and dgamma of a masked LayerNorm, at masked
/// and unmasked positions, with one fully masked sequence.
#[test]
fn masked_dx_and_dgamma_match_finite_differences() {
    let spec =
        NormSpec::parse(r#"input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D""#).unwrap();
    let mut layer = DynNorm::<f64>::new(&spec, &[("D", 4)]).unwrap();
    let shape = [3, 4, 4];
    let x = ArrayD::from_shape_vec(IxDyn(&shape), noise(1, 48)).unwrap() * 3.0 + 1.0;
    let w = ArrayD::from_shape_vec(IxDyn(&shape), noise(2, 48)).unwrap();
    let gamma = ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.5, 1.5, -1.0, 2.0]).unwrap();
    layer.stages_mut()[0].gamma = Some(gamma.clone());
    let m = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| i[0] != 2 && (i[0] + i[1]) % 3 != 0);
    let loss = |layer: &mut DynNorm<f64>, x: &ArrayD<f64>| -> f64 {
        let (y, _) = layer
            .forward_masked(x.view(), m.view(), Mode::Train)
            .unwrap();
        (&y * &w).sum()
    };
    let (_, saved) = layer
        .forward_masked(x.view(), m.view(), Mode::Train)
        .unwrap();
    let g = layer.backward(x.view(), w.view(), &saved).unwrap();
    let h = 1e-6;
    for i in 0..48 {
        let idx = [i / 16, (i / 4) % 4, i % 4];
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[IxDyn(&idx)] += h;
        xm[IxDyn(&idx)] -= h;
        let fd = (loss(&mut layer, &xp) - loss(&mut layer, &xm)) / (2.0 * h);
        let an = g.dx[IxDyn(&idx)];
        assert!(
            (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
            "dx{idx:?}: fd {fd}, analytic {an}"
        );
        if idx[0] == 2 {
            assert_eq!(an, 0.0, "a fully masked sequence has zero dx");
        }
    }
    let dgamma = g.dgamma.expect("dgamma");
    for j in 0..4 {
        let mut l = [0.0; 2];
        for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
            let mut gm = gamma.clone();
            gm[j] += sign * h;
            layer.stages_mut()[0].gamma = Some(gm);
            l[k] = loss(&mut layer, &x);
        }
        layer.stages_mut()[0].gamma = Some(gamma.clone());
        let fd = (l[0] - l[1]) / (2.0 * h);
        assert!(
            (fd - dgamma[j]).abs() < 1e-6 * (1.0 + fd.abs()),
            "dgamma[{j}]: {fd} vs {}",
            dgamma[j]
        );
    }
}

/// The statistics ignore masked values: changing them changes nothing in the other
/// positions' outputs, and a fully masked group is zero (never NaN).
#[test]
fn masked_values_do_not_move_the_statistics() {
    let mut layer = MaskedLayerNorm::<f64>::new(3);
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3, 3]), noise(3, 18))
        .unwrap()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let m = normkit::ndarray::arr2(&[[true, true, false], [false, false, false]]);
    let (y1, _) = layer.forward_train(x.view(), m.view()).unwrap();
    let mut x2 = x.clone();
    x2[[0, 2, 1]] = 1e6;
    let (y2, _) = layer.forward_train(x2.view(), m.view()).unwrap();
    for t in 0..2 {
        for d in 0..3 {
            assert_eq!(y1[[0, t, d]], y2[[0, t, d]]);
        }
    }
    assert!(y1
        .index_axis(normkit::ndarray::Axis(0), 1)
        .iter()
        .all(|&v| v == 0.0));
    // The unmasked positions are standardized: mean 0, variance 1/(1 + eps/var) over them.
    let vals: Vec<f64> = (0..2)
        .flat_map(|t| (0..3).map(move |d| (t, d)))
        .map(|(t, d)| y1[[0, t, d]])
        .collect();
    let mean = vals.iter().sum::<f64>() / 6.0;
    assert!(mean.abs() < 1e-12, "{mean}");
}

/// A masked layer refuses a mask of the wrong shape, and the unmasked entry points.
#[test]
fn masked_errors() {
    let spec = NormSpec::parse(r#"input = "N,T,D", axes = "T,D", mask = "N,T""#).unwrap();
    let mut layer = DynNorm::<f32>::new(&spec, &[]).unwrap();
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4]));
    let bad = ArrayD::from_elem(IxDyn(&[2, 4]), true);
    let e = layer
        .forward_masked(x.view(), bad.view(), Mode::Train)
        .unwrap_err();
    assert!(e.to_string().contains("mask"), "{e}");
    let e = layer.forward(x.view(), Mode::Train).unwrap_err();
    assert!(e.to_string().contains("forward_masked"), "{e}");
    let plain = NormSpec::parse(r#"input = "N,T,D", axes = "T,D""#).unwrap();
    let mut plain = DynNorm::<f32>::new(&plain, &[]).unwrap();
    let ok = ArrayD::from_elem(IxDyn(&[2, 3]), true);
    let e = plain
        .forward_masked(x.view(), ok.view(), Mode::Train)
        .unwrap_err();
    assert!(e.to_string().contains("no `mask`"), "{e}");
}

/// With every position unmasked, a masked layer equals the unmasked one (to rounding: the
/// row kernels are the same, the merge order differs).
#[test]
fn all_true_mask_equals_unmasked() {
    let masked = NormSpec::parse(r#"input = "N,T,D", axes = "T,D", mask = "N,T""#).unwrap();
    let plain = NormSpec::parse(r#"input = "N,T,D", axes = "T,D""#).unwrap();
    let mut a = DynNorm::<f64>::new(&masked, &[]).unwrap();
    let mut b = DynNorm::<f64>::new(&plain, &[]).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 5, 7]), noise(9, 70)).unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(&[2, 5, 7]), noise(10, 70)).unwrap();
    let m = ArrayD::from_elem(IxDyn(&[2, 5]), true);
    let (ya, sa) = a.forward_masked(x.view(), m.view(), Mode::Train).unwrap();
    let (yb, sb) = b.forward(x.view(), Mode::Train).unwrap();
    let ga = a.backward(x.view(), dy.view(), &sa).unwrap();
    let gb = b.backward(x.view(), dy.view(), &sb).unwrap();
    for (p, q) in ya
        .iter()
        .zip(yb.iter())
        .chain(ga.dx.iter().zip(gb.dx.iter()))
    {
        assert!((p - q).abs() < 1e-12, "{p} vs {q}");
    }
}

/// A masked LayerNorm large enough to run its parts in parallel (≥ 65536 values), against a
/// plain per-sequence f64 implementation of the forward and backward formulas (the formulas
/// themselves are checked by finite differences above).
#[test]
fn large_masked_layer_norm_matches_a_direct_implementation() {
    let (n, t, d) = (4usize, 64usize, 300usize);
    let spec =
        NormSpec::parse(r#"input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D""#).unwrap();
    let mut layer = DynNorm::<f64>::new(&spec, &[("D", d)]).unwrap();
    let gamma = ArrayD::from_shape_vec(IxDyn(&[d]), noise(20, d)).unwrap() + 1.0;
    let beta = ArrayD::from_shape_vec(IxDyn(&[d]), noise(21, d)).unwrap();
    layer.stages_mut()[0].gamma = Some(gamma.clone());
    layer.stages_mut()[0].beta = Some(beta.clone());
    let x = ArrayD::from_shape_vec(IxDyn(&[n, t, d]), noise(22, n * t * d)).unwrap() * 2.0 + 5.0;
    let dy = ArrayD::from_shape_vec(IxDyn(&[n, t, d]), noise(23, n * t * d)).unwrap();
    let lens = [64usize, 45, 1, 0];
    let m = ArrayD::from_shape_fn(IxDyn(&[n, t]), |i| i[1] < lens[i[0]]);
    let (y, saved) = layer
        .forward_masked(x.view(), m.view(), Mode::Train)
        .unwrap();
    let g = layer.backward(x.view(), dy.view(), &saved).unwrap();
    let eps = 1e-5;
    let mut dgamma = vec![0.0; d];
    for s in 0..n {
        let cnt = (lens[s] * d) as f64;
        if lens[s] == 0 {
            for tt in 0..t {
                for k in 0..d {
                    assert_eq!(y[[s, tt, k]], 0.0);
                    assert_eq!(g.dx[[s, tt, k]], 0.0);
                }
            }
            continue;
        }
        let mut mean = 0.0;
        for tt in 0..lens[s] {
            for k in 0..d {
                mean += x[[s, tt, k]];
            }
        }
        mean /= cnt;
        let mut var = 0.0;
        for tt in 0..lens[s] {
            for k in 0..d {
                var += (x[[s, tt, k]] - mean).powi(2);
            }
        }
        var /= cnt;
        let r = 1.0 / (var + eps).sqrt();
        let (mut sg, mut sgx) = (0.0, 0.0);
        for tt in 0..t {
            for k in 0..d {
                let xh = (x[[s, tt, k]] - mean) * r;
                let want = xh * gamma[k] + beta[k];
                assert!((y[[s, tt, k]] - want).abs() < 1e-10 * (1.0 + want.abs()));
                let gg = dy[[s, tt, k]] * gamma[k];
                sg += gg;
                sgx += gg * xh;
                dgamma[k] += dy[[s, tt, k]] * xh;
            }
        }
        for tt in 0..t {
            for k in 0..d {
                let xh = (x[[s, tt, k]] - mean) * r;
                let mut want = dy[[s, tt, k]] * gamma[k] * r;
                if m[[s, tt]] {
                    want -= r * (sg + xh * sgx) / cnt;
                }
                let got = g.dx[[s, tt, k]];
                assert!(
                    (got - want).abs() < 1e-9 * (1.0 + want.abs()),
                    "dx[{s},{tt},{k}]: {got} vs {want}"
                );
            }
        }
    }
    let got = g.dgamma.unwrap();
    for k in 0..d {
        assert!((got[k] - dgamma[k]).abs() < 1e-9 * (1.0 + dgamma[k].abs()));
    }
}

// ---------------------------------------------------------------------------------------
// Property test over the key's combinations
// ---------------------------------------------------------------------------------------

mod mask_properties {
    use super::*;
    use proptest::prelude::*;

    /// Axis subsets of "N,T,D" as comma lists (bit i: axis i).
    fn names(bits: u8) -> String {
        ["N", "T", "D"]
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any statistics axes, any mask axes, any shape and mask: y and dx equal a direct
        /// f64 implementation (groups by the kept axes, statistics over the unmasked
        /// positions, zero for a group without one), with `center` on or off.
        #[test]
        fn masked_forward_backward_match_direct(
            axes in 1u8..8, maskb in 1u8..8, center in any::<bool>(),
            shape in (1usize..4, 1usize..5, 1usize..6),
            seed in 0u64..1000, bits in proptest::collection::vec(any::<bool>(), 60),
        ) {
            let (n, t, d) = shape;
            let sizes = [n, t, d];
            let src = format!(
                r#"input = "N,T,D", axes = "{}", mask = "{}", center = {center}"#,
                names(axes), names(maskb)
            );
            let spec = NormSpec::parse(&src).unwrap();
            let mut layer = DynNorm::<f64>::new(&spec, &[]).unwrap();
            let x = ArrayD::from_shape_vec(IxDyn(&[n, t, d]), noise(seed, n * t * d)).unwrap();
            let dy = ArrayD::from_shape_vec(IxDyn(&[n, t, d]), noise(seed + 1, n * t * d)).unwrap();
            let mshape: Vec<usize> = (0..3).filter(|i| maskb & (1 << i) != 0).map(|i| sizes[i]).collect();
            let mlen: usize = mshape.iter().product();
            let m = ArrayD::from_shape_vec(IxDyn(&mshape), bits[..mlen].to_vec()).unwrap();
            let (y, saved) = layer.forward_masked(x.view(), m.view(), Mode::Train).unwrap();
            let g = layer.backward(x.view(), dy.view(), &saved).unwrap();
            // Direct implementation.
            let key = |i: [usize; 3]| -> Vec<usize> {
                (0..3).filter(|a| axes & (1 << a) == 0).map(|a| i[a]).collect()
            };
            let mpos = |i: [usize; 3]| -> Vec<usize> {
                (0..3).filter(|a| maskb & (1 << a) != 0).map(|a| i[a]).collect()
            };
            let all: Vec<[usize; 3]> = (0..n)
                .flat_map(|a| (0..t).flat_map(move |b| (0..d).map(move |c| [a, b, c])))
                .collect();
            let on = |i: [usize; 3]| m[IxDyn(&mpos(i))];
            for &i in &all {
                let grp: Vec<[usize; 3]> = all.iter().copied().filter(|&j| key(j) == key(i)).collect();
                let real: Vec<[usize; 3]> = grp.iter().copied().filter(|&j| on(j)).collect();
                let (yi, dxi) = (y[IxDyn(&i)], g.dx[IxDyn(&i)]);
                if real.is_empty() {
                    prop_assert_eq!(yi, 0.0);
                    prop_assert_eq!(dxi, 0.0);
                    continue;
                }
                let cnt = real.len() as f64;
                let mean = if center { real.iter().map(|&j| x[IxDyn(&j)]).sum::<f64>() / cnt } else { 0.0 };
                let var = real.iter().map(|&j| (x[IxDyn(&j)] - mean).powi(2)).sum::<f64>() / cnt;
                let r = 1.0 / (var + 1e-5).sqrt();
                let want = (x[IxDyn(&i)] - mean) * r;
                prop_assert!((yi - want).abs() < 1e-9 * (1.0 + want.abs()), "y{:?}: {} vs {}", i, yi, want);
                let sg: f64 = grp.iter().map(|&j| dy[IxDyn(&j)]).sum();
                let sgx: f64 = grp.iter().map(|&j| dy[IxDyn(&j)] * (x[IxDyn(&j)] - mean) * r).sum();
                let mut dwant = dy[IxDyn(&i)] * r;
                if on(i) {
                    dwant -= r * want * sgx / cnt;
                    if center {
                        dwant -= r * sg / cnt;
                    }
                }
                prop_assert!((dxi - dwant).abs() < 1e-8 * (1.0 + dwant.abs()), "dx{:?}: {} vs {}", i, dxi, dwant);
            }
        }
    }
}
