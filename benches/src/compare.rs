//! `--compare`: joins a `torch_suite.py` output with normkit's numbers and the copy
//! bandwidth at each pass's working set.

use std::collections::BTreeMap;

use crate::cases::Pass;
use crate::report::{json_str, num};

/// One line of a suite output (torch's or normkit's own `--json`).
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteLine {
    /// The case.
    pub case: String,
    /// The pass.
    pub pass: Pass,
    /// Threads.
    pub threads: usize,
    /// Median milliseconds.
    pub median_ms: f64,
    /// GB/s at the median.
    pub gbps: f64,
}

/// Parses JSON lines with at least `case`, `pass`, `threads`, `median_ms`, `gbps`; blank
/// lines and lines without `case` (e.g. STREAM lines) are skipped.
pub fn parse_lines(text: &str, origin: &str) -> Result<Vec<SuiteLine>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{origin}:{}", i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: not JSON: {e}", at()))?;
        let Some(case) = v.get("case").and_then(|c| c.as_str()) else {
            continue;
        };
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| format!("{}: no number {k:?}", at()))
        };
        let pass = v
            .get("pass")
            .and_then(|p| p.as_str())
            .and_then(Pass::parse)
            .ok_or_else(|| format!("{}: \"pass\" must be \"fwd\" or \"bwd\"", at()))?;
        out.push(SuiteLine {
            case: case.to_string(),
            pass,
            threads: field("threads")? as usize,
            median_ms: field("median_ms")?,
            gbps: field("gbps")?,
        });
    }
    Ok(out)
}

/// One row of the side-by-side table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The case.
    pub case: String,
    /// The pass.
    pub pass: Pass,
    /// Threads.
    pub threads: usize,
    /// normkit's median, ms.
    pub normkit_ms: f64,
    /// normkit's GB/s.
    pub normkit_gbps: f64,
    /// torch's median, ms.
    pub torch_ms: f64,
    /// torch's GB/s.
    pub torch_gbps: f64,
    /// Copy bandwidth at the pass's working set, GB/s (same run as normkit's numbers).
    pub copy_gbps: Option<f64>,
}

impl Row {
    /// torch ms / normkit ms: above 1, normkit is faster.
    pub fn ratio(&self) -> f64 {
        self.torch_ms / self.normkit_ms
    }

    /// normkit's GB/s as a percentage of the copy bandwidth.
    pub fn normkit_pct_copy(&self) -> Option<f64> {
        self.copy_gbps.map(|c| 100.0 * self.normkit_gbps / c)
    }

    /// torch's GB/s as a percentage of the copy bandwidth (measured in normkit's run).
    pub fn torch_pct_copy(&self) -> Option<f64> {
        self.copy_gbps.map(|c| 100.0 * self.torch_gbps / c)
    }

    /// The row as a JSON line.
    pub fn json(&self) -> String {
        let opt = |v: Option<f64>, d| v.map_or_else(|| "null".to_string(), |v| num(v, d));
        format!(
            "{{\"case\": {}, \"pass\": \"{}\", \"threads\": {}, \"normkit_ms\": {}, \"torch_ms\": {}, \
             \"ratio\": {}, \"normkit_gbps\": {}, \"torch_gbps\": {}, \"copy_gbps\": {}, \
             \"normkit_pct_copy\": {}, \"torch_pct_copy\": {}}}",
            json_str(&self.case),
            self.pass.as_str(),
            self.threads,
            num(self.normkit_ms, 4),
            num(self.torch_ms, 4),
            num(self.ratio(), 3),
            num(self.normkit_gbps, 2),
            num(self.torch_gbps, 2),
            opt(self.copy_gbps, 2),
            opt(self.normkit_pct_copy(), 1),
            opt(self.torch_pct_copy(), 1),
        )
    }
}

/// Joins torch's and normkit's lines on (case, pass, threads), in torch's order; torch
/// lines without a normkit counterpart are returned apart. `copy` maps a pass's working
/// set in bytes to the copy bandwidth measured for it.
pub fn join(
    torch: &[SuiteLine],
    normkit: &[SuiteLine],
    copy: &BTreeMap<usize, f64>,
) -> (Vec<Row>, Vec<SuiteLine>) {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for t in torch {
        let Some(n) = normkit
            .iter()
            .find(|n| n.case == t.case && n.pass == t.pass && n.threads == t.threads)
        else {
            missing.push(t.clone());
            continue;
        };
        let bytes =
            crate::cases::case_info(&t.case).map(|c| t.pass.bytes(c.shape.iter().product()));
        rows.push(Row {
            case: t.case.clone(),
            pass: t.pass,
            threads: t.threads,
            normkit_ms: n.median_ms,
            normkit_gbps: n.gbps,
            torch_ms: t.median_ms,
            torch_gbps: t.gbps,
            copy_gbps: bytes.and_then(|b| copy.get(&b).copied()),
        });
    }
    (rows, missing)
}

/// The geometric mean of the ratios of `rows` (NaN when empty).
pub fn geomean(rows: &[&Row]) -> f64 {
    if rows.is_empty() {
        return f64::NAN;
    }
    (rows.iter().map(|r| r.ratio().ln()).sum::<f64>() / rows.len() as f64).exp()
}

/// The side-by-side table, with geometric means overall and per pass.
pub fn table(rows: &[Row]) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}%"));
    let mut s = format!(
        "{:<14} {:<4} {:>2} {:>11} {:>11} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}\n",
        "case",
        "pass",
        "T",
        "normkit ms",
        "torch ms",
        "ratio",
        "nk GB/s",
        "pt GB/s",
        "copy GB/s",
        "nk %copy",
        "pt %copy"
    );
    for r in rows {
        s += &format!(
            "{:<14} {:<4} {:>2} {:>11.4} {:>11.4} {:>7.2}x {:>9.2} {:>9.2} {:>9} {:>8} {:>8}\n",
            r.case,
            r.pass.as_str(),
            r.threads,
            r.normkit_ms,
            r.torch_ms,
            r.ratio(),
            r.normkit_gbps,
            r.torch_gbps,
            r.copy_gbps
                .map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
            pct(r.normkit_pct_copy()),
            pct(r.torch_pct_copy()),
        );
    }
    let all: Vec<&Row> = rows.iter().collect();
    let fwd: Vec<&Row> = rows.iter().filter(|r| r.pass == Pass::Fwd).collect();
    let bwd: Vec<&Row> = rows.iter().filter(|r| r.pass == Pass::Bwd).collect();
    s += &format!(
        "geometric mean of ratios (torch ms / normkit ms; > 1: normkit faster): {:.3} over {} rows \
         (fwd {:.3}, bwd {:.3})\n",
        geomean(&all),
        all.len(),
        geomean(&fwd),
        geomean(&bwd)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TORCH: &str = r#"{"case": "ln", "pass": "fwd", "threads": 1, "median_ms": 4.0, "gbps": 16.78, "min_ms": 3.9, "reps": 200, "impl": "F.layer_norm"}
{"case": "ln", "pass": "bwd", "threads": 1, "median_ms": 9.0, "gbps": 11.18}

{"case": "gn", "pass": "fwd", "threads": 1, "median_ms": 1.0, "gbps": 12.85}
"#;

    #[test]
    fn parses_joins_and_summarizes() {
        let torch = parse_lines(TORCH, "t").unwrap();
        assert_eq!(torch.len(), 3);
        let nk = parse_lines(
            r#"{"case": "ln", "pass": "fwd", "threads": 1, "median_ms": 2.0, "gbps": 33.55}
{"stream": "copy", "bytes": 100, "threads": 1, "gbps": 30.0}
{"case": "ln", "pass": "bwd", "threads": 1, "median_ms": 18.0, "gbps": 5.59}"#,
            "n",
        )
        .unwrap();
        let copy = BTreeMap::from([(2 * 8192 * 1024 * 4, 40.0)]);
        let (rows, missing) = join(&torch, &nk, &copy);
        assert_eq!(rows.len(), 2);
        assert_eq!(missing.len(), 1);
        assert_eq!(rows[0].ratio(), 2.0);
        assert_eq!(rows[1].ratio(), 0.5);
        assert!((rows[0].normkit_pct_copy().unwrap() - 83.875).abs() < 1e-9);
        assert_eq!(rows[1].copy_gbps, None);
        let all: Vec<&Row> = rows.iter().collect();
        assert!((geomean(&all) - 1.0).abs() < 1e-12);
        let t = table(&rows);
        assert!(
            t.contains("2.00x") && t.contains("0.50x") && t.contains("1.000 over 2 rows"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&rows[1].json()).unwrap();
        assert_eq!(v["ratio"], 0.5);
        assert!(v["copy_gbps"].is_null());
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse_lines("{nope", "f").unwrap_err().contains("f:1"));
        let e = parse_lines(r#"{"case": "ln", "pass": "up", "threads": 1}"#, "f").unwrap_err();
        assert!(e.contains("pass"), "{e}");
    }
}
