//! `norm-bench`: normkit's benchmark runner.
//!
//! - the suite of `shared/bench/README.md`, timed like `torch_suite.py` through the
//!   no-allocation `_into` entry points ([`cases`], [`timing`]), printed as JSON lines in
//!   the same format or as a table ([`report`]);
//! - a STREAM-style bandwidth probe at the suite's working sets ([`stream`]);
//! - the side-by-side comparison with a `torch_suite.py` output ([`compare`]);
//! - the one-command alternating comparison on a new machine ([`alternate`]);
//! - a sweep over the shapes users bring, beyond the suite ([`sweep`]);
//! - the small calls beside plain scalar loops ([`small`], `--small`);
//! - the suite in bf16/f16 (`--dtype`, [`half`]);
//! - the command line tying them together ([`cli`]).
//!
//! See `benches/README.md` for usage.

pub mod alloc_count;
pub mod alternate;
pub mod cases;
pub mod cli;
pub mod compare;
pub mod data;
pub mod half;
pub mod report;
pub mod small;
pub mod stream;
pub mod sweep;
pub mod timing;
