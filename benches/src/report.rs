//! Output: JSON lines in `torch_suite.py`'s format, and readable tables.

use crate::cases::Pass;
use crate::stream::StreamResult;
use crate::timing::Timing;

/// What the runner reports as `impl`.
pub const IMPL: &str = "normkit _into";

/// One timed (case, pass).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The suite case.
    pub case: String,
    /// The pass.
    pub pass: Pass,
    /// Threads of the rayon pool.
    pub threads: usize,
    /// Elements of the tensor.
    pub numel: usize,
    /// The timing.
    pub timing: Timing,
}

impl Record {
    /// The minimal traffic of the pass over the median time, in GB/s.
    pub fn gbps(&self) -> f64 {
        self.pass.bytes(self.numel) as f64 / self.timing.median / 1e9
    }

    /// The median in milliseconds.
    pub fn median_ms(&self) -> f64 {
        self.timing.median * 1e3
    }

    /// One JSON line, keys in `torch_suite.py`'s order, numbers rounded as it does.
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"case\": {}, \"pass\": \"{}\", \"threads\": {}, \"median_ms\": {}, \"gbps\": {}, \
             \"min_ms\": {}, \"reps\": {}, \"impl\": \"{IMPL}\"",
            json_str(&self.case),
            self.pass.as_str(),
            self.threads,
            num(self.timing.median * 1e3, 4),
            num(self.gbps(), 2),
            num(self.timing.min * 1e3, 4),
            self.timing.reps,
        );
        if let Some(a) = self.timing.allocs_per_call {
            s += &format!(", \"allocs_per_call\": {}", num(a, 1));
        }
        if let Some(f) = self.timing.minflt_per_call {
            s += &format!(", \"minflt_per_call\": {}", num(f, 1));
        }
        s.push('}');
        s
    }
}

/// The header of [`row`].
pub fn header() -> String {
    format!(
        "{:<14} {:<4} {:>2} {:>11} {:>11} {:>5} {:>8} {:>11} {:>11}",
        "case", "pass", "T", "median ms", "min ms", "reps", "GB/s", "allocs/call", "minflt/call"
    )
}

/// A table row for `r`.
pub fn row(r: &Record) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    format!(
        "{:<14} {:<4} {:>2} {:>11.4} {:>11.4} {:>5} {:>8.2} {:>11} {:>11}",
        r.case,
        r.pass.as_str(),
        r.threads,
        r.timing.median * 1e3,
        r.timing.min * 1e3,
        r.timing.reps,
        r.gbps(),
        opt(r.timing.allocs_per_call),
        opt(r.timing.minflt_per_call),
    )
}

/// One JSON line for a STREAM measurement; `sizes_of` names the suite passes with that
/// working set.
pub fn stream_json(r: &StreamResult, sizes_of: &str) -> String {
    format!(
        "{{\"stream\": \"{}\", \"bytes\": {}, \"threads\": {}, \"gbps\": {}, \"best_gbps\": {}, \
         \"median_ms\": {}, \"reps\": {}, \"sizes_of\": {}}}",
        r.kernel.as_str(),
        r.bytes,
        r.threads,
        num(r.gbps, 2),
        num(r.best_gbps, 2),
        num(r.timing.median * 1e3, 4),
        r.timing.reps,
        json_str(sizes_of),
    )
}

/// The header of [`stream_row`].
pub fn stream_header() -> String {
    format!(
        "{:<6} {:>14} {:>9} {:>2} {:>8} {:>9} {:>11} {:>5}  {}",
        "kernel", "bytes", "MB", "T", "GB/s", "best GB/s", "median ms", "reps", "working set of"
    )
}

/// A table row for a STREAM measurement.
pub fn stream_row(r: &StreamResult, sizes_of: &str) -> String {
    format!(
        "{:<6} {:>14} {:>9.2} {:>2} {:>8.2} {:>9.2} {:>11.4} {:>5}  {}",
        r.kernel.as_str(),
        r.bytes,
        r.bytes as f64 / 1e6,
        r.threads,
        r.gbps,
        r.best_gbps,
        r.timing.median * 1e3,
        r.timing.reps,
        sizes_of
    )
}

/// `x` rounded to `digits` decimals as a JSON number (`null` when not finite), printed like
/// Python's `json.dumps(round(x, digits))` (`12.0`, `2.68`).
pub fn num(x: f64, digits: i32) -> String {
    if !x.is_finite() {
        return "null".to_string();
    }
    let p = 10f64.powi(digits);
    let r = (x * p).round() / p;
    format!("{r:?}")
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_python() {
        assert_eq!(num(2.68004, 4), "2.68");
        assert_eq!(num(12.0, 2), "12.0");
        assert_eq!(num(25.123, 2), "25.12");
        assert_eq!(num(f64::NAN, 2), "null");
    }

    #[test]
    fn json_line_parses_with_the_torch_keys_first() {
        let r = Record {
            case: "ln".into(),
            pass: Pass::Fwd,
            threads: 1,
            numel: 8192 * 1024,
            timing: Timing {
                median: 2.68e-3,
                min: 2.6e-3,
                reps: 200,
                minflt_per_call: Some(0.0),
                allocs_per_call: None,
            },
        };
        let line = r.json();
        assert!(
            line.starts_with(
                r#"{"case": "ln", "pass": "fwd", "threads": 1, "median_ms": 2.68, "gbps": 25.04"#
            ),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["impl"], "normkit _into");
        assert_eq!(v["reps"], 200);
        assert!(v.get("allocs_per_call").is_none());
    }
}
