//! Compares measured numbers with the article's claims, honestly: a claim
//! "agrees" only when the difference exceeds twice its standard error over
//! the seeds, "disagrees" when the opposite difference does, and is "within
//! noise" otherwise.

/// Smallest noise level assumed for an accuracy difference (about one
/// held-out example in 360), so that single-seed runs are not over-read.
const NOISE_FLOOR: f64 = 0.003;

/// The collected verdicts.
#[derive(Default)]
pub struct Verdicts {
    lines: Vec<String>,
    counts: [usize; 3],
}

#[derive(Clone, Copy)]
enum Status {
    Agrees,
    Disagrees,
    Unclear,
}

impl Verdicts {
    /// Starts a titled group of claims.
    pub fn section(&mut self, title: &str) {
        self.lines.push(format!("  {title}"));
    }

    fn push(&mut self, status: Status, claim: &str, detail: &str) {
        let (tag, i) = match status {
            Status::Agrees => ("agrees   ", 0),
            Status::Disagrees => ("DISAGREES", 1),
            Status::Unclear => ("noise    ", 2),
        };
        self.counts[i] += 1;
        self.lines.push(format!("    [{tag}] {claim}: {detail}"));
    }

    fn noise(a: (f64, f64), b: (f64, f64), n: usize) -> f64 {
        let se = ((a.1 * a.1 + b.1 * b.1) / n.max(1) as f64).sqrt();
        (2.0 * se).max(NOISE_FLOOR)
    }

    fn detail(a: (f64, f64), b: (f64, f64), noise: f64) -> String {
        format!(
            "{:.1}% vs. {:.1}% (Δ {:+.1} points, noise ± {:.1})",
            100.0 * a.0,
            100.0 * b.0,
            100.0 * (a.0 - b.0),
            100.0 * noise
        )
    }

    /// Claim: accuracy `a` (mean, sd over `n` seeds) is higher than `b`.
    pub fn greater(&mut self, claim: &str, a: (f64, f64), b: (f64, f64), n: usize) {
        let noise = Self::noise(a, b, n);
        let d = a.0 - b.0;
        let status = if d > noise {
            Status::Agrees
        } else if d < -noise {
            Status::Disagrees
        } else {
            Status::Unclear
        };
        self.push(status, claim, &Self::detail(a, b, noise));
    }

    /// Claim: `a` is not worse than `b`.
    pub fn not_worse(&mut self, claim: &str, a: (f64, f64), b: (f64, f64), n: usize) {
        let noise = Self::noise(a, b, n);
        let status = if a.0 - b.0 >= -noise {
            Status::Agrees
        } else {
            Status::Disagrees
        };
        self.push(status, claim, &Self::detail(a, b, noise));
    }

    /// Claim: `a` and `b` are equal up to noise.
    pub fn close(&mut self, claim: &str, a: (f64, f64), b: (f64, f64), n: usize) {
        let noise = Self::noise(a, b, n);
        let status = if (a.0 - b.0).abs() <= noise {
            Status::Agrees
        } else {
            Status::Disagrees
        };
        self.push(status, claim, &Self::detail(a, b, noise));
    }

    /// A claim decided by a measured fact (no seed noise involved).
    pub fn fact(&mut self, claim: &str, holds: bool, detail: &str) {
        self.push(
            if holds {
                Status::Agrees
            } else {
                Status::Disagrees
            },
            claim,
            detail,
        );
    }

    /// All verdicts, one per line, with a count at the end.
    pub fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push_str(&format!(
            "\n  => {} agree, {} disagree, {} within noise\n",
            self.counts[0], self.counts[1], self.counts[2]
        ));
        s
    }
}
