//! The generated layer's `NormLayer` impl: the dynamic-rank interface every layer shares
//! (`normkit::NormLayer`). It checks the ranks, then calls the layer's own forward and
//! backward entry points; parameters are lent by name with the state-dict methods'
//! `StageTensors` expressions.

use norm_spec::{shapes, Affine};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use crate::expand::{dim_type, Layer};

/// The `impl NormLayer for Name<T>` block (inside the expansion's `const _` scope, which
/// has `SPEC`).
pub(crate) fn layer_trait_impl(layer: &Layer<'_>) -> TokenStream {
    let (spec, name, d) = (layer.spec, layer.name, &layer.dim);
    let p = quote!(::normkit::__private);
    let name_str = name.to_string();
    let (refs, muts) = crate::state_dict::stage_tensors(spec);
    let err = |what: TokenStream| quote!(::std::result::Result::Err(#p::call_mismatch(#name_str, #p::Mismatch::#what)));
    let forward_body = if layer.masked {
        err(quote!(Masked))
    } else if spec.stages[0].affine == Affine::External {
        let kd = dim_type(shapes::stats_axes(spec, &spec.stages[0]).len());
        let needs = err(quote!(NeedsExternal));
        quote! {
            let ::std::option::Option::Some((scale, shift)) = external else { return #needs; };
            let x = #p::fix_rank::<T, #d>(#name_str, x)?;
            let out = #p::fix_rank_mut::<T, #d>(#name_str, out)?;
            let scale = #p::fix_rank::<T, #kd>(#name_str, scale)?;
            let shift = #p::fix_rank::<T, #kd>(#name_str, shift)?;
            self.__forward(x, scale, shift, mode, out, ::std::option::Option::Some(saved), sync)
        }
    } else {
        let refuse = err(quote!(NoExternal));
        quote! {
            if external.is_some() {
                return #refuse;
            }
            let x = #p::fix_rank::<T, #d>(#name_str, x)?;
            let out = #p::fix_rank_mut::<T, #d>(#name_str, out)?;
            self.__forward(x, mode, out, ::std::option::Option::Some(saved), sync)
        }
    };
    let backward_body = if spec.chain {
        let grads_name = format_ident!("{}Grads", name);
        let fields: Vec<Ident> = spec
            .stages
            .iter()
            .map(|s| Ident::new(&s.name, Span::call_site()))
            .collect();
        quote! {
            let mut grads = #grads_name {
                dx,
                #(#fields: ::std::default::Default::default(),)*
            };
            self.__backward(x, dy, saved, &mut grads, sync)?;
            ::std::result::Result::Ok(#p::ChainGrads {
                dx: grads.dx.into_dyn(),
                stages: ::std::vec![#(grads.#fields),*],
            })
        }
    } else {
        quote! {
            let mut grads = #p::Grads::new(dx);
            self.__backward(x, dy, saved, &mut grads, sync)?;
            ::std::result::Result::Ok(#p::single_grads(grads))
        }
    };
    // The allocation-free backward: the caller's `ChainGrads` buffers move into the
    // layer's own gradient struct for the call and back after it (success or error).
    let grads_body = if spec.chain {
        let grads_name = format_ident!("{}Grads", name);
        let fields: Vec<Ident> = spec
            .stages
            .iter()
            .map(|s| Ident::new(&s.name, Span::call_site()))
            .collect();
        let idx: Vec<usize> = (0..fields.len()).collect();
        let n = fields.len();
        quote! {
            let dx = #p::take_chain::<T, #d>(#name_str, x.shape(), grads, #n)?;
            let mut own = #grads_name {
                dx,
                #(#fields: ::std::mem::take(&mut grads.stages[#idx]),)*
            };
            let result = self.__backward(x, dy, saved, &mut own, sync);
            #(grads.stages[#idx] = own.#fields;)*
            grads.dx = own.dx.into_dyn();
            result
        }
    } else {
        quote! {
            let mut own = #p::take_single::<T, #d>(#name_str, x.shape(), grads)?;
            let result = self.__backward(x, dy, saved, &mut own, sync);
            #p::put_single(grads, own);
            result
        }
    };
    let view = quote!(#p::ndarray::ArrayViewD<'_, T>);
    let res = quote!(::std::result::Result);
    quote! {
        #[automatically_derived]
        impl<T: #p::Float> #p::NormLayer for #name<T> {
            type Elem = T;

            fn layer_spec(&self) -> &#p::spec::Spec {
                &SPEC
            }

            fn layer_name(&self) -> &str {
                #name_str
            }

            fn forward_layer_into(
                &mut self,
                x: #view,
                external: ::std::option::Option<#p::External<'_, T>>,
                mode: #p::Mode,
                out: #p::ndarray::ArrayViewMutD<'_, T>,
                saved: &mut #p::Saved<T>,
                sync: ::std::option::Option<&dyn #p::Collective>,
            ) -> #res<(), #p::NormError> {
                #forward_body
            }

            fn backward_layer_into(
                &self,
                x: #view,
                dy: #view,
                saved: &#p::Saved<T>,
                dx: #p::ndarray::ArrayD<T>,
                sync: ::std::option::Option<&dyn #p::Collective>,
            ) -> #res<#p::ChainGrads<T>, #p::NormError> {
                let x = #p::fix_rank::<T, #d>(#name_str, x)?;
                let dy = #p::fix_rank::<T, #d>(#name_str, dy)?;
                let dx = #p::fix_rank_owned::<T, #d>(#name_str, dx)?;
                #backward_body
            }

            fn backward_layer_into_grads(
                &self,
                x: #view,
                dy: #view,
                saved: &#p::Saved<T>,
                grads: &mut #p::ChainGrads<T>,
                sync: ::std::option::Option<&dyn #p::Collective>,
            ) -> #res<(), #p::NormError> {
                let x = #p::fix_rank::<T, #d>(#name_str, x)?;
                let dy = #p::fix_rank::<T, #d>(#name_str, dy)?;
                #grads_body
            }

            fn tensors(&self) -> ::std::vec::Vec<#p::StageTensors<'_, T>> {
                ::std::vec![#(#refs),*]
            }

            fn tensors_mut(&mut self) -> ::std::vec::Vec<#p::StageTensorsMut<'_, T>> {
                ::std::vec![#(#muts),*]
            }
        }
    }
}
