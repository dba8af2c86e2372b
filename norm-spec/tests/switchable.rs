//! Switchable Normalization in the configuration language: `axes = "H,W" | "C,H,W" |
//! "N,H,W"` — the IR it lowers to, the canonical text, every message at its byte range (the
//! same messages as the macro's, see `ui-tests/tests/ui/fail/switchable/`), and a property
//! test over combinations of alternatives.

use std::ops::Range;

use norm_spec::{parse_str, Spec};
use proptest::prelude::*;

fn ok(src: &str) -> Spec {
    match parse_str(src) {
        Ok(spec) => spec,
        Err(errors) => panic!("`{src}` was rejected: {errors:#?}"),
    }
}

fn errors(src: &str) -> Vec<(String, Range<usize>)> {
    match parse_str(src) {
        Ok(spec) => panic!("`{src}` was accepted: {spec:?}"),
        Err(errors) => errors.into_iter().map(|e| (e.message, e.span)).collect(),
    }
}

/// The byte range of the `n`-th (0-based) occurrence of `needle` in `src`.
fn at_nth(src: &str, needle: &str, n: usize) -> Range<usize> {
    let start = src.match_indices(needle).nth(n).expect("needle in src").0;
    start..start + needle.len()
}

fn at(src: &str, needle: &str) -> Range<usize> {
    at_nth(src, needle, 0)
}

#[test]
fn alternatives_lower_to_masks_in_written_order() {
    let spec = ok(r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats"#);
    let st = &spec.stages[0];
    assert_eq!(&st.switch[..], &[0b1100, 0b1110, 0b1101]);
    // `axes` is the alternative over N (its running statistics).
    assert_eq!(st.axes, 0b1101);
    let spec = ok(r#"input = "N,T,D", axes = "D" | "N,T", affine = "D""#);
    assert_eq!(&spec.stages[0].switch[..], &[0b100, 0b011]);
    // Without an alternative over N, `axes` is the first.
    let spec = ok(r#"input = "N,C,H,W", axes = "C,H,W" | "H,W""#);
    assert_eq!(spec.stages[0].axes, 0b1110);
    // No `|`: no alternatives.
    assert!(ok(r#"input = "N,C,H,W", axes = "C,H,W""#).stages[0]
        .switch
        .is_empty());
}

#[test]
fn canonical_text_lists_the_alternatives_and_roundtrips() {
    for src in [
        r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats"#,
        r#"input = "N,T,D", axes = "D" | "T,D" | "N,T", affine = "D", running_stats, momentum = 0.2"#,
        r#"input = "N,C,H,W", axes = "W,H" | "N,C,H,W""#,
    ] {
        let spec = ok(src);
        let text = spec.to_string();
        assert!(text.contains(" | "), "{text}");
        assert_eq!(ok(&text), spec, "{text}");
    }
    let text = ok(r#"input = "N,C,H,W", axes = "W,H" | "N,C,H,W""#).to_string();
    assert!(text.contains(r#"axes = "H,W" | "N,C,H,W""#), "{text}");
}

#[test]
fn syntax_errors_point_at_the_token() {
    let src = r#"input = "N,C,H,W", axes = "H,W" | C, affine"#;
    let e = errors(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0]
        .0
        .starts_with("expected a string of axis names after `|` in `axes`"));
    assert!(e[0].0.ends_with("found `C`"), "{}", e[0].0);
    let c = src.find("| C").unwrap() + 2;
    assert_eq!(e[0].1, c..c + 1);
    let src = r#"input = "N,C,H,W", axes = "H,W" |"#;
    let e = errors(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, at(src, "|"));
    let src = r#"input = "N,C,H,W", axes = "H,W" | "", affine"#;
    let e = errors(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].0.starts_with("empty `axes`: each alternative"),
        "{}",
        e[0].0
    );
    assert_eq!(e[0].1, at(src, r#""""#));
    // `|` after another key's value is a missing comma there.
    let src = r#"input = "N,C,H,W", axes = "H,W", affine = "C" | "H""#;
    let e = errors(src);
    assert!(e[0].0.contains("found `|`"), "{e:?}");
}

#[test]
fn alternative_rules() {
    let src = r#"input = "N,C,H,W", axes = "H,W" | "C,X", affine"#;
    assert_eq!(
        errors(src),
        vec![(
            "unknown axis `X` in `axes`; `input` has N, C, H, W".to_string(),
            at(src, r#""C,X""#)
        )]
    );
    let src = r#"input = "N,C,H,W", axes = "H,W" | "W,H""#;
    let e = errors(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("reduces the same axes as an earlier one"));
    assert_eq!(e[0].1, at(src, r#""W,H""#));
    let src = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W" | "W" | "H""#;
    let e = errors(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("2 to 4 alternatives"));
    assert_eq!(e[0].1, at_nth(src, "|", 3));
    let src = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W", running_stats"#;
    let e = errors(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("but none does"));
    assert_eq!(e[0].1, at(src, "running_stats"));
    let src = r#"input = "N,C,H,W", axes = "N,H,W" | "N,C,H,W", running_stats"#;
    let e = errors(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("at most one alternative"));
    assert_eq!(e[0].1, at_nth(src, r#""N,C,H,W""#, 1));
    // Two alternatives over N are fine without running statistics.
    ok(r#"input = "N,C,H,W", axes = "N,H,W" | "N,C,H,W""#);
    let src = r#"input = "N,C,H,W", chain(sn(axes = "H,W" | "C,H,W"), gn(axes = "C,H,W"))"#;
    let e = errors(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("not supported inside `chain` (stage `sn`)"));
    assert_eq!(e[0].1, at(src, "|"));
}

#[test]
fn incompatible_keys_are_reported_on_their_key() {
    let src = r#"input = "N,C,H,W", axes = "H,W" | "C,H,W", groups = 2, affine = external, unbiased, center = false, eps_mode = "std", statistic = "sum""#;
    let e = errors(src);
    for key in [
        "groups",
        "affine",
        "unbiased",
        "center",
        "eps_mode",
        "statistic",
    ] {
        assert!(
            e.iter().any(|(m, span)| *span == at(src, key)
                && m.contains("cannot be combined with alternatives of `axes`")),
            "{key}: {e:#?}"
        );
    }
    let src = r#"input = "N,C,H,W", axes = "N,H,W" | "C,H,W", affine, tlu, ghost = 4, running_stats, renorm, mask = "N""#;
    let e = errors(src);
    for key in ["tlu", "ghost", "renorm", "mask"] {
        assert!(
            e.iter().any(|(m, span)| *span == at(src, key)
                && m.contains("cannot be combined with alternatives of `axes`")),
            "{key}: {e:#?}"
        );
    }
}

/// The axis lists of `N,C,H,W` as bit masks (non-empty).
fn alternative() -> impl Strategy<Value = u16> {
    1u16..16
}

fn text(mask: u16) -> String {
    let names: Vec<&str> = ["N", "C", "H", "W"]
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & 1 << i != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("\"{}\"", names.join(","))
}

proptest! {
    /// Any 2 to 5 alternatives: accepted exactly when there are at most 4, all distinct, and
    /// (with `running_stats`) exactly one reduces `N`; accepted ones lower to the masks as
    /// written and roundtrip through the canonical text.
    #[test]
    fn combinations_of_alternatives(
        alts in proptest::collection::vec(alternative(), 2..=5),
        running in any::<bool>(),
    ) {
        let list: Vec<String> = alts.iter().map(|&m| text(m)).collect();
        let src = format!(
            r#"input = "N,C,H,W", axes = {}{}"#,
            list.join(" | "),
            if running { ", running_stats" } else { "" }
        );
        let distinct = alts.iter().enumerate().all(|(i, m)| !alts[..i].contains(m));
        let over_n = alts.iter().filter(|&&m| m & 1 != 0).count();
        let valid = alts.len() <= 4 && distinct && (!running || over_n == 1);
        match parse_str(&src) {
            Ok(spec) => {
                prop_assert!(valid, "accepted: {}", src);
                prop_assert_eq!(&spec.stages[0].switch[..], &alts[..]);
                prop_assert_eq!(ok(&spec.to_string()), spec);
            }
            Err(e) => prop_assert!(!valid, "rejected: {}: {:?}", src, e),
        }
    }
}
