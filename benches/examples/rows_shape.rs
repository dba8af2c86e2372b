//! Times one suite case on one shape (helper "rows", issue 15 item 8): the forward and
//! backward medians in milliseconds and nanoseconds per row, and a checksum of the output
//! and dx bits, so two builds can be compared for speed and for identical results.
//!
//! Run: `cargo run --release -p norm-bench --example rows_shape -- ln 8192,32 [reps]
//! [threads]` (reps default 200, threads default 1).

use std::time::Instant;

use norm_bench::cases::build;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: rows_shape CASE D0,D1,... [reps] [threads]";
    let (Some(case), Some(shape)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let shape: Vec<usize> = match shape.split(',').map(str::parse).collect() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{usage}: {e}");
            std::process::exit(2);
        }
    };
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let mut r = match build(case, &shape, 7) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{case} {shape:?}: {e}");
            std::process::exit(2);
        }
    };
    let rows = shape.iter().rev().skip(1).product::<usize>().max(1);
    let time = |r: &mut Box<dyn norm_bench::cases::Runnable>, bwd: bool| {
        let mut t = Vec::with_capacity(reps);
        for i in 0..reps + reps / 10 {
            let s = Instant::now();
            let res = if bwd { r.bwd() } else { r.fwd() };
            res.expect("pass");
            if i >= reps / 10 {
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
        }
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    {
        let f = time(&mut r, false);
        r.fwd().expect("forward");
        let b = if r.has_bwd() { time(&mut r, true) } else { 0.0 };
        let sum = |v: &[f32]| {
            v.iter()
                .fold(0u64, |h, x| h.rotate_left(5) ^ u64::from(x.to_bits()))
        };
        println!(
            "{case} {shape:?} {threads}T fwd {f:.4} ms ({:.1} ns/row) bwd {b:.4} ms ({:.1} ns/row) y#{:016x} dx#{:016x}",
            f * 1e6 / rows as f64,
            b * 1e6 / rows as f64,
            sum(r.output()),
            sum(r.dx()),
        );
    }
}
