//! Part 4 — train vs. eval: Batch Normalization depends on the batch.
//!
//! The BN networks of part 3, trained at the smallest and the largest batch
//! size (every seed), are evaluated on the held-out digits in batches of
//! 2, 4, 8, … examples, once in inference mode (running statistics, the same
//! answer for any batch size) and once normalizing with the statistics of the
//! evaluation batch itself (what BN computes during training). The share of
//! predictions that change between inference mode and training-mode
//! statistics at the training batch size measures the train/eval discrepancy.

use std::path::{Path, PathBuf};

use crate::mlp::agreement;
use crate::model::Error;
use crate::nn::Phase;
use crate::plot::{self, pct_ticks, Chart, Scale, Series};
use crate::protocol::{Measurements, Metric};
use crate::small_batch::BnNets;
use crate::table::{mean_std, pct_pm, plural, Table};
use crate::training::Flat;

/// Runs part 4 on the BN networks `(training batch size, networks)`.
pub fn run(
    data: &Flat,
    nets: &mut BnNets,
    out: &Path,
    m: &mut Measurements,
) -> Result<Vec<PathBuf>, Error> {
    let n_test = data.test_y.len();
    let eval_batches: Vec<usize> = [2, 4, 8, 16, 32, 64, 128]
        .into_iter()
        .filter(|&b| b < n_test)
        .chain([n_test])
        .collect();
    let n_seeds = nets.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    println!(
        "\n  The BN networks of part 3 ({}), evaluated on the {n_test} held-out digits in batches",
        plural(n_seeds, "seed")
    );
    println!(
        "  of the given size: with the running statistics (inference mode) and with the statistics of"
    );
    println!(
        "  the evaluation batch itself (training-mode normalization; running statistics left untouched).\n"
    );

    let mut header = vec!["eval batch".to_string()];
    for (b, _) in nets.iter() {
        header.push(format!("trained@{b}: running stats"));
        header.push(format!("trained@{b}: batch stats"));
    }
    let mut t = Table::new(header);
    // acc[model][mode][eval batch] = one accuracy per seed
    let mut acc = vec![[Vec::new(), Vec::new()]; nets.len()];
    let mut disagree = Vec::new();
    for (i, (trained, seeds)) in nets.iter_mut().enumerate() {
        let mut spread = Vec::new();
        let mut changed = Vec::new();
        let mut per_eb = [
            vec![Vec::new(); eval_batches.len()],
            vec![Vec::new(); eval_batches.len()],
        ];
        for net in seeds.iter_mut() {
            let mut running = Vec::new();
            for (j, &eb) in eval_batches.iter().enumerate() {
                let a = net.accuracy(data.test_x.view(), &data.test_y, eb, Phase::Eval)?;
                running.push(a);
                per_eb[0][j].push(a);
                let a = net.accuracy(data.test_x.view(), &data.test_y, eb, Phase::BatchStats)?;
                per_eb[1][j].push(a);
            }
            let r0 = running[0];
            spread.push(running.iter().fold(0.0f64, |s, &a| s.max((a - r0).abs())));
            let inference = net.predict(data.test_x.view(), 512, Phase::Eval)?;
            let as_trained = net.predict(data.test_x.view(), *trained, Phase::BatchStats)?;
            changed.push(1.0 - agreement(&inference, &as_trained));
        }
        m.insert(
            Metric::BnRunning { trained: *trained },
            per_eb[0][0].clone(),
        );
        for (j, &eb) in eval_batches.iter().enumerate() {
            m.insert(
                Metric::BnBatchStats {
                    trained: *trained,
                    eval: eb,
                },
                per_eb[1][j].clone(),
            );
        }
        m.insert(Metric::BnEvalSpread { trained: *trained }, spread);
        m.insert(Metric::BnDisagree { trained: *trained }, changed.clone());
        disagree.push((*trained, changed));
        acc[i] = per_eb;
    }
    for (j, &eb) in eval_batches.iter().enumerate() {
        let mut row = vec![if eb == n_test {
            format!("{eb} (all)")
        } else {
            eb.to_string()
        }];
        for a in &acc {
            row.push(pct_pm(&a[0][j]));
            row.push(pct_pm(&a[1][j]));
        }
        t.row(row);
    }
    print!("{}", t.render());
    for (b, v) in &disagree {
        println!(
            "  trained at batch {b}: {}% of the held-out predictions change between inference mode and",
            pct_pm(v)
        );
        println!("    training-mode statistics over batches of {b} (the way it was trained)");
    }

    let lo = acc
        .iter()
        .flatten()
        .flatten()
        .map(|v| mean_std(v).0)
        .fold(1.0, f64::min);
    let y_lo = ((lo * 10.0).floor() / 10.0).max(0.0);
    let series = nets
        .iter()
        .enumerate()
        .flat_map(|(i, (b, _))| {
            let acc = &acc;
            let eval_batches = &eval_batches;
            [(0, "running stats"), (1, "batch stats")]
                .into_iter()
                .map(move |(j, what)| {
                    let ms: Vec<(f64, f64)> = acc[i][j].iter().map(|v| mean_std(v)).collect();
                    Series {
                        label: format!("trained at batch {b}, {what}"),
                        points: eval_batches
                            .iter()
                            .map(|&e| e as f64)
                            .zip(ms.iter().map(|m| m.0))
                            .collect(),
                        err: Some(
                            ms.iter()
                                .map(|&(m, s)| ((m - s).max(0.0), (m + s).min(1.0)))
                                .collect(),
                        ),
                        color: [1, 4][i % 2],
                        markers: true,
                        reference: false,
                        dashed: j == 1,
                        band: true,
                    }
                })
        })
        .collect();
    let chart = Chart {
        title: "BN at inference: running statistics vs. the evaluation batch's statistics".into(),
        x: plot::Axis {
            label: "evaluation batch size".into(),
            scale: Scale::Log2,
            range: (1.6, n_test as f64 * 1.25),
            ticks: eval_batches.iter().map(|&b| b as f64).collect(),
            fmt: plot::fmt_int,
        },
        y: plot::Axis {
            label: "held-out accuracy (mean ± 1 sd over seeds)".into(),
            scale: Scale::Linear,
            range: (y_lo, 1.0),
            ticks: pct_ticks(y_lo, 1.0),
            fmt: plot::fmt_pct,
        },
        series,
        crosses: None,
    };
    plot::save(&chart, out, "4_train_vs_eval")
}
