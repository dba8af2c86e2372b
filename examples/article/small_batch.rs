//! Part 3 — small batches (the Group Norm paper's error-vs-batch-size
//! experiment, in the regime of few values per statistic).
//!
//! The deep MLP of part 2 is trained with every normalizer at batch sizes
//! 2 … 32 for the same number of epochs (every configuration sees the same
//! examples), with the learning rate scaled linearly with the batch size. In
//! fully connected layers Batch Norm's mean and variance of a unit come from
//! the batch alone — 2 values at batch 2 — while LN and GN normalize each
//! example on its own. The batch-32 column is part 2's runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::mlp::Mlp;
use crate::model::{Error, NormKind};
use crate::plot::{self, kind_style, pct_ticks, Chart, Scale, Series};
use crate::protocol::{Measurements, Metric, Protocol, KINDS};
use crate::table::{mean_std, plural, Table};
use crate::training::{self, Flat, RunResult, RunSpec};

/// The BN networks, per training batch size, one per seed.
pub type BnNets = Vec<(usize, Vec<Mlp<f32>>)>;

/// Runs part 3; `reference` are part 2's runs at the largest batch size.
/// Returns the BN networks trained at the smallest and the largest batch
/// size (for part 4) and the plot files.
pub fn run(
    data: &Flat,
    p: &Protocol,
    seeds: &[u64],
    reference: Vec<RunResult>,
    out: &Path,
    m: &mut Measurements,
) -> Result<(BnNets, Vec<PathBuf>), Error> {
    let (bmin, bmax) = (p.bmin(), p.bmax());
    let mut specs = Vec::new();
    for &kind in &KINDS {
        for &batch in p.batches.iter().filter(|&&b| b != bmax) {
            for &seed in seeds {
                specs.push(RunSpec {
                    kind,
                    batch,
                    lr: p.lr(batch),
                    epochs: p.epochs,
                    seed,
                    keep: kind == NormKind::Batch && batch == bmin,
                });
            }
        }
    }
    println!(
        "\n  The MLP of part 2 at every batch size: {}, lr = {} × batch/32, {} per cell.",
        plural(p.epochs, "epoch"),
        p.lr32,
        plural(seeds.len(), "seed")
    );
    println!(
        "  Values behind one BN statistic (a unit's mean over the batch): the batch size itself, {bmin} at"
    );
    println!(
        "  batch {bmin}; behind one GN statistic: {} units of one example ({} groups); LN: all {} units.\n",
        crate::protocol::WIDTH / crate::norms::GROUPS,
        crate::norms::GROUPS,
        crate::protocol::WIDTH
    );
    let mut runs = training::run_all(specs, data, "part 3: batch sizes")?;
    runs.extend(reference);

    let mut acc: HashMap<(NormKind, usize), Vec<f64>> = HashMap::new();
    let mut bn: HashMap<usize, Vec<(u64, Mlp<f32>)>> = HashMap::new();
    let mut diverged = 0;
    for r in runs {
        diverged += usize::from(r.diverged);
        acc.entry((r.spec.kind, r.spec.batch))
            .or_default()
            .push(r.final_acc());
        if let (Some(net), NormKind::Batch) = (r.model, r.spec.kind) {
            bn.entry(r.spec.batch).or_default().push((r.spec.seed, net));
        }
    }

    let mut header = vec!["held-out accuracy %".to_string()];
    header.extend(p.batches.iter().map(|b| format!("batch {b}")));
    let mut t = Table::new(header);
    for k in KINDS {
        let mut row = vec![k.label().to_string()];
        for &b in &p.batches {
            let (mean, sd) = mean_std(&acc[&(k, b)]);
            row.push(format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * sd));
        }
        t.row(row);
    }
    print!("{}", t.render());
    if diverged > 0 {
        println!("  ({diverged} runs diverged; they count with their final accuracy)");
    }
    for (&(kind, batch), v) in &acc {
        m.insert(Metric::Final { kind, batch }, v.clone());
    }

    let stat = |k: NormKind, b: usize| mean_std(&acc[&(k, b)]);
    let lo = acc.values().flatten().copied().fold(1.0, f64::min);
    let y_lo = (((lo * 100.0 - 2.0) / 5.0).floor() * 5.0 / 100.0).max(0.0);
    let chart = Chart {
        title: format!(
            "Deep MLP: held-out accuracy vs. batch size ({}, {}, ± 1 sd)",
            plural(p.epochs, "epoch"),
            plural(seeds.len(), "seed")
        ),
        x: plot::Axis {
            label: "batch size (lr scaled linearly)".into(),
            scale: Scale::Log2,
            range: (bmin as f64 / 1.25, bmax as f64 * 1.25),
            ticks: p.batches.iter().map(|&b| b as f64).collect(),
            fmt: plot::fmt_int,
        },
        y: plot::Axis {
            label: "held-out accuracy".into(),
            scale: Scale::Linear,
            range: (y_lo, 1.0),
            ticks: pct_ticks(y_lo, 1.0),
            fmt: plot::fmt_pct,
        },
        series: KINDS
            .iter()
            .enumerate()
            .map(|(pos, &k)| {
                let (color, dashed) = kind_style(k);
                // Spread the series sideways a little so that error bars stay readable.
                let dodge = 2f64.powf((pos as f64 - 2.5) * 0.03);
                let pts: Vec<(f64, (f64, f64))> = p
                    .batches
                    .iter()
                    .map(|&b| (b as f64 * dodge, stat(k, b)))
                    .collect();
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
                    band: false,
                }
            })
            .collect(),
        crosses: None,
    };
    let files = plot::save(&chart, out, "3_small_batch")?;

    let mut nets: BnNets = Vec::new();
    for b in [bmin, bmax] {
        let mut v = bn.remove(&b).unwrap_or_default();
        v.sort_by_key(|(seed, _)| *seed);
        nets.push((b, v.into_iter().map(|(_, n)| n).collect()));
    }
    Ok((nets, files))
}
