//! A minimal token tree, generic over the span type, so the same parser runs on
//! `proc_macro2` tokens (macro) and on tokens lexed from a string (`NormSpec::parse`).

/// The delimiter of a [`TokenTree::Group`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimiter {
    /// `( ... )`
    Parenthesis,
    /// `[ ... ]`
    Bracket,
    /// `{ ... }`
    Brace,
}

/// What kind of literal a [`Literal`] is.
#[derive(Clone, Debug, PartialEq)]
pub enum LitKind {
    /// A string literal, with escapes resolved.
    Str(String),
    /// An integer literal (no suffix).
    Int(u128),
    /// A floating-point literal (no suffix).
    Float(f64),
    /// Anything else (char, byte string, suffixed number, ...): always an error here.
    Other,
}

/// A literal token.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    /// The classified value.
    pub kind: LitKind,
    /// The literal as written in the source (used in error messages).
    pub text: String,
}

/// One token tree.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenTree<S> {
    /// An identifier or keyword (`axes`, `true`, `external`).
    Ident {
        /// The identifier text.
        name: String,
        /// Where it is.
        span: S,
    },
    /// One punctuation character (`=`, `,`, `-`).
    Punct {
        /// The character.
        ch: char,
        /// Where it is.
        span: S,
    },
    /// A literal.
    Literal {
        /// The literal.
        lit: Literal,
        /// Where it is.
        span: S,
    },
    /// A delimited group.
    Group {
        /// The delimiter.
        delimiter: Delimiter,
        /// The tokens inside.
        inner: Vec<TokenTree<S>>,
        /// The span of the whole group, delimiters included.
        span: S,
    },
}

impl<S: Clone> TokenTree<S> {
    /// The span of this token tree.
    pub fn span(&self) -> S {
        match self {
            TokenTree::Ident { span, .. }
            | TokenTree::Punct { span, .. }
            | TokenTree::Literal { span, .. }
            | TokenTree::Group { span, .. } => span.clone(),
        }
    }
}
