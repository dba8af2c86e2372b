//! A small CNN trained in burn on the 8×8 handwritten digits (1,797 images shipped in the
//! `smartcore` crate), four times: with normkit-burn's GroupNorm and BatchNorm, and with
//! burn-nn's. Loss and held-out accuracy per epoch, a progress bar per epoch.
//!
//! ```text
//! cargo run --release -p normkit-burn --example burn_train            # 8 epochs per model
//! cargo run --release -p normkit-burn --example burn_train -- --quick # CI: one short epoch
//! ```
//!
//! Runs on `Device::flex().autodiff()`, where normkit-burn takes its fused path.

use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

/// A normalization layer over `[N, C, H, W]`.
trait Norm2d: Module + burn::module::ModuleDisplay {
    fn apply(&self, x: Tensor<4>) -> Tensor<4>;
}

impl Norm2d for normkit_burn::GroupNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm2d for normkit_burn::BatchNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm2d for burn::nn::GroupNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}
impl Norm2d for burn::nn::BatchNorm {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}

/// conv 3×3 (1→16) → norm → ReLU → conv 3×3 stride 2 (16→32) → norm → ReLU → linear (512→10).
#[derive(Module, Debug)]
struct Cnn<M: Module> {
    conv1: Conv2d,
    norm1: M,
    conv2: Conv2d,
    norm2: M,
    fc: Linear,
}

impl<M: Norm2d> Cnn<M> {
    fn new(norm: impl Fn(usize) -> M, device: &Device) -> Self {
        let pad = PaddingConfig2d::Explicit(1, 1, 1, 1);
        Cnn {
            conv1: Conv2dConfig::new([1, 16], [3, 3])
                .with_padding(pad.clone())
                .init(device),
            norm1: norm(16),
            conv2: Conv2dConfig::new([16, 32], [3, 3])
                .with_stride([2, 2])
                .with_padding(pad)
                .init(device),
            norm2: norm(32),
            fc: LinearConfig::new(32 * 4 * 4, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.norm1.apply(self.conv1.forward(x)));
        let x = relu(self.norm2.apply(self.conv2.forward(x)));
        let [n, c, h, w] = x.dims();
        self.fc.forward(x.reshape([n, c * h * w]))
    }
}

/// The digits as `[N, 1, 8, 8]` pixels in [0, 1] and labels.
struct Split {
    x: Vec<f32>,
    y: Vec<i64>,
}

impl Split {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn batch(&self, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let mut x = Vec::with_capacity(idx.len() * 64);
        for &i in idx {
            x.extend_from_slice(&self.x[i * 64..(i + 1) * 64]);
        }
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), 1, 8, 8]), device),
            Tensor::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }
}

/// A small deterministic generator for the split and the batch order.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn digits(quick: bool) -> (Split, Split) {
    let ds = smartcore::dataset::digits::load_dataset();
    assert_eq!(ds.num_features, 64, "8×8 images");
    let n = ds.num_samples;
    let mut order: Vec<usize> = (0..n).collect();
    Lcg(2026).shuffle(&mut order);
    let n_test = n / 5;
    let pick = |idx: &[usize]| Split {
        x: idx
            .iter()
            .flat_map(|&i| ds.data[i * 64..(i + 1) * 64].iter().map(|&p| p / 16.0))
            .collect(),
        y: idx.iter().map(|&i| ds.target[i] as i64).collect(),
    };
    let (test, train) = order.split_at(n_test);
    let train = if quick { &train[..256] } else { train };
    let test = if quick { &test[..128] } else { test };
    (pick(train), pick(test))
}

fn accuracy<M: Norm2d>(model: &Cnn<M>, data: &Split, device: &Device) -> f64 {
    let idx: Vec<usize> = (0..data.len()).collect();
    let (x, _) = data.batch(&idx, device);
    let logits: Vec<f32> = model.forward(x).into_data().iter::<f32>().collect();
    let correct = logits
        .chunks(10)
        .zip(&data.y)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k as i64);
            best == Some(y)
        })
        .count();
    correct as f64 / data.len() as f64
}

fn train<M: Norm2d>(
    name: &str,
    norm: impl Fn(usize) -> M,
    data: &(Split, Split),
    epochs: usize,
) -> f64 {
    let device = Device::flex().autodiff();
    device.seed(7);
    let mut model = Cnn::new(norm, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (train, test) = data;
    let batch = 64;
    let mut rng = Lcg(99);
    println!("{name}");
    let mut acc = 0.0;
    for epoch in 1..=epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        rng.shuffle(&mut order);
        let bar = ProgressBar::new(order.len().div_ceil(batch) as u64);
        bar.set_style(
            ProgressStyle::with_template("  epoch {msg} [{bar:30}] {pos}/{len} batches")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{epoch}/{epochs}"));
        let start = Instant::now();
        let (mut total, mut seen) = (0.0, 0usize);
        for idx in order.chunks(batch) {
            let (x, y) = train.batch(idx, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            total += loss
                .clone()
                .into_data()
                .iter::<f64>()
                .next()
                .unwrap_or(f64::NAN)
                * idx.len() as f64;
            seen += idx.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(2e-3, model, grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let eval = model.valid();
        acc = accuracy(&eval, test, &device.clone().without_autodiff());
        println!(
            "  epoch {epoch}/{epochs}: loss {:.4}, held-out accuracy {:.1}%, {:.2} s",
            total / seen as f64,
            100.0 * acc,
            start.elapsed().as_secs_f64()
        );
    }
    acc
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let epochs = if quick { 1 } else { 8 };
    let data = digits(quick);
    println!(
        "8×8 digits: {} training and {} held-out images, {epochs} epoch(s), Adam, batch 64, Device::flex().autodiff()\n",
        data.0.len(),
        data.1.len()
    );
    let dev = Device::flex().autodiff();
    let results = [
        (
            "normkit-burn GroupNorm(4)",
            train(
                "normkit-burn GroupNorm(4 groups)",
                |c| normkit_burn::GroupNormConfig::new(4, c).init(&dev),
                &data,
                epochs,
            ),
        ),
        (
            "burn-nn GroupNorm(4)",
            train(
                "burn-nn GroupNorm(4 groups)",
                |c| burn::nn::GroupNormConfig::new(4, c).init(&dev),
                &data,
                epochs,
            ),
        ),
        (
            "normkit-burn BatchNorm",
            train(
                "normkit-burn BatchNorm",
                |c| normkit_burn::BatchNormConfig::new(c).init(&dev),
                &data,
                epochs,
            ),
        ),
        (
            "burn-nn BatchNorm",
            train(
                "burn-nn BatchNorm",
                |c| burn::nn::BatchNormConfig::new(c).init(&dev),
                &data,
                epochs,
            ),
        ),
    ];
    println!("\nheld-out accuracy after {epochs} epoch(s):");
    for (name, acc) in results {
        println!("  {name:<28} {:.1}%", 100.0 * acc);
    }
}
