//! Code generation: a validated [`Spec`] and the user's struct → the layer.
//!
//! Everything runtime-related is named through `::normkit::__private`, so users depend on
//! `normkit` alone. The spec is baked into a `static` next to the impls, together with its
//! fingerprint; the methods borrow the struct's fields into `StageState`s and call the
//! runtime's entry points, the same ones `DynNorm` calls.
//!
//! [`generate`] lists the generated items; each is built by one function below from the
//! [`Layer`] (what every item needs to know) and the [`StagesCode`] (what the stages add).

use norm_spec::{shapes, Affine, ParamAxis, Spec, Stage};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Fields, Ident, ItemStruct};

use crate::valid::{self, Errors};

/// The whole expansion: errors (all of them) or the generated layer.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let tokens = crate::tokens::convert(attr);
    let spec = norm_spec::parse_tokens(&tokens, Span::call_site());
    let mut errors = Errors::default();
    if let Err(spec_errors) = &spec {
        for e in spec_errors {
            errors.push(syn::Error::new(e.span, &e.message));
        }
    }
    let item_struct = valid::layer_struct(&item, spec.as_ref().ok(), &mut errors);
    match (errors.into_error(), spec, item_struct) {
        (None, Ok(spec), Some(s)) => generate(&spec, &s),
        (Some(e), _, _) => {
            let err = e.to_compile_error();
            quote!(#err #item)
        }
        _ => item,
    }
}

/// The layer: its struct, the items beside it, and its impls.
fn generate(spec: &Spec, item: &ItemStruct) -> TokenStream {
    let layer = Layer::new(spec, item);
    let stages = if spec.chain {
        chain_stages(&layer)
    } else {
        single_stage(&layer)
    };
    let methods = [
        constructor(&layer, &stages),
        forward_entry(&layer, &stages),
        sync_methods(&layer, &stages),
        backward_entry(&layer, &stages),
        forward_methods(&layer, &stages),
        backward_methods(&layer, &stages),
        stats_method(&layer, &stages),
    ];
    let impls = [
        default_impl(&layer),
        crate::state_dict::state_dict_impl(spec, layer.name),
        crate::layer_trait::layer_trait_impl(&layer),
    ];
    let (name, rt) = (layer.name, &layer.rt);
    let layer_struct = layer_struct(&layer, &stages);
    let beside = &stages.items;
    let statics = spec_statics(&layer);
    // The public methods of a layer with external scale and shift (or a mask) take them as
    // arguments (CONTRACT): their `*_sync_into` forms pass clippy's seven. Only those
    // declarations get the allowance.
    let many_args =
        (!layer.external_params.is_empty()).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    quote! {
        #layer_struct

        #beside

        const _: () = {
            #statics

            #[automatically_derived]
            #[allow(clippy::needless_update, unused_variables)]
            #many_args
            impl<T: #rt::Float> #name<T> {
                #(#methods)*
            }

            #(#impls)*
        };
    }
}

/// What every generated item needs to know about the layer (also for generators in other
/// modules: one function per item, called from [`generate`]).
pub(crate) struct Layer<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) item: &'a ItemStruct,
    pub(crate) name: &'a Ident,
    /// `::normkit::__private`
    pub(crate) rt: TokenStream,
    /// The ndarray dimension type of the input.
    pub(crate) dim: TokenStream,
    /// The constructor's arguments: (input axis, argument name).
    pub(crate) args: Vec<(usize, Ident)>,
    /// With `affine = external`: the `scale, shift` parameters of `forward_*` (else empty).
    pub(crate) external_params: TokenStream,
    /// With `affine = external`: `scale, shift,` as arguments (else empty). With `mask`,
    /// both start with the mask.
    pub(crate) external_args: TokenStream,
    /// The layer has `mask`: its forward methods take the mask right after `x`.
    pub(crate) masked: bool,
}

impl<'a> Layer<'a> {
    fn new(spec: &'a Spec, item: &'a ItemStruct) -> Self {
        let rt = quote!(::normkit::__private);
        let (external_params, external_args) = if spec.stages[0].affine == Affine::External {
            let stats_rank = shapes::stats_axes(spec, &spec.stages[0]).len();
            let kd = dim_type(stats_rank);
            (
                quote!(scale: #rt::ndarray::ArrayView<'_, T, #kd>, shift: #rt::ndarray::ArrayView<'_, T, #kd>,),
                quote!(scale, shift,),
            )
        } else {
            (quote!(), quote!())
        };
        // `mask = "..."`: the boolean mask comes right after `x` in every forward method.
        let mask_rank = (0..spec.input.len())
            .filter(|&i| spec.stages[0].masks(i))
            .count();
        let masked = !spec.chain && mask_rank > 0;
        let (external_params, external_args) = if masked {
            let md = dim_type(mask_rank);
            (
                quote!(mask: #rt::ndarray::ArrayView<'_, bool, #md>, #external_params),
                quote!(mask, #external_args),
            )
        } else {
            (external_params, external_args)
        };
        Layer {
            masked,
            spec,
            item,
            name: &item.ident,
            dim: dim_type(spec.input.len()),
            args: arg_names(spec),
            rt,
            external_params,
            external_args,
        }
    }

    /// The call of the runtime's forward entry point with `states`, `x` (and the mask of a
    /// masked layer) and the given mode, output, saved and sync expressions.
    fn forward_call(
        &self,
        mode: TokenStream,
        out: TokenStream,
        saved: TokenStream,
        sync: TokenStream,
    ) -> TokenStream {
        let rt = &self.rt;
        if self.masked {
            quote!(#rt::forward_masked_into(&INFO, &mut states, (x, mask), #mode, #out, #saved, #sync))
        } else {
            quote!(#rt::forward_path::<__NormPath, T, _>(&INFO, &mut states, x, #mode, #out, #saved, #sync))
        }
    }

    /// `ArrayView<'_, T, D>` of the input's dimension.
    pub(crate) fn view(&self) -> TokenStream {
        let (rt, d) = (&self.rt, &self.dim);
        quote!(#rt::ndarray::ArrayView<'_, T, #d>)
    }

    /// `ArrayViewMut<'_, T, D>` of the input's dimension.
    pub(crate) fn view_mut(&self) -> TokenStream {
        let (rt, d) = (&self.rt, &self.dim);
        quote!(#rt::ndarray::ArrayViewMut<'_, T, #d>)
    }

    /// `Array<T, D>` of the input's dimension.
    pub(crate) fn array(&self) -> TokenStream {
        let (rt, d) = (&self.rt, &self.dim);
        quote!(#rt::ndarray::Array<T, #d>)
    }
}

/// What the stages contribute: fields, their initial values, and how the methods borrow
/// them into the runtime's stage states and gradient slots.
pub(crate) struct StagesCode {
    /// Items beside the layer (a chain's stage structs and gradients struct).
    pub(crate) items: TokenStream,
    /// The generated fields of the layer struct.
    pub(crate) fields: TokenStream,
    /// Their initial values in `new`.
    pub(crate) init: TokenStream,
    /// `[StageState; stages]` borrowing the fields read-only (eval forward).
    pub(crate) states_view: TokenStream,
    /// `[StageState; stages]` with the running statistics borrowed mutably (train forward).
    pub(crate) states_train: TokenStream,
    /// `[StageState; stages]` for backward and stats (no external scale/shift).
    pub(crate) states_backward: TokenStream,
    /// The gradients type `backward` returns, and its zero value for an input `x`.
    pub(crate) grads_ty: TokenStream,
    pub(crate) grads_new: TokenStream,
    /// The parameter-gradient slots handed to the runtime's backward, taken from `grads`...
    pub(crate) slots_in: TokenStream,
    /// ... and given back to it.
    pub(crate) slots_out: TokenStream,
}

/// A single-stage layer: the stage's fields are the layer's.
fn single_stage(layer: &Layer<'_>) -> StagesCode {
    let (rt, d) = (&layer.rt, &layer.dim);
    let stage = stage_code(layer, 0, &quote!(self));
    let (view, train, backward) = (stage.state_view, stage.state_train, stage.state_backward);
    StagesCode {
        items: TokenStream::new(),
        fields: stage.fields,
        init: stage.init,
        states_view: quote!([#view]),
        states_train: quote!([#train]),
        states_backward: quote!([#backward]),
        grads_ty: quote!(#rt::Grads<T, #d>),
        grads_new: quote!(#rt::Grads::new(#rt::ndarray::Array::zeros(x.raw_dim()))),
        slots_in: quote!([grads.take_params()]),
        slots_out: quote! {
            let [g] = slots;
            grads.set_params(g);
        },
    }
}

/// A chain: one public field per stage, each of a generated stage struct, and a generated
/// gradients struct with `dx` and one field per stage.
fn chain_stages(layer: &Layer<'_>) -> StagesCode {
    let (name, vis, rt, d) = (layer.name, &layer.item.vis, &layer.rt, &layer.dim);
    let mut items = TokenStream::new();
    let mut fields = TokenStream::new();
    let mut init = TokenStream::new();
    let (mut views, mut trains, mut backwards) = (Vec::new(), Vec::new(), Vec::new());
    let mut grads_fields = TokenStream::new();
    let mut grads_init = TokenStream::new();
    let mut slots_in = Vec::new();
    let mut stage_fields = Vec::new();
    for (k, stage) in layer.spec.stages.iter().enumerate() {
        let field = Ident::new(&stage.name, Span::call_site());
        let ty = format_ident!("{}{}Stage", name, upper_camel(&stage.name));
        let code = stage_code(layer, k, &quote!(self.#field));
        let (stage_fields_code, stage_init) = (&code.fields, &code.init);
        let struct_doc = format!(
            "Parameters and running statistics of stage `{}` of [`{name}`].",
            stage.name
        );
        items.extend(quote! {
            #[doc = #struct_doc]
            #[derive(Clone, Debug, PartialEq)]
            #vis struct #ty<T: #rt::Float = f32> {
                #stage_fields_code
                #[doc(hidden)]
                pub __marker: ::std::marker::PhantomData<T>,
            }
        });
        let field_doc = format!("Stage `{}` of the chain.", stage.name);
        fields.extend(quote!(#[doc = #field_doc] pub #field: #ty<T>,));
        init.extend(quote!(#field: #ty { #stage_init __marker: ::std::marker::PhantomData },));
        views.push(code.state_view);
        trains.push(code.state_train);
        backwards.push(code.state_backward);
        let grads_doc = format!("Gradients of stage `{}`'s parameters.", stage.name);
        grads_fields.extend(quote!(#[doc = #grads_doc] pub #field: #rt::StageGrads<T>,));
        grads_init.extend(quote!(#field: ::std::default::Default::default(),));
        slots_in.push(quote!(::std::mem::take(&mut grads.#field)));
        stage_fields.push(field);
    }
    let grads_name = format_ident!("{}Grads", name);
    let grads_doc = format!("The gradients of a [`{name}`] backward pass.");
    items.extend(quote! {
        #[doc = #grads_doc]
        #[derive(Clone, Debug, PartialEq)]
        #vis struct #grads_name<T: #rt::Float = f32> {
            /// The gradient with respect to the input.
            pub dx: #rt::ndarray::Array<T, #d>,
            #grads_fields
        }
    });
    StagesCode {
        items,
        fields,
        init,
        states_view: quote!([#(#views),*]),
        states_train: quote!([#(#trains),*]),
        states_backward: quote!([#(#backwards),*]),
        grads_ty: quote!(#grads_name<T>),
        grads_new: quote!(#grads_name { dx: #rt::ndarray::Array::zeros(x.raw_dim()), #grads_init }),
        slots_in: quote!([#(#slots_in),*]),
        slots_out: quote! {
            let [#(#stage_fields),*] = slots;
            #(grads.#stage_fields = #stage_fields;)*
        },
    }
}

/// The layer struct: the user's attributes and fields, then the generated fields.
fn layer_struct(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let (name, rt) = (layer.name, &layer.rt);
    let (attrs, vis) = (&layer.item.attrs, &layer.item.vis);
    let user_fields = user_fields(layer.item);
    let fields = &stages.fields;
    let spec_doc = format!("Normalization layer `#[norm({})]`.", layer.spec);
    quote! {
        #(#attrs)*
        #[doc = ""]
        #[doc = #spec_doc]
        #vis struct #name<T: #rt::Float = f32> {
            #(#user_fields,)*
            #fields
            __normkit_marker: ::std::marker::PhantomData<T>,
        }
    }
}

/// The spec as a `static` (from [`Spec::const_expr`], so this crate never lists the IR's
/// fields), and the layer's `LayerInfo` (spec, name, fingerprint).
fn spec_statics(layer: &Layer<'_>) -> TokenStream {
    let rt = &layer.rt;
    let spec_expr = layer
        .spec
        .const_expr("::normkit::__private::spec")
        .parse::<TokenStream>()
        .unwrap_or_else(|e| {
            let message = format!("#[norm] internal error: the spec does not lex ({e})");
            syn::Error::new(Span::call_site(), message).to_compile_error()
        });
    let name_str = layer.name.to_string();
    let fingerprint = shapes::fingerprint(layer.spec);
    let path = crate::path::path_type(layer.spec, rt);
    quote! {
        #path
        static SPEC: #rt::spec::Spec = #spec_expr;
        const INFO: #rt::LayerInfo<'static> = #rt::LayerInfo {
            spec: &SPEC,
            name: #name_str,
            fingerprint: #fingerprint,
        };
    }
}

/// `new(<one usize per sizing axis>)`: γ = 1, β = 0, running mean 0, running variance 1;
/// the user's fields take their `Default`.
fn constructor(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let name = layer.name;
    let arg_decls = layer.args.iter().map(|(_, id)| quote!(#id: usize));
    let user_init = user_fields(layer.item).into_iter().map(|f| {
        let id = &f.ident;
        // Spanned on the field's type: "the trait `Default` is not implemented" points there.
        let ty = &f.ty;
        quote::quote_spanned!(syn::spanned::Spanned::span(ty) => #id: <#ty as ::std::default::Default>::default(),)
    });
    let init = &stages.init;
    let new_doc = if layer.args.is_empty() {
        "A new layer: γ = 1, β = 0, running mean 0, running variance 1.".to_string()
    } else {
        let names: Vec<String> = layer
            .args
            .iter()
            .map(|(i, _)| layer.spec.input[*i].name.to_string())
            .collect();
        format!(
            "A new layer given the size of {}: γ = 1, β = 0, running mean 0, running variance 1.",
            names.join(", ")
        )
    };
    let try_doc = format!(
        "{new_doc}\n\nEvery size product is checked and every array allocated fallibly: a size \
         whose arrays overflow `usize` or cannot be allocated is `NormError::Size`."
    );
    let new_doc = format!(
        "{new_doc}\n\n# Panics\n\nWhere [`try_new`](Self::try_new) returns an error (a size \
         whose arrays overflow `usize` or cannot be allocated), with its message."
    );
    let arg_names = layer.args.iter().map(|(_, id)| id);
    let rt = &layer.rt;
    let arg_decls: Vec<TokenStream> = arg_decls.collect();
    // The constructor's signature is the public API (one size per sizing axis): a
    // declaration with more than clippy's seven sizing axes gets the allowance here, on
    // these two functions only.
    let many = (layer.args.len() > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    quote! {
        #[doc = #try_doc]
        #many
        pub fn try_new(#(#arg_decls),*) -> ::std::result::Result<Self, #rt::NormError> {
            ::std::result::Result::Ok(
                #name { #(#user_init)* #init __normkit_marker: ::std::marker::PhantomData }
            )
        }

        #[doc = #new_doc]
        #many
        pub fn new(#(#arg_decls),*) -> Self {
            match Self::try_new(#(#arg_names),*) {
                ::std::result::Result::Ok(layer) => layer,
                ::std::result::Result::Err(e) => ::std::panic!("{}", e),
            }
        }
    }
}

/// `__forward`: the one forward entry point every public forward method calls.
fn forward_entry(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let (rt, ext_params) = (&layer.rt, &layer.external_params);
    let (view_d, viewmut_d) = (layer.view(), layer.view_mut());
    let (states_train, states_view) = (&stages.states_train, &stages.states_view);
    let call = layer.forward_call(quote!(mode), quote!(out), quote!(saved), quote!(sync));
    quote! {
        fn __forward(
            &mut self,
            x: #view_d,
            #ext_params
            mode: #rt::Mode,
            out: #viewmut_d,
            saved: ::std::option::Option<&mut #rt::Saved<T>>,
            sync: ::std::option::Option<&dyn #rt::Collective>,
        ) -> ::std::result::Result<(), #rt::NormError> {
            match mode {
                #rt::Mode::Train => {
                    let mut states = #states_train;
                    #call
                }
                #rt::Mode::Eval => {
                    let mut states = #states_view;
                    #call
                }
            }
        }
    }
}

/// `forward_sync` and `backward_sync`: statistics synchronized across a `Collective`.
fn sync_methods(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let (rt, ext_params, ext_args) = (&layer.rt, &layer.external_params, &layer.external_args);
    let (view_d, arr_d) = (layer.view(), layer.array());
    let (grads_ty, grads_new) = (&stages.grads_ty, &stages.grads_new);
    let (res, err) = (quote!(::std::result::Result), quote!(#rt::NormError));
    quote! {
        /// Forward pass with statistics synchronized across the members of `comm`
        /// (synchronized batch norm): every stage whose statistics run over `N`
        /// normalizes with the statistics of the whole group's batch. Every member
        /// must make the same call; micro-batch sizes may differ.
        pub fn forward_sync(
            &mut self,
            x: #view_d,
            #ext_params
            mode: #rt::Mode,
            comm: &dyn #rt::Collective,
        ) -> #res<(#arr_d, #rt::Saved<T>), #err> {
            let mut y = #rt::ndarray::Array::zeros(x.raw_dim());
            let mut saved = #rt::Saved::new();
            let s = ::std::option::Option::Some(&mut saved);
            self.__forward(x, #ext_args mode, y.view_mut(), s, ::std::option::Option::Some(comm))?;
            ::std::result::Result::Ok((y, saved))
        }

        /// Backward pass of a `forward_sync`: dx uses the whole group's sums; the
        /// parameter gradients are this member's contribution (sum them over the
        /// members, as data-parallel training does).
        pub fn backward_sync(
            &self,
            x: #view_d,
            dy: #view_d,
            saved: &#rt::Saved<T>,
            comm: &dyn #rt::Collective,
        ) -> #res<#grads_ty, #err> {
            let mut grads = #grads_new;
            self.__backward(x, dy, saved, &mut grads, ::std::option::Option::Some(comm))?;
            ::std::result::Result::Ok(grads)
        }
    }
}

/// `__backward`: the one backward entry point; moves the parameter gradients into the
/// runtime's slots and back.
fn backward_entry(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let rt = &layer.rt;
    let view_d = layer.view();
    let StagesCode {
        grads_ty,
        states_backward,
        slots_in,
        slots_out,
        ..
    } = stages;
    quote! {
        fn __backward(
            &self,
            x: #view_d,
            dy: #view_d,
            saved: &#rt::Saved<T>,
            grads: &mut #grads_ty,
            sync: ::std::option::Option<&dyn #rt::Collective>,
        ) -> ::std::result::Result<(), #rt::NormError> {
            let states = #states_backward;
            let mut slots = #slots_in;
            let args = #rt::BackwardArgs { x, dy, saved, dx: grads.dx.view_mut(), grads: &mut slots, sync };
            let result = #rt::backward_path::<__NormPath, T, _>(&INFO, &states, args);
            #slots_out
            result
        }
    }
}

/// `forward`, `forward_train`, `forward_eval`, `forward_train_into`, `forward_eval_into`.
fn forward_methods(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let (rt, ext_params, ext_args) = (&layer.rt, &layer.external_params, &layer.external_args);
    let (view_d, viewmut_d, arr_d) = (layer.view(), layer.view_mut(), layer.array());
    let states_view = &stages.states_view;
    let (res, err) = (quote!(::std::result::Result), quote!(#rt::NormError));
    let none = quote!(::std::option::Option::None);
    let eval_call = layer.forward_call(quote!(#rt::Mode::Eval), quote!(out), none.clone(), none);
    let mask_doc = if layer.masked {
        "`mask` (shaped by the mask axes) selects the positions the statistics use; a \
         group without one gives zeros. `Saved` keeps the mask for `backward`."
    } else {
        ""
    };
    quote! {
        /// Forward pass. `Mode::Train` normalizes with batch statistics and updates
        /// the running statistics; `Mode::Eval` uses running statistics where the
        /// layer has them. Returns the output and what `backward` needs.
        #[doc = #mask_doc]
        pub fn forward(&mut self, x: #view_d, #ext_params mode: #rt::Mode)
            -> #res<(#arr_d, #rt::Saved<T>), #err>
        {
            let mut y = #rt::ndarray::Array::zeros(x.raw_dim());
            let mut saved = #rt::Saved::new();
            self.__forward(x, #ext_args mode, y.view_mut(), ::std::option::Option::Some(&mut saved), ::std::option::Option::None)?;
            ::std::result::Result::Ok((y, saved))
        }

        /// `forward(x, Mode::Train)`.
        pub fn forward_train(&mut self, x: #view_d, #ext_params)
            -> #res<(#arr_d, #rt::Saved<T>), #err>
        {
            self.forward(x, #ext_args #rt::Mode::Train)
        }

        /// Inference: running statistics where the layer has them, batch statistics
        /// otherwise; no state changes, nothing saved.
        pub fn forward_eval(&self, x: #view_d, #ext_params) -> #res<#arr_d, #err> {
            let mut y = #rt::ndarray::Array::zeros(x.raw_dim());
            self.forward_eval_into(x, #ext_args y.view_mut())?;
            ::std::result::Result::Ok(y)
        }

        /// Train-mode forward pass into caller buffers; `saved` is refilled and its
        /// buffers reused.
        pub fn forward_train_into(
            &mut self,
            x: #view_d,
            #ext_params
            out: #viewmut_d,
            saved: &mut #rt::Saved<T>,
        ) -> #res<(), #err> {
            self.__forward(x, #ext_args #rt::Mode::Train, out, ::std::option::Option::Some(saved), ::std::option::Option::None)
        }

        /// Inference into a caller buffer.
        pub fn forward_eval_into(&self, x: #view_d, #ext_params out: #viewmut_d)
            -> #res<(), #err>
        {
            let mut states = #states_view;
            #eval_call
        }
    }
}

/// `backward` and `backward_into`.
fn backward_methods(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let rt = &layer.rt;
    let view_d = layer.view();
    let (grads_ty, grads_new) = (&stages.grads_ty, &stages.grads_new);
    let (res, err) = (quote!(::std::result::Result), quote!(#rt::NormError));
    quote! {
        /// Backward pass: the gradients with respect to the input and the
        /// parameters, given the upstream gradient `dy` and the `Saved` of a forward
        /// pass on `x` (train: through the batch statistics; eval with running
        /// statistics: through fixed statistics).
        pub fn backward(&self, x: #view_d, dy: #view_d, saved: &#rt::Saved<T>)
            -> #res<#grads_ty, #err>
        {
            let mut grads = #grads_new;
            self.backward_into(x, dy, saved, &mut grads)?;
            ::std::result::Result::Ok(grads)
        }

        /// Backward pass into caller buffers: `grads.dx` must have `x`'s shape; the
        /// parameter gradients are reused when they have the right shape.
        pub fn backward_into(
            &self,
            x: #view_d,
            dy: #view_d,
            saved: &#rt::Saved<T>,
            grads: &mut #grads_ty,
        ) -> #res<(), #err> {
            self.__backward(x, dy, saved, grads, ::std::option::Option::None)
        }
    }
}

/// `stats`: per-group mean and variance.
fn stats_method(layer: &Layer<'_>, stages: &StagesCode) -> TokenStream {
    let (rt, view_d) = (&layer.rt, layer.view());
    let states_backward = &stages.states_backward;
    quote! {
        /// Per-group mean and variance of `x` (with the layer's estimator), shaped by
        /// the kept axes (and the group axis).
        pub fn stats(&self, x: #view_d) -> ::std::result::Result<#rt::Moments<T>, #rt::NormError> {
            let states = #states_backward;
            #rt::stats(&INFO, &states, x)
        }
    }
}

/// `Default` when `new` takes no arguments.
fn default_impl(layer: &Layer<'_>) -> TokenStream {
    if !layer.args.is_empty() {
        return quote!();
    }
    let (name, rt) = (layer.name, &layer.rt);
    quote! {
        #[automatically_derived]
        impl<T: #rt::Float> ::std::default::Default for #name<T> {
            fn default() -> Self {
                Self::new()
            }
        }
    }
}

/// The user's named fields (none for a unit struct).
fn user_fields(item: &ItemStruct) -> Vec<syn::Field> {
    match &item.fields {
        Fields::Named(f) => f.named.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The `ndarray` dimension type of a given rank.
pub(crate) fn dim_type(rank: usize) -> TokenStream {
    match rank {
        0..=6 => {
            let id = format_ident!("Ix{}", rank);
            quote!(::normkit::__private::ndarray::#id)
        }
        _ => quote!(::normkit::__private::ndarray::IxDyn),
    }
}

/// A dimension value of the given sizes.
fn dim_value(sizes: &[TokenStream]) -> TokenStream {
    if sizes.len() <= 6 {
        quote!(::normkit::__private::ndarray::Dim([#(#sizes),*]))
    } else {
        quote!(::normkit::__private::ndarray::IxDyn(&[#(#sizes),*]))
    }
}

/// A constructor argument name for input axis `i`, unique among all arguments.
fn arg_names(spec: &Spec) -> Vec<(usize, Ident)> {
    let mut used: Vec<String> = Vec::new();
    shapes::ctor_args(spec)
        .into_iter()
        .map(|i| {
            let mut name = spec.input[i].name.to_lowercase();
            if syn::parse_str::<Ident>(&name).is_err() || name == "self" {
                name = format!("{name}_");
            }
            while used.contains(&name) {
                name.push('_');
            }
            used.push(name.clone());
            (i, Ident::new(&name, Span::call_site()))
        })
        .collect()
}

/// "indexed by (C, H)" or "a scalar", for field docs.
fn axes_doc(spec: &Spec, axes: &[ParamAxis]) -> String {
    if axes.is_empty() {
        "a scalar".to_string()
    } else {
        let names: Vec<&str> = axes.iter().map(|&a| shapes::axis_name(spec, a)).collect();
        format!("indexed by ({})", names.join(", "))
    }
}

fn upper_camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The generated pieces of one stage.
struct StageCode {
    fields: TokenStream,
    init: TokenStream,
    /// The stage's `StageState`, read-only.
    state_view: TokenStream,
    /// The stage's `StageState`, running statistics mutable.
    state_train: TokenStream,
    /// Read-only, without the external scale/shift (backward reads it from `Saved`).
    state_backward: TokenStream,
}

/// The size expression of a parameter axis: the stage's `groups` for `G`, the fixed size
/// of an input axis, else the constructor argument.
fn axis_size(layer: &Layer<'_>, stage: &Stage, axis: ParamAxis) -> TokenStream {
    match axis {
        ParamAxis::Group => {
            let g = stage.groups.unwrap_or(1);
            quote!(#g)
        }
        ParamAxis::Input(i) => match layer.spec.input[i].size {
            Some(n) => quote!(#n),
            None => {
                let id = &layer
                    .args
                    .iter()
                    .find(|(j, _)| *j == i)
                    .expect("ctor arg")
                    .1;
                quote!(#id)
            }
        },
    }
}

/// The shape value of an array indexed by `axes`.
fn shape_value(layer: &Layer<'_>, stage: &Stage, axes: &[ParamAxis]) -> TokenStream {
    dim_value(
        &axes
            .iter()
            .map(|&a| axis_size(layer, stage, a))
            .collect::<Vec<_>>(),
    )
}

/// Stage `k`'s fields (`gamma`/`beta`, running statistics), reached through `path`
/// (`self` or `self.<stage>`), and its `StageState`s.
fn stage_code(layer: &Layer<'_>, k: usize, path: &TokenStream) -> StageCode {
    let (spec, stage) = (layer.spec, &layer.spec.stages[k]);
    let none = quote!(::std::option::Option::None);
    let arr = quote!(::normkit::__private::ndarray::Array);
    let rt = &layer.rt;
    let mut fields = TokenStream::new();
    let mut init = TokenStream::new();
    let (mut gamma, mut beta) = (none.clone(), none.clone());
    if let Some(axes) = shapes::param_axes(stage) {
        let ty = dim_type(axes.len());
        let dim = shape_value(layer, stage, axes);
        let doc = axes_doc(spec, axes);
        let gamma_doc = format!("Learnable scale γ, {doc}; starts at 1.");
        fields.extend(quote!(#[doc = #gamma_doc] pub gamma: #arr<T, #ty>,));
        let what = field_path(stage, "gamma");
        init.extend(quote!(gamma: #rt::layer_array(INFO.name, #what, #dim, true)?,));
        gamma = quote!(::std::option::Option::Some(#path.gamma.view().into_dyn()));
        if stage.bias {
            let beta_doc = format!("Learnable shift β, {doc}; starts at 0.");
            fields.extend(quote!(#[doc = #beta_doc] pub beta: #arr<T, #ty>,));
            let what = field_path(stage, "beta");
            init.extend(quote!(beta: #rt::layer_array(INFO.name, #what, #dim, false)?,));
            beta = quote!(::std::option::Option::Some(#path.beta.view().into_dyn()));
        }
    }
    let mut tau = none.clone();
    if let (Some(axes), true) = (shapes::param_axes(stage), stage.tlu) {
        let (ty, dim) = (dim_type(axes.len()), shape_value(layer, stage, axes));
        let tau_doc = format!(
            "Learnable TLU threshold τ (y = max(z, τ)), {}; starts at 0.",
            axes_doc(spec, axes)
        );
        fields.extend(quote!(#[doc = #tau_doc] pub tau: #arr<T, #ty>,));
        let what = field_path(stage, "tau");
        init.extend(quote!(tau: #rt::layer_array(INFO.name, #what, #dim, false)?,));
        tau = quote!(::std::option::Option::Some(#path.tau.view().into_dyn()));
    }
    let mut renorm = none.clone();
    if let Some(r) = stage.renorm {
        let (rmax, dmax) = (r.rmax, r.dmax);
        fields.extend(quote! {
            /// Batch Renormalization's `rmax`: r = σ_B/σ_running is clamped to
            /// [1/rmax, rmax]; starts at the declared value (a training loop may ramp it).
            pub rmax: f64,
            /// Batch Renormalization's `dmax`: d = (μ_B − μ_running)/σ_running is clamped
            /// to [−dmax, dmax]; starts at the declared value.
            pub dmax: f64,
        });
        init.extend(quote!(rmax: #rmax, dmax: #dmax,));
        renorm = quote!(::std::option::Option::Some((#path.rmax, #path.dmax)));
    }
    let mut switch = none.clone();
    if !stage.switch.is_empty() {
        let alternatives = stage.switch.len();
        fields.extend(quote! {
            /// Switchable Normalization's logits of the means' mixture, one per alternative
            /// of `axes` (μ = Σ softmax(mean_weight)_k μ_k); start at 0 (equal weights).
            pub mean_weight: #arr<T, ::normkit::__private::ndarray::Ix1>,
            /// Switchable Normalization's logits of the variances' mixture, one per
            /// alternative of `axes`; start at 0.
            pub var_weight: #arr<T, ::normkit::__private::ndarray::Ix1>,
        });
        init.extend(quote! {
            mean_weight: #arr::zeros(#alternatives),
            var_weight: #arr::zeros(#alternatives),
        });
        switch = quote!(::std::option::Option::Some((
            #path.mean_weight.view().into_dyn(),
            #path.var_weight.view().into_dyn()
        )));
    }
    let (mut running, mut running_mut) = (none.clone(), none.clone());
    if let Some(axes) = shapes::running_axes(spec, stage) {
        let code = running_code(layer, stage, &axes, path);
        fields.extend(code.fields);
        init.extend(code.init);
        (running, running_mut) = (code.view, code.view_mut);
    }
    let external = if stage.affine == Affine::External {
        quote!(::std::option::Option::Some((
            scale.into_dyn(),
            shift.into_dyn()
        )))
    } else {
        none.clone()
    };
    let st = quote!(::normkit::__private::StageState);
    StageCode {
        fields,
        init,
        state_view: quote!(#st { gamma: #gamma, beta: #beta, external: #external, running: #running, tau: #tau, renorm: #renorm, switch: #switch }),
        state_train: quote!(#st { gamma: #gamma, beta: #beta, external: #external, running: #running_mut, tau: #tau, renorm: #renorm, switch: #switch }),
        state_backward: quote!(#st { gamma: #gamma, beta: #beta, external: #none, running: #running, tau: #tau, renorm: #renorm, switch: #switch }),
    }
}

/// How an error names a stage's array: `gamma`, or `bn.gamma` in a chain.
fn field_path(stage: &Stage, field: &str) -> String {
    if stage.name.is_empty() {
        field.to_string()
    } else {
        format!("{}.{field}", stage.name)
    }
}

/// The running statistics of a stage: fields, initial values, and their borrows.
struct RunningCode {
    fields: TokenStream,
    init: TokenStream,
    view: TokenStream,
    view_mut: TokenStream,
}

fn running_code(
    layer: &Layer<'_>,
    stage: &Stage,
    axes: &[ParamAxis],
    path: &TokenStream,
) -> RunningCode {
    let arr = quote!(::normkit::__private::ndarray::Array);
    let ty = dim_type(axes.len());
    let dim = shape_value(layer, stage, axes);
    let doc = axes_doc(layer.spec, axes);
    let mean_doc = format!("Running mean, {doc}; starts at 0, used in eval mode.");
    let var_doc = format!("Running (unbiased) variance, {doc}; starts at 1, used in eval mode.");
    let rt = quote!(::normkit::__private::Running);
    let lrt = &layer.rt;
    let (mean_what, var_what) = (
        field_path(stage, "running_mean"),
        field_path(stage, "running_var"),
    );
    RunningCode {
        fields: quote! {
            #[doc = #mean_doc] pub running_mean: #arr<T, #ty>,
            #[doc = #var_doc] pub running_var: #arr<T, #ty>,
            /// Number of training batches seen.
            pub num_batches_tracked: u64,
        },
        init: quote! {
            running_mean: #lrt::layer_array(INFO.name, #mean_what, #dim, false)?,
            running_var: #lrt::layer_array(INFO.name, #var_what, #dim, true)?,
            num_batches_tracked: 0,
        },
        view: quote!(::std::option::Option::Some(#rt::View {
            mean: #path.running_mean.view().into_dyn(),
            var: #path.running_var.view().into_dyn(),
        })),
        view_mut: quote!(::std::option::Option::Some(#rt::Mut {
            mean: #path.running_mean.view_mut().into_dyn(),
            var: #path.running_var.view_mut().into_dyn(),
            count: &mut #path.num_batches_tracked,
        })),
    }
}
