//! stub
use crate::{parse::Raw, Error, Spec};
pub(crate) fn check<S: Clone>(_r: Raw, _w: S) -> Result<Spec, Vec<Error<S>>> { unimplemented!() }
