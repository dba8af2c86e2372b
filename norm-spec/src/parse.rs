//! stub
use crate::{token::TokenTree, Error};
pub(crate) struct Raw;
pub(crate) fn parse<S: Clone>(_t: &[TokenTree<S>], _w: S) -> Result<Raw, Vec<Error<S>>> { unimplemented!() }
