//! One training run of the deep MLP on the hard digits, with the held-out
//! accuracy after every epoch, and many runs in parallel (seeds on both
//! cores) under a progress bar.

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use crate::data::Digits;
use crate::mlp::Mlp;
use crate::model::NormKind;
use crate::nn::{self, c, Error, Normalizer, Phase, Rng, Sgd, WeightTransform};
use crate::norms;
use crate::protocol::{self, DEPTH, MOMENTUM, WIDTH};

/// A final accuracy below this counts as a failed run (chance is 10 %).
pub const FAILED_BELOW: f64 = 0.2;

/// The hard digits as flat rows, ready for the MLP.
pub struct Flat {
    /// Training rows `N × 64` (standardized pixels).
    pub train_x: Array2<f32>,
    /// Training labels.
    pub train_y: Vec<usize>,
    /// Held-out rows.
    pub test_x: Array2<f32>,
    /// Held-out labels.
    pub test_y: Vec<usize>,
}

impl Flat {
    /// Flattens the images and standardizes every pixel with the training
    /// set's mean and standard deviation (part 1's lesson, applied to the
    /// inputs of every network alike).
    pub fn new(d: &Digits) -> Result<Self, Error> {
        let (train_x, test_x) = norms::standardize_pixels(d.train_x.view(), d.test_x.view())?;
        let flat = |x: ndarray::Array4<f32>| {
            let n = x.dim().0;
            x.into_shape_with_order((n, 64)).expect("8×8 images")
        };
        Ok(Self {
            train_x: flat(train_x),
            train_y: d.train_y.clone(),
            test_x: flat(test_x),
            test_y: d.test_y.clone(),
        })
    }
}

/// What to train.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Normalizer in every hidden layer.
    pub kind: NormKind,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the initialization and the batch order.
    pub seed: u64,
    /// Keep the trained network.
    pub keep: bool,
}

/// What a run produced.
pub struct RunResult {
    /// The configuration.
    pub spec: RunSpec,
    /// Mean training loss of each epoch (∞ from the epoch it diverged in).
    pub epoch_loss: Vec<f64>,
    /// Held-out accuracy after each epoch (inference mode).
    pub epoch_acc: Vec<f64>,
    /// The loss became non-finite (or exceeded 1e6).
    pub diverged: bool,
    /// The trained network, if `spec.keep`.
    pub model: Option<Mlp<f32>>,
}

impl RunResult {
    /// Held-out accuracy after the last epoch.
    pub fn final_acc(&self) -> f64 {
        self.epoch_acc.last().copied().unwrap_or(f64::NAN)
    }

    /// Diverged, or ended near chance.
    pub fn failed(&self) -> bool {
        let acc = self.final_acc();
        self.diverged || acc.is_nan() || acc < FAILED_BELOW
    }

    /// The first epoch (1-based) after which the held-out accuracy is at
    /// least `target`, or `epochs + 1` if it never is (a censored count).
    pub fn epochs_to(&self, target: f64) -> usize {
        self.epoch_acc
            .iter()
            .position(|&a| a >= target)
            .map_or(self.spec.epochs + 1, |i| i + 1)
    }
}

/// SGD steps of a run (for the progress bar).
pub fn steps(spec: &RunSpec, n_train: usize) -> u64 {
    (spec.epochs * (n_train / spec.batch)) as u64
}

/// A fresh network with the normalizer of `kind`; the weights depend on the
/// seed only, so every normalizer starts from the same weights.
pub fn network(kind: NormKind, seed: u64) -> Mlp<f32> {
    let mut rng = Rng::new(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xC0FFEE);
    let norm = |width: usize| -> Box<dyn Normalizer<f32>> { norms::make_norm(kind, width) };
    let ws = || -> Option<Box<dyn WeightTransform<f32>>> { norms::make_ws(kind) };
    Mlp::new(64, WIDTH, DEPTH, protocol::CLASSES, &norm, &ws, &mut rng)
}

/// Trains and evaluates one configuration; `tick` is called after each step.
pub fn run(spec: RunSpec, data: &Flat, tick: &(dyn Fn(u64) + Sync)) -> Result<RunResult, Error> {
    let mut net = network(spec.kind, spec.seed);
    let mut rng = Rng::new(spec.seed ^ 0xBA7C4);
    let mut opt = Sgd::new(c(spec.lr), c(MOMENTUM));
    let n = data.train_y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let per_epoch = n / spec.batch;
    let (mut epoch_loss, mut epoch_acc) = (Vec::new(), Vec::new());
    let mut diverged = false;
    for epoch in 0..spec.epochs {
        if diverged {
            // A diverged network stays diverged: its parameters are NaN/inf.
            epoch_loss.push(f64::INFINITY);
            epoch_acc.push(epoch_acc.last().copied().unwrap_or(f64::NAN));
            continue;
        }
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for (i, chunk) in order.chunks_exact(spec.batch).enumerate() {
            let xb = data.train_x.select(Axis(0), chunk);
            let yb: Vec<usize> = chunk.iter().map(|&i| data.train_y[i]).collect();
            let logits = net.forward(xb.view(), Phase::Train)?;
            let (loss, dlogits) = nn::softmax_cross_entropy(logits.view(), &yb);
            let loss = f64::from(loss);
            if !loss.is_finite() || loss > 1e6 {
                diverged = true;
                tick(((spec.epochs - epoch) * per_epoch - i) as u64);
                break;
            }
            sum += loss;
            net.backward(dlogits.view())?;
            net.step(&mut opt);
            tick(1);
        }
        epoch_loss.push(if diverged {
            f64::INFINITY
        } else {
            sum / per_epoch.max(1) as f64
        });
        // What the network does now (a diverged one: NaN logits, class 0).
        epoch_acc.push(net.accuracy(data.test_x.view(), &data.test_y, 512, Phase::Eval)?);
    }
    Ok(RunResult {
        epoch_loss,
        epoch_acc,
        diverged,
        model: spec.keep.then_some(net),
        spec,
    })
}

/// Runs every spec (in parallel on rayon's pool) under one progress bar
/// labelled `what`; results come back in the order of `specs`.
pub fn run_all(specs: Vec<RunSpec>, data: &Flat, what: &str) -> Result<Vec<RunResult>, Error> {
    let n = data.train_y.len();
    let total: u64 = specs.iter().map(|s| steps(s, n)).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "  {prefix:<34} [{bar:32}] {percent:>3}%  {elapsed_precise} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{what} ({} runs)", specs.len()));
    // Longest runs (smallest batches) first, for a good parallel schedule.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(steps(&specs[i], n)));
    let tick = |k: u64| bar.inc(k);
    let mut results: Vec<(usize, RunResult)> = order
        .into_par_iter()
        .map(|i| run(specs[i].clone(), data, &tick).map(|r| (i, r)))
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}
