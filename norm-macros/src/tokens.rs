//! `proc_macro2` tokens → `norm-spec` token trees (keeping every span).

use norm_spec::{Delimiter, LitKind, Literal, TokenTree};
use proc_macro2::{Span, TokenStream, TokenTree as Tt};

/// Converts the attribute's tokens; `None`-delimited groups are flattened.
pub(crate) fn convert(stream: TokenStream) -> Vec<TokenTree<Span>> {
    let mut out = Vec::new();
    for tt in stream {
        match tt {
            Tt::Ident(i) => out.push(TokenTree::Ident {
                name: i.to_string().trim_start_matches("r#").to_string(),
                span: i.span(),
            }),
            Tt::Punct(p) => out.push(TokenTree::Punct {
                ch: p.as_char(),
                span: p.span(),
            }),
            Tt::Literal(l) => out.push(TokenTree::Literal {
                lit: literal(&l),
                span: l.span(),
            }),
            Tt::Group(g) => {
                let delimiter = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => Delimiter::Parenthesis,
                    proc_macro2::Delimiter::Bracket => Delimiter::Bracket,
                    proc_macro2::Delimiter::Brace => Delimiter::Brace,
                    proc_macro2::Delimiter::None => {
                        out.extend(convert(g.stream()));
                        continue;
                    }
                };
                out.push(TokenTree::Group {
                    delimiter,
                    inner: convert(g.stream()),
                    span: g.span(),
                });
            }
        }
    }
    out
}

fn literal(l: &proc_macro2::Literal) -> Literal {
    let kind = match syn::Lit::new(l.clone()) {
        syn::Lit::Str(s) if s.suffix().is_empty() => LitKind::Str(s.value()),
        syn::Lit::Int(i) if i.suffix().is_empty() => i
            .base10_parse::<u128>()
            .map_or(LitKind::Other, LitKind::Int),
        syn::Lit::Float(f) if f.suffix().is_empty() => f
            .base10_parse::<f64>()
            .map_or(LitKind::Other, LitKind::Float),
        _ => LitKind::Other,
    };
    Literal {
        kind,
        text: l.to_string(),
    }
}
