//! 30 SGD steps of a small CNN (conv → GroupNorm → ReLU → conv → BatchNorm → ReLU → linear)
//! with normkit-burn's layers and with burn-nn's, from the same initial weights on the same
//! batches: the losses agree within 1e-4 relative at every step (f32; the two layer
//! implementations round differently, and 30 steps of training carry that forward), and the
//! trained models agree in eval mode within 1e-2 — that also checks the running statistics
//! after training, up to the running variance's n/(n−1) = 432/431 (see tests/burn_nn.rs).

mod common;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{tensor, vals, Rng};

#[derive(Module, Debug)]
struct Net<G: Module, M: Module> {
    conv1: Conv2d,
    gn: G,
    conv2: Conv2d,
    bn: M,
    fc: Linear,
}

trait Norm4: Module + burn::module::ModuleDisplay {
    fn apply(&self, x: Tensor<4>) -> Tensor<4>;
}
impl Norm4 for normkit_burn::GroupNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm4 for normkit_burn::BatchNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm4 for burn::nn::GroupNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm4 for burn::nn::BatchNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}

impl<G: Module + Norm4, M: Module + Norm4> Net<G, M> {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.gn.apply(self.conv1.forward(x)));
        let x = relu(self.bn.apply(self.conv2.forward(x)));
        let [n, c, h, w] = x.dims();
        self.fc.forward(x.reshape([n, c * h * w]))
    }
}

#[test]
fn thirty_training_steps_give_burn_nns_losses() {
    let dev = Device::flex().autodiff();
    let mut rng = Rng::new(31);
    let pad = PaddingConfig2d::Explicit(1, 1, 1, 1);
    let conv1 = Conv2dConfig::new([1, 8], [3, 3])
        .with_padding(pad.clone())
        .init(&dev);
    let conv2 = Conv2dConfig::new([8, 6], [3, 3])
        .with_padding(pad)
        .init(&dev);
    let fc = LinearConfig::new(6 * 6 * 6, 4).init(&dev);
    let mut ours = Net {
        conv1: conv1.clone(),
        gn: normkit_burn::GroupNormConfig::new(4, 8).init(&dev),
        conv2: conv2.clone(),
        bn: normkit_burn::BatchNormConfig::new(6).init(&dev),
        fc: fc.clone(),
    };
    let mut theirs = Net {
        conv1,
        gn: burn::nn::GroupNormConfig::new(4, 8).init(&dev),
        conv2,
        bn: burn::nn::BatchNormConfig::new(6).init(&dev),
        fc,
    };
    let mut opt_ours = SgdConfig::new().init();
    let mut opt_theirs = SgdConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&dev);
    let (n, steps, lr) = (12usize, 30, 0.05);
    for step in 0..steps {
        let x = tensor(&mut rng, [n, 1, 6, 6], -1.0, 1.0, &dev, false);
        let labels: Vec<i64> = (0..n).map(|_| (rng.next_u64() % 4) as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &dev);
        let loss_a = loss_fn.forward(ours.forward(x.clone()), y.clone());
        let loss_b = loss_fn.forward(theirs.forward(x), y);
        let (la, lb) = (vals(loss_a.clone())[0], vals(loss_b.clone())[0]);
        assert!(
            (la - lb).abs() <= 1e-4 * lb.abs().max(1.0),
            "step {step}: loss {la} (normkit-burn) vs {lb} (burn-nn)"
        );
        let ga = GradientsParams::from_grads(loss_a.backward(), &ours);
        let gb = GradientsParams::from_grads(loss_b.backward(), &theirs);
        ours = opt_ours.step(lr, ours, ga);
        theirs = opt_theirs.step(lr, theirs, gb);
    }
    // Eval mode (running statistics): the trained models still agree.
    let x = tensor(&mut rng, [5, 1, 6, 6], -1.0, 1.0, &dev, false);
    let (a, b) = (ours.valid(), theirs.valid());
    let xa = x.clone().without_autodiff();
    let ya = vals(a.forward(xa.clone()));
    let yb = vals(b.forward(xa));
    common::assert_close("eval logits after training", &ya, &yb, 1e-2);
}
