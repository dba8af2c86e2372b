//! Which words may name generated items: Rust keywords and ASCII identifiers.

/// Rust keywords (strict, reserved and edition-dependent): not usable as field or argument names.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "gen", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// Whether `word` is a Rust keyword (so it cannot name a generated field or argument).
pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word) || word == "Self"
}

/// Whether `s` is an ASCII identifier (`[A-Za-z_][A-Za-z0-9_]*`, not `_`).
pub(crate) fn is_ascii_ident(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s != "_" && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
