//! Compile-time behaviour of `#[norm(...)]`, checked with trybuild.
//!
//! - `tests/ui/fail/<category>/*.rs`: one invalid declaration per error kind; the `.stderr`
//!   snapshot next to each case shows the message and the token it points at.
//! - `tests/ui/pass/*.rs`: declarations that must compile and run (every variant of the
//!   article, plus a lint case under `#![deny(warnings, missing_docs)]`; trybuild runs rustc,
//!   not clippy, so the `clippy::all` part of that case is only checked by `cargo clippy`).
//!
//! Paths are relative to this package (`ui-tests/`). The root crate's
//! `tests/layers/errors.rs` reads the same `tests/ui/fail` snapshots to compare
//! `NormSpec::parse` with the compile errors.
//!
//! The snapshots depend on the compiler's diagnostics format; the toolchain is pinned in
//! `rust-toolchain.toml`. Regenerate with
//! `TRYBUILD=overwrite cargo test -p normkit-ui-tests` and read every changed `.stderr`
//! before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
