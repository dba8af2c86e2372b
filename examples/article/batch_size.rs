//! Part 2 — batch size and the normalizers (the Group Norm paper's
//! error-vs-batch-size trend, in miniature).
//!
//! The same CNN is trained with each normalizer at batch sizes 2…32 for a
//! fixed number of epochs (so every configuration sees the same examples),
//! with the learning rate scaled linearly with the batch size, and several
//! seeds per configuration. Held-out accuracy is reported as mean ± standard
//! deviation over the seeds, and compared with the claims of the article.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::Digits;
use crate::experiment::{self, RunResult, RunSpec};
use crate::model::{Cnn, Error, NormKind};
use crate::plot::{self, Chart, Scale, Series};
use crate::table::{mean_std, Table};
use crate::verdict::Verdicts;

/// Settings of part 2.
pub struct Settings {
    /// Batch sizes, ascending.
    pub batches: Vec<usize>,
    /// Seeds per configuration.
    pub seeds: Vec<u64>,
    /// Epochs per run.
    pub epochs: usize,
    /// Learning rate at batch size 32 (scaled linearly with the batch size).
    pub lr32: f64,
}

/// Accuracies per (normalizer, batch size), one per seed.
pub type Accuracies = HashMap<(NormKind, usize), Vec<f64>>;

/// What part 2 hands on: the BN networks trained at the
/// smallest and the largest batch size (first seed), and the plot files.
pub struct Outcome {
    /// BN networks `(batch size, network)`.
    pub bn_models: Vec<(usize, Cnn<f32>)>,
    /// Plot files.
    pub files: Vec<PathBuf>,
}

/// Runs part 2: trains everything, prints the table and the comparison with
/// the article, writes the plot.
pub fn run(
    data: &Digits,
    set: &Settings,
    out: &Path,
    verdicts: &mut Verdicts,
) -> Result<Outcome, Error> {
    let (bmin, bmax) = (set.batches[0], *set.batches.last().expect("batch sizes"));
    let mut specs = Vec::new();
    for kind in NormKind::ALL {
        for &batch in &set.batches {
            for (si, &seed) in set.seeds.iter().enumerate() {
                specs.push(RunSpec {
                    kind,
                    batch,
                    lr: set.lr32 * batch as f64 / 32.0,
                    epochs: set.epochs,
                    seed,
                    keep: kind == NormKind::Batch && si == 0 && (batch == bmin || batch == bmax),
                });
            }
        }
    }
    println!(
        "\n  CNN: conv3×3({}) → norm → ReLU → maxpool → conv3×3({}) → norm → ReLU → maxpool → linear(10).",
        experiment::CHANNELS.0,
        experiment::CHANNELS.1
    );
    println!(
        "  {} training / {} held-out digits; {} per run; SGD, momentum {}, lr = {} × batch/32;",
        data.train_y.len(),
        data.test_y.len(),
        plural(set.epochs, "epoch"),
        experiment::MOMENTUM,
        set.lr32
    );
    println!(
        "  {} per cell. GN: {} groups; LN, IN, GN: one γ, β per channel. BN's statistics at batch {bmin}:",
        plural(set.seeds.len(), "seed"),
        crate::norms::GROUPS
    );
    println!(
        "  {} values per channel in block 1 ({bmin}·8·8), {} in block 2 ({bmin}·4·4).\n",
        bmin * 64,
        bmin * 16
    );
    let results: Vec<RunResult> = experiment::run_all(specs, data, "part 2: batch sizes")?;

    let mut acc: Accuracies = HashMap::new();
    let mut bn_models = Vec::new();
    let mut diverged = 0;
    for r in results {
        diverged += usize::from(r.diverged);
        acc.entry((r.spec.kind, r.spec.batch))
            .or_default()
            .push(r.test_acc);
        if let Some(m) = r.model {
            bn_models.push((r.spec.batch, m));
        }
    }
    bn_models.sort_by_key(|(b, _)| *b);

    let mut header = vec!["held-out accuracy %".to_string()];
    header.extend(set.batches.iter().map(|b| format!("batch {b}")));
    let mut t = Table::new(header);
    for kind in NormKind::ALL {
        let mut row = vec![kind.label().to_string()];
        for &b in &set.batches {
            let (m, s) = mean_std(&acc[&(kind, b)]);
            row.push(format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s));
        }
        t.row(row);
    }
    print!("{}", t.render());
    if diverged > 0 {
        println!("  ({diverged} runs diverged; they count with their final accuracy)");
    }

    let stat = |k: NormKind, b: usize| mean_std(&acc[&(k, b)]);
    let n = set.seeds.len();
    verdicts.section("Part 2 — batch size");
    verdicts.greater(
        &format!("BN loses accuracy at small batches (BN at batch {bmax} vs. batch {bmin})"),
        stat(NormKind::Batch, bmax),
        stat(NormKind::Batch, bmin),
        n,
    );
    verdicts.greater(
        &format!("GN beats BN at batch {bmin}"),
        stat(NormKind::Group, bmin),
        stat(NormKind::Batch, bmin),
        n,
    );
    verdicts.not_worse(
        &format!("BN is at least as good as GN at batch {bmax} (BN vs. GN)"),
        stat(NormKind::Batch, bmax),
        stat(NormKind::Group, bmax),
        n,
    );
    verdicts.close(
        &format!("GN is insensitive to the batch size (batch {bmin} vs. {bmax})"),
        stat(NormKind::Group, bmin),
        stat(NormKind::Group, bmax),
        n,
    );
    for &b in &[bmin, bmax] {
        verdicts.greater(
            &format!("GN beats LN at batch {b}"),
            stat(NormKind::Group, b),
            stat(NormKind::Layer, b),
            n,
        );
        verdicts.greater(
            &format!("GN beats IN at batch {b}"),
            stat(NormKind::Group, b),
            stat(NormKind::Instance, b),
            n,
        );
        verdicts.greater(
            &format!("Weight Standardization helps GN at batch {b} (GN+WS vs. GN)"),
            stat(NormKind::GroupWs, b),
            stat(NormKind::Group, b),
            n,
        );
    }
    verdicts.greater(
        &format!("BCN+WS beats GN+WS at batch {bmax}"),
        stat(NormKind::BatchChannelWs, bmax),
        stat(NormKind::GroupWs, bmax),
        n,
    );
    verdicts.greater(
        &format!("normalization helps: GN vs. none at batch {bmax}"),
        stat(NormKind::Group, bmax),
        stat(NormKind::None, bmax),
        n,
    );

    let lo = acc.values().flatten().copied().fold(1.0, f64::min);
    let y_lo = ((lo * 100.0 - 1.0) / 2.0).floor() * 2.0 / 100.0;
    let chart = Chart {
        title: format!(
            "Digits CNN: held-out accuracy vs. batch size ({}, {}, ± 1 sd)",
            plural(set.epochs, "epoch"),
            plural(n, "seed")
        ),
        x: plot::Axis {
            label: "batch size".into(),
            scale: Scale::Log2,
            range: (bmin as f64 / 1.25, bmax as f64 * 1.25),
            ticks: set.batches.iter().map(|&b| b as f64).collect(),
            fmt: plot::fmt_int,
        },
        y: plot::Axis {
            label: "held-out accuracy".into(),
            scale: Scale::Linear,
            range: (y_lo.max(0.0), 1.0),
            ticks: pct_ticks(y_lo.max(0.0), 1.0),
            fmt: plot::fmt_pct,
        },
        series: NormKind::ALL
            .iter()
            .map(|&k| {
                let pts: Vec<(f64, (f64, f64))> = set
                    .batches
                    .iter()
                    .map(|&b| (b as f64, stat(k, b)))
                    .collect();
                let (color, dashed) = kind_style(k);
                // Spread the series sideways a little so that error bars stay readable.
                let pos = NormKind::ALL.iter().position(|&a| a == k).unwrap_or(0) as f64;
                let dodge = 2f64.powf((pos - 3.0) * 0.03);
                let pts: Vec<(f64, (f64, f64))> =
                    pts.into_iter().map(|(b, ms)| (b * dodge, ms)).collect();
                Series {
                    label: k.label().into(),
                    points: pts.iter().map(|&(b, (m, _))| (b, m)).collect(),
                    err: Some(
                        pts.iter()
                            .map(|&(_, (m, s))| (m - s, (m + s).min(1.0)))
                            .collect(),
                    ),
                    color,
                    markers: true,
                    reference: false,
                    dashed,
                }
            })
            .collect(),
        crosses: None,
    };
    let files = plot::save(&chart, out, "2_batch_size")?;
    Ok(Outcome { bn_models, files })
}

/// `"1 seed"`, `"3 seeds"`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Plot colour (palette index) and dash of a normalizer: the WS variants are
/// dashed, GN+WS in GN's colour.
pub fn kind_style(k: NormKind) -> (usize, bool) {
    match k {
        NormKind::None => (0, false),
        NormKind::Batch => (1, false),
        NormKind::Layer => (2, false),
        NormKind::Instance => (3, false),
        NormKind::Group => (4, false),
        NormKind::GroupWs => (4, true),
        NormKind::BatchChannelWs => (5, true),
    }
}

/// Percentage ticks at a round step inside `lo..=hi`.
pub fn pct_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo) * 100.0;
    let step = [1.0, 2.0, 5.0, 10.0, 20.0]
        .into_iter()
        .find(|s| span / s <= 10.0)
        .unwrap_or(25.0);
    let mut t = Vec::new();
    let mut v = (lo * 100.0 / step).ceil() * step;
    while v <= hi * 100.0 + 1e-9 {
        t.push(v / 100.0);
        v += step;
    }
    t
}
