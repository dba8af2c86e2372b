//! # Why normalization matters — a measured tour
//!
//! `cargo run --release --example article` reproduces, in about a minute on
//! two cores, the claims of the normalization article with normkit's own
//! layers on real data shipped inside crates (nothing is downloaded):
//!
//! 1. **Why normalize** — linear regression on the red-wine data
//!    (`linfa-datasets`) with raw vs. standardized features: the largest
//!    stable learning rate and the steps to reach a loss target.
//! 2. **Batch size and the normalizers** — a small CNN on the handwritten
//!    digits (`smartcore`) with no normalization, BN, LN, IN, GN, GN + Weight
//!    Standardization and BCN + WS at batch sizes 2…32.
//! 3. **Train vs. eval** — BN evaluated with running statistics vs. with the
//!    statistics of the evaluation batch.
//! 4. **Learning-rate headroom** — where the unnormalized and the normalized
//!    networks stop learning as the learning rate grows.
//!
//! Tables go to stdout, a progress bar to stderr, and the plots (PNG + SVG)
//! to `target/article/` (see `--out`). `--quick` is a smoke run of a few
//! seconds. Every normalization is a `#[norm]` declaration in `norms.rs`;
//! the convolution, linear layer, loss and optimizer are this example's own
//! (`nn.rs`, gradient-checked in `tests/article_nn.rs`).

mod batch_size;
mod data;
mod experiment;
mod lr_headroom;
mod model;
mod nn;
mod norms;
mod plot;
mod scales;
mod table;
mod train_eval;
mod verdict;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use model::{Error, NormKind};

/// Why normalization matters: the normalization article's claims, measured
/// with normkit's layers on real data.
#[derive(Parser, Debug)]
#[command(name = "article")]
struct Args {
    /// Smoke run (a few seconds): two batch sizes, one seed, one epoch.
    #[arg(long)]
    quick: bool,
    /// Base seed of the data split, the initializations and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the plots (PNG and SVG); created if missing.
    #[arg(long, default_value = "target/article")]
    out: PathBuf,
    /// Seeds per configuration in part 2 [default: 5, or 1 with --quick].
    #[arg(long)]
    seeds: Option<usize>,
    /// Epochs per CNN training run [default: 6, or 1 with --quick].
    #[arg(long)]
    epochs: Option<usize>,
}

/// Learning rate at batch size 32 (scaled linearly with the batch size).
const LR32: f64 = 0.1;

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
    let epochs = args.epochs.unwrap_or(if args.quick { 1 } else { 6 }).max(1);
    let n_seeds = args.seeds.unwrap_or(if args.quick { 1 } else { 5 }).max(1);
    let seeds: Vec<u64> = (0..n_seeds as u64)
        .map(|i| args.seed.wrapping_add(i))
        .collect();
    let mut files = Vec::new();
    let mut verdicts = verdict::Verdicts::default();
    let mut times = Vec::new();

    println!(
        "Why normalization matters — measured with normkit ({} run, seed {})",
        if args.quick { "quick" } else { "full" },
        args.seed
    );

    heading("Part 1 — Why normalize: features on different scales");
    let t = Instant::now();
    let wine = data::wine();
    let set = scales::Settings {
        steps: if args.quick { 2_000 } else { 20_000 },
        probe_steps: if args.quick { 100 } else { 300 },
    };
    files.extend(scales::run(&wine, &set, &args.out)?);
    times.push(("part 1", t.elapsed()));

    heading("Part 2 — Batch size and the normalizers");
    let t = Instant::now();
    let digits = data::digits(args.seed);
    let set = batch_size::Settings {
        batches: if args.quick {
            vec![4, 32]
        } else {
            vec![2, 4, 8, 16, 32]
        },
        seeds: seeds.clone(),
        epochs,
        lr32: LR32,
    };
    let mut part2 = batch_size::run(&digits, &set, &args.out, &mut verdicts)?;
    files.append(&mut part2.files);
    times.push(("part 2", t.elapsed()));

    heading("Part 3 — Train vs. eval: BN depends on the batch");
    let t = Instant::now();
    files.extend(train_eval::run(
        &digits,
        &mut part2.bn_models,
        &args.out,
        &mut verdicts,
    )?);
    times.push(("part 3", t.elapsed()));

    heading("Part 4 — Learning-rate headroom");
    let t = Instant::now();
    let set = lr_headroom::Settings {
        kinds: if args.quick {
            vec![NormKind::None, NormKind::Batch, NormKind::Group]
        } else {
            vec![
                NormKind::None,
                NormKind::Batch,
                NormKind::Group,
                NormKind::GroupWs,
            ]
        },
        lrs: if args.quick {
            vec![0.03, 0.3, 3.0]
        } else {
            vec![0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        },
        batch: 32,
        epochs,
        seeds: seeds.iter().copied().take(2).collect(),
    };
    files.extend(lr_headroom::run(&digits, &set, &args.out, &mut verdicts)?);
    times.push(("part 4", t.elapsed()));

    heading("Where the measurements agree with the article, and where they do not");
    println!("  agrees / DISAGREES: the difference exceeds twice its standard error over the seeds, in the");
    println!("  claimed / the opposite direction (a claim of equality agrees when it does not); noise: neither.");
    if args.quick {
        println!(
            "  (--quick trains for one epoch with one seed: these comparisons mean nothing yet)"
        );
    }
    println!();
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
