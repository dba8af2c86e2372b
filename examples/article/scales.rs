//! Part 1 — why normalize the inputs.
//!
//! A linear model predicts the red-wine quality score from 11 features whose
//! scales differ by orders of magnitude (density varies by ±0.002, total
//! sulfur dioxide by ±33). Gradient descent on the mean squared error is run
//! on the raw features and on the same features standardized by a normkit
//! layer, `#[norm(input = "N,F", axes = "N", eps = 0.0)]`. For each we measure
//! the largest learning rate that does not diverge and the number of steps
//! needed to come within 1% of the best possible loss, and relate both to
//! the curvature of the loss (the eigenvalues of its Hessian).

use std::path::{Path, PathBuf};

use ndarray::{concatenate, Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::data::Wine;
use crate::model::Error;
use crate::norms;
use crate::plot::{self, Chart, Scale, Series};
use crate::protocol::{Measurements, Metric};
use crate::table::{sci, Table};

/// Settings of part 1.
pub struct Settings {
    /// Steps of the long runs (the loss curves).
    pub steps: usize,
    /// Steps used to decide whether a learning rate is stable.
    pub probe_steps: usize,
}

/// Result of one feature set.
struct Outcome {
    name: &'static str,
    lambda: (f64, f64),
    lr: Option<f64>,
    reached: Option<usize>,
    final_loss: f64,
    curve: Vec<(f64, f64)>,
}

/// Runs part 1, prints its tables, records its measurements and writes its
/// plot; returns the plot paths.
pub fn run(
    wine: &Wine,
    set: &Settings,
    out: &Path,
    m: &mut Measurements,
) -> Result<Vec<PathBuf>, Error> {
    let raw = wine.x.clone();
    let std = norms::standardize(raw.view())?;
    print_scales(wine, &std);

    // The best achievable loss, from the normal equations on the
    // well-conditioned standardized features (the same optimum as for the
    // raw features: standardizing is an invertible affine change).
    let best = least_squares_loss(std.view(), wine.y.view());
    let target = 1.01 * best;

    let mut outcomes = Vec::new();
    for (name, x) in [("raw", &raw), ("standardized", &std)] {
        let xa = with_ones(x.view());
        let lambda = hessian_extremes(xa.view());
        let q = Quadratic::new(xa.view(), wine.y.view());
        let lr = largest_stable_lr(&q, set.probe_steps);
        let (curve, reached, final_loss) = match lr {
            Some(lr) => descend(&q, lr, set.steps, target),
            None => (Vec::new(), None, f64::NAN),
        };
        outcomes.push(Outcome {
            name,
            lambda,
            lr,
            reached,
            final_loss,
            curve,
        });
    }

    println!(
        "\n  Linear regression of quality on the 11 features, full-batch gradient descent on the\n  \
         mean squared error (MSE), weights start at 0. Best possible MSE (normal equations): {best:.4};\n  \
         target: MSE ≤ {target:.4} (within 1%). A learning rate is stable if {} steps do not increase the loss.\n",
        set.probe_steps
    );
    let mut t = Table::new([
        "features",
        "Hessian λmax",
        "λmin",
        "condition κ",
        "largest stable lr",
        "theory 2/λmax",
        "steps to target",
        &format!("MSE after {} steps", set.steps),
    ]);
    for o in &outcomes {
        t.row([
            o.name.to_string(),
            sci(o.lambda.1),
            sci(o.lambda.0),
            sci(o.lambda.1 / o.lambda.0),
            o.lr.map_or("none".into(), sci),
            sci(2.0 / o.lambda.1),
            o.reached
                .map_or(format!("not in {}", set.steps), |s| s.to_string()),
            format!("{:.4}", o.final_loss),
        ]);
    }
    print!("{}", t.render());
    for o in &outcomes {
        if let Some(lr) = o.lr {
            println!(
                "  {:>12}: the flattest direction shrinks by a factor e only every 1/(lr·λmin) ≈ {} steps",
                o.name,
                steps_fmt(1.0 / (lr * o.lambda.0))
            );
        }
    }

    for (o, standardized) in outcomes.iter().zip([false, true]) {
        m.insert(Metric::StableLr { standardized }, vec![o.lr.unwrap_or(0.0)]);
        m.insert(
            Metric::StepsToTarget { standardized },
            vec![o.reached.map_or(set.steps as f64 + 1.0, |s| s as f64)],
        );
    }

    // Plot the excess loss MSE − best: it shows how far each run still is
    // from the optimum, down to a floor where the curve leaves the chart.
    const FLOOR: f64 = 1e-6;
    let excess = |curve: &[(f64, f64)]| {
        let mut pts = Vec::new();
        for &(step, l) in curve {
            pts.push((step, (l - best).max(FLOOR)));
            if l - best < FLOOR {
                break;
            }
        }
        pts
    };
    let hi = outcomes
        .iter()
        .flat_map(|o| o.curve.iter().map(|p| p.1 - best))
        .fold(1.0, f64::max);
    let chart = Chart {
        title: "Red-wine quality: gradient descent on raw vs. standardized features".into(),
        x: plot::Axis {
            label: "gradient-descent step".into(),
            scale: Scale::Log10,
            range: (1.0, set.steps as f64),
            ticks: plot::decades(1.0, set.steps as f64),
            fmt: plot::fmt_num,
        },
        y: plot::Axis {
            label: "MSE − best possible MSE (log scale)".into(),
            scale: Scale::Log10,
            range: (FLOOR, hi * 2.0),
            ticks: plot::decades(FLOOR, hi * 2.0),
            fmt: plot::fmt_num,
        },
        series: outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| Series {
                label: format!("{}, lr {}", o.name, o.lr.map_or("-".into(), sci)),
                points: excess(&o.curve),
                err: None,
                color: [5, 4][i],
                markers: false,
                reference: false,
                dashed: false,
                band: false,
            })
            .chain([Series {
                label: "target: within 1% of the best MSE".into(),
                points: vec![(1.0, target - best), (set.steps as f64, target - best)],
                err: None,
                color: 8,
                markers: false,
                reference: true,
                dashed: true,
                band: false,
            }])
            .collect(),
        crosses: None,
    };
    plot::save(&chart, out, "1_wine_loss")
}

/// Feature scales before and after standardization.
fn print_scales(wine: &Wine, std: &Array2<f64>) {
    println!("\n  The red-wine data: 1,599 wines, 11 features on very different scales (the");
    println!("  \"age 0-65 vs. salary 0-10,000\" situation). Standardized by");
    println!("  #[norm(input = \"N,F\", axes = \"N\", eps = 0.0)]:\n");
    let mut t = Table::new(["feature", "min", "max", "std", "std after", "mean after"]);
    for (j, name) in wine.names.iter().enumerate() {
        let col = wine.x.column(j);
        let min = col.fold(f64::INFINITY, |m, &v| m.min(v));
        let max = col.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let s = std.column(j);
        t.row([
            name.to_string(),
            format!("{min:.4}"),
            format!("{max:.4}"),
            format!("{:.4}", col.std(0.0)),
            format!("{:.3}", s.std(0.0)),
            format!("{:+.0e}", s.mean().unwrap_or(f64::NAN)),
        ]);
    }
    print!("{}", t.render());
}

/// Appends a column of ones (the intercept).
fn with_ones(x: ArrayView2<'_, f64>) -> Array2<f64> {
    concatenate![Axis(1), x, Array2::ones((x.nrows(), 1))]
}

/// The sufficient statistics of the MSE of a linear model: with
/// `G = XᵀX/n`, `c = Xᵀy/n` and `s = yᵀy/n`, the loss is `wᵀGw − 2wᵀc + s`
/// and its gradient `2(Gw − c)`. Full-batch gradient descent is then exact
/// and costs a 12×12 product per step instead of two passes over the data.
struct Quadratic {
    g: Array2<f64>,
    c: Array1<f64>,
    s: f64,
}

impl Quadratic {
    fn new(x: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Self {
        let n = y.len() as f64;
        Self {
            g: x.t().dot(&x) / n,
            c: x.t().dot(&y) / n,
            s: y.dot(&y) / n,
        }
    }

    fn loss(&self, w: &Array1<f64>) -> f64 {
        w.dot(&self.g.dot(w)) - 2.0 * w.dot(&self.c) + self.s
    }

    /// One gradient-descent step.
    fn step(&self, w: &mut Array1<f64>, lr: f64) {
        let grad = (self.g.dot(&*w) - &self.c) * 2.0;
        w.scaled_add(-lr, &grad);
    }
}

/// Largest learning rate on a quarter-decade grid that does not increase the
/// loss within `steps` steps.
fn largest_stable_lr(q: &Quadratic, steps: usize) -> Option<f64> {
    let mut best = None;
    for k in -36..=8 {
        let lr = 10f64.powf(k as f64 / 4.0);
        let mut w = Array1::zeros(q.c.len());
        let l0 = q.loss(&w);
        let mut ok = true;
        for _ in 0..steps {
            q.step(&mut w, lr);
            let l = q.loss(&w);
            if !l.is_finite() || l > 1e3 * l0 {
                ok = false;
                break;
            }
        }
        if ok && q.loss(&w) < l0 {
            best = Some(lr);
        } else if best.is_some() {
            break; // larger rates only diverge faster
        }
    }
    best
}

/// Gradient descent from zero; returns the loss curve (log-spaced samples),
/// the first step at which the loss is ≤ `target`, and the final loss.
fn descend(
    q: &Quadratic,
    lr: f64,
    steps: usize,
    target: f64,
) -> (Vec<(f64, f64)>, Option<usize>, f64) {
    let mut w = Array1::zeros(q.c.len());
    let mut curve = Vec::new();
    let mut reached = None;
    let mut next_sample = 1.0f64;
    let mut last = f64::NAN;
    for step in 1..=steps {
        q.step(&mut w, lr);
        let l = q.loss(&w);
        last = l;
        if reached.is_none() && l <= target {
            reached = Some(step);
        }
        if step as f64 >= next_sample || step == steps {
            curve.push((step as f64, l));
            next_sample = (next_sample * 1.05).max(step as f64 + 1.0);
        }
    }
    (curve, reached, last)
}

/// Smallest and largest eigenvalue of the MSE Hessian `2/n · XᵀX`.
fn hessian_extremes(x: ArrayView2<'_, f64>) -> (f64, f64) {
    let h = x.t().dot(&x) * (2.0 / x.nrows() as f64);
    let ev = symmetric_eigenvalues(h);
    let min = ev.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ev.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Eigenvalues of a small symmetric matrix (cyclic Jacobi rotations).
fn symmetric_eigenvalues(mut a: Array2<f64>) -> Vec<f64> {
    let n = a.nrows();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[[i, j]].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[[i, i]].powi(2)).sum();
        if off <= 1e-30 * diag {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[[p, q]].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * a[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * cs;
                for k in 0..n {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = cs * akp - sn * akq;
                    a[[k, q]] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = cs * apk - sn * aqk;
                    a[[q, k]] = sn * apk + cs * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[[i, i]]).collect()
}

/// Minimum MSE of a linear model with intercept (normal equations, solved by
/// Gaussian elimination with partial pivoting).
fn least_squares_loss(x: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> f64 {
    let xa = with_ones(x);
    let mut a = xa.t().dot(&xa);
    let mut b = xa.t().dot(&y);
    let n = a.nrows();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[[i, col]].abs().total_cmp(&a[[j, col]].abs()))
            .unwrap_or(col);
        for k in 0..n {
            a.swap([col, k], [piv, k]);
        }
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[[row, col]] / a[[col, col]];
            for k in col..n {
                a[[row, k]] -= f * a[[col, k]];
            }
            b[row] -= f * b[col];
        }
    }
    let mut w = Array1::<f64>::zeros(n);
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[[row, k]] * w[k]).sum();
        w[row] = (b[row] - s) / a[[row, row]];
    }
    let r = xa.dot(&w) - y;
    r.dot(&r) / y.len() as f64
}

/// A step count: integer below a million, scientific above.
fn steps_fmt(v: f64) -> String {
    if v < 1e6 {
        format!("{v:.0}")
    } else {
        format!("{v:.1e}")
    }
}
