//! Central finite-difference gradient checks in f64 for every variant, in train and eval
//! mode: the generated `backward` must agree with the derivative of the generated
//! `forward`. The loss is L = Σ w·y for a fixed random `w`, so `dy = w`.

use normkit::ndarray::{ArrayD, Dimension, IxDyn};
use normkit::prelude::*;

/// A small deterministic generator (SplitMix64) so the tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || lo + (hi - lo) * self.next())
    }
}

/// Forward `y(x, params)` and backward `(dx, dparams)(x, params, dy)` of one layer setup.
type Fwd<'a> = dyn Fn(&ArrayD<f64>, &[ArrayD<f64>]) -> ArrayD<f64> + 'a;
type Bwd<'a> =
    dyn Fn(&ArrayD<f64>, &[ArrayD<f64>], &ArrayD<f64>) -> (ArrayD<f64>, Vec<ArrayD<f64>>) + 'a;

/// Compares the analytic gradients with central differences of L = Σ w·y.
fn gradcheck(name: &str, x: ArrayD<f64>, params: Vec<ArrayD<f64>>, fwd: &Fwd<'_>, bwd: &Bwd<'_>) {
    let mut rng = Rng(0xfeed ^ x.len() as u64);
    let y = fwd(&x, &params);
    let w = rng.array(y.shape(), -1.0, 1.0);
    let loss = |x: &ArrayD<f64>, p: &[ArrayD<f64>]| (fwd(x, p) * &w).sum();
    let (dx, dparams) = bwd(&x, &params, &w);
    assert_eq!(
        dparams.len(),
        params.len(),
        "{name}: parameter gradient count"
    );
    let h = 1e-5;
    let check = |what: &str,
                 analytic: &ArrayD<f64>,
                 mut perturb: Box<dyn FnMut(usize, f64) -> f64 + '_>| {
        let scale = analytic.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, &a) in analytic.iter().enumerate() {
            let numeric = (perturb(i, h) - perturb(i, -h)) / (2.0 * h);
            let err = (numeric - a).abs();
            assert!(
                err <= 1e-6 * scale + 1e-8,
                "{name}: d{what}[{i}] analytic {a:.10e} vs numeric {numeric:.10e} (scale {scale:.3e})"
            );
        }
    };
    check(
        "x",
        &dx,
        Box::new(|i, d| {
            let mut xp = x.clone();
            xp.as_slice_mut().expect("standard layout")[i] += d;
            loss(&xp, &params)
        }),
    );
    for (k, dp) in dparams.iter().enumerate() {
        assert_eq!(
            dp.shape(),
            params[k].shape(),
            "{name}: param {k} gradient shape"
        );
        check(
            &format!("param{k}"),
            dp,
            Box::new(|i, d| {
                let mut p = params.clone();
                p[k].as_slice_mut().expect("standard layout")[i] += d;
                loss(&x, &p)
            }),
        );
    }
}

/// Converts a dynamic array to the static dimension of a field.
fn fixed<D: Dimension>(a: &ArrayD<f64>) -> normkit::ndarray::Array<f64, D> {
    a.clone()
        .into_dimensionality::<D>()
        .expect("parameter rank")
}

/// Declares the gradient-check tests of one single-stage layer: `$fields` are the learnable
/// fields in the order of `$grads` (`dgamma`, `dbeta`), `$running` whether it has running
/// statistics (set to random values so eval mode uses non-trivial fixed statistics).
macro_rules! gradcheck_layer {
    ($train:ident, $eval:ident, $ty:ty, new($($arg:expr),*), $shape:expr,
     fields [$($field:ident => $grad:ident),*], running = $running:tt) => {
        #[allow(unused_mut, unused_variables)]
        fn setup(rng: &mut Rng) -> ($ty, Vec<ArrayD<f64>>) {
            let layer = <$ty>::new($($arg),*);
            let params: Vec<ArrayD<f64>> = vec![$( rng.array(layer.$field.shape(), 0.5, 1.5) ),*];
            (layer, params)
        }
        #[allow(unused_mut, unused_variables)]
        fn build(params: &[ArrayD<f64>], running: &[ArrayD<f64>]) -> $ty {
            let mut layer = <$ty>::new($($arg),*);
            let mut k = 0;
            $( layer.$field = fixed(&params[k]); k += 1; )*
            let _ = k;
            gradcheck_layer!(@running $running, layer, running);
            layer
        }
        fn run(mode: Mode, name: &str) {
            let mut rng = Rng(0x5eed);
            let (layer, params) = setup(&mut rng);
            let running: Vec<ArrayD<f64>> = gradcheck_layer!(@make_running $running, layer, rng);
            let x = rng.array(&$shape, -2.0, 2.0);
            let fwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>]| -> ArrayD<f64> {
                let mut l = build(p, &running);
                let (y, _) = l.forward(x.view().into_dimensionality().expect("rank"), mode).expect("forward");
                y.into_dyn()
            };
            let bwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>], dy: &ArrayD<f64>| {
                let mut l = build(p, &running);
                let xv = x.view().into_dimensionality().expect("rank");
                let (_, saved) = l.forward(xv, mode).expect("forward");
                let g = l.backward(xv, dy.view().into_dimensionality().expect("rank"), &saved).expect("backward");
                let dp: Vec<ArrayD<f64>> = vec![$( g.$grad.clone().expect(stringify!($grad)) ),*];
                (g.dx.into_dyn(), dp)
            };
            gradcheck(name, x, params, &fwd, &bwd);
        }
        #[test]
        fn $train() {
            run(Mode::Train, stringify!($train));
        }
        #[test]
        fn $eval() {
            run(Mode::Eval, stringify!($eval));
        }
    };
    (@running true, $layer:ident, $running:ident) => {
        $layer.running_mean = fixed(&$running[0]);
        $layer.running_var = fixed(&$running[1]);
    };
    (@running false, $layer:ident, $running:ident) => { let _ = $running; };
    (@make_running true, $layer:ident, $rng:ident) => {
        vec![$rng.array($layer.running_mean.shape(), -0.5, 0.5), $rng.array($layer.running_var.shape(), 0.5, 2.0)]
    };
    (@make_running false, $layer:ident, $rng:ident) => { { let _ = &$layer; Vec::new() } };
}

mod standardize {
    use super::*;
    /// Input standardization of a feature matrix.
    #[norm(input = "N,F", axes = "N")]
    struct Standardize;
    gradcheck_layer!(train, eval, Standardize<f64>, new(), [6, 3], fields [], running = false);
}

mod bn_nc {
    use super::*;
    #[norm(input = "N,C", axes = "N", affine, running_stats)]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(3), [5, 3], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod bn_ncl {
    use super::*;
    #[norm(
        input = "N,C,L",
        axes = "N,L",
        affine,
        running_stats,
        momentum = "cumulative"
    )]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(2), [3, 2, 5], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod bn_nchw {
    use super::*;
    #[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(3), [2, 3, 3, 2], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod bn_ncdhw {
    use super::*;
    #[norm(input = "N,C,D,H,W", axes = "N,D,H,W", affine, running_stats)]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(2), [2, 2, 2, 2, 3], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod bn_nhwc {
    use super::*;
    #[norm(input = "N,H,W,C", axes = "N,H,W", affine, running_stats)]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(3), [2, 3, 2, 3], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod bn_scale_only {
    use super::*;
    #[norm(input = "N,C,L", axes = "N,L", affine, bias = false)]
    struct Bn;
    gradcheck_layer!(train, eval, Bn<f64>, new(3), [3, 3, 4], fields [gamma => dgamma], running = false);
}

mod ln_ntd {
    use super::*;
    #[norm(input = "N,T,D", axes = "D", affine = "D")]
    struct Ln;
    gradcheck_layer!(train, eval, Ln<f64>, new(5), [2, 3, 5], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod ln_chw {
    use super::*;
    #[norm(input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W")]
    struct Ln;
    gradcheck_layer!(train, eval, Ln<f64>, new(2, 3, 2), [2, 2, 3, 2], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod instance_affine_running {
    use super::*;
    #[norm(input = "N,C,H,W", axes = "H,W", affine, running_stats, momentum = 0.3)]
    struct In;
    gradcheck_layer!(train, eval, In<f64>, new(3), [2, 3, 3, 3], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod instance_plain {
    use super::*;
    #[norm(input = "N,C,L", axes = "L")]
    struct In;
    gradcheck_layer!(train, eval, In<f64>, new(), [2, 3, 6], fields [], running = false);
}

mod group_norm {
    use super::*;
    #[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
    struct Gn;
    gradcheck_layer!(train, eval, Gn<f64>, new(4), [2, 4, 2, 3], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod group_norm_group_affine_running {
    use super::*;
    #[norm(input = "N,C,L", axes = "C,L", groups = 3, affine = "G", running_stats)]
    struct Gn;
    gradcheck_layer!(train, eval, Gn<f64>, new(), [2, 6, 4], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod weight_standardization {
    use super::*;
    #[norm(
        input = "O,I,kh,kw",
        axes = "I,kh,kw",
        unbiased,
        eps_mode = "std",
        eps = 1e-5
    )]
    struct Ws;
    gradcheck_layer!(train, eval, Ws<f64>, new(), [3, 2, 3, 3], fields [], running = false);
}

mod unbiased_var_mode {
    use super::*;
    #[norm(input = "N,C,L", axes = "L", unbiased, affine)]
    struct U;
    gradcheck_layer!(train, eval, U<f64>, new(2), [2, 2, 5], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod std_mode_biased {
    use super::*;
    #[norm(input = "N,D", axes = "D", eps_mode = "std", eps = 1e-3, affine = "D")]
    struct S;
    gradcheck_layer!(train, eval, S<f64>, new(7), [3, 7], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod rms_norm {
    use super::*;
    #[norm(
        input = "N,T,D",
        axes = "D",
        center = false,
        affine = "D",
        bias = false,
        eps = 1e-6
    )]
    struct Rms;
    gradcheck_layer!(train, eval, Rms<f64>, new(6), [2, 2, 6], fields [gamma => dgamma], running = false);
}

mod rms_std_mode {
    use super::*;
    #[norm(
        input = "N,D",
        axes = "D",
        center = false,
        eps_mode = "std",
        eps = 1e-4
    )]
    struct Rms;
    gradcheck_layer!(train, eval, Rms<f64>, new(), [3, 5], fields [], running = false);
}

mod positional {
    use super::*;
    #[norm(input = "N,C,H,W", axes = "C", affine)]
    struct Pn;
    gradcheck_layer!(train, eval, Pn<f64>, new(4), [2, 4, 2, 3], fields [gamma => dgamma, beta => dbeta], running = false);
}

mod interleaved {
    use super::*;
    /// Kept and reduced runs interleave (R K R K): the general path.
    #[norm(input = "A,B,C,D", axes = "A,C", affine = "B,C", running_stats)]
    struct Mixed;
    gradcheck_layer!(train, eval, Mixed<f64>, new(3, 2, 4), [2, 3, 2, 4], fields [gamma => dgamma, beta => dbeta], running = true);
}

mod adain {
    use super::*;
    /// AdaIN: unbiased instance statistics, eps inside the root, external scale and shift.
    #[norm(input = "N,C,H,W", axes = "H,W", unbiased, affine = external)]
    struct AdaIn;

    fn run(mode: Mode) {
        let mut rng = Rng(0xada1);
        let x = rng.array(&[2, 3, 3, 2], -2.0, 2.0);
        let params = vec![rng.array(&[2, 3], 0.5, 1.5), rng.array(&[2, 3], -1.0, 1.0)];
        let fwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>]| -> ArrayD<f64> {
            let mut l = AdaIn::<f64>::new();
            let (y, _) = l
                .forward(
                    x.view().into_dimensionality().expect("rank"),
                    p[0].view().into_dimensionality().expect("rank"),
                    p[1].view().into_dimensionality().expect("rank"),
                    mode,
                )
                .expect("forward");
            y.into_dyn()
        };
        let bwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>], dy: &ArrayD<f64>| {
            let mut l = AdaIn::<f64>::new();
            let xv = x.view().into_dimensionality().expect("rank");
            let (_, saved) = l
                .forward(
                    xv,
                    p[0].view().into_dimensionality().expect("rank"),
                    p[1].view().into_dimensionality().expect("rank"),
                    mode,
                )
                .expect("forward");
            let g = l
                .backward(xv, dy.view().into_dimensionality().expect("rank"), &saved)
                .expect("backward");
            (
                g.dx.into_dyn(),
                vec![g.dgamma.expect("dscale"), g.dbeta.expect("dshift")],
            )
        };
        gradcheck("adain", x, params, &fwd, &bwd);
    }

    #[test]
    fn train() {
        run(Mode::Train);
    }
    #[test]
    fn eval() {
        run(Mode::Eval);
    }
}

mod batch_channel_norm {
    use super::*;
    /// Batch-Channel Normalization: BN with running statistics, then per-(sample, group)
    /// normalization with per-group affine and batch statistics even in eval.
    #[norm(
        input = "N,C,H,W",
        chain(
            bn(axes = "N,H,W", affine, running_stats),
            gn(axes = "C,H,W", groups = 2, affine = "G")
        )
    )]
    struct Bcn;

    fn build(p: &[ArrayD<f64>], running: &[ArrayD<f64>]) -> Bcn<f64> {
        let mut l = Bcn::<f64>::new(4);
        l.bn.gamma = fixed(&p[0]);
        l.bn.beta = fixed(&p[1]);
        l.gn.gamma = fixed(&p[2]);
        l.gn.beta = fixed(&p[3]);
        l.bn.running_mean = fixed(&running[0]);
        l.bn.running_var = fixed(&running[1]);
        l
    }

    fn run(mode: Mode) {
        let mut rng = Rng(0xbc1);
        let x = rng.array(&[2, 4, 2, 3], -2.0, 2.0);
        let params = vec![
            rng.array(&[4], 0.5, 1.5),
            rng.array(&[4], -0.5, 0.5),
            rng.array(&[2], 0.5, 1.5),
            rng.array(&[2], -0.5, 0.5),
        ];
        let running = vec![rng.array(&[4], -0.5, 0.5), rng.array(&[4], 0.5, 2.0)];
        let fwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>]| -> ArrayD<f64> {
            let mut l = build(p, &running);
            let (y, _) = l
                .forward(x.view().into_dimensionality().expect("rank"), mode)
                .expect("forward");
            y.into_dyn()
        };
        let bwd = |x: &ArrayD<f64>, p: &[ArrayD<f64>], dy: &ArrayD<f64>| {
            let mut l = build(p, &running);
            let xv = x.view().into_dimensionality().expect("rank");
            let (_, saved) = l.forward(xv, mode).expect("forward");
            let g = l
                .backward(xv, dy.view().into_dimensionality().expect("rank"), &saved)
                .expect("backward");
            let dp = vec![
                g.bn.dgamma.clone().expect("bn dgamma"),
                g.bn.dbeta.clone().expect("bn dbeta"),
                g.gn.dgamma.clone().expect("gn dgamma"),
                g.gn.dbeta.clone().expect("gn dbeta"),
            ];
            (g.dx.into_dyn(), dp)
        };
        gradcheck("bcn", x, params, &fwd, &bwd);
    }

    #[test]
    fn train() {
        run(Mode::Train);
    }
    #[test]
    fn eval() {
        run(Mode::Eval);
    }
}
