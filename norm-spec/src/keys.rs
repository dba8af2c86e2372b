//! The one table of configuration keys, and the "did you mean" machinery.
//!
//! Every place that needs to know which keys exist (the parser, the unknown-key message, the
//! suggestion) reads [`KEYS`]; nothing else spells a key name.

/// A configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Input,
    Axes,
    Groups,
    Affine,
    Bias,
    Center,
    Eps,
    EpsMode,
    Unbiased,
    RunningStats,
    Momentum,
    Chain,
}

/// One row of the key table.
pub(crate) struct KeyInfo {
    /// The key.
    pub key: Key,
    /// How it is written.
    pub name: &'static str,
    /// Whether it may appear inside a `chain` stage (every key except `input` and `chain`).
    pub in_stage: bool,
}

/// The key table, in documentation order (also the order of the "valid keys" lists).
pub(crate) const KEYS: &[KeyInfo] = &[
    KeyInfo {
        key: Key::Input,
        name: "input",
        in_stage: false,
    },
    KeyInfo {
        key: Key::Axes,
        name: "axes",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Groups,
        name: "groups",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Affine,
        name: "affine",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Bias,
        name: "bias",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Center,
        name: "center",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Eps,
        name: "eps",
        in_stage: true,
    },
    KeyInfo {
        key: Key::EpsMode,
        name: "eps_mode",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Unbiased,
        name: "unbiased",
        in_stage: true,
    },
    KeyInfo {
        key: Key::RunningStats,
        name: "running_stats",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Momentum,
        name: "momentum",
        in_stage: true,
    },
    KeyInfo {
        key: Key::Chain,
        name: "chain",
        in_stage: false,
    },
];

/// Names other libraries (mostly PyTorch) use for our keys: only ever used as suggestions.
const ALIASES: &[(&str, Key)] = &[
    ("dim", Key::Axes),
    ("dims", Key::Axes),
    ("axis", Key::Axes),
    ("reduce", Key::Axes),
    ("normalized_shape", Key::Axes),
    ("shape", Key::Input),
    ("layout", Key::Input),
    ("num_groups", Key::Groups),
    ("group", Key::Groups),
    ("elementwise_affine", Key::Affine),
    ("scale", Key::Affine),
    ("gamma", Key::Affine),
    ("beta", Key::Bias),
    ("shift", Key::Bias),
    ("epsilon", Key::Eps),
    ("track_running_stats", Key::RunningStats),
    ("running", Key::RunningStats),
    ("unbiased_var", Key::Unbiased),
    ("stages", Key::Chain),
    ("sequential", Key::Chain),
];

impl Key {
    /// How the key is written.
    pub(crate) fn name(self) -> &'static str {
        KEYS.iter().find(|k| k.key == self).map_or("?", |k| k.name)
    }

    /// The key written `name`, if any.
    pub(crate) fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|k| k.name == name).map(|k| k.key)
    }
}

/// The keys valid at a level, comma-separated: `input, axes, ...` (top level) or the stage keys.
pub(crate) fn valid_keys(in_stage: bool) -> String {
    KEYS.iter()
        .filter(|k| !in_stage || k.in_stage)
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key an unknown `word` most likely meant, among the keys valid at that level.
pub(crate) fn suggest_key(word: &str, in_stage: bool) -> Option<&'static str> {
    let lower = word.to_lowercase();
    let valid = |key: Key| !in_stage || KEYS.iter().any(|k| k.key == key && k.in_stage);
    if let Some((_, key)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        if valid(*key) {
            return Some(key.name());
        }
    }
    let names = KEYS
        .iter()
        .filter(|k| !in_stage || k.in_stage)
        .map(|k| k.name);
    closest(&lower, names)
}

/// The candidate closest to `word` by Jaro–Winkler similarity, if it is similar enough.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &'a str)> = None;
    for cand in candidates {
        let score = jaro_winkler(word, cand);
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, cand));
        }
    }
    best.filter(|b| b.0 >= 0.8).map(|b| b.1)
}

/// Jaro similarity of two strings (by `char`), in `[0, 1]`.
fn jaro(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut b_used = vec![false; b.len()];
    let mut a_matches = Vec::new();
    for (i, &ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        for j in lo..hi {
            if !b_used[j] && b[j] == ca {
                b_used[j] = true;
                a_matches.push(ca);
                break;
            }
        }
    }
    let m = a_matches.len();
    if m == 0 {
        return 0.0;
    }
    let b_matches = b.iter().zip(&b_used).filter(|(_, &u)| u).map(|(&c, _)| c);
    let transpositions = a_matches
        .iter()
        .zip(b_matches)
        .filter(|(x, y)| **x != *y)
        .count()
        / 2;
    let m = m as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0
}

/// Jaro–Winkler similarity (prefix scale 0.1, prefix up to 4 chars), in `[0, 1]`.
pub(crate) fn jaro_winkler(a: &str, b: &str) -> f64 {
    let j = jaro(a, b);
    let prefix = a
        .chars()
        .zip(b.chars())
        .take(4)
        .take_while(|(x, y)| x == y)
        .count();
    j + prefix as f64 * 0.1 * (1.0 - j)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_key("axis", false), Some("axes"));
        assert_eq!(suggest_key("eps_mod", false), Some("eps_mode"));
        assert_eq!(suggest_key("runing_stats", false), Some("running_stats"));
        assert_eq!(suggest_key("momentun", false), Some("momentum"));
        assert_eq!(suggest_key("Axes", false), Some("axes"));
        assert_eq!(suggest_key("epsilon", true), Some("eps"));
        assert_eq!(suggest_key("num_groups", true), Some("groups"));
        assert_eq!(suggest_key("inpt", false), Some("input"));
        assert_eq!(suggest_key("inpt", true), None);
        assert_eq!(suggest_key("zzz", false), None);
        assert_eq!(suggest_key("", false), None);
    }

    #[test]
    fn every_key_roundtrips() {
        for k in KEYS {
            assert_eq!(Key::from_name(k.name), Some(k.key));
            assert_eq!(k.key.name(), k.name);
        }
    }

    #[test]
    fn jaro_winkler_basics() {
        assert!((jaro_winkler("abc", "abc") - 1.0).abs() < 1e-12);
        assert_eq!(jaro_winkler("abc", "xyz"), 0.0);
        assert!(jaro_winkler("martha", "marhta") > 0.96);
    }
}
