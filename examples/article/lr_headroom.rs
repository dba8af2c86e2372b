//! Part 4 — learning-rate headroom: the unnormalized and normalized networks
//! trained at increasing learning rates; where does each stop learning?

use std::path::{Path, PathBuf};

use crate::batch_size::{kind_style, pct_ticks, plural};
use crate::data::Digits;
use crate::experiment::{self, RunSpec};
use crate::model::{Error, NormKind};
use crate::plot::{self, Chart, Crosses, Scale, Series};
use crate::table::{mean_std, sci, Table};
use crate::verdict::Verdicts;

/// Settings of part 4.
pub struct Settings {
    /// Normalizers compared.
    pub kinds: Vec<NormKind>,
    /// Learning rates, ascending.
    pub lrs: Vec<f64>,
    /// Batch size.
    pub batch: usize,
    /// Epochs per run.
    pub epochs: usize,
    /// Seeds per configuration.
    pub seeds: Vec<u64>,
}

/// A run "trains" when it did not diverge and reached this accuracy.
const TRAINS: f64 = 0.9;

/// Runs part 4.
pub fn run(
    data: &Digits,
    set: &Settings,
    out: &Path,
    verdicts: &mut Verdicts,
) -> Result<Vec<PathBuf>, Error> {
    let mut specs = Vec::new();
    for &kind in &set.kinds {
        for &lr in &set.lrs {
            for &seed in &set.seeds {
                specs.push(RunSpec {
                    kind,
                    batch: set.batch,
                    lr,
                    epochs: set.epochs,
                    seed,
                    keep: false,
                });
            }
        }
    }
    println!(
        "\n  Batch {}, {}, SGD with momentum {}, {}; cell: held-out accuracy / training loss of the",
        set.batch,
        plural(set.epochs, "epoch"),
        experiment::MOMENTUM,
        plural(set.seeds.len(), "seed")
    );
    println!("  last epoch (means over seeds); \"diverged\": the training loss became NaN/inf in a seed.\n");
    let results = experiment::run_all(specs, data, "part 4: learning rates")?;

    // cell[(kind, lr)] = (accuracies, any diverged)
    let cell = |k: NormKind, lr: f64| {
        let rs: Vec<_> = results
            .iter()
            .filter(|r| r.spec.kind == k && r.spec.lr == lr)
            .collect();
        let accs: Vec<f64> = rs.iter().map(|r| r.test_acc).collect();
        let losses: Vec<f64> = rs.iter().map(|r| r.train_loss).collect();
        (
            mean_std(&accs).0,
            rs.iter().any(|r| r.diverged),
            mean_std(&losses).0,
        )
    };
    let mut header = vec!["learning rate".to_string()];
    header.extend(set.kinds.iter().map(|k| k.label().to_string()));
    let mut t = Table::new(header);
    for &lr in &set.lrs {
        let mut row = vec![sci(lr)];
        for &k in &set.kinds {
            let (a, div, loss) = cell(k, lr);
            row.push(if div {
                "diverged".into()
            } else {
                format!("{:.1}% / {loss:.3}", 100.0 * a)
            });
        }
        t.row(row);
    }
    print!("{}", t.render());

    let largest_ok = |k: NormKind| {
        set.lrs
            .iter()
            .copied()
            .filter(|&lr| {
                let (a, div, _) = cell(k, lr);
                !div && a >= TRAINS
            })
            .fold(None, |m: Option<f64>, lr| Some(m.map_or(lr, |m| m.max(lr))))
    };
    let mut summary = Vec::new();
    for &k in &set.kinds {
        let first_div = set.lrs.iter().copied().find(|&lr| cell(k, lr).1);
        summary.push(format!(
            "  {:>7}: trains (≥ {:.0}% held-out) up to lr {}; first diverges at {}",
            k.label(),
            100.0 * TRAINS,
            largest_ok(k).map_or("none".into(), sci),
            first_div.map_or("none of these".into(), sci)
        ));
    }
    println!("{}", summary.join("\n"));
    println!("  (≈ 10% is chance: the network stopped learning — e.g. all ReLUs dead — without a NaN loss)");

    verdicts.section("Part 4 — learning-rate headroom");
    let none = largest_ok(NormKind::None).unwrap_or(0.0);
    for &k in set.kinds.iter().filter(|&&k| k != NormKind::None) {
        let mine = largest_ok(k).unwrap_or(0.0);
        verdicts.fact(
            &format!(
                "{} tolerates a larger learning rate than no normalization",
                k.label()
            ),
            mine > none,
            &format!("largest working lr {} vs. {}", sci(mine), sci(none)),
        );
    }

    let (lo, hi) = (set.lrs[0], *set.lrs.last().expect("learning rates"));
    let mut crosses = Vec::new();
    let series = set
        .kinds
        .iter()
        .map(|&k| {
            let (color, dashed) = kind_style(k);
            let points = set
                .lrs
                .iter()
                .map(|&lr| {
                    let (a, div, _) = cell(k, lr);
                    if div {
                        crosses.push((lr, a.clamp(0.0, 1.0)));
                    }
                    (lr, a)
                })
                .collect();
            Series {
                label: k.label().into(),
                points,
                err: None,
                color,
                markers: true,
                reference: false,
                dashed,
            }
        })
        .collect();
    let chart = Chart {
        title: format!(
            "Digits CNN: held-out accuracy vs. learning rate (batch {}, {})",
            set.batch,
            plural(set.epochs, "epoch")
        ),
        x: plot::Axis {
            label: "learning rate (SGD, momentum 0.9)".into(),
            scale: Scale::Log10,
            range: (lo / 1.5, hi * 1.5),
            ticks: set.lrs.clone(),
            fmt: plot::fmt_num,
        },
        y: plot::Axis {
            label: "held-out accuracy".into(),
            scale: Scale::Linear,
            range: (0.0, 1.0),
            ticks: pct_ticks(0.0, 1.0),
            fmt: plot::fmt_pct,
        },
        series,
        crosses: (!crosses.is_empty()).then(|| Crosses {
            label: "diverged (NaN loss)".into(),
            points: crosses,
        }),
    };
    plot::save(&chart, out, "4_lr_headroom")
}
