//! `--sweep`: the shapes users bring, beyond the suite's ten.
//!
//! Row lengths from 32 to 4096 (odd ones included), spatial maps from 1×1 to 56×56, channel
//! counts, and batch sizes from 1 to 256, for LayerNorm, RMSNorm, GroupNorm, BatchNorm2d and
//! BatchNorm1d, forward and backward. Every point is timed by normkit (this process) and by
//! PyTorch (`benches/torch_sweep.py`, which receives the same list of points), alternating
//! per thread count; the joined table gives the ratio at every point.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::alternate::{median, CpuId};
use crate::cases::{self, Pass};
use crate::cli::Error;
use crate::report::{json_str, num};
use crate::timing::time_fn;

/// One point of the sweep: a suite case's layer on another shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// The family the point belongs to (for tables and plots): `ln rows`, `gn spatial`, …
    pub family: &'static str,
    /// The suite case whose layer runs (`ln`, `rms`, `gn`, `bn_train`, `bn1d_train`).
    pub case: &'static str,
    /// The input shape (logical NCHW / [rows, D] / [N, C]).
    pub shape: Vec<usize>,
}

impl Point {
    /// `case [a,b,c]`, the key that joins normkit's and torch's lines.
    pub fn key(&self) -> String {
        format!("{} {:?}", self.case, self.shape)
    }

    /// The point as the JSON object `torch_sweep.py` reads.
    pub fn json(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        format!(
            "{{\"family\": {}, \"case\": {}, \"shape\": [{}]}}",
            json_str(self.family),
            json_str(self.case),
            dims.join(", ")
        )
    }
}

/// The sweep's points, family by family.
pub fn points() -> Vec<Point> {
    let mut p = Vec::new();
    let mut add = |family, case, shape: Vec<usize>| {
        p.push(Point {
            family,
            case,
            shape,
        })
    };
    // LayerNorm / RMSNorm row lengths at ~1 MB (L2-resident: the fixed costs show).
    for d in [
        32, 64, 100, 128, 200, 256, 384, 500, 768, 1000, 1024, 2048, 4096,
    ] {
        add("ln rows (1 MB)", "ln", vec![(1 << 18) / d, d]);
    }
    for d in [64, 100, 768, 4096] {
        add("rms rows (1 MB)", "rms", vec![(1 << 18) / d, d]);
    }
    // Row norms at inference-like batch sizes, and a large one.
    for shape in [[1, 768], [1, 4096], [8, 4096], [32, 128], [4096, 768]] {
        add("ln batch", "ln", shape.to_vec());
    }
    // GroupNorm(32, 64) over spatial sizes, batch 8; and over channel counts.
    for hw in [1, 2, 4, 7, 8, 14, 28, 56] {
        add("gn spatial", "gn", vec![8, 64, hw, hw]);
    }
    for c in [32, 128, 512] {
        add("gn channels", "gn", vec![4, c, 14, 14]);
    }
    // BatchNorm2d(64) over spatial sizes (batch 16) and batch sizes (8×8 maps).
    for hw in [1, 2, 4, 7, 8, 14, 28] {
        add("bn2d spatial", "bn_train", vec![16, 64, hw, hw]);
    }
    for n in [2, 8, 32, 128] {
        add("bn2d batch", "bn_train", vec![n, 64, 8, 8]);
    }
    // BatchNorm1d(512) on [N, 512], N = 2 … 256.
    for n in [2, 8, 32, 128, 256] {
        add("bn1d batch", "bn1d_train", vec![n, 512]);
    }
    p
}

/// One timed point and pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepLine {
    /// The point's key ([`Point::key`]).
    pub key: String,
    /// The pass.
    pub pass: Pass,
    /// Threads.
    pub threads: usize,
    /// Median milliseconds.
    pub median_ms: f64,
}

/// Parses `torch_sweep.py`'s (or normkit's) JSON lines: `case`, `shape`, `pass`, `threads`,
/// `median_ms`.
pub fn parse_lines(text: &str) -> Result<Vec<SweepLine>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let bad = || {
            format!(
                "line {}: needs case, shape, pass, threads, median_ms",
                i + 1
            )
        };
        let case = v["case"].as_str().ok_or_else(bad)?;
        let shape: Option<Vec<usize>> = v["shape"].as_array().map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        });
        out.push(SweepLine {
            key: format!("{case} {:?}", shape.ok_or_else(bad)?),
            pass: v["pass"].as_str().and_then(Pass::parse).ok_or_else(bad)?,
            threads: v["threads"].as_u64().ok_or_else(bad)? as usize,
            median_ms: v["median_ms"].as_f64().ok_or_else(bad)?,
        });
    }
    Ok(out)
}

/// Times every point with normkit in a pool of `threads` threads; JSON lines.
pub fn run_normkit(
    points: &[Point],
    threads: usize,
    budget: f64,
    seed: u64,
) -> Result<String, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let mut text = String::new();
        for p in points {
            let mut runner = cases::build(p.case, &p.shape, seed)?;
            let passes: &[Pass] = if runner.has_bwd() {
                &[Pass::Fwd, Pass::Bwd]
            } else {
                &[Pass::Fwd]
            };
            for &pass in passes {
                let t = match pass {
                    Pass::Fwd => time_fn(|| runner.fwd(), 0, budget)?,
                    Pass::Bwd => time_fn(|| runner.bwd(), 0, budget)?,
                };
                let line = format!(
                    "{{\"family\": {}, \"case\": {}, \"shape\": {:?}, \"pass\": \"{}\", \"threads\": {threads}, \
                     \"median_ms\": {}, \"min_ms\": {}, \"reps\": {}, \"impl\": \"normkit _into\"}}",
                    json_str(p.family),
                    json_str(p.case),
                    p.shape,
                    pass.as_str(),
                    num(t.median * 1e3, 5),
                    num(t.min * 1e3, 5),
                    t.reps
                );
                eprintln!("{line}");
                text += &line;
                text.push('\n');
            }
        }
        Ok(text)
    })
}

/// The settings of `--sweep`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Output folder.
    pub out: PathBuf,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Python with torch.
    pub python: String,
    /// Seconds of timed calls per point and pass.
    pub budget: f64,
    /// Input seed.
    pub seed: u64,
    /// Only the points of these suite cases (`--sweep-cases`; empty: every point).
    pub cases: Vec<String>,
}

/// Runs the sweep (torch and normkit alternating per thread count) and writes
/// `sweep-torch-{t}t.jsonl`, `sweep-normkit-{t}t.jsonl` and `sweep.md` into the folder.
pub fn run(plan: &Plan) -> Result<(), Error> {
    std::fs::create_dir_all(&plan.out).map_err(|e| format!("{}: {e}", plan.out.display()))?;
    let mut pts = points();
    if !plan.cases.is_empty() {
        pts.retain(|p| plan.cases.iter().any(|c| c == p.case));
        if pts.is_empty() {
            return Err(format!("--sweep-cases: no sweep point of {:?}", plan.cases).into());
        }
    }
    let list: Vec<String> = pts.iter().map(Point::json).collect();
    let points_json = format!("[{}]", list.join(", "));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("torch_sweep.py");
    let mut torch = Vec::new();
    let mut mine = Vec::new();
    for &t in &plan.threads {
        eprintln!("sweep, {t} thread(s): torch ({} points)", pts.len());
        let out = std::process::Command::new(&plan.python)
            .arg(&script)
            .args([
                "--threads",
                &t.to_string(),
                "--budget",
                &plan.budget.to_string(),
            ])
            .args(["--points", &points_json])
            .output()
            .map_err(|e| format!("{} {}: {e}", plan.python, script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        std::fs::write(plan.out.join(format!("sweep-torch-{t}t.jsonl")), &text)?;
        torch.extend(parse_lines(&text)?);
        eprintln!("sweep, {t} thread(s): normkit");
        let text = run_normkit(&pts, t, plan.budget, plan.seed)?;
        std::fs::write(plan.out.join(format!("sweep-normkit-{t}t.jsonl")), &text)?;
        mine.extend(parse_lines(&text)?);
    }
    let md = table(&pts, &plan.threads, &mine, &torch);
    std::fs::write(plan.out.join("sweep.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// The sweep as Markdown: one row per point and pass, the ratio (torch ms / normkit ms) per
/// thread count, and a summary of the points below 1.0×.
pub fn table(pts: &[Point], threads: &[usize], mine: &[SweepLine], torch: &[SweepLine]) -> String {
    let find = |lines: &[SweepLine], key: &str, pass: Pass, t: usize| {
        let v: Vec<f64> = lines
            .iter()
            .filter(|l| l.key == key && l.pass == pass && l.threads == t)
            .map(|l| l.median_ms)
            .collect();
        median(&v)
    };
    let id = CpuId::read();
    let commit = crate::alternate::git(&["rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let mut s = format!(
        "# Sweep: normkit vs PyTorch beyond the suite\n\n{} (family {} model {}), commit {commit}; ratio = torch ms / normkit ms (> 1: normkit faster)\n\n| family | case | shape | pass |",
        id.model_name, id.family, id.model
    );
    for t in threads {
        let _ = write!(s, " normkit ms {t}T | torch ms {t}T | ratio {t}T |");
    }
    s += "\n|---|---|---|---|";
    for _ in threads {
        s += "---|---|---|";
    }
    s.push('\n');
    let mut below = Vec::new();
    let mut total = 0;
    for p in pts {
        for pass in [Pass::Fwd, Pass::Bwd] {
            let key = p.key();
            if threads.iter().all(|&t| find(mine, &key, pass, t).is_nan()) {
                continue;
            }
            let _ = write!(
                s,
                "| {} | {} | {:?} | {} |",
                p.family,
                p.case,
                p.shape,
                pass.as_str()
            );
            for &t in threads {
                let (a, b) = (find(mine, &key, pass, t), find(torch, &key, pass, t));
                let r = b / a;
                total += 1;
                if r < 1.0 {
                    below.push(format!("{key} {} {t}T {r:.2}×", pass.as_str()));
                }
                let _ = write!(s, " {a:.4} | {b:.4} | {r:.2}× |");
            }
            s.push('\n');
        }
    }
    let _ = writeln!(
        s,
        "\n{} of {total} (point, pass, threads) below 1.0×{}{}",
        below.len(),
        if below.is_empty() { "" } else { ": " },
        below.join("; ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_builds_and_covers_the_ranges() {
        let pts = points();
        let rows: Vec<usize> = pts
            .iter()
            .filter(|p| p.case == "ln")
            .map(|p| p.shape[1])
            .collect();
        assert!(rows.contains(&32) && rows.contains(&4096) && rows.contains(&100));
        assert!(pts.iter().any(|p| p.case == "gn" && p.shape[2] == 1));
        assert!(pts.iter().any(|p| p.case == "gn" && p.shape[2] == 56));
        assert!(pts.iter().any(|p| p.shape[0] == 1) && pts.iter().any(|p| p.shape[0] == 256));
        for p in &pts {
            // Small enough to build here at a tenth of the rows.
            let mut shape = p.shape.clone();
            shape[0] = shape[0].div_ceil(10).max(2);
            let mut r = cases::build(p.case, &shape, 0).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            r.fwd().unwrap();
        }
    }

    #[test]
    fn joins_points_by_case_and_shape() {
        let pts = vec![Point {
            family: "ln rows",
            case: "ln",
            shape: vec![4, 8],
        }];
        assert_eq!(
            pts[0].json(),
            r#"{"family": "ln rows", "case": "ln", "shape": [4, 8]}"#
        );
        let nk = parse_lines(
            r#"{"case": "ln", "shape": [4, 8], "pass": "fwd", "threads": 1, "median_ms": 0.5}"#,
        )
        .unwrap();
        let pt = parse_lines(
            r#"{"case": "ln", "shape": [4, 8], "pass": "fwd", "threads": 1, "median_ms": 0.25}"#,
        )
        .unwrap();
        let md = table(&pts, &[1], &nk, &pt);
        assert!(
            md.contains("| ln rows | ln | [4, 8] | fwd | 0.5000 | 0.2500 | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains("1 of 1 (point, pass, threads) below 1.0×: ln [4, 8] fwd 1T 0.50×"),
            "{md}"
        );
        assert!(parse_lines(r#"{"case": "ln"}"#).is_err());
    }
}
