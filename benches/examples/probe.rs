//! Times one case of the suite or the sweep on one shape, without PyTorch: the median of
//! the forward and backward passes in µs, on the calling thread's rayon pool of `--threads`
//! threads. For quick A/B runs and for `perf record` / `valgrind --tool=callgrind` on a
//! single shape (`--loop S`: only the chosen pass, S seconds, no timing output).
//!
//! Run: `cargo run --release -p norm-bench --example probe -- gn 8,64,4,4 [--threads 1]
//! [--pass fwd|bwd] [--loop 5] [--reps 2000]`

use std::time::Instant;

use norm_bench::cases::build;
use norm_bench::timing::time_fn;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "probe CASE N,C,H,W [--threads T] [--pass fwd|bwd] [--loop S] [--reps R]";
    let (case, shape) = match (args.first(), args.get(1)) {
        (Some(c), Some(s)) => (c.clone(), s.clone()),
        _ => return Err(usage.into()),
    };
    let shape: Vec<usize> = shape.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let threads: usize = opt("--threads").map_or(Ok(1), |s| s.parse())?;
    let reps: usize = opt("--reps").map_or(Ok(0), |s| s.parse())?;
    let pass = opt("--pass").cloned();
    let looping: Option<f64> = opt("--loop").map(|s| s.parse()).transpose()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| -> Result<(), Error> {
        let mut r = build(&case, &shape, 0)?;
        r.fwd()?;
        if let Some(secs) = looping {
            let end = Instant::now() + std::time::Duration::from_secs_f64(secs);
            let bwd = pass.as_deref() == Some("bwd");
            while Instant::now() < end {
                for _ in 0..100 {
                    if bwd {
                        r.bwd()?;
                    } else {
                        r.fwd()?;
                    }
                }
            }
            return Ok(());
        }
        for p in ["fwd", "bwd"] {
            if pass.as_deref().is_some_and(|q| q != p) || (p == "bwd" && !r.has_bwd()) {
                continue;
            }
            let t = if p == "fwd" {
                time_fn(|| r.fwd(), reps, 0.5)?
            } else {
                time_fn(|| r.bwd(), reps, 0.5)?
            };
            println!(
                "{case} {shape:?} {p} {threads}T: median {:.2} us, min {:.2} us ({} reps)",
                t.median * 1e6,
                t.min * 1e6,
                t.reps
            );
        }
        Ok(())
    })
}
