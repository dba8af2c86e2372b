//! Criterion benches of a few representative cases at small sizes (the full suite with the
//! PyTorch comparison is the `norm-bench` binary). Throughput is the minimal traffic:
//! forward 2·numel·4 bytes, backward 3·numel·4.
//!
//! Run: `cargo bench -p norm-bench` (about half a minute once built).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use norm_bench::cases::{build, Pass, Runnable};

/// (case, pass, shape): small versions of the suite's tensors (a few MB of traffic).
const BENCHES: [(&str, Pass, &[usize]); 4] = [
    ("ln", Pass::Fwd, &[1024, 1024]),
    ("ln", Pass::Bwd, &[1024, 1024]),
    ("gn", Pass::Fwd, &[2, 256, 28, 28]),
    ("bn_train", Pass::Fwd, &[8, 64, 28, 28]),
];

fn norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("norm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (case, pass, shape) in BENCHES {
        let mut runner: Box<dyn Runnable> = match build(case, shape, 0) {
            Ok(r) => r,
            Err(e) => panic!("building {case}: {e}"),
        };
        group.throughput(Throughput::Bytes(pass.bytes(runner.numel()) as u64));
        let id = format!("{case}/{}/{}", pass.as_str(), shape_name(shape));
        group.bench_function(id, |b| match pass {
            Pass::Fwd => b.iter(|| runner.fwd().expect("forward")),
            Pass::Bwd => b.iter(|| runner.bwd().expect("backward")),
        });
    }
    group.finish();
}

fn shape_name(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

criterion_group!(benches, norm);
criterion_main!(benches);
