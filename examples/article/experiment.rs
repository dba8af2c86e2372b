//! One training run of the CNN on the digits, and many of them in parallel
//! with a progress bar.

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::data::Digits;
use crate::model::{self, Cnn, Error, NormKind, TrainConfig};
use crate::nn::{Normalizer, Phase, Rng, WeightTransform};
use crate::norms;

/// Channels of the first and second convolution.
pub const CHANNELS: (usize, usize) = (16, 32);
/// SGD momentum.
pub const MOMENTUM: f64 = 0.9;

/// What to train.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Normalizer in both conv blocks.
    pub kind: NormKind,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the initialization and the batch order.
    pub seed: u64,
    /// Keep the trained network (for later evaluation).
    pub keep: bool,
}

/// What a run produced.
pub struct RunResult {
    /// The configuration.
    pub spec: RunSpec,
    /// Held-out accuracy (inference mode: running statistics for BN).
    pub test_acc: f64,
    /// Mean training loss of the last epoch (∞ once diverged).
    pub train_loss: f64,
    /// The loss became non-finite.
    pub diverged: bool,
    /// The trained network, if `spec.keep`.
    pub model: Option<Cnn<f32>>,
}

/// Number of SGD steps of a run (for the progress bar).
pub fn steps(spec: &RunSpec, n_train: usize) -> u64 {
    (spec.epochs * (n_train / spec.batch)) as u64
}

/// A fresh network with the normalizer of `kind`.
pub fn network(kind: NormKind, seed: u64) -> Result<Cnn<f32>, Error> {
    let mut rng = Rng::new(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xC0FFEE);
    let norm = |c: usize| -> Box<dyn Normalizer<f32>> { norms::make_norm(kind, c) };
    let ws = || -> Option<Box<dyn WeightTransform<f32>>> { norms::make_ws(kind) };
    Ok(Cnn::new(CHANNELS.0, CHANNELS.1, &norm, &ws, &mut rng))
}

/// Trains and evaluates one configuration.
pub fn run(spec: RunSpec, data: &Digits, tick: &(dyn Fn(u64) + Sync)) -> Result<RunResult, Error> {
    let mut net = network(spec.kind, spec.seed)?;
    let cfg = TrainConfig {
        batch: spec.batch,
        epochs: spec.epochs,
        lr: spec.lr,
        momentum: MOMENTUM,
        seed: spec.seed ^ 0xBA7C4,
    };
    let report = model::train(&mut net, data.train_x.view(), &data.train_y, &cfg, tick)?;
    let test_acc = net.accuracy(data.test_x.view(), &data.test_y, 512, Phase::Eval)?;
    Ok(RunResult {
        train_loss: report.epoch_loss.last().copied().unwrap_or(f64::NAN),
        diverged: report.diverged,
        test_acc,
        model: spec.keep.then_some(net),
        spec,
    })
}

/// Runs every spec (in parallel) under one progress bar labelled `what`.
pub fn run_all(specs: Vec<RunSpec>, data: &Digits, what: &str) -> Result<Vec<RunResult>, Error> {
    let total: u64 = specs.iter().map(|s| steps(s, data.train_y.len())).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "  {prefix:<28} [{bar:36}] {percent:>3}%  {elapsed_precise} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{what} ({} runs)", specs.len()));
    // Longest runs (smallest batches) first, for a good parallel schedule.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(steps(&specs[i], data.train_y.len())));
    let tick = |n: u64| bar.inc(n);
    let mut results: Vec<(usize, RunResult)> = order
        .into_par_iter()
        .map(|i| run(specs[i].clone(), data, &tick).map(|r| (i, r)))
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}
