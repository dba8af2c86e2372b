//! `norm-bench`: see `norm-bench --help` and `benches/README.md`.

use norm_bench::alloc_count::CountingAlloc;

/// Counts heap allocations so that the runner can report allocations per timed call.
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn main() {
    let opts = match norm_bench::cli::parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("norm-bench: {e}\n\n{}", norm_bench::cli::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = norm_bench::cli::run(&opts) {
        eprintln!("norm-bench: {e}");
        std::process::exit(1);
    }
}
