//! The `norm-bench` command line: the suite, `--stream` and `--compare`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cases::{self, Pass, SUITE};
use crate::compare::{self, SuiteLine};
use crate::report::{self, Record};
use crate::stream::{self, Kernel};
use crate::timing::time_fn;

/// Errors of the runner.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The usage text of `--help`.
pub const USAGE: &str = "\
norm-bench: times normkit on the suite of shared/bench/README.md (the cases of torch_suite.py)

USAGE
  cargo run --release -p norm-bench -- [--threads T] [--json] [--cases a,b] [--reps R] [--budget S]
  cargo run --release -p norm-bench -- --small [--threads T] [--reps R]
  cargo run --release -p norm-bench -- --stream [--threads T] [--json] [--cases a,b]
  cargo run --release -p norm-bench -- --compare torch-1t.jsonl [--compare torch-2t.jsonl]
                                       [--against normkit.jsonl] [--threads T] [--json]

OPTIONS
  --threads T      rayon pool size; everything runs inside pool.install (default 1; with
                   --compare: the thread counts found in the files)
  --json           one JSON object per line (torch_suite.py's format) instead of a table
  --cases a,b      a subset of: bn_train,bn_eval,bn_train_nhwc,bn1d_train,bn1d_eval,
                   bn1d_big_train,ln,rms,gn,gn_big,in,ws,bcn
  --reps R         timed calls per (case, pass); 0 = auto from --budget (default 0)
  --budget S       seconds of timed calls per (case, pass) when --reps 0, reps clamped to
                   [10, 200] (default 0.8)
  --seed N         input data seed (default 0)
  --dtype D        f32 (default), bf16 or f16: the suite with every buffer in D, as JSON lines
                   (torch_suite_bf16.py's format: gbps at 2 bytes per element)
  --small          the small calls (BN1d train and LN eval on [32,128], LN rows [1,768],
                   [1,4096], [8,4096], BN2d eval [1,64,8,8]) beside a plain scalar loop
                   computing the same thing, and their ratio; --reps: batches (default 101)
  --small-cases a,b  a subset of the small cases (implies --small): bn1d_train,ln_eval,
                   ln_1x768,ln_1x4096,ln_8x4096,bn2d_eval
  --stream         STREAM copy and triad at every working set of the suite and 1 GiB
  --compare FILE   side-by-side table against a torch_suite.py output (repeatable); runs
                   normkit now unless --against gives normkit --json output files
  --against FILE   normkit --json output to compare instead of running the suite (repeatable)
  --alternate      the whole comparison in one command: torch_suite.py, normkit and
                   ort_suite.py in alternation (A/B/A/B) for --rounds rounds at every
                   thread count of --thread-counts and every level of --levels; writes the
                   raw JSON lines, the copy bandwidth, cpu.txt (lscpu model, commit) and the
                   joined table (joined.md, joined.jsonl) into --out
  --out DIR        with --alternate: the folder (default benches/results/<cpu-model-slug>)
  --rounds R       with --alternate: rounds (default 3)
  --thread-counts  with --alternate: comma-separated thread counts (default 1,2)
  --levels a,b     with --alternate: default (detected), avx512, avx2, neon, scalar (default:
                   default,avx2 where AVX-512 is detected, else default); at a capped level
                   torch runs with ATEN_CPU_CAPABILITY set to it
  --python P       with --alternate: the interpreter with torch/onnxruntime (default python3)
  --suite-dir D    with --alternate: the folder of torch_suite.py and ort_suite.py (default
                   ../shared/bench beside the repository)
  --no-ort         with --alternate: skip ONNX Runtime
  --rejoin         rebuild joined.md / joined.jsonl from the raw files in --out (no timing)
  --sweep          normkit vs PyTorch (benches/torch_sweep.py) on shapes beyond the suite:
                   row lengths 32…4096, spatial maps 1×1…56×56, channel counts, batch sizes
                   1…256, fwd and bwd, at every --thread-counts; writes sweep-*.jsonl and
                   sweep.md into --out (uses --python, --budget default 0.2 here, --seed)
  --sweep-cases a,b  with --sweep: only the points of these cases (ln, rms, gn, bn_train,
                   bn1d_train)
  --cpu            what normkit chose on this machine and why (normkit::cpu_report())
  --list           the cases and their #[norm] declarations
  -h, --help       this text
";

/// The parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--json`.
    pub json: bool,
    /// `--cases` (all by default), in suite order.
    pub cases: Vec<&'static str>,
    /// `--reps` (0 = auto).
    pub reps: usize,
    /// `--budget` seconds.
    pub budget: f64,
    /// `--seed`.
    pub seed: u64,
    /// `--stream`.
    pub stream: bool,
    /// `--small`.
    pub small: bool,
    /// `--small-cases` (all small cases by default).
    pub small_cases: Vec<&'static str>,
    /// `--compare` files.
    pub compare: Vec<PathBuf>,
    /// `--against` files.
    pub against: Vec<PathBuf>,
    /// `--alternate`.
    pub alternate: bool,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// `--rounds`.
    pub rounds: usize,
    /// `--thread-counts`.
    pub thread_counts: Vec<usize>,
    /// `--levels` (`None` = the detected level).
    pub levels: Option<Vec<Option<normkit::simd::Level>>>,
    /// `--python`.
    pub python: String,
    /// `--suite-dir`.
    pub suite_dir: Option<PathBuf>,
    /// `--no-ort`.
    pub no_ort: bool,
    /// `--sweep`.
    pub sweep: bool,
    /// `--sweep-cases` (every sweep point when empty).
    pub sweep_cases: Vec<String>,
    /// `--rejoin`.
    pub rejoin: bool,
    /// Whether `--budget` was given.
    pub budget_given: bool,
    /// `--cpu`.
    pub cpu: bool,
    /// `--list`.
    pub list: bool,
    /// `--help`.
    pub help: bool,
    /// `--dtype bf16|f16`: the suite in half precision (`crate::half`), JSON lines.
    pub dtype: Option<crate::half::Dtype>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: None,
            json: false,
            cases: SUITE.iter().map(|c| c.name).collect(),
            reps: 0,
            budget: 0.8,
            seed: 0,
            stream: false,
            small: false,
            small_cases: crate::small::SMALL.iter().map(|c| c.name).collect(),
            compare: Vec::new(),
            against: Vec::new(),
            alternate: false,
            out: None,
            rounds: 3,
            thread_counts: vec![1, 2],
            levels: None,
            python: "python3".to_string(),
            suite_dir: None,
            no_ort: false,
            sweep: false,
            sweep_cases: Vec::new(),
            rejoin: false,
            budget_given: false,
            cpu: false,
            list: false,
            help: false,
            dtype: None,
        }
    }
}

/// Parses the arguments after the program name (`--key value` or `--key=value`).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match key.as_str() {
            "--threads" => {
                let t: usize = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?;
                if t == 0 {
                    return Err("--threads must be at least 1".into());
                }
                o.threads = Some(t);
            }
            "--json" => o.json = true,
            "--cases" => {
                let v = value("--cases")?;
                let wanted: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                for w in &wanted {
                    if cases::case_info(w).is_none() {
                        return Err(cases::BuildError::UnknownCase(w.to_string()).to_string());
                    }
                }
                o.cases = SUITE
                    .iter()
                    .chain(cases::EXTRA.iter())
                    .map(|c| c.name)
                    .filter(|c| wanted.contains(c))
                    .collect();
            }
            "--reps" => {
                o.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--budget" => {
                o.budget = value("--budget")?
                    .parse()
                    .map_err(|e| format!("--budget: {e}"))?;
                o.budget_given = true;
                if !(o.budget.is_finite() && o.budget > 0.0) {
                    return Err("--budget must be a positive number of seconds".into());
                }
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--stream" => o.stream = true,
            "--small" => o.small = true,
            "--small-cases" => {
                let v = value("--small-cases")?;
                let wanted: Vec<&str> = v.split(',').map(str::trim).collect();
                if let Some(w) = wanted
                    .iter()
                    .find(|w| !crate::small::SMALL.iter().any(|c| c.name == **w))
                {
                    return Err(format!("--small-cases: no small case `{w}`"));
                }
                o.small = true;
                o.small_cases = crate::small::SMALL
                    .iter()
                    .map(|c| c.name)
                    .filter(|c| wanted.contains(c))
                    .collect();
            }
            "--compare" => o.compare.push(value("--compare")?.into()),
            "--against" => o.against.push(value("--against")?.into()),
            "--alternate" => o.alternate = true,
            "--out" => o.out = Some(value("--out")?.into()),
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?;
                if o.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--thread-counts" => {
                let v = value("--thread-counts")?;
                let counts: Result<Vec<usize>, _> =
                    v.split(',').map(|t| t.trim().parse::<usize>()).collect();
                o.thread_counts = counts.map_err(|e| format!("--thread-counts: {e}"))?;
                if o.thread_counts.is_empty() || o.thread_counts.contains(&0) {
                    return Err("--thread-counts needs counts of at least 1".into());
                }
            }
            "--levels" => {
                let v = value("--levels")?;
                let levels: Result<Vec<_>, _> = v
                    .split(',')
                    .map(|l| crate::alternate::parse_level(l.trim()))
                    .collect();
                o.levels = Some(levels?);
            }
            "--python" => o.python = value("--python")?,
            "--suite-dir" => o.suite_dir = Some(value("--suite-dir")?.into()),
            "--no-ort" => o.no_ort = true,
            "--sweep" => o.sweep = true,
            "--sweep-cases" => {
                let v = value("--sweep-cases")?;
                o.sweep_cases = v
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
            }
            "--rejoin" => o.rejoin = true,
            "--cpu" => o.cpu = true,
            "--list" => o.list = true,
            "-h" | "--help" => o.help = true,
            "--dtype" => {
                let v = value("--dtype")?;
                o.dtype = match v.as_str() {
                    "f32" => None,
                    d => Some(
                        crate::half::Dtype::parse(d)
                            .ok_or_else(|| format!("--dtype: {d:?} is not f32, bf16 or f16"))?,
                    ),
                };
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if !o.against.is_empty() && o.compare.is_empty() {
        return Err("--against needs --compare".into());
    }
    if o.stream && !o.compare.is_empty() {
        return Err("--stream and --compare are separate modes".into());
    }
    let modes = [
        o.alternate,
        o.sweep,
        o.rejoin,
        o.stream,
        !o.compare.is_empty(),
    ];
    if modes.iter().filter(|&&m| m).count() > 1 {
        return Err("--stream, --compare, --alternate and --sweep are separate modes".into());
    }
    Ok(o)
}

/// Runs the command line.
pub fn run(o: &Options) -> Result<(), Error> {
    if o.help {
        print!("{USAGE}");
        return Ok(());
    }
    if o.cpu {
        print!("{}", normkit::cpu_report());
        return Ok(());
    }
    if o.list {
        for c in SUITE.iter().chain(cases::EXTRA.iter()) {
            println!("{:<14} {:?}  #[norm({})]", c.name, c.shape, c.declaration);
        }
        return Ok(());
    }
    if !o.compare.is_empty() {
        return run_compare(o);
    }
    if o.alternate {
        return crate::alternate::run(&alternate_plan(o));
    }
    if o.rejoin {
        let dir = o.out.clone().unwrap_or_else(crate::alternate::default_out);
        let header = format!(
            "joined from the raw files of {} (`norm-bench --rejoin`); see cpu.txt for the CPU and commit",
            dir.display()
        );
        print!("{}", crate::alternate::rejoin(&dir, &header)?);
        return Ok(());
    }
    if o.sweep {
        return crate::sweep::run(&crate::sweep::Plan {
            out: o.out.clone().unwrap_or_else(crate::alternate::default_out),
            threads: o.thread_counts.clone(),
            python: o.python.clone(),
            budget: if o.budget_given { o.budget } else { 0.2 },
            seed: o.seed,
            cases: o.sweep_cases.clone(),
        });
    }
    let threads = o.threads.unwrap_or(1);
    if let Some(dtype) = o.dtype {
        let run = (o.reps, o.budget, o.seed);
        crate::half::run_suite(&o.cases, threads, run, dtype, &mut |l| outln(&l))?;
        return Ok(());
    }
    if o.small {
        return run_small(o, threads);
    }
    if o.stream {
        return run_stream(o, threads);
    }
    if !o.json {
        outln(&format!(
            "{}, {threads} thread(s), f32; GB/s = (fwd 2·numel·4 | bwd 3·numel·4 bytes) / median",
            report::IMPL
        ));
        outln(&report::header());
    }
    let emit = if o.json { Emit::Json } else { Emit::Table };
    run_suite(&o.cases, threads, o.reps, o.budget, o.seed, emit)?;
    Ok(())
}

/// The `--alternate` plan from the options, with the defaults filled in.
pub fn alternate_plan(o: &Options) -> crate::alternate::Plan {
    use normkit::simd::Level;
    let levels = o.levels.clone().unwrap_or_else(|| {
        if normkit::simd::detected() == Level::Avx512 {
            vec![None, Some(Level::Avx2)]
        } else {
            vec![None]
        }
    });
    let suite_dir = o.suite_dir.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench")
    });
    crate::alternate::Plan {
        out: o.out.clone().unwrap_or_else(crate::alternate::default_out),
        rounds: o.rounds,
        threads: o.thread_counts.clone(),
        levels,
        python: o.python.clone(),
        suite_dir,
        ort: !o.no_ort,
        cases: o.cases.clone(),
        reps: o.reps,
        budget: o.budget,
        seed: o.seed,
    }
}

/// The small calls ([`crate::small`]) inside a pool of `threads` threads, as a table.
fn run_small(o: &Options, threads: usize) -> Result<(), Error> {
    let samples = if o.reps == 0 { 101 } else { o.reps };
    outln(&format!(
        "{}, small calls, {threads} thread(s), f32; median per call over {samples} alternating \
         batches (~50 us each)",
        report::IMPL
    ));
    outln(&format!(
        "{:<11} {:<14} {:>11} {:>10} {:>7}  what",
        "case", "shape", "normkit_us", "plain_us", "ratio"
    ));
    pool(threads)?.install(|| -> Result<(), Error> {
        for case in crate::small::SMALL {
            if !o.small_cases.contains(&case.name) {
                continue;
            }
            let t = crate::small::run_case(&case, samples, o.seed)?;
            outln(&format!(
                "{:<11} {:<14} {:>11.3} {:>10.3} {:>7.2}  {}",
                case.name,
                format!("{:?}", case.shape),
                t.normkit * 1e6,
                t.plain * 1e6,
                t.ratio(),
                case.what
            ));
        }
        Ok(())
    })
}

/// Where [`run_suite`] prints each record as it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// JSON lines on stdout.
    Json,
    /// Table rows on stdout.
    Table,
    /// Table rows on stderr (progress while comparing).
    Progress,
}

/// Prints a line on stdout and flushes it; a closed stdout (e.g. `| head`) ends the
/// process quietly.
fn outln(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, Error> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

/// Times `cases` (fwd, and bwd where the case has one) inside a pool of `threads` threads.
pub fn run_suite(
    cases: &[&str],
    threads: usize,
    reps: usize,
    budget: f64,
    seed: u64,
    emit: Emit,
) -> Result<Vec<Record>, Error> {
    pool(threads)?.install(|| {
        let mut records = Vec::new();
        for &name in cases {
            let info = cases::case_info(name)
                .ok_or_else(|| cases::BuildError::UnknownCase(name.to_string()))?;
            let mut runner = cases::build(name, info.shape, seed)?;
            let mut passes = vec![Pass::Fwd];
            if runner.has_bwd() {
                passes.push(Pass::Bwd);
            }
            for pass in passes {
                let timing = match pass {
                    Pass::Fwd => time_fn(|| runner.fwd(), reps, budget)?,
                    Pass::Bwd => time_fn(|| runner.bwd(), reps, budget)?,
                };
                let r = Record {
                    case: name.to_string(),
                    pass,
                    threads,
                    numel: runner.numel(),
                    timing,
                };
                match emit {
                    Emit::Json => outln(&r.json()),
                    Emit::Table => outln(&report::row(&r)),
                    Emit::Progress => eprintln!("{}", report::row(&r)),
                }
                records.push(r);
            }
        }
        Ok(records)
    })
}

fn run_stream(o: &Options, threads: usize) -> Result<(), Error> {
    let mut sizes = stream::suite_sizes(&o.cases);
    sizes.push((stream::DRAM_BYTES, vec!["DRAM (1 GiB)".to_string()]));
    if !o.json {
        println!("STREAM-style probe, {threads} thread(s); GB/s = (bytes read + bytes written) / median time");
        outln(&report::stream_header());
    }
    pool(threads)?.install(|| {
        for (bytes, labels) in &sizes {
            let label = labels.join(",");
            for kernel in [Kernel::Copy, Kernel::Triad] {
                let r = stream::measure(kernel, *bytes, o.reps, o.budget);
                if o.json {
                    outln(&report::stream_json(&r, &label));
                } else {
                    outln(&report::stream_row(&r, &label));
                }
            }
        }
    });
    Ok(())
}

fn read_lines(paths: &[PathBuf]) -> Result<Vec<SuiteLine>, Error> {
    let mut all = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        all.extend(compare::parse_lines(&text, &p.display().to_string())?);
    }
    Ok(all)
}

fn run_compare(o: &Options) -> Result<(), Error> {
    let mut torch = read_lines(&o.compare)?;
    torch.retain(|t| {
        let known = cases::case_info(&t.case).is_some();
        if !known {
            eprintln!("skipping unknown case {:?} in the torch file", t.case);
        }
        known && o.threads.is_none_or(|th| th == t.threads) && o.cases.contains(&t.case.as_str())
    });
    if torch.is_empty() {
        return Err("no torch lines to compare (check --threads / --cases)".into());
    }
    let against = read_lines(&o.against)?;
    let thread_counts: BTreeSet<usize> = torch.iter().map(|t| t.threads).collect();
    for threads in thread_counts {
        let mine: Vec<&SuiteLine> = torch.iter().filter(|t| t.threads == threads).collect();
        let wanted: BTreeSet<&str> = mine.iter().map(|t| t.case.as_str()).collect();
        let cases: Vec<&str> = SUITE
            .iter()
            .map(|c| c.name)
            .filter(|c| wanted.contains(c))
            .collect();
        let normkit: Vec<SuiteLine> = if o.against.is_empty() {
            eprintln!("normkit, {threads} thread(s):");
            eprintln!("{}", report::header());
            run_suite(&cases, threads, o.reps, o.budget, o.seed, Emit::Progress)?
                .iter()
                .map(|r| SuiteLine {
                    case: r.case.clone(),
                    pass: r.pass,
                    threads: r.threads,
                    median_ms: r.median_ms(),
                    gbps: r.gbps(),
                })
                .collect()
        } else {
            against
                .iter()
                .filter(|a| a.threads == threads)
                .cloned()
                .collect()
        };
        // The copy bandwidth at every working set the rows need, in the same run.
        let sizes: BTreeSet<usize> = mine
            .iter()
            .filter_map(|t| {
                cases::case_info(&t.case).map(|c| t.pass.bytes(c.shape.iter().product()))
            })
            .collect();
        let copy: BTreeMap<usize, f64> = pool(threads)?.install(|| {
            sizes
                .iter()
                .map(|&b| {
                    let r = stream::measure(Kernel::Copy, b, o.reps, o.budget);
                    eprintln!(
                        "copy {:>9.2} MB, {threads} thread(s): {:.2} GB/s",
                        b as f64 / 1e6,
                        r.gbps
                    );
                    (b, r.gbps)
                })
                .collect()
        });
        let torch_t: Vec<SuiteLine> = mine.into_iter().cloned().collect();
        let (rows, missing) = compare::join(&torch_t, &normkit, &copy);
        for m in &missing {
            eprintln!(
                "no normkit result for {} {} at {} thread(s)",
                m.case,
                m.pass.as_str(),
                m.threads
            );
        }
        if o.json {
            for r in &rows {
                outln(&r.json());
            }
            let all: Vec<&compare::Row> = rows.iter().collect();
            println!(
                "{{\"summary\": \"geomean_ratio\", \"threads\": {threads}, \"geomean_ratio\": {}, \"rows\": {}}}",
                report::num(compare::geomean(&all), 3),
                rows.len()
            );
        } else {
            println!(
                "{} vs PyTorch, {threads} thread(s); ratio = torch ms / normkit ms (> 1: normkit faster);",
                report::IMPL
            );
            println!("copy = STREAM copy GB/s at the pass's working set (2·numel·4 fwd, 3·numel·4 bwd), same run");
            print!("{}", compare::table(&rows));
            println!();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Options, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_the_documented_forms() {
        let o = args("--threads 2 --json --cases ln,bn_train --reps 5 --budget=0.3").unwrap();
        assert_eq!(o.threads, Some(2));
        assert!(o.json);
        assert_eq!(o.cases, vec!["bn_train", "ln"]);
        assert_eq!((o.reps, o.budget), (5, 0.3));
        let o = args("--compare a.jsonl --compare b.jsonl --against n.jsonl").unwrap();
        assert_eq!(o.compare.len(), 2);
        assert_eq!(o.against.len(), 1);
        assert_eq!(args("").unwrap(), Options::default());
        assert_eq!(Options::default().cases.len(), 13);
        let o = args(
            "--alternate --rounds 2 --thread-counts 1,2,4 --levels default,avx2 --no-ort --out r",
        )
        .unwrap();
        assert!(o.alternate && o.no_ort);
        assert_eq!((o.rounds, o.thread_counts.clone()), (2, vec![1, 2, 4]));
        let plan = alternate_plan(&o);
        assert_eq!(plan.levels, vec![None, Some(normkit::simd::Level::Avx2)]);
        assert_eq!(plan.out, PathBuf::from("r"));
        assert!(!plan.ort);
        let o = args("--small-cases ln_eval,bn1d_train").unwrap();
        assert!(o.small);
        assert_eq!(o.small_cases, vec!["bn1d_train", "ln_eval"]);
        assert_eq!(
            Options::default().small_cases.len(),
            crate::small::SMALL.len()
        );
        let o = args("--sweep --sweep-cases bn1d_train,gn").unwrap();
        assert!(o.sweep);
        assert_eq!(o.sweep_cases, vec!["bn1d_train", "gn"]);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            "--threads 0",
            "--threads",
            "--cases ln,nope",
            "--budget -1",
            "--frobnicate",
            "--against n.jsonl",
            "--stream --compare a",
            "--alternate --stream",
            "--sweep --alternate",
            "--rounds 0",
            "--thread-counts 1,0",
            "--levels sse",
            "--small-cases ln_eval,nope",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_suite_run() {
        let r = run_suite(&["ws"], 2, 10, 0.0, 0, Emit::Progress);
        // ws at full size is 4.7 MB: quick enough for a test.
        let r = r.unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.threads == 2 && r.timing.reps == 10));
    }
}
