//! Forward + backward of normalization layers on `Device::flex().autodiff()`, f32:
//! normkit-burn (fused path) vs burn-nn vs normkit's own `_into` API on the same shapes, at 1
//! and 2 threads (rayon pools: Flex and normkit both run on rayon).
//!
//! ```text
//! cargo run --release -p normkit-burn --bin burn-bench [-- --reps 21] [--slow-reps 5] [--out FILE.md] [--quick]
//! ```
//!
//! `--threads 1,2` and `--cases LayerNorm,GroupNorm,BatchNorm,RmsNorm` narrow the run;
//! `--slow-reps 0` skips burn-nn; `--only direct|module|fresh|reused` times that row alone
//! (for a profiler: `perf stat -e page-faults`, valgrind).
//!
//! The autodiff rows time `y = layer.forward(x); y.backward()` (backward seeded with ones),
//! reading x's gradient; normkit's row times `forward_train_into` + `backward_into` with
//! buffers allocated once and dy = 1. normkit `_into`, normkit-burn and the two buffer rows
//! below run interleaved (one repetition of each in turn, `--reps` times, medians after one
//! warm-up), so a load change on a shared machine hits them alike; burn-nn runs after them,
//! `--slow-reps` times.
//!
//! The framework floor: burn owns three buffers of the input's size per call that the
//! direct path reuses (the output, dx, and the seed of ones). `fresh` times allocating and
//! writing three such buffers, `reused` writing three reused ones; `floor = fresh − reused`
//! is their allocation cost (page faults: glibc's malloc hands buffers of 32 MB and more
//! back to the kernel on free). Run with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736` to keep
//! freed memory in the process (the report prints the variable).

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use normkit::ndarray::{ArrayD, IxDyn};
use normkit::{DynNorm, Grads, NormSpec, Saved};

struct Case {
    name: &'static str,
    shape: Vec<usize>,
    spec: &'static str,
    sizes: Vec<(&'static str, usize)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A timed job of [`interleaved`].
type Job<'a> = Box<dyn FnMut() + 'a>;

/// The median in milliseconds of each of `fs`, run in turn `reps` times after one warm-up of
/// each.
fn interleaved(reps: usize, fs: &mut [Job<'_>]) -> Vec<f64> {
    for f in fs.iter_mut() {
        f();
    }
    let mut t = vec![Vec::with_capacity(reps); fs.len()];
    for _ in 0..reps.max(1) {
        for (f, t) in fs.iter_mut().zip(t.iter_mut()) {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    t.into_iter().map(median).collect()
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f();
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    median(t)
}

/// forward + backward of a burn module (`fwd`) on a fixed random `x`, as a job.
fn burn_job<'a, const D: usize>(
    dims: [usize; D],
    fwd: impl Fn(Tensor<D>) -> Tensor<D> + 'a,
) -> Job<'a> {
    let dev = Device::flex().autodiff();
    let x = Tensor::<D>::random(dims, burn::tensor::Distribution::Normal(0.5, 1.5), &dev);
    Box::new(move || {
        let xg = x.clone().detach().require_grad();
        let y = fwd(xg.clone());
        let grads = y.backward();
        std::hint::black_box(xg.grad(&grads));
    })
}

/// normkit's `_into` API with buffers allocated once, dy = 1, as a job.
fn normkit_job(case: &Case) -> Job<'static> {
    let spec = NormSpec::parse(case.spec).expect("valid spec");
    let mut layer = DynNorm::<f32>::new(&spec, &case.sizes).expect("valid sizes");
    let n: usize = case.shape.iter().product();
    let values: Vec<f32> = (0..n).map(|k| (k % 17) as f32 * 0.25 - 1.0).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&case.shape), values).expect("n values");
    let dy = ArrayD::<f32>::ones(IxDyn(&case.shape));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&case.shape));
    let mut saved = Saved::new();
    let mut grads = Grads::new(ArrayD::zeros(IxDyn(&case.shape)));
    Box::new(move || {
        layer
            .forward_train_into(x.view(), out.view_mut(), &mut saved)
            .expect("forward");
        layer
            .backward_into(x.view(), dy.view(), &saved, &mut grads)
            .expect("backward");
    })
}

/// The times of one case, ms.
struct Times {
    ours: f64,
    theirs: f64,
    direct: f64,
    floor: f64,
}

/// The rows `--only` selects, in the order `run_case` builds its jobs.
const ROWS: [&str; 4] = ["direct", "module", "fresh", "reused"];

fn run_case(reps: usize, slow_reps: usize, case: &Case, only: Option<usize>) -> Times {
    let dev = Device::flex().autodiff();
    let s = &case.shape;
    let n: usize = s.iter().product();
    // The framework floor: three fresh buffers written vs three reused ones.
    // (Alive together, as the output, the seed and dx are in a burn call.)
    let fresh: Job<'_> = Box::new(move || {
        let bufs: Vec<Vec<f32>> = (0..3).map(|k| vec![k as f32 + 1.0; n]).collect();
        std::hint::black_box(&bufs);
    });
    let mut reused_bufs = vec![vec![0f32; n]; 3];
    let reused: Job<'_> = Box::new(move || {
        for (k, b) in reused_bufs.iter_mut().enumerate() {
            b.fill(k as f32 + 1.0);
            std::hint::black_box(&b);
        }
    });
    let (ours, mut theirs): (Job<'_>, Job<'_>) = match case.name {
        "LayerNorm" => {
            let a = normkit_burn::LayerNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::LayerNormConfig::new(s[1]).init(&dev);
            (
                burn_job([s[0], s[1]], move |x| a.forward(x)),
                burn_job([s[0], s[1]], move |x| b.forward(x)),
            )
        }
        "RmsNorm" => {
            let a = normkit_burn::RmsNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::RmsNormConfig::new(s[1]).init(&dev);
            (
                burn_job([s[0], s[1]], move |x| a.forward(x)),
                burn_job([s[0], s[1]], move |x| b.forward(x)),
            )
        }
        "GroupNorm" => {
            let a = normkit_burn::GroupNormConfig::new(32, s[1]).init(&dev);
            let b = burn::nn::GroupNormConfig::new(32, s[1]).init(&dev);
            let d = [s[0], s[1], s[2], s[3]];
            (
                burn_job(d, move |x| a.forward(x)),
                burn_job(d, move |x| b.forward(x)),
            )
        }
        "BatchNorm" => {
            // The modules (and their running state) live in the jobs.
            let a = normkit_burn::BatchNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::BatchNormConfig::new(s[1]).init(&dev);
            let d = [s[0], s[1], s[2], s[3]];
            (
                burn_job(d, move |x| a.forward(x)),
                burn_job(d, move |x| b.forward(x)),
            )
        }
        other => unreachable!("{other}"),
    };
    let mut jobs = [normkit_job(case), ours, fresh, reused];
    if let Some(k) = only {
        // One row alone, for a profiler: its median is reported as `direct`.
        return Times {
            direct: time(reps, &mut jobs[k]),
            ours: f64::NAN,
            theirs: f64::NAN,
            floor: f64::NAN,
        };
    }
    let t = interleaved(reps, &mut jobs);
    // `--slow-reps 0`: no burn-nn row (NaN).
    let theirs = if slow_reps == 0 {
        f64::NAN
    } else {
        time(slow_reps, &mut theirs)
    };
    Times {
        direct: t[0],
        ours: t[1],
        floor: t[2] - t[3],
        theirs,
    }
}

fn cpu_model() -> String {
    std::process::Command::new("lscpu")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            let field = |key: &str| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .map(|l| l[key.len()..].trim().to_string())
            };
            let name = field("Model name:")?;
            Some(match (field("CPU family:"), field("Model:")) {
                (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
                _ => name,
            })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let reps: usize = value("--reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 21 });
    let slow_reps: usize = value("--slow-reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 5 });
    let tunables = std::env::var("GLIBC_TUNABLES")
        .unwrap_or_else(|_| "(unset: glibc's default malloc)".to_string());
    let out = value("--out");
    let scale = |n: usize| if quick { (n / 8).max(1) } else { n };
    let cases = [
        Case {
            name: "LayerNorm",
            shape: vec![scale(8192), 1024],
            spec: r#"input = "N,D", axes = "D", affine = "D""#,
            sizes: vec![("D", 1024)],
        },
        Case {
            name: "GroupNorm",
            shape: vec![scale(8), 256, 28, 28],
            spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
            sizes: vec![("C", 256)],
        },
        Case {
            name: "BatchNorm",
            shape: vec![scale(32), 64, 56, 56],
            spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
            sizes: vec![("C", 64)],
        },
        Case {
            name: "RmsNorm",
            shape: vec![scale(8192), 1024],
            spec: r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false"#,
            sizes: vec![("D", 1024)],
        },
    ];
    let mut report = String::new();
    report.push_str(&format!(
        "# normkit-burn vs burn-nn vs normkit, forward + backward, f32, Device::flex().autodiff()\n\n\
         - CPU: {} ({} logical CPUs)\n- commit: {}\n- burn 0.22.1 (Flex with simd + rayon); medians after one warm-up: \
         normkit `_into`, normkit-burn and the buffer rows interleaved, {reps} runs; burn-nn {slow_reps} runs\n\
         - load average at start: {}\n- GLIBC_TUNABLES: {tunables}\n\
         - command: `cargo run --release -p normkit-burn --bin burn-bench -- --reps {reps} --slow-reps {slow_reps}{}`\n\
         - floor: allocating and writing 3 fresh input-sized buffers (output, dx, seed) minus writing 3 reused ones\n\n\
         | layer | shape | threads | normkit-burn ms | burn-nn ms | normkit `_into` ms | floor ms | speedup vs burn-nn | normkit-burn / normkit | normkit-burn / (normkit + floor) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        commit(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        if quick { " --quick" } else { "" },
    ));
    // `--threads 1,2` and `--cases LayerNorm,GroupNorm` narrow the run (e.g. for a profiler).
    let threads_list: Vec<usize> = value("--threads")
        .map(|v| v.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let only: Option<Vec<String>> =
        value("--cases").map(|v| v.split(',').map(str::to_string).collect());
    // `--only direct|module|fresh|reused`: time that row alone (for perf, valgrind).
    let only_row: Option<usize> = value("--only").map(|v| {
        ROWS.iter().position(|r| *r == v).unwrap_or_else(|| {
            eprintln!("unknown row {v} ({})", ROWS.join(", "));
            std::process::exit(2)
        })
    });
    for threads in threads_list {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        for case in &cases {
            if only
                .as_ref()
                .is_some_and(|o| !o.iter().any(|c| c == case.name))
            {
                continue;
            }
            let t = pool.install(|| run_case(reps, slow_reps, case, only_row));
            if let Some(k) = only_row {
                println!(
                    "{} {:?} {threads} thread(s): {} alone {:.2} ms (median of {reps})",
                    case.name, case.shape, ROWS[k], t.direct
                );
                continue;
            }
            let line = format!(
                "| {} | {:?} | {threads} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} |\n",
                case.name,
                case.shape,
                t.ours,
                t.theirs,
                t.direct,
                t.floor,
                t.theirs / t.ours,
                t.ours / t.direct,
                t.ours / (t.direct + t.floor)
            );
            print!("{line}");
            report.push_str(&line);
        }
    }
    if let Some(path) = out {
        std::fs::write(&path, &report).expect("write the report");
        println!("wrote {path}");
    } else {
        println!("\n{report}");
    }
}
