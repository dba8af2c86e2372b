//! Part 3 — train vs. eval: Batch Normalization depends on the batch.
//!
//! The BN networks of part 2 are evaluated on the held-out digits in batches
//! of 1, 2, 4, … examples, once in inference mode (running statistics, the
//! same answer for any batch size) and once normalizing with the statistics
//! of the evaluation batch itself (what BN computes during training).

use std::path::{Path, PathBuf};

use crate::batch_size::pct_ticks;
use crate::data::Digits;
use crate::model::{Cnn, Error};
use crate::nn::Phase;
use crate::plot::{self, Chart, Scale, Series};
use crate::table::Table;
use crate::verdict::Verdicts;

/// Runs part 3 on the BN networks `(training batch size, network)`.
pub fn run(
    data: &Digits,
    models: &mut [(usize, Cnn<f32>)],
    out: &Path,
    verdicts: &mut Verdicts,
) -> Result<Vec<PathBuf>, Error> {
    let n_test = data.test_y.len();
    let eval_batches: Vec<usize> = [1, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .filter(|&b| b < n_test)
        .chain([n_test])
        .collect();

    println!("\n  The BN networks of part 2 (first seed), evaluated on the {n_test} held-out digits in batches of");
    println!("  the given size: with the running statistics (inference mode) and with the statistics of the");
    println!("  evaluation batch itself (training-mode normalization; running statistics left untouched).\n");

    let mut header = vec!["eval batch".to_string()];
    for (b, _) in models.iter() {
        header.push(format!("trained@{b}: running stats"));
        header.push(format!("trained@{b}: batch stats"));
    }
    let mut t = Table::new(header);
    // acc[model][phase][eval batch]
    let mut acc = vec![[Vec::new(), Vec::new()]; models.len()];
    for &eb in &eval_batches {
        let mut row = vec![if eb == n_test {
            format!("{eb} (all)")
        } else {
            eb.to_string()
        }];
        for (i, (_, net)) in models.iter_mut().enumerate() {
            for (j, phase) in [Phase::Eval, Phase::BatchStats].into_iter().enumerate() {
                let a = net.accuracy(data.test_x.view(), &data.test_y, eb, phase)?;
                acc[i][j].push(a);
                row.push(format!("{:.1}%", 100.0 * a));
            }
        }
        t.row(row);
    }
    print!("{}", t.render());

    verdicts.section("Part 3 — train vs. eval");
    for (i, (b, _)) in models.iter().enumerate() {
        let (running, single) = (acc[i][0][0], acc[i][1][0]);
        verdicts.greater(
            &format!(
                "BN (trained at batch {b}) classifies single examples better with running statistics than with their own"
            ),
            (running, 0.0),
            (single, 0.0),
            1,
        );
        let spread = acc[i][0]
            .iter()
            .fold(0.0f64, |m, &a| m.max((a - running).abs()));
        verdicts.fact(
            &format!(
                "inference-mode BN (trained at batch {b}) does not depend on the evaluation batch"
            ),
            spread < 1e-9,
            &format!(
                "largest difference across eval batch sizes: {:.2} points",
                100.0 * spread
            ),
        );
    }

    let lo = acc.iter().flatten().flatten().copied().fold(1.0, f64::min);
    let y_lo = ((lo * 10.0).floor() / 10.0).max(0.0);
    let chart = Chart {
        title: "BN at inference: running statistics vs. the evaluation batch's statistics".into(),
        x: plot::Axis {
            label: "evaluation batch size".into(),
            scale: Scale::Log2,
            range: (0.8, n_test as f64 * 1.25),
            ticks: eval_batches.iter().map(|&b| b as f64).collect(),
            fmt: plot::fmt_int,
        },
        y: plot::Axis {
            label: "held-out accuracy".into(),
            scale: Scale::Linear,
            range: (y_lo, 1.0),
            ticks: pct_ticks(y_lo, 1.0),
            fmt: plot::fmt_pct,
        },
        series: models
            .iter()
            .enumerate()
            .flat_map(|(i, (b, _))| {
                let acc = &acc;
                let eval_batches = &eval_batches;
                [(0, "running stats"), (1, "batch stats")]
                    .into_iter()
                    .map(move |(j, what)| Series {
                        label: format!("trained at batch {b}, {what}"),
                        points: eval_batches
                            .iter()
                            .map(|&e| e as f64)
                            .zip(acc[i][j].iter().copied())
                            .collect(),
                        err: None,
                        color: [4, 1][i % 2],
                        markers: true,
                        reference: false,
                        dashed: j == 1,
                    })
            })
            .collect(),
        crosses: None,
    };
    plot::save(&chart, out, "3_train_vs_eval")
}
