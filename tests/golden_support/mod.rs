//! Helpers of the golden-data tests (`tests/golden_tests/golden.rs`,
//! `tests/half/dtypes.rs`): the golden-data format and the case runner.

pub mod data;
pub mod runner;
