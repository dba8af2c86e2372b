//! The `#[norm(...)]` attribute macro of normkit. Depend on the `normkit` crate, which
//! re-exports it together with the runtime the generated code calls.
//!
//! The entry point converts to `proc_macro2` at once and calls `expand::expand`: tokens are
//! converted to `norm-spec`'s token trees (`tokens`), parsed and validated by the one
//! validator, the item is validated (`valid`), and the generated code (`expand`) runs only
//! when nothing was wrong.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod expand;
mod layer_trait;
mod path;
mod state_dict;
mod tokens;
mod valid;

use proc_macro::TokenStream;

/// Declares a normalization layer. See the `normkit` crate for the keys and what is
/// generated.
#[proc_macro_attribute]
pub fn norm(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
