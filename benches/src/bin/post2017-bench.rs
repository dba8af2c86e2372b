//! Issue 18 part B benchmarks: padding-aware (masked) LayerNorm beside the unmasked one.
//!
//! `[64, 512, 1024]` f32 (`input = "N,T,D", axes = "T,D", affine = "D"`), with `mask = "N,T"`
//! and 30 % padding (the last 30 % of every sequence's tokens masked), train forward and
//! backward through the no-allocation entry points; prints the median of each case, the
//! ratio masked/unmasked, the rayon thread count, the CPU model and the commit.
//!
//! Run: `cargo run --release -p norm-bench --bin post2017-bench -- [reps]`
//! (`RAYON_NUM_THREADS=1` for one thread).

use std::time::Instant;

use norm_bench::data::Rng;
use norm_bench::timing::median;
use normkit::ndarray::{Array2, Array3};
use normkit::prelude::*;

/// LayerNorm over each whole sequence.
#[norm(input = "N,T,D", axes = "T,D", affine = "D")]
pub struct SeqLayerNorm;

/// The same, statistics over the real tokens only.
#[norm(input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D")]
pub struct MaskedSeqLayerNorm;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut v)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> Result<(), NormError> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let (n, t, d) = (64, 512, 1024);
    let mut rng = Rng::new(18);
    let mut data = vec![0.0f32; n * t * d];
    rng.fill_normal(&mut data);
    let x = Array3::from_shape_vec((n, t, d), data).expect("shape");
    let mut dyv = vec![0.0f32; n * t * d];
    rng.fill_normal(&mut dyv);
    let dy = Array3::from_shape_vec((n, t, d), dyv).expect("shape");
    let real = t - (t * 3) / 10;
    let mask = Array2::from_shape_fn((n, t), |(_, j)| j < real);
    let mut y = Array3::<f32>::zeros((n, t, d));
    let mut plain = SeqLayerNorm::<f32>::new(d);
    let mut masked = MaskedSeqLayerNorm::<f32>::new(d);
    let mut saved = Saved::new();
    let mut saved_m = Saved::new();
    let mut grads = Grads::new(Array3::<f32>::zeros((n, t, d)));

    let fwd = time(reps, || {
        plain
            .forward_train_into(x.view(), y.view_mut(), &mut saved)
            .expect("forward");
    });
    let fwd_m = time(reps, || {
        masked
            .forward_train_into(x.view(), mask.view(), y.view_mut(), &mut saved_m)
            .expect("forward");
    });
    let bwd = time(reps, || {
        plain
            .backward_into(x.view(), dy.view(), &saved, &mut grads)
            .expect("backward");
    });
    let bwd_m = time(reps, || {
        masked
            .backward_into(x.view(), dy.view(), &saved_m, &mut grads)
            .expect("backward");
    });
    println!(
        "post2017-bench: [{n}, {t}, {d}] f32, 30 % padding, median of {reps} reps, {} rayon threads, {}, commit {}",
        rayon::current_num_threads(),
        cpu_model(),
        commit()
    );
    println!("| case | unmasked ms | masked ms | masked / unmasked |");
    println!("|---|---|---|---|");
    println!(
        "| seq LayerNorm forward (train) | {fwd:.2} | {fwd_m:.2} | {:.2} |",
        fwd_m / fwd
    );
    println!(
        "| seq LayerNorm backward | {bwd:.2} | {bwd_m:.2} | {:.2} |",
        bwd_m / bwd
    );
    Ok(())
}
