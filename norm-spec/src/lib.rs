//! `norm-spec`: the one parser and validator of normkit's layer configuration language.
//!
//! The `#[norm(...)]` attribute macro (at compile time) and `normkit::NormSpec::parse`
//! (at run time) both turn their input into a [`TokenTree`] list and call [`parse_tokens`],
//! so they accept the same declarations and reject the same ones with the same messages.
//!
//! The pipeline: `parse` reads the tokens into a declaration (one value per key of the key
//! table, `keys`, with spans; one-key errors), `check` validates the rules that relate
//! several keys, and `lower` builds the IR from a declaration without errors. Every error
//! is reported, not only the first. The output is a validated [`Spec`]; [`shapes`] derives
//! from it everything code generation and the runtime need (statistics axes, parameter
//! shapes, constructor arguments).
//!
//! This crate has no dependencies.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod check_post2017;
mod check_switchable;
mod declaration;
mod ident;
mod ir;
mod keys;
mod lex;
mod lower;
mod parse;
pub mod path;
pub mod shapes;
mod suggest;
mod token;

pub use ir::{
    Affine, Axis, EpsMode, Momentum, ParamAxis, Renorm, Spec, Stage, Statistic, MAX_RANK,
    MAX_STAGES,
};
pub use token::{Delimiter, LitKind, Literal, TokenTree};

/// A configuration error: what is wrong, and where.
///
/// `S` is the span type of the tokens that were parsed: `proc_macro2::Span` in the macro,
/// a byte range (`std::ops::Range<usize>`) for [`parse_str`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error<S> {
    /// The token (or token range) the error is about.
    pub span: S,
    /// A message that names the bad value and says what would be valid.
    pub message: String,
}

/// Parse and validate the tokens inside `#[norm(...)]`.
///
/// `whole` is the span used for errors about the declaration as a whole (e.g. a missing
/// `axes`). Every error found is returned, not only the first.
pub fn parse_tokens<S: Clone>(tokens: &[TokenTree<S>], whole: S) -> Result<Spec, Vec<Error<S>>> {
    let mut declaration = parse::parse(tokens);
    let mut errors = std::mem::take(&mut declaration.errors);
    errors.extend(check::check(&declaration, whole));
    if errors.is_empty() {
        Ok(lower::lower(&declaration))
    } else {
        Err(errors)
    }
}

/// Parse and validate a configuration written as text, with the attribute's syntax
/// (`input = "N,C,H,W", axes = "C,H,W", groups = 32, affine`). Error spans are byte ranges.
pub fn parse_str(src: &str) -> Result<Spec, Vec<Error<std::ops::Range<usize>>>> {
    let tokens = lex::lex(src).map_err(|e| vec![e])?;
    parse_tokens(&tokens, 0..src.len())
}
