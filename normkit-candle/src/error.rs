//! normkit's errors as candle errors.

use normkit::NormError;

/// A `candle_core::Error` carrying normkit's message (the layer's name, the expected and
/// the actual sizes).
pub(crate) fn norm_err(e: NormError) -> candle_core::Error {
    candle_core::Error::Msg(format!("normkit: {e}"))
}

/// A `candle_core::Error` with this message.
pub(crate) fn msg(text: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(text.into())
}
