//! Part 2 — convergence speed and stability (the article's opening claim:
//! normalization makes deep networks train faster and more stably).
//!
//! The deep plain MLP is trained from the same initial weights with every
//! normalizer, at the reference batch size and learning rate, for a fixed
//! number of epochs; the held-out accuracy and the training loss are recorded
//! after every epoch (mean and ± 1 sd band over the seeds). Then a sweep of
//! larger learning rates counts the seeds that fail: diverge (non-finite
//! loss) or stall near chance.

use std::path::{Path, PathBuf};

use crate::model::{Error, NormKind};
use crate::plot::{self, kind_style, pct_ticks, Chart, Crosses, Scale, Series};
use crate::protocol::{Measurements, Metric, Protocol, KINDS};
use crate::table::{mean_std, pct_pm, plural, sci, Table};
use crate::training::{self, Flat, RunResult, RunSpec, FAILED_BELOW};

/// What part 2 hands on to parts 3 and 4.
pub struct Outcome {
    /// The runs at the reference batch size (part 3's last column; the BN
    /// networks are kept for part 4).
    pub runs: Vec<RunResult>,
    /// Plot files.
    pub files: Vec<PathBuf>,
}

/// Runs part 2.
pub fn run(
    data: &Flat,
    p: &Protocol,
    seeds: &[u64],
    out: &Path,
    m: &mut Measurements,
) -> Result<Outcome, Error> {
    let b = p.bmax();
    let lr = p.lr(b);
    println!(
        "\n  Network: 64 → [linear({w}) → norm → ReLU] × {d} → linear(10): {layers} linear layers, no",
        w = crate::protocol::WIDTH,
        d = crate::protocol::DEPTH,
        layers = crate::protocol::DEPTH + 1
    );
    println!(
        "  residual connections, He-normal weights drawn from the seed alone (the same start for every"
    );
    println!(
        "  normalizer). SGD, momentum {}, batch {b}, lr {lr}, {}; {} per normalizer.",
        crate::protocol::MOMENTUM,
        plural(p.epochs, "epoch"),
        plural(seeds.len(), "seed")
    );
    let specs: Vec<RunSpec> = KINDS
        .iter()
        .flat_map(|&kind| {
            seeds.iter().map(move |&seed| RunSpec {
                kind,
                batch: b,
                lr,
                epochs: p.epochs,
                seed,
                keep: kind == NormKind::Batch,
            })
        })
        .collect();
    let runs = training::run_all(specs, data, "part 2: convergence")?;
    let of = |k: NormKind| runs.iter().filter(move |r| r.spec.kind == k);

    let e = p.early_epoch.clamp(1, p.epochs);
    let mut t = Table::new([
        "normalizer".to_string(),
        format!("held-out % after epoch {e}"),
        format!("after epoch {}", p.epochs),
        format!("epochs to {:.0}%", 100.0 * p.target),
        "seeds reaching it".to_string(),
        "final training loss".to_string(),
    ]);
    for k in KINDS {
        let early: Vec<f64> = of(k).map(|r| r.epoch_acc[e - 1]).collect();
        let last: Vec<f64> = of(k).map(RunResult::final_acc).collect();
        let to: Vec<f64> = of(k).map(|r| r.epochs_to(p.target) as f64).collect();
        let reach = of(k).filter(|r| r.epochs_to(p.target) <= p.epochs).count();
        // The final loss of the seeds that did not diverge.
        let loss: Vec<f64> = of(k)
            .filter(|r| !r.diverged)
            .map(|r| r.epoch_loss.last().copied().unwrap_or(f64::NAN))
            .collect();
        let n_div = of(k).filter(|r| r.diverged).count();
        let (tm, ts) = mean_std(&to);
        let (lm, ls) = mean_std(&loss);
        t.row([
            k.label().to_string(),
            pct_pm(&early),
            pct_pm(&last),
            format!("{tm:.1} ± {ts:.1}"),
            format!("{reach}/{}", to.len()),
            if n_div > 0 {
                format!("{lm:.3} ± {ls:.3} ({n_div} diverged)")
            } else {
                format!("{lm:.3} ± {ls:.3}")
            },
        ]);
        m.insert(Metric::AccAfter { kind: k, epoch: e }, early);
        m.insert(Metric::EpochsToTarget { kind: k }, to);
        m.insert(Metric::Final { kind: k, batch: b }, last);
    }
    println!();
    print!("{}", t.render());
    println!(
        "  (epochs to {:.0}%: a seed that never reaches it counts as {} epochs)",
        100.0 * p.target,
        p.epochs + 1
    );
    if runs.iter().any(|r| r.diverged) {
        println!("  (a diverged seed counts in the accuracies with what its NaN network predicts: one class)");
    }

    let mut files = curves(&runs, p, out)?;
    files.extend(stability(data, p, seeds, out, m)?);
    Ok(Outcome { runs, files })
}

/// Per epoch, the mean and sd over the seeds of `f(run, epoch index)` for the
/// runs of `kind` (non-finite values left out).
fn per_epoch(
    runs: &[RunResult],
    kind: NormKind,
    epochs: usize,
    f: &dyn Fn(&RunResult, usize) -> f64,
) -> Vec<(f64, (f64, f64))> {
    (0..epochs)
        .map(|i| {
            let v: Vec<f64> = runs
                .iter()
                .filter(|r| r.spec.kind == kind)
                .map(|r| f(r, i))
                .filter(|v| v.is_finite())
                .collect();
            ((i + 1) as f64, mean_std(&v))
        })
        .collect()
}

/// One line with a ± 1 sd band per normalizer, the band clipped to `clip`.
fn band_series(
    runs: &[RunResult],
    epochs: usize,
    f: &dyn Fn(&RunResult, usize) -> f64,
    clip: (f64, f64),
) -> Vec<Series> {
    KINDS
        .iter()
        .map(|&k| {
            let pts = per_epoch(runs, k, epochs, f);
            let (color, dashed) = kind_style(k);
            Series {
                label: k.label().into(),
                points: pts.iter().map(|&(x, (m, _))| (x, m)).collect(),
                err: Some(
                    pts.iter()
                        .map(|&(_, (m, s))| ((m - s).max(clip.0), (m + s).min(clip.1)))
                        .collect(),
                ),
                color,
                markers: true,
                reference: false,
                dashed,
                band: true,
            }
        })
        .collect()
}

/// Held-out accuracy and training loss per epoch, mean ± 1 sd over seeds.
fn curves(runs: &[RunResult], p: &Protocol, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let epochs: Vec<f64> = (1..=p.epochs).map(|e| e as f64).collect();
    let x_axis = || plot::Axis {
        label: "epoch".into(),
        scale: Scale::Linear,
        range: (0.5, p.epochs as f64 + 0.5),
        ticks: epochs.clone(),
        fmt: plot::fmt_int,
    };
    let acc = Chart {
        title: format!(
            "Deep MLP ({} layers): held-out accuracy per epoch (mean ± 1 sd, {})",
            crate::protocol::DEPTH + 1,
            plural(runs.len() / KINDS.len(), "seed")
        ),
        x: x_axis(),
        y: plot::Axis {
            label: "held-out accuracy".into(),
            scale: Scale::Linear,
            range: (0.0, 1.0),
            ticks: pct_ticks(0.0, 1.0),
            fmt: plot::fmt_pct,
        },
        series: band_series(runs, p.epochs, &|r, i| r.epoch_acc[i], (0.0, 1.0)),
        crosses: None,
    };
    let mut files = plot::save(&acc, out, "2_convergence_accuracy")?;
    let losses = runs
        .iter()
        .flat_map(|r| r.epoch_loss.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = losses.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.01, 10.0)
    };
    let loss = Chart {
        title: "Deep MLP: training loss per epoch (mean ± 1 sd over seeds)".into(),
        x: x_axis(),
        y: plot::Axis {
            label: "training cross-entropy (log scale)".into(),
            scale: Scale::Log10,
            range: (lo, hi),
            ticks: log_ticks(lo, hi),
            fmt: plot::fmt_num,
        },
        series: band_series(runs, p.epochs, &|r, i| r.epoch_loss[i], (lo, hi)),
        crosses: None,
    };
    files.extend(plot::save(&loss, out, "2_convergence_loss")?);
    Ok(files)
}

/// 1-2-5 ticks inside `lo..=hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let mut d = 10f64.powf(lo.log10().floor());
    while d <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = d * m;
            if v >= lo && v <= hi {
                t.push(v);
            }
        }
        d *= 10.0;
    }
    t
}

/// The learning-rate sweep: failed seeds per normalizer and learning rate.
fn stability(
    data: &Flat,
    p: &Protocol,
    seeds: &[u64],
    out: &Path,
    m: &mut Measurements,
) -> Result<Vec<PathBuf>, Error> {
    let b = p.bmax();
    let mut specs = Vec::new();
    for &kind in &KINDS {
        for &lr in &p.stability_lrs {
            for &seed in seeds {
                specs.push(RunSpec {
                    kind,
                    batch: b,
                    lr,
                    epochs: p.stability_epochs,
                    seed,
                    keep: false,
                });
            }
        }
    }
    println!(
        "\n  Stability: the same networks at larger learning rates (batch {b}, {}); a seed fails when its",
        plural(p.stability_epochs, "epoch")
    );
    println!(
        "  loss becomes non-finite (diverged) or its held-out accuracy ends below {:.0}% (chance: 10%).\n",
        100.0 * FAILED_BELOW
    );
    let runs = training::run_all(specs, data, "part 2: stability")?;
    let cell = |k: NormKind, lr: f64| -> Vec<&RunResult> {
        runs.iter()
            .filter(|r| r.spec.kind == k && r.spec.lr == lr)
            .collect()
    };
    let mut header = vec!["learning rate".to_string()];
    header.extend(KINDS.iter().map(|k| k.label().to_string()));
    let mut t = Table::new(header);
    for &lr in &p.stability_lrs {
        let mut row = vec![sci(lr)];
        for k in KINDS {
            let rs = cell(k, lr);
            let failed = rs.iter().filter(|r| r.failed()).count();
            let div = rs.iter().filter(|r| r.diverged).count();
            let acc: Vec<f64> = rs.iter().map(|r| r.final_acc()).collect();
            row.push(format!(
                "{:.0}% {failed}/{}{}",
                100.0 * mean_std(&acc).0,
                rs.len(),
                if div > 0 {
                    format!(" ({div}✗)")
                } else {
                    String::new()
                }
            ));
        }
        t.row(row);
    }
    print!("{}", t.render());
    println!("  cell: mean held-out accuracy, failed seeds/seeds, (✗: of which diverged)");
    for k in KINDS {
        let v: Vec<f64> = cell(k, p.claim_lr)
            .iter()
            .map(|r| f64::from(u8::from(r.failed())))
            .collect();
        if !v.is_empty() {
            m.insert(Metric::Failed { kind: k }, v);
        }
    }

    let (lo, hi) = (
        p.stability_lrs[0],
        *p.stability_lrs.last().expect("learning rates"),
    );
    let mut crosses = Vec::new();
    let series = KINDS
        .iter()
        .map(|&k| {
            let (color, dashed) = kind_style(k);
            let points = p
                .stability_lrs
                .iter()
                .map(|&lr| {
                    let rs = cell(k, lr);
                    let fail = rs.iter().filter(|r| r.failed()).count() as f64 / rs.len() as f64;
                    if rs.iter().any(|r| r.diverged) {
                        crosses.push((lr, fail));
                    }
                    (lr, fail)
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
                band: false,
            }
        })
        .collect();
    let chart = Chart {
        title: format!(
            "Deep MLP: share of seeds that fail vs. learning rate (batch {b}, {})",
            plural(p.stability_epochs, "epoch")
        ),
        x: plot::Axis {
            label: "learning rate (SGD, momentum 0.9)".into(),
            scale: Scale::Log10,
            range: (lo / 1.5, hi * 1.5),
            ticks: p.stability_lrs.clone(),
            fmt: plot::fmt_num,
        },
        y: plot::Axis {
            label: "seeds that diverge or stall".into(),
            scale: Scale::Linear,
            range: (-0.03, 1.03),
            ticks: pct_ticks(0.0, 1.0),
            fmt: plot::fmt_pct,
        },
        series,
        crosses: (!crosses.is_empty()).then(|| Crosses {
            label: "some seeds diverged (non-finite loss)".into(),
            points: crosses,
        }),
    };
    plot::save(&chart, out, "2_stability")
}
