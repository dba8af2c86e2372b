//! The generated layer's PyTorch state-dict methods: `save_into`, `state_dict` and
//! `load_state_dict`.
//!
//! They lend the layer's fields to the runtime as `StageTensors` / `StageTensorsMut` views
//! (one per stage, named like the chain's fields) and call the runtime's `save_stages` /
//! `load_stages`, the same functions `DynNorm` calls.

use norm_spec::{shapes, Spec};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

/// The `StageTensors` and `StageTensorsMut` expressions of every stage (borrowing `self`'s
/// fields), in chain order: the state-dict methods and the `NormLayer` impl use them.
pub(crate) fn stage_tensors(spec: &Spec) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let p = quote!(::normkit::__private);
    let none = quote!(::std::option::Option::None);
    let mut refs = Vec::new();
    let mut muts = Vec::new();
    for stage in spec.stages.iter() {
        let (path, stage_name) = if spec.chain {
            let field = Ident::new(&stage.name, Span::call_site());
            (quote!(self.#field), stage.name.to_string())
        } else {
            (quote!(self), String::new())
        };
        let some_ref = |field: &str| {
            let f = Ident::new(field, Span::call_site());
            quote!(::std::option::Option::Some(#path.#f.view().into_dyn()))
        };
        let some_mut = |field: &str| {
            let f = Ident::new(field, Span::call_site());
            quote!(::std::option::Option::Some(#path.#f.view_mut().into_dyn()))
        };
        let affine = shapes::param_axes(stage).is_some();
        let bias = affine && stage.bias;
        let running = shapes::running_axes(spec, stage).is_some();
        let switch = !stage.switch.is_empty();
        let pick = |on: bool, t: TokenStream| if on { t } else { none.clone() };
        let (g, b) = (
            pick(affine, some_ref("gamma")),
            pick(bias, some_ref("beta")),
        );
        let (rm, rv) = (
            pick(running, some_ref("running_mean")),
            pick(running, some_ref("running_var")),
        );
        let count = pick(
            running,
            quote!(::std::option::Option::Some(#path.num_batches_tracked)),
        );
        let (mw, vw) = (
            pick(switch, some_ref("mean_weight")),
            pick(switch, some_ref("var_weight")),
        );
        refs.push(quote! {
            #p::StageTensors {
                name: #stage_name, gamma: #g, beta: #b,
                running_mean: #rm, running_var: #rv, num_batches_tracked: #count,
                mean_weight: #mw, var_weight: #vw,
            }
        });
        let (mw, vw) = (
            pick(switch, some_mut("mean_weight")),
            pick(switch, some_mut("var_weight")),
        );
        let (g, b) = (
            pick(affine, some_mut("gamma")),
            pick(bias, some_mut("beta")),
        );
        let (rm, rv) = (
            pick(running, some_mut("running_mean")),
            pick(running, some_mut("running_var")),
        );
        let count = pick(
            running,
            quote!(::std::option::Option::Some(&mut #path.num_batches_tracked)),
        );
        muts.push(quote! {
            #p::StageTensorsMut {
                name: #stage_name, gamma: #g, beta: #b,
                running_mean: #rm, running_var: #rv, num_batches_tracked: #count,
                mean_weight: #mw, var_weight: #vw,
            }
        });
    }
    (refs, muts)
}

/// The `impl` block with the state-dict methods of layer `name`.
pub(crate) fn state_dict_impl(spec: &Spec, name: &Ident) -> TokenStream {
    let p = quote!(::normkit::__private);
    let name_str = name.to_string();
    let (refs, muts) = stage_tensors(spec);
    quote! {
        #[automatically_derived]
        impl<T: #p::Float> #name<T> {
            /// Writes the layer's parameters and running statistics into `sd` under
            /// PyTorch's names: `{prefix}weight` (γ), `{prefix}bias` (β),
            /// `{prefix}running_mean`, `{prefix}running_var`, `{prefix}num_batches_tracked`
            /// (an `I64` scalar); a chain's stages under `{prefix}{stage}.`. Tensors have the
            /// layer's element type; keys already in `sd` are replaced.
            pub fn save_into(&self, sd: &mut #p::StateDict, prefix: &str) {
                #p::save_stages::<T>(sd, prefix, &[#(#refs),*]);
            }

            /// The layer's parameters and running statistics as a new `StateDict` under
            /// PyTorch's names (see `save_into`).
            pub fn state_dict(&self, prefix: &str) -> #p::StateDict {
                let mut sd = #p::StateDict::new();
                self.save_into(&mut sd, prefix);
                sd
            }

            /// Loads the layer's parameters and running statistics from `sd` under
            /// `prefix` (PyTorch's names, see `save_into`), converting from any float
            /// dtype (F32, F64, BF16, F16).
            ///
            /// Strict: a missing key, a key under `prefix` the layer does not have, a shape
            /// other than the layer's (up to axes of size 1) or a non-float dtype is a
            /// `NormError::StateDictKey` naming the key; the layer is then unchanged.
            pub fn load_state_dict(
                &mut self,
                sd: &#p::StateDict,
                prefix: &str,
            ) -> ::std::result::Result<(), #p::NormError> {
                #p::load_stages::<T>(#name_str, sd, prefix, &mut [#(#muts),*])
            }
        }
    }
}
