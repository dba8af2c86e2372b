//! `--alternate`: the whole comparison on a new machine in one command.
//!
//! For every SIMD level asked for (the detected one, and AVX2 on x86-64), `rounds` times,
//! for every thread count, it runs `torch_suite.py` (with `ATEN_CPU_CAPABILITY=avx2` at the
//! AVX2 level), then normkit's suite in this process (capped with [`simd::set_cap`]), then —
//! at the detected level — `ort_suite.py`: A/B/A/B, so slow drifts of the machine hit every
//! implementation alike. Every raw output is kept as JSON lines; the copy bandwidth at each
//! pass's working set is measured at the end, in the same process; the joined table (medians
//! over the rounds, spreads, ratios, percent of copy and of each case's own traffic floor)
//! is written as Markdown and JSON lines next to a description of the CPU and the commit.
//!
//! [`simd::set_cap`]: normkit::simd::set_cap

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use normkit::simd::{self, Level};

use crate::cases::{self, Pass};
use crate::cli::{self, Emit, Error};
use crate::compare::{self, SuiteLine};
use crate::report::num;
use crate::stream::{self, Kernel};

/// The settings of one `--alternate` run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The folder that receives every file (created if missing).
    pub out: PathBuf,
    /// Rounds of A/B alternation.
    pub rounds: usize,
    /// Thread counts, in order.
    pub threads: Vec<usize>,
    /// SIMD levels: `None` is the detected level, `Some(l)` a cap.
    pub levels: Vec<Option<Level>>,
    /// The Python interpreter with torch (and onnxruntime for the ORT columns).
    pub python: String,
    /// The folder holding `torch_suite.py` and `ort_suite.py`.
    pub suite_dir: PathBuf,
    /// Whether to run `ort_suite.py` (forward cases, detected level only).
    pub ort: bool,
    /// The cases.
    pub cases: Vec<&'static str>,
    /// Timed calls per (case, pass); 0 = auto from `budget`.
    pub reps: usize,
    /// Seconds of timed calls per (case, pass) when `reps == 0`.
    pub budget: f64,
    /// Input data seed.
    pub seed: u64,
}

/// A level's name in file names and tables: `avx512`, `avx2`, `neon`, `scalar`.
pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::Scalar => "scalar",
        Level::Neon => "neon",
        Level::Avx2 => "avx2",
        Level::Avx512 => "avx512",
    }
}

/// Parses a level name as `NORMKIT_SIMD` spells it; `default` is the detected level (`None`).
pub fn parse_level(s: &str) -> Result<Option<Level>, String> {
    match s {
        "default" => Ok(None),
        "scalar" => Ok(Some(Level::Scalar)),
        "neon" => Ok(Some(Level::Neon)),
        "avx2" => Ok(Some(Level::Avx2)),
        "avx512" => Ok(Some(Level::Avx512)),
        other => Err(format!(
            "unknown level {other:?}: default, scalar, neon, avx2 or avx512"
        )),
    }
}

/// The level that actually runs for a requested one on this CPU.
fn effective(level: Option<Level>) -> Level {
    simd::set_cap(level);
    let l = simd::level();
    simd::set_cap(None);
    l
}

/// The CPU as `/proc/cpuinfo` names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuId {
    /// `vendor_id` (`GenuineIntel`, `AuthenticAMD`).
    pub vendor: String,
    /// `cpu family`.
    pub family: String,
    /// `model`.
    pub model: String,
    /// `model name`.
    pub model_name: String,
}

impl CpuId {
    /// Reads the first processor's entry of `/proc/cpuinfo` (empty fields elsewhere).
    pub fn read() -> CpuId {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        CpuId::parse(&text)
    }

    /// Parses the first processor's entry of a `/proc/cpuinfo` text.
    pub fn parse(text: &str) -> CpuId {
        let mut id = CpuId::default();
        for line in text.lines() {
            if line.trim().is_empty() && !id.vendor.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "vendor_id" => id.vendor = v,
                "cpu family" => id.family = v,
                "model" => id.model = v,
                "model name" => id.model_name = v,
                _ => {}
            }
        }
        id
    }

    /// The folder name for this CPU model under `benches/results/`: the model name in lower
    /// case without trademarks, clock or punctuation, then family and model, e.g.
    /// `amd-epyc-f25-m17` (a hypervisor may report only a family name as the model name).
    pub fn slug(&self) -> String {
        let name = self.model_name.to_lowercase();
        let name = name.split('@').next().unwrap_or("");
        let mut words: Vec<String> = Vec::new();
        for w in name
            .replace("(r)", " ")
            .replace("(tm)", " ")
            .split(|c: char| !c.is_ascii_alphanumeric())
        {
            if !w.is_empty() && !matches!(w, "cpu" | "processor" | "with" | "core") {
                words.push(w.to_string());
            }
        }
        if words.is_empty() {
            words.push(if self.vendor.is_empty() {
                "unknown-cpu".to_string()
            } else {
                self.vendor.to_lowercase()
            });
        }
        if !self.family.is_empty() {
            words.push(format!("f{}", self.family));
        }
        if !self.model.is_empty() {
            words.push(format!("m{}", self.model));
        }
        words.join("-")
    }
}

/// The default output folder: `benches/results/<cpu slug>` under the workspace root.
pub fn default_out() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(CpuId::read().slug())
}

fn run_python(
    plan: &Plan,
    script: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<String, Error> {
    let path = plan.suite_dir.join(script);
    if !path.is_file() {
        return Err(format!(
            "{} not found: pass --suite-dir (the folder of torch_suite.py and ort_suite.py)",
            path.display()
        )
        .into());
    }
    let mut cmd = Command::new(&plan.python);
    cmd.arg(&path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{} {}: {e}", plan.python, path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            plan.python,
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The output of `git args` run in the repository (trimmed), `None` when git fails.
pub(crate) fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What `cpu.txt` holds: the `lscpu` model line and caches, `/proc/cpuinfo`'s identity,
/// the commit (with `+dirty` for uncommitted changes), the levels and the peers' versions.
fn describe(plan: &Plan) -> String {
    let mut s = String::new();
    let lscpu = Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in lscpu.lines() {
        let key = line.split(':').next().unwrap_or("").trim();
        if matches!(
            key,
            "Model name"
                | "Vendor ID"
                | "CPU family"
                | "Model"
                | "L1d cache"
                | "L2 cache"
                | "L3 cache"
                | "CPU(s)"
        ) {
            let _ = writeln!(s, "{}", line.trim_end());
        }
    }
    let id = CpuId::read();
    let _ = writeln!(
        s,
        "cpuinfo: {} family {} model {} ({})",
        id.vendor, id.family, id.model, id.model_name
    );
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let _ = writeln!(s, "commit: {commit}{}", if dirty { "+dirty" } else { "" });
    let _ = writeln!(
        s,
        "normkit detected level: {}",
        level_name(simd::detected())
    );
    let probe = "import torch; print('torch', torch.__version__, 'capability', torch.backends.cpu.get_cpu_capability())";
    if let Ok(o) = Command::new(&plan.python).args(["-c", probe]).output() {
        let _ = write!(s, "{}", String::from_utf8_lossy(&o.stdout));
    }
    if plan.ort {
        let probe = "import onnxruntime; print('onnxruntime', onnxruntime.__version__)";
        if let Ok(o) = Command::new(&plan.python).args(["-c", probe]).output() {
            let _ = write!(s, "{}", String::from_utf8_lossy(&o.stdout));
        }
    }
    s
}

/// Runs the whole alternation and writes the folder; prints the joined table.
pub fn run(plan: &Plan) -> Result<(), Error> {
    std::fs::create_dir_all(&plan.out).map_err(|e| format!("{}: {e}", plan.out.display()))?;
    write(&plan.out.join("cpu.txt"), &describe(plan))?;
    let cases_csv = plan.cases.join(",");
    for &level in &plan.levels {
        let lname = level_name(effective(level));
        for round in 1..=plan.rounds {
            for &t in &plan.threads {
                eprintln!(
                    "[{lname}] round {round}/{}, {t} thread(s): torch",
                    plan.rounds
                );
                let mut env = Vec::new();
                if level.is_some() {
                    env.push(("ATEN_CPU_CAPABILITY", lname));
                }
                let args = vec![
                    "--threads".to_string(),
                    t.to_string(),
                    "--alloc".into(),
                    "steady".into(),
                    "--cases".into(),
                    cases_csv.clone(),
                ];
                let text = run_python(plan, "torch_suite.py", &args, &env)?;
                let p = plan
                    .out
                    .join(format!("torch-{lname}-{t}t-run{round}.jsonl"));
                write(&p, &text)?;

                eprintln!(
                    "[{lname}] round {round}/{}, {t} thread(s): normkit",
                    plan.rounds
                );
                simd::set_cap(level);
                let records = cli::run_suite(
                    &plan.cases,
                    t,
                    plan.reps,
                    plan.budget,
                    plan.seed,
                    Emit::Progress,
                );
                simd::set_cap(None);
                let text: String = records?.iter().map(|r| r.json() + "\n").collect();
                let p = plan
                    .out
                    .join(format!("normkit-{lname}-{t}t-run{round}.jsonl"));
                write(&p, &text)?;
                let p = plan
                    .out
                    .join(format!("stream-{lname}-{t}t-run{round}.jsonl"));
                measure_copy(plan, t, &p)?;

                if plan.ort && level.is_none() {
                    eprintln!(
                        "[{lname}] round {round}/{}, {t} thread(s): ort",
                        plan.rounds
                    );
                    let args = vec!["--threads".to_string(), t.to_string()];
                    let text = run_python(plan, "ort_suite.py", &args, &[])?;
                    let p = plan.out.join(format!("ort-{t}t-run{round}.jsonl"));
                    write(&p, &text)?;
                }
            }
        }
    }
    let md = rejoin(&plan.out, &describe_header(plan))?;
    print!("{md}");
    eprintln!("wrote {}", plan.out.display());
    Ok(())
}

/// The tag of a raw output file (`torch-avx2`, `normkit-avx512`, `ort`) and whether it holds
/// copy-bandwidth lines (`stream-…`), from its name; `None` for other files.
fn classify(name: &str) -> Option<(String, bool)> {
    let stem = name.strip_suffix(".jsonl")?;
    let (head, run) = stem.rsplit_once("-run")?;
    run.parse::<usize>().ok()?;
    let (tag, threads) = head.rsplit_once('-')?;
    threads.strip_suffix('t')?.parse::<usize>().ok()?;
    if tag.starts_with("stream") {
        return Some((tag.to_string(), true));
    }
    (tag == "ort" || tag.starts_with("torch-") || tag.starts_with("normkit-"))
        .then(|| (tag.to_string(), false))
}

/// Rebuilds `joined.md` and `joined.jsonl` from the raw files in `dir` (every
/// `<impl>-<level>-<T>t-run<R>.jsonl` and `stream-…-run<R>.jsonl`): the levels in the order
/// avx512, avx2, neon, scalar, the thread counts and cases found. Returns the Markdown.
pub fn rejoin(dir: &Path, header: &str) -> Result<String, Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    let mut lines: Vec<(String, SuiteLine)> = Vec::new();
    let mut copies: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for name in &names {
        let Some((tag, is_stream)) = classify(name) else {
            continue;
        };
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if is_stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("{name}: {e}"))?;
                if v["stream"] != "copy" {
                    continue;
                }
                if let (Some(t), Some(b), Some(g)) = (
                    v["threads"].as_u64(),
                    v["bytes"].as_u64(),
                    v["gbps"].as_f64(),
                ) {
                    copies.entry((t as usize, b as usize)).or_default().push(g);
                }
            }
        } else {
            for l in compare::parse_lines(&text, name)? {
                lines.push((tag.clone(), l));
            }
        }
    }
    let copy: BTreeMap<(usize, usize), f64> = copies.iter().map(|(k, v)| (*k, median(v))).collect();
    let levels: Vec<&str> = ["avx512", "avx2", "neon", "scalar"]
        .into_iter()
        .filter(|l| lines.iter().any(|(t, _)| *t == format!("normkit-{l}")))
        .collect();
    let threads: BTreeSet<usize> = lines.iter().map(|(_, l)| l.threads).collect();
    let threads: Vec<usize> = threads.into_iter().collect();
    let cases: Vec<&str> = cases::SUITE.iter().map(|c| c.name).collect();
    let joined = join(&lines, &levels, &threads, &cases, &copy);
    let md = markdown(&joined, header);
    write(&dir.join("joined.md"), &md)?;
    let jsonl: String = joined.iter().map(|r| r.json() + "\n").collect();
    write(&dir.join("joined.jsonl"), &jsonl)?;
    Ok(md)
}

fn describe_header(plan: &Plan) -> String {
    let id = CpuId::read();
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    format!(
        "{} (family {} model {}), commit {commit}; {} alternating rounds (torch, normkit{}), medians",
        id.model_name,
        id.family,
        id.model,
        plan.rounds,
        if plan.ort { ", ort" } else { "" }
    )
}

/// Copy bandwidth at every working set of the cases in a pool of `threads` threads, written
/// as JSON lines to `path`.
/// Measured right after normkit's suite in every round: the host's memory bandwidth drifts,
/// so a percent of copy is taken against copy runs of the same rounds (their median).
fn measure_copy(plan: &Plan, threads: usize, path: &Path) -> Result<(), Error> {
    let sizes = stream::suite_sizes(&plan.cases);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut text = String::new();
    pool.install(|| {
        for (bytes, labels) in &sizes {
            let r = stream::measure(Kernel::Copy, *bytes, plan.reps, plan.budget.min(0.3));
            text += &crate::report::stream_json(&r, &labels.join(","));
            text.push('\n');
        }
    });
    write(path, &text)
}

/// One row of the joined table: one (level, threads, case, pass).
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The SIMD level name of normkit's run (and torch's `ATEN_CPU_CAPABILITY` when capped).
    pub level: String,
    /// Threads.
    pub threads: usize,
    /// The case.
    pub case: String,
    /// The pass.
    pub pass: Pass,
    /// normkit's medians, one per round.
    pub normkit_ms: Vec<f64>,
    /// torch's medians, one per round.
    pub torch_ms: Vec<f64>,
    /// ONNX Runtime's medians, one per round (forward cases at the detected level).
    pub ort_ms: Vec<f64>,
    /// Copy bandwidth at the pass's working set, GB/s.
    pub copy_gbps: Option<f64>,
    /// The pass's minimal traffic, bytes.
    pub bytes: usize,
    /// The pass's traffic floor for its algorithm, bytes ([`Pass::floor_bytes`]).
    pub floor_bytes: usize,
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

impl Joined {
    /// torch / normkit at the medians (> 1: normkit faster).
    pub fn ratio_torch(&self) -> f64 {
        median(&self.torch_ms) / median(&self.normkit_ms)
    }

    /// ORT / normkit at the medians (NaN without ORT figures).
    pub fn ratio_ort(&self) -> f64 {
        median(&self.ort_ms) / median(&self.normkit_ms)
    }

    fn pct_copy(&self, ms: f64, bytes: usize) -> f64 {
        self.copy_gbps
            .map_or(f64::NAN, |c| 100.0 * bytes as f64 / (ms * 1e-3) / 1e9 / c)
    }

    /// normkit's minimal traffic per second as a percentage of the copy bandwidth.
    pub fn normkit_pct_copy(&self) -> f64 {
        self.pct_copy(median(&self.normkit_ms), self.bytes)
    }

    /// torch's, likewise.
    pub fn torch_pct_copy(&self) -> f64 {
        self.pct_copy(median(&self.torch_ms), self.bytes)
    }

    /// normkit against its own floor: the floor traffic moved at copy bandwidth over the
    /// measured time, in percent (equals [`Joined::normkit_pct_copy`] for one-read cases).
    pub fn normkit_pct_floor(&self) -> f64 {
        self.pct_copy(median(&self.normkit_ms), self.floor_bytes)
    }

    /// The row as a JSON line.
    pub fn json(&self) -> String {
        let list = |v: &[f64]| {
            let items: Vec<String> = v.iter().map(|x| num(*x, 4)).collect();
            format!("[{}]", items.join(", "))
        };
        format!(
            "{{\"level\": \"{}\", \"threads\": {}, \"case\": \"{}\", \"pass\": \"{}\", \
             \"normkit_ms\": {}, \"torch_ms\": {}, \"ort_ms\": {}, \"ratio_torch\": {}, \
             \"ratio_ort\": {}, \"copy_gbps\": {}, \"normkit_pct_copy\": {}, \
             \"torch_pct_copy\": {}, \"normkit_pct_floor\": {}, \"runs_normkit_ms\": {}, \
             \"runs_torch_ms\": {}, \"runs_ort_ms\": {}}}",
            self.level,
            self.threads,
            self.case,
            self.pass.as_str(),
            num(median(&self.normkit_ms), 4),
            num(median(&self.torch_ms), 4),
            num(median(&self.ort_ms), 4),
            num(self.ratio_torch(), 3),
            num(self.ratio_ort(), 3),
            self.copy_gbps.map_or("null".into(), |c| num(c, 2)),
            num(self.normkit_pct_copy(), 1),
            num(self.torch_pct_copy(), 1),
            num(self.normkit_pct_floor(), 1),
            list(&self.normkit_ms),
            list(&self.torch_ms),
            list(&self.ort_ms),
        )
    }
}

/// Joins the tagged lines (`normkit-<level>`, `torch-<level>`, `ort`) into one row per
/// (level, threads, case, pass), in the order of `levels`, `threads` and the suite. ORT's
/// lines join the first level's rows only (ORT runs at the level it detects).
pub fn join(
    lines: &[(String, SuiteLine)],
    levels: &[&str],
    threads: &[usize],
    cases: &[&str],
    copy: &BTreeMap<(usize, usize), f64>,
) -> Vec<Joined> {
    let collect = |tag: &str, t: usize, case: &str, pass: Pass| -> Vec<f64> {
        lines
            .iter()
            .filter(|(g, l)| g == tag && l.threads == t && l.case == case && l.pass == pass)
            .map(|(_, l)| l.median_ms)
            .collect()
    };
    let mut rows = Vec::new();
    let distinct: BTreeSet<&str> = levels.iter().copied().collect();
    let mut done = BTreeSet::new();
    for level in levels
        .iter()
        .filter(|l| distinct.contains(*l) && done.insert(**l))
    {
        for &t in threads {
            for &case in cases {
                let Some(info) = cases::case_info(case) else {
                    continue;
                };
                let numel: usize = info.shape.iter().product();
                let passes: &[Pass] = if info.has_bwd {
                    &[Pass::Fwd, Pass::Bwd]
                } else {
                    &[Pass::Fwd]
                };
                for &pass in passes {
                    let normkit_ms = collect(&format!("normkit-{level}"), t, case, pass);
                    if normkit_ms.is_empty() {
                        continue;
                    }
                    let bytes = pass.bytes(numel);
                    rows.push(Joined {
                        level: level.to_string(),
                        threads: t,
                        case: case.to_string(),
                        pass,
                        normkit_ms,
                        torch_ms: collect(&format!("torch-{level}"), t, case, pass),
                        // ORT runs at its own (detected) level: beside the first level only.
                        ort_ms: if Some(level) == levels.first() {
                            collect("ort", t, case, pass)
                        } else {
                            Vec::new()
                        },
                        copy_gbps: copy.get(&(t, bytes)).copied(),
                        bytes,
                        floor_bytes: pass.floor_bytes(numel, info.reads_twice),
                    });
                }
            }
        }
    }
    rows
}

fn geomean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// The joined table as Markdown: one table per (level, threads), then a summary per table
/// (geometric means, rows below 1.0× and below 1.2× with their percent of copy).
pub fn markdown(rows: &[Joined], header: &str) -> String {
    let mut s = format!("# normkit vs PyTorch (and ONNX Runtime)\n\n{header}\n\n");
    s += "ratio = peer ms / normkit ms (> 1: normkit faster); %copy = minimal traffic \
          (fwd 2·numel·4, bwd 3·numel·4) per second over the copy bandwidth at that working \
          set, same run; %floor = the case's own traffic floor (inputs read twice where a \
          statistics group exceeds the cache) likewise.\n";
    let mut groups: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !groups.contains(&(r.level.clone(), r.threads)) {
            groups.push((r.level.clone(), r.threads));
        }
    }
    let ms = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            format!("{:.3} ({lo:.3}–{hi:.3})", median(v))
        }
    };
    let ratio = |x: f64| {
        if x.is_finite() {
            format!("{x:.2}×")
        } else {
            "-".into()
        }
    };
    let pct = |x: f64| {
        if x.is_finite() {
            format!("{x:.0} %")
        } else {
            "-".into()
        }
    };
    for (level, t) in groups {
        let mine: Vec<&Joined> = rows
            .iter()
            .filter(|r| r.level == level && r.threads == t)
            .collect();
        let _ = write!(
            s,
            "\n## {level}, {t} thread(s)\n\n| case | pass | normkit ms (spread) | PyTorch ms (spread) \
             | vs PyTorch | ORT ms | vs ORT | normkit %copy | PyTorch %copy | normkit %floor |\n\
             |---|---|---|---|---|---|---|---|---|---|\n"
        );
        for r in &mine {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case,
                r.pass.as_str(),
                ms(&r.normkit_ms),
                ms(&r.torch_ms),
                ratio(r.ratio_torch()),
                ms(&r.ort_ms),
                ratio(r.ratio_ort()),
                pct(r.normkit_pct_copy()),
                pct(r.torch_pct_copy()),
                pct(r.normkit_pct_floor()),
            );
        }
        let torch: Vec<f64> = mine.iter().map(|r| r.ratio_torch()).collect();
        let ort: Vec<f64> = mine
            .iter()
            .map(|r| r.ratio_ort())
            .filter(|x| x.is_finite())
            .collect();
        let below: Vec<String> = mine
            .iter()
            .filter(|r| r.ratio_torch() < 1.2)
            .map(|r| {
                format!(
                    "{} {} {} ({:.0} % of copy)",
                    r.case,
                    r.pass.as_str(),
                    ratio(r.ratio_torch()),
                    r.normkit_pct_copy()
                )
            })
            .collect();
        let _ = write!(
            s,
            "\nGeometric mean vs PyTorch **{}** over {} rows, {} below 1.0×",
            ratio(geomean(&torch)),
            torch.len(),
            torch.iter().filter(|&&x| x < 1.0).count()
        );
        if !ort.is_empty() {
            let _ = write!(
                s,
                "; vs ONNX Runtime {} over {} forward rows, {} below 0.97× (3 % counts as parity)",
                ratio(geomean(&ort)),
                ort.len(),
                ort.iter().filter(|&&x| x < 0.97).count()
            );
        }
        let _ = writeln!(
            s,
            ".\nBelow 1.2× PyTorch: {}.",
            if below.is_empty() {
                "none".to_string()
            } else {
                below.join("; ")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_name_the_model() {
        let amd = CpuId::parse(
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
             model name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: other\n",
        );
        assert_eq!(amd.model_name, "AMD EPYC");
        assert_eq!(amd.slug(), "amd-epyc-f25-m17");
        let intel = CpuId {
            vendor: "GenuineIntel".into(),
            family: "6".into(),
            model: "143".into(),
            model_name: "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz".into(),
        };
        assert_eq!(intel.slug(), "intel-xeon-platinum-8481c-f6-m143");
        assert_eq!(CpuId::default().slug(), "unknown-cpu");
    }

    #[test]
    fn levels_parse_like_the_environment_variable() {
        assert_eq!(parse_level("default"), Ok(None));
        assert_eq!(parse_level("avx2"), Ok(Some(Level::Avx2)));
        assert!(parse_level("sse").is_err());
    }

    fn line(case: &str, pass: Pass, threads: usize, ms: f64) -> SuiteLine {
        SuiteLine {
            case: case.into(),
            pass,
            threads,
            median_ms: ms,
            gbps: 0.0,
        }
    }

    #[test]
    fn joins_medians_ratios_and_floors() {
        let tagged = |tag: &str, l: SuiteLine| (tag.to_string(), l);
        let lines = vec![
            tagged("torch-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 6.0)),
            tagged("torch-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 4.0)),
            tagged("torch-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 5.0)),
            tagged("normkit-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 2.0)),
            tagged("normkit-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 3.0)),
            tagged("normkit-avx512", line("bn_train_nhwc", Pass::Fwd, 1, 2.5)),
            tagged("ort", line("bn_train_nhwc", Pass::Fwd, 1, 5.0)),
            tagged("normkit-avx2", line("bn_train_nhwc", Pass::Fwd, 1, 9.0)),
        ];
        let numel = 32 * 64 * 56 * 56;
        let bytes = Pass::Fwd.bytes(numel);
        let copy = BTreeMap::from([((1, bytes), 40.0)]);
        let rows = join(&lines, &["avx512", "avx2"], &[1], &["bn_train_nhwc"], &copy);
        assert_eq!(rows.len(), 2, "one fwd row per level; no normkit bwd lines");
        let r = &rows[0];
        assert_eq!((r.level.as_str(), r.threads), ("avx512", 1));
        assert_eq!(r.ratio_torch(), 2.0); // medians 5.0 / 2.5
        assert_eq!(r.ratio_ort(), 2.0);
        // 2·numel·4 bytes in 2.5 ms at 40 GB/s copy; the floor reads x twice: 3/2 of that.
        let pct = 100.0 * bytes as f64 / 2.5e-3 / 1e9 / 40.0;
        assert!((r.normkit_pct_copy() - pct).abs() < 1e-9);
        assert!((r.normkit_pct_floor() - 1.5 * pct).abs() < 1e-9);
        assert!(rows[1].torch_ms.is_empty() && rows[1].ratio_torch().is_nan());
        let md = markdown(&rows, "test");
        assert!(md.contains("## avx512, 1 thread(s)"), "{md}");
        assert!(
            md.contains(
                "| bn_train_nhwc | fwd | 2.500 (2.000–3.000) | 5.000 (4.000–6.000) | 2.00× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("Geometric mean vs PyTorch **2.00×** over 1 rows, 0 below 1.0×"),
            "{md}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["ratio_torch"], 2.0);
        assert_eq!(v["runs_normkit_ms"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn file_names_classify() {
        assert_eq!(
            classify("torch-avx2-1t-run3.jsonl"),
            Some(("torch-avx2".into(), false))
        );
        assert_eq!(
            classify("normkit-avx512-2t-run1.jsonl"),
            Some(("normkit-avx512".into(), false))
        );
        assert_eq!(classify("ort-2t-run1.jsonl"), Some(("ort".into(), false)));
        assert_eq!(
            classify("stream-avx512-1t-run2.jsonl"),
            Some(("stream-avx512".into(), true))
        );
        for other in [
            "joined.jsonl",
            "sweep-torch-1t.jsonl",
            "cpu.txt",
            "torch-1t.jsonl",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
