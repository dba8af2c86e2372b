//! The monomorphized path of a declaration (issue 13, item 8): `norm_spec::path::classify`
//! at macro time, named as a type the generated forward methods call the runtime with.

use norm_spec::Spec;
use proc_macro2::TokenStream;
use quote::quote;

/// `type __NormPath = Mono<LAYOUT, PARAMS, EPS_VAR, VARIANCE, CENTER>;` for a class with a
/// specialized path, else `= Generic;` (the same choice `DynNorm` makes at construction).
pub(crate) fn path_type(spec: &Spec, rt: &TokenStream) -> TokenStream {
    let path = match norm_spec::path::classify(spec).mono() {
        Some(key) => {
            let (layout, params, eps_var) = (key.layout, key.params, key.eps_var);
            let (variance, center) = (key.variance, key.center);
            quote!(#rt::Mono<#layout, #params, #eps_var, #variance, #center>)
        }
        None => quote!(#rt::Generic),
    };
    quote! {
        /// The monomorphized path of this declaration's class.
        type __NormPath = #path;
    }
}
