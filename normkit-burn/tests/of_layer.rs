//! `NormModuleConfig::of(&layer)`: a user's `#[norm]` declaration (any `normkit::NormLayer`)
//! as a burn module computes what the declaration computes — the module's output and input
//! gradient equal the layer's own forward and backward through `NormLayer` (f32, to 1e-5
//! relative: the same kernels, the module reading its γ/β from burn parameters).

mod common;

use burn::tensor::Device;
use common::{assert_close, tensor, vals, Rng};
use normkit::ndarray::{ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::NormLayer;
use normkit_burn::NormModuleConfig;

/// Group statistics, one γ/β per group, ε outside the square root: a variant burn-nn lacks.
#[norm(
    input = "N,C,H,W",
    axes = "C,H,W",
    groups = 2,
    affine = "G",
    eps_mode = "std"
)]
pub struct GroupStd;

fn check<L: NormLayer<Elem = f32>>(layer: &mut L, sizes: Vec<(String, usize)>, shape: [usize; 4]) {
    let device = Device::flex().autodiff();
    let mut rng = Rng::new(41);
    let x = tensor(&mut rng, shape, -2.0, 2.0, &device, false);
    let module = NormModuleConfig::of(layer).with_sizes(sizes).init(&device);
    let xg = x.clone().detach().require_grad();
    let y = module.forward(xg.clone());
    let grads = y.clone().sum().backward();
    let dx = vals(xg.grad(&grads).expect("dx"));

    let xs: Vec<f32> = vals(x).into_iter().map(|v| v as f32).collect();
    let xa = ArrayD::from_shape_vec(IxDyn(&shape), xs).expect("shape");
    let (want_y, saved) = layer
        .forward_layer(xa.view(), None, Mode::Train)
        .expect("forward");
    let dy = ArrayD::ones(xa.raw_dim());
    let want = layer
        .backward_layer(xa.view(), dy.view(), &saved)
        .expect("backward");
    let flat = |a: &ArrayD<f32>| a.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    assert_close("y", &vals(y), &flat(&want_y), 1e-5);
    assert_close("dx", &dx, &flat(&want.dx), 1e-5);
}

#[test]
fn a_declared_layer_and_its_burn_module_agree() {
    check(&mut GroupStd::<f32>::default(), Vec::new(), [2, 4, 3, 3]);
}

#[test]
fn a_dyn_norm_with_running_statistics_and_sizes() {
    let spec = NormSpec::parse(r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#)
        .expect("spec");
    let mut bn = DynNorm::<f32>::new(&spec, &[("C", 3)]).expect("layer");
    check(&mut bn, vec![("C".into(), 3)], [4, 3, 2, 5]);
}
