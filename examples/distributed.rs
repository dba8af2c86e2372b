//! Data-parallel training with synchronized batch statistics over MPI (feature `mpi`).
//!
//! ```text
//! cargo build --release --features mpi --example distributed
//! mpirun -np 4 target/release/examples/distributed            # --oversubscribe on < 4 cores
//! mpirun -np 4 target/release/examples/distributed -- --epochs 5
//! ```
//!
//! The digits CNN of the article tour (`examples/article/`: conv3×3 → norm → ReLU →
//! maxpool → conv3×3 → norm → ReLU → maxpool → linear) trained data-parallel: every rank
//! holds the same parameters and a micro-batch of **2** images of each global batch
//! (2 × ranks images); after each backward pass the parameter gradients are summed over the
//! ranks (one `MPI_Allreduce`) so that the parameters stay identical. Three normalizers:
//!
//! - **local BN**: each rank normalizes its 2 images with their own statistics (what plain
//!   data parallelism does): 2·8·8 = 128 values per channel in block 1, 2·4·4 = 32 in
//!   block 2, and running statistics from those tiny batches;
//! - **SyncBN**: the same layer called with `forward_sync`/`backward_sync` over an
//!   [`MpiCollective`]: statistics over the whole global batch, as on one machine;
//! - **GN**: group norm, independent of the batch (no exchange needed).
//!
//! Rank 0 evaluates on the held-out digits (eval mode: running statistics for BN; local BN
//! uses rank 0's running statistics, as PyTorch's DDP broadcasts rank 0's buffers) and prints
//! an accuracy table with the bytes each rank exchanged per step.

#[allow(dead_code)]
#[path = "article/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "article/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "article/nn.rs"]
mod nn;
#[allow(dead_code)]
#[path = "article/norms.rs"]
mod norms;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use normkit::mpi::collective::SystemOperation;
use normkit::mpi::topology::SimpleCommunicator;
use normkit::mpi::traits::CommunicatorCollectives;
use normkit::ndarray::{Array4, ArrayD, ArrayView4, Axis};
use normkit::prelude::*;
use normkit::{Collective, MpiCollective};

use model::{Cnn, NormKind};
use nn::{Error, Normalizer, Phase, Rng, Sgd};
use norms::BatchNorm;

/// Images per rank and step.
const MICRO_BATCH: usize = 2;
/// Channels of the two convolution blocks.
const CHANNELS: (usize, usize) = (16, 32);
/// Learning rate at a global batch of 32 (scaled linearly), and momentum.
const LR32: f64 = 0.1;
const MOMENTUM: f64 = 0.9;

thread_local! {
    /// This rank's MPI collective. Like the communicator it wraps it stays on the thread that
    /// created it (the main thread); the layers call it only from there.
    static MPI: std::cell::OnceCell<MpiCollective> = const { std::cell::OnceCell::new() };
}

/// A [`Collective`] that counts the exchanges of this thread's [`MpiCollective`].
struct Counting {
    rank: usize,
    size: usize,
    /// (all-gathers, bytes received).
    count: Mutex<(usize, usize)>,
}

impl Collective for Counting {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        MPI.with(|m| match m.get() {
            Some(m) => m.all_gather(local, out),
            None => Err("the MPI collective lives on the main thread".to_string()),
        })?;
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += 1;
        c.1 += 8 * out.len();
        Ok(())
    }
}

/// Synchronized BN: the article's `BatchNorm` called through `forward_sync`/`backward_sync`.
struct SyncBn {
    layer: BatchNorm<f32>,
    comm: Arc<Counting>,
    cache: Option<(Array4<f32>, Saved<f32>)>,
    grads: [Option<ArrayD<f32>>; 2],
}

impl Normalizer<f32> for SyncBn {
    fn name(&self) -> &'static str {
        "SyncBN"
    }

    fn forward(&mut self, x: Array4<f32>, phase: Phase) -> Result<Array4<f32>, Error> {
        let comm: &dyn Collective = &*self.comm;
        let (y, saved) = match phase {
            Phase::Train => self.layer.forward_sync(x.view(), Mode::Train, comm)?,
            // Running statistics: nothing to exchange (rank 0 evaluates alone).
            Phase::Eval => self.layer.forward(x.view(), Mode::Eval)?,
            Phase::BatchStats => {
                // Batch statistics without touching the running ones.
                let l = &self.layer;
                let keep = (
                    l.running_mean.clone(),
                    l.running_var.clone(),
                    l.num_batches_tracked,
                );
                let out = self.layer.forward_sync(x.view(), Mode::Train, comm)?;
                let l = &mut self.layer;
                (l.running_mean, l.running_var, l.num_batches_tracked) = keep;
                out
            }
        };
        self.cache = Some((x, saved));
        Ok(y)
    }

    fn backward(&mut self, dy: ArrayView4<'_, f32>) -> Result<Array4<f32>, Error> {
        let (x, saved) = self.cache.take().ok_or("backward without a forward pass")?;
        let g = self
            .layer
            .backward_sync(x.view(), dy, &saved, &*self.comm)?;
        // This rank's share of dγ, dβ: summed over the ranks with the other gradients.
        self.grads = [g.dgamma, g.dbeta];
        Ok(g.dx)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut [f32], &[f32])) {
        let params = [&mut self.layer.gamma, &mut self.layer.beta];
        for (p, g) in params.into_iter().zip(&self.grads) {
            let p = p.as_slice_mut().expect("contiguous");
            match g {
                Some(g) => f(p, g.as_slice().expect("contiguous")),
                None => f(p, &vec![0.0; p.len()]),
            }
        }
    }
}

/// What one training run reports.
struct RunResult {
    /// Held-out accuracy (rank 0; NaN elsewhere).
    accuracy: f64,
    /// Mean training loss of the last epoch (over the global batches).
    last_loss: f64,
    /// BN statistics exchanges per step and rank.
    gathers_per_step: f64,
    /// Bytes received by each rank in those exchanges, per step.
    gather_bytes_per_step: f64,
    /// The payload of the gradient all-reduce (f32 per parameter).
    allreduce_bytes: usize,
    /// Training time.
    seconds: f64,
}

fn train(
    kind: &str,
    world: &SimpleCommunicator,
    comm: &Arc<Counting>,
    digits: &data::Digits,
    epochs: usize,
    seed: u64,
) -> Result<RunResult, Error> {
    let (rank, size) = (comm.rank(), comm.size());
    *comm.count.lock().unwrap_or_else(|e| e.into_inner()) = (0, 0);
    // The same seed on every rank: identical initial parameters and batch order.
    let mut rng = Rng::new(seed);
    let make: Box<dyn Fn(usize) -> Box<dyn Normalizer<f32>>> = match kind {
        "local BN" => Box::new(|c| norms::make_norm(NormKind::Batch, c)),
        "GN" => Box::new(|c| norms::make_norm(NormKind::Group, c)),
        _ => {
            let comm = Arc::clone(comm);
            Box::new(move |c| {
                Box::new(SyncBn {
                    layer: BatchNorm::<f32>::new(c),
                    comm: Arc::clone(&comm),
                    cache: None,
                    grads: [None, None],
                }) as Box<dyn Normalizer<f32>>
            })
        }
    };
    let mut model = Cnn::new(CHANNELS.0, CHANNELS.1, &*make, &|| None, &mut rng);
    let global = MICRO_BATCH * size;
    let mut opt = Sgd::new((LR32 * global as f64 / 32.0) as f32, MOMENTUM as f32);
    let mut order: Vec<usize> = (0..digits.train_y.len()).collect();
    let mut flat: Vec<f32> = Vec::new();
    let mut summed: Vec<f32> = Vec::new();
    let (mut steps, mut last_loss) = (0usize, 0.0);
    let start = Instant::now();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        let mut epoch_steps = 0;
        for chunk in order.chunks_exact(global) {
            // This rank's micro-batch of the global batch.
            let mine = &chunk[rank * MICRO_BATCH..(rank + 1) * MICRO_BATCH];
            let xb = digits.train_x.select(Axis(0), mine);
            let yb: Vec<usize> = mine.iter().map(|&i| digits.train_y[i]).collect();
            let logits = model.forward(xb.view(), Phase::Train)?;
            let (loss, dlogits) = nn::softmax_cross_entropy(logits.view(), &yb);
            model.backward(dlogits.view())?;
            // Data parallelism: average the gradients over the ranks (one all-reduce of
            // every parameter gradient, and of the loss: the global loss is the mean of the
            // ranks' losses).
            flat.clear();
            model.visit_params(&mut |_, g| flat.extend_from_slice(g));
            flat.push(loss);
            summed.clear();
            summed.resize(flat.len(), 0.0);
            world.all_reduce_into(&flat[..], &mut summed[..], SystemOperation::sum());
            let inv = 1.0 / size as f32;
            summed.iter_mut().for_each(|g| *g *= inv);
            opt.begin();
            let mut at = 0;
            model.visit_params(&mut |p, _| {
                opt.update(p, &summed[at..at + p.len()]);
                at += p.len();
            });
            loss_sum += f64::from(summed[flat.len() - 1]);
            epoch_steps += 1;
            steps += 1;
        }
        last_loss = loss_sum / epoch_steps.max(1) as f64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let (gathers, bytes) = *comm.count.lock().unwrap_or_else(|e| e.into_inner());
    // The parameters are bit-identical on every rank (checksums gathered on every rank).
    let mut checksum = [0.0f64; 2];
    let mut i = 0.0;
    model.visit_params(&mut |p, _| {
        for &v in p.iter() {
            i += 1.0;
            checksum[0] += f64::from(v);
            checksum[1] += f64::from(v) * i;
        }
    });
    let mut all = Vec::new();
    comm.all_gather(&checksum, &mut all)?;
    if all.chunks(2).any(|c| c != checksum) {
        return Err(format!("{kind}: the ranks' parameters differ: {all:?}").into());
    }
    let accuracy = if rank == 0 {
        model.accuracy(digits.test_x.view(), &digits.test_y, 256, Phase::Eval)?
    } else {
        f64::NAN
    };
    Ok(RunResult {
        accuracy,
        last_loss,
        gathers_per_step: gathers as f64 / steps.max(1) as f64,
        gather_bytes_per_step: bytes as f64 / steps.max(1) as f64,
        allreduce_bytes: 4 * flat.len().saturating_sub(1),
        seconds,
    })
}

fn main() -> Result<(), Error> {
    let universe = normkit::mpi::initialize().ok_or("MPI was already initialized")?;
    let world = universe.world();
    let mpi = MpiCollective::new(universe.world());
    let comm = Arc::new(Counting {
        rank: mpi.rank(),
        size: mpi.size(),
        count: Mutex::new((0, 0)),
    });
    MPI.with(|m| m.set(mpi).map_err(|_| "MPI collective set twice"))?;
    let (rank, size) = (comm.rank(), comm.size());
    let mut epochs = 6;
    let mut seeds = 3;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (flag, value) in [("--epochs", &mut epochs), ("--seeds", &mut seeds)] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            *value = args.get(i + 1).ok_or("--epochs N / --seeds N")?.parse()?;
        }
    }
    let digits = data::digits(7);
    if rank == 0 {
        println!(
            "data-parallel training of the digits CNN over {size} ranks: micro-batch {MICRO_BATCH} \
             per rank, global batch {}, {epochs} epochs, {seeds} seeds; {} training / {} \
             held-out digits",
            MICRO_BATCH * size,
            digits.train_y.len(),
            digits.test_y.len()
        );
    }
    let mut rows = Vec::new();
    for kind in ["local BN", "SyncBN", "GN"] {
        let runs = (0..seeds as u64)
            .map(|seed| train(kind, &world, &comm, &digits, epochs, 42 + seed))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((kind, runs));
    }
    if rank == 0 {
        println!(
            "\n{:<9} {:>20} {:>11} {:>24} {:>22} {:>7}",
            "norm",
            "held-out % (min-max)",
            "train loss",
            "BN stats / step / rank",
            "grad all-reduce / step",
            "s / run"
        );
        for (kind, runs) in &rows {
            let n = runs.len().max(1) as f64;
            let acc: Vec<f64> = runs.iter().map(|r| 100.0 * r.accuracy).collect();
            let (lo, hi) = acc
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &a| {
                    (l.min(a), h.max(a))
                });
            let mean = acc.iter().sum::<f64>() / n;
            let loss = runs.iter().map(|r| r.last_loss).sum::<f64>() / n;
            let secs = runs.iter().map(|r| r.seconds).sum::<f64>() / n;
            let r = &runs[0];
            let stats = if r.gathers_per_step == 0.0 {
                "none".to_string()
            } else {
                format!(
                    "{:.0} gathers, {:.0} B",
                    r.gathers_per_step, r.gather_bytes_per_step
                )
            };
            println!(
                "{kind:<9} {:>20} {loss:>11.3} {stats:>24} {:>20} B {secs:>7.1}",
                format!("{mean:.1} ({lo:.1}-{hi:.1})"),
                r.allreduce_bytes,
            );
        }
        let (c1, c2) = CHANNELS;
        println!(
            "\nSyncBN, per step and rank: forward one all-gather of (count, mean, M2) per channel \
             and BN layer, backward one of (Σg, Σg·x̂): (3 + 2)·8·({c1} + {c2})·{size} = {} \
             bytes received; the parameters stayed bit-identical on every rank.",
            5 * 8 * (c1 + c2) * size
        );
    }
    drop(rows);
    drop(comm);
    drop(universe);
    Ok(())
}
