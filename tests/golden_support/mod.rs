//! Helpers of `tests/golden.rs`: the golden-data format and the case runner.

pub mod data;
pub mod runner;
