//! Confronts measurements with the article's claims, honestly: a claim
//! "agrees" only when the difference exceeds twice its standard error over
//! the seeds, "disagrees" when the opposite difference does, and is "within
//! noise" otherwise.
//!
//! The standard error of a difference of means is `√(s_a²/n_a + s_b²/n_b)`
//! (the seeds of the two sides are treated as independent, which is
//! conservative: the tour's variants share their seeds), with a floor per
//! unit so that one-seed runs are not over-read. This file depends on no other
//! file of the tour, so that `tests/article/article_tour.rs` can test it alone.

/// Mean, sample standard deviation and count of the values of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator; 0 for n = 1).
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

impl Sample {
    /// The statistics of `v` (NaN mean if `v` is empty).
    pub fn of(v: &[f64]) -> Self {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            sd: var.sqrt(),
            n,
        }
    }

    /// Standard error of the mean.
    pub fn se(&self) -> f64 {
        self.sd / (self.n.max(1) as f64).sqrt()
    }
}

/// What a metric measures: how it prints and its noise floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// An accuracy (a fraction, printed in %).
    Accuracy,
    /// A share of predictions (a fraction, printed in %).
    Share,
    /// A count of epochs.
    Epochs,
    /// A fraction of seeds (0/1 per seed).
    Fraction,
    /// A learning rate (deterministic).
    LearningRate,
    /// A count of gradient-descent steps (deterministic).
    Steps,
}

impl Unit {
    /// Smallest noise level assumed: about one held-out example in 330 for
    /// accuracies and shares, half an epoch for epoch counts, none for the
    /// deterministic quantities and for fractions of seeds.
    pub fn floor(self) -> f64 {
        match self {
            Unit::Accuracy | Unit::Share => 0.003,
            Unit::Epochs => 0.5,
            Unit::Fraction | Unit::LearningRate | Unit::Steps => 0.0,
        }
    }

    /// A value of this unit (`n`: the number of seeds behind it).
    pub fn value(self, v: f64, n: usize) -> String {
        match self {
            Unit::Accuracy | Unit::Share => format!("{:.1}%", 100.0 * v),
            Unit::Epochs => format!("{v:.1} epochs"),
            Unit::Fraction => format!("{}/{n} seeds", (v * n as f64).round()),
            Unit::LearningRate => compact(v),
            Unit::Steps => format!("{v:.0} steps"),
        }
    }

    /// A difference of this unit.
    pub fn delta(self, d: f64) -> String {
        match self {
            Unit::Accuracy | Unit::Share => format!("{:+.1} points", 100.0 * d),
            Unit::Fraction => format!("{:+.0}%", 100.0 * d),
            Unit::Epochs => format!("{d:+.1}"),
            Unit::LearningRate => format!("{}{}", if d >= 0.0 { "+" } else { "" }, compact(d)),
            Unit::Steps => format!("{d:+.0}"),
        }
    }

    /// A noise level of this unit.
    pub fn noise(self, e: f64) -> String {
        match self {
            Unit::Accuracy | Unit::Share => format!("{:.1}", 100.0 * e),
            Unit::Fraction => format!("{:.0}%", 100.0 * e),
            Unit::Epochs => format!("{e:.1}"),
            Unit::LearningRate => compact(e),
            Unit::Steps => format!("{e:.0}"),
        }
    }
}

/// A number with three decimals, or in scientific notation below 0.01.
fn compact(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// The outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The measurement supports the claim beyond the noise.
    Agrees,
    /// The measurement contradicts the claim beyond the noise.
    Disagrees,
    /// The difference is within the noise.
    Noise,
    /// The run did not measure what the claim needs.
    NotMeasured,
}

/// Twice the standard error of `a.mean − b.mean`, at least the unit's floor.
pub fn noise(a: &Sample, b: &Sample, unit: Unit) -> f64 {
    (2.0 * (a.se().powi(2) + b.se().powi(2)).sqrt()).max(unit.floor())
}

/// Status of the claim "a is larger than b".
pub fn test_greater(a: &Sample, b: &Sample, unit: Unit) -> Status {
    let (d, e) = (a.mean - b.mean, noise(a, b, unit));
    if d > e {
        Status::Agrees
    } else if d < -e {
        Status::Disagrees
    } else {
        Status::Noise
    }
}

/// Status of the claim "a is not worse than b" (higher is better): agrees
/// unless `a` is worse beyond the noise.
pub fn test_not_worse(a: &Sample, b: &Sample, unit: Unit) -> Status {
    if a.mean - b.mean >= -noise(a, b, unit) {
        Status::Agrees
    } else {
        Status::Disagrees
    }
}

/// Status of the claim "a equals b within ± margin" (an equivalence test):
/// agrees when the whole interval `d ± noise` lies inside ± margin,
/// disagrees when it lies wholly outside, and is noise otherwise.
pub fn test_close(a: &Sample, b: &Sample, unit: Unit, margin: f64) -> Status {
    let (d, e) = ((a.mean - b.mean).abs(), noise(a, b, unit));
    if d + e <= margin {
        Status::Agrees
    } else if d - e > margin {
        Status::Disagrees
    } else {
        Status::Noise
    }
}

/// The collected verdicts.
#[derive(Default)]
pub struct Verdicts {
    lines: Vec<String>,
    statuses: Vec<Status>,
}

impl Verdicts {
    /// Starts a titled group of claims.
    pub fn section(&mut self, title: &str) {
        self.lines.push(format!("  {title}"));
    }

    fn push(&mut self, status: Status, claim: &str, detail: &str) -> Status {
        let tag = match status {
            Status::Agrees => "agrees   ",
            Status::Disagrees => "DISAGREES",
            Status::Noise => "noise    ",
            Status::NotMeasured => "n/a      ",
        };
        self.statuses.push(status);
        self.lines.push(format!("    [{tag}] {claim}: {detail}"));
        status
    }

    fn detail(a: &Sample, b: &Sample, unit: Unit, extra: &str) -> String {
        format!(
            "{} vs. {} (Δ {}, noise ± {}{extra})",
            unit.value(a.mean, a.n),
            unit.value(b.mean, b.n),
            unit.delta(a.mean - b.mean),
            unit.noise(noise(a, b, unit)),
        )
    }

    /// Claim: `a` is larger than `b`.
    pub fn greater(&mut self, claim: &str, a: &Sample, b: &Sample, unit: Unit) -> Status {
        let s = test_greater(a, b, unit);
        self.push(s, claim, &Self::detail(a, b, unit, ""))
    }

    /// Claim: `a` is smaller than `b`.
    pub fn less(&mut self, claim: &str, a: &Sample, b: &Sample, unit: Unit) -> Status {
        let s = test_greater(b, a, unit);
        self.push(s, claim, &Self::detail(a, b, unit, ""))
    }

    /// Claim: `a` is not worse than `b` (higher is better).
    pub fn not_worse(&mut self, claim: &str, a: &Sample, b: &Sample, unit: Unit) -> Status {
        let s = test_not_worse(a, b, unit);
        self.push(s, claim, &Self::detail(a, b, unit, ""))
    }

    /// Claim: `a` and `b` are equal within ± `margin`.
    pub fn close(
        &mut self,
        claim: &str,
        a: &Sample,
        b: &Sample,
        unit: Unit,
        margin: f64,
    ) -> Status {
        let s = test_close(a, b, unit, margin);
        let m = format!(", margin ± {}", unit.noise(margin));
        self.push(s, claim, &Self::detail(a, b, unit, &m))
    }

    /// Claim: every value of `a` is zero.
    pub fn zero(&mut self, claim: &str, a: &Sample, unit: Unit) -> Status {
        let s = if a.mean.abs() <= 1e-12 && a.sd <= 1e-12 {
            Status::Agrees
        } else {
            Status::Disagrees
        };
        let detail = format!(
            "largest difference {} (mean over {} seeds)",
            unit.value(a.mean, a.n),
            a.n
        );
        self.push(s, claim, &detail)
    }

    /// A claim the run could not judge.
    pub fn not_measured(&mut self, claim: &str) -> Status {
        self.push(Status::NotMeasured, claim, "not measured in this run")
    }

    /// The statuses so far, in order (used by `tests/article/article_tour.rs`).
    #[allow(dead_code)]
    pub fn statuses(&self) -> &[Status] {
        &self.statuses
    }

    /// How many claims have status `s`.
    pub fn count(&self, s: Status) -> usize {
        self.statuses.iter().filter(|&&x| x == s).count()
    }

    /// All verdicts, one per line, with a count at the end.
    pub fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push_str(&format!(
            "\n  => {} agree, {} disagree, {} within noise",
            self.count(Status::Agrees),
            self.count(Status::Disagrees),
            self.count(Status::Noise)
        ));
        let na = self.count(Status::NotMeasured);
        if na > 0 {
            s.push_str(&format!(", {na} not measured"));
        }
        s.push('\n');
        s
    }
}
