//! # Why normalization matters — a measured tour
//!
//! `cargo run --release --example article` tests the claims of the
//! normalization article with normkit's own layers on data shipped inside
//! crates (nothing is downloaded), in the regimes where the papers behind the
//! article observed them:
//!
//! 1. **Why normalize the inputs** — linear regression on the red-wine data
//!    (`linfa-datasets`) with raw vs. standardized features: the largest
//!    stable learning rate and the steps to reach a loss target.
//! 2. **Convergence speed and stability** — a deep plain network (10 linear
//!    layers, no residual connections) trained from the same weights with no
//!    normalization, BN, LN, GN, GN + Weight Standardization and BCN + WS:
//!    held-out accuracy and loss per epoch, epochs to a target accuracy, and
//!    the share of seeds that fail at larger learning rates.
//! 3. **Small batches** — the same network at batch sizes 2 … 32, where BN's
//!    statistics of a hidden unit come from 2 … 32 values.
//! 4. **Train vs. eval** — the BN networks evaluated with running statistics
//!    vs. the statistics of the evaluation batch.
//!
//! The data of parts 2–4 are the 8×8 digits (`smartcore`) made harder in code
//! (`hard_digits.rs`): random rotations, scalings, shifts and pixel noise from
//! a fixed seed, and 800 training images. Every setting and every claim is
//! fixed in `protocol.rs`; the verdict at the end prints whatever comes out.
//!
//! Tables go to stdout, one progress bar per part to stderr, the plots (PNG +
//! SVG) to `target/article/` (see `--out`). `--quick` is a smoke run of a few
//! seconds. Every normalization is a `#[norm]` declaration in `norms.rs`; the
//! linear layers, loss and optimizer are this example's own (`nn.rs`,
//! `mlp.rs`, gradient-checked in `tests/article/article_nn.rs`). Seeds run in
//! parallel on rayon's pool (all cores).

mod convergence;
mod data;
mod hard_digits;
mod mlp;
// The digits CNN of `model.rs` (and the convolution code of `nn.rs`) is
// shared with `examples/distributed.rs` and the tests; the tour itself uses
// the deep MLP and only `NormKind` from `model.rs`.
#[allow(dead_code)]
mod model;
#[allow(dead_code)]
mod nn;
mod norms;
mod plot;
mod protocol;
mod scales;
mod small_batch;
mod table;
mod train_eval;
mod training;
mod verdict;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use ndarray::s;

use model::Error;
use protocol::{Measurements, Protocol};

/// Why normalization matters: the normalization article's claims, measured
/// with normkit's layers on real data.
#[derive(Parser, Debug)]
#[command(name = "article")]
struct Args {
    /// Smoke run (a few seconds): two batch sizes, two seeds, two epochs.
    #[arg(long)]
    quick: bool,
    /// Base seed of the data (split and transforms), the initializations and
    /// the batch orders.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the plots (PNG and SVG); created if missing.
    #[arg(long, default_value = "target/article")]
    out: PathBuf,
    /// Seeds per configuration [default: 10, or 2 with --quick].
    #[arg(long)]
    seeds: Option<usize>,
    /// Epochs per training run of parts 2 and 3 [default: 12, or 2 with --quick].
    #[arg(long)]
    epochs: Option<usize>,
}

fn heading(title: &str) {
    println!("\n{title}\n{}", "=".repeat(title.chars().count()));
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| {
        format!(
            "cannot create the output folder {}: {e}",
            args.out.display()
        )
    })?;
    let mut p = if args.quick {
        Protocol::quick()
    } else {
        Protocol::full()
    };
    if let Some(s) = args.seeds {
        p.seeds = s.max(1);
    }
    if let Some(e) = args.epochs {
        p.epochs = e.max(1);
        p.early_epoch = p.early_epoch.min(p.epochs);
    }
    let seeds: Vec<u64> = (0..p.seeds as u64)
        .map(|i| args.seed.wrapping_add(i))
        .collect();
    let mut files = Vec::new();
    let mut m = Measurements::new();
    let mut times = Vec::new();

    println!(
        "Why normalization matters — measured with normkit ({} run, seed {}, {} threads)",
        if args.quick { "quick" } else { "full" },
        args.seed,
        rayon::current_num_threads()
    );

    heading("Part 1 — Why normalize: features on different scales");
    let t = Instant::now();
    let wine = data::wine();
    let set = scales::Settings {
        steps: p.wine_steps,
        probe_steps: p.wine_probe_steps,
    };
    files.extend(scales::run(&wine, &set, &args.out, &mut m)?);
    times.push(("part 1", t.elapsed()));

    heading("The data of parts 2–4: the 8×8 digits, made harder");
    let t = Instant::now();
    let d = protocol::DIFFICULTY;
    let hard = hard_digits::load(args.seed, args.seed, &d);
    println!(
        "\n  Every image of the 1,797 digits is redrawn once, from the seed {}: rotated by an angle",
        args.seed
    );
    println!(
        "  uniform in ±{}°, scaled by a factor uniform in 1 ± {}, shifted by up to ±{} pixel per axis",
        d.max_angle_deg, d.max_scale, d.max_shift
    );
    println!(
        "  (bilinear resampling, zero outside), plus Gaussian pixel noise (sd {} on pixels in [0, 1]).",
        d.noise_sd
    );
    println!(
        "  {} images train, the other {} are held out; every pixel is standardized with the",
        hard.train_y.len(),
        hard.test_y.len()
    );
    println!("  training set's mean and sd (a #[norm] layer with axes = \"N\", part 1's lesson).");
    let clean = data::digits(args.seed);
    let n_show = 12;
    let pick = |x: &ndarray::Array4<f32>| -> Vec<ndarray::Array2<f32>> {
        (0..n_show)
            .map(|i| x.slice(s![i, 0, .., ..]).to_owned())
            .collect()
    };
    files.extend(plot::save_images(
        &[
            ("original".into(), pick(&clean.train_x)),
            ("as trained on".into(), pick(&hard.train_x)),
        ],
        "The first training digits, before and after the transforms",
        &args.out,
        "0_hard_digits",
    )?);
    let flat = training::Flat::new(&hard)?;
    times.push(("data", t.elapsed()));

    heading("Part 2 — Convergence speed and stability of a deep plain network");
    let t = Instant::now();
    let part2 = convergence::run(&flat, &p, &seeds, &args.out, &mut m)?;
    files.extend(part2.files);
    times.push(("part 2", t.elapsed()));

    heading("Part 3 — Small batches: few values per statistic");
    let t = Instant::now();
    let (mut bn_nets, part3_files) =
        small_batch::run(&flat, &p, &seeds, part2.runs, &args.out, &mut m)?;
    files.extend(part3_files);
    times.push(("part 3", t.elapsed()));

    heading("Part 4 — Train vs. eval: BN depends on the batch");
    let t = Instant::now();
    files.extend(train_eval::run(&flat, &mut bn_nets, &args.out, &mut m)?);
    times.push(("part 4", t.elapsed()));

    heading("Where the measurements agree with the article, and where they do not");
    println!("  Claims and settings are fixed in protocol.rs. agrees / DISAGREES: the difference exceeds twice");
    println!("  its standard error over the seeds in the claimed / the opposite direction; noise: neither.");
    println!(
        "  (\"at least as good\": agrees unless worse beyond the noise; \"insensitive\": the whole"
    );
    println!("  difference ± noise lies within the margin.)");
    if args.quick {
        println!(
            "  (--quick trains for two epochs with two seeds: these comparisons mean nothing yet)"
        );
    }
    println!();
    let mut verdicts = verdict::Verdicts::default();
    protocol::judge(&protocol::claims(&p), &m, &mut verdicts);
    print!("{}", verdicts.render());

    heading("Files");
    for f in &files {
        println!("  {}", f.display());
    }
    let parts: Vec<String> = times
        .iter()
        .map(|(p, d)| format!("{p} {:.1} s", d.as_secs_f64()))
        .collect();
    println!(
        "\n  total {:.1} s ({})",
        start.elapsed().as_secs_f64(),
        parts.join(", ")
    );
    Ok(())
}
