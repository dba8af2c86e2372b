//! Issue 18 part B in the configuration language: `mask = "..."` (masked statistics) — the
//! valid forms, the IR they lower to, the canonical text, and every message at its byte
//! range.

use std::ops::Range;

use norm_spec::{parse_str, Spec};

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

fn at(src: &str, needle: &str) -> Range<usize> {
    let start = src.find(needle).expect("needle in src");
    start..start + needle.len()
}

#[test]
fn mask_lowers_to_its_axes() {
    let spec = ok(r#"input = "N,T,D", axes = "T,D", mask = "N,T""#);
    assert_eq!(spec.stages[0].mask, 0b011);
    assert!(spec.stages[0].masks(0) && spec.stages[0].masks(1) && !spec.stages[0].masks(2));
    // The mask axes are written in input order, whatever the order written.
    let spec = ok(r#"input = "N,T,C", axes = "N,T", mask = "T,N", affine = "C""#);
    assert_eq!(spec.stages[0].mask, 0b011);
    let spec = ok(r#"input = "N,C,L", axes = "N,L", mask = "N""#);
    assert_eq!(spec.stages[0].mask, 0b001);
}

#[test]
fn no_mask_by_default() {
    assert_eq!(ok(r#"axes = "C,H,W""#).stages[0].mask, 0);
}

#[test]
fn canonical_text_has_the_mask_and_roundtrips() {
    let spec = ok(r#"input = "N,T,D", mask = "T,N", axes = "T,D", affine = "D""#);
    let text = spec.to_string();
    assert!(text.contains(r#"mask = "N,T""#), "{text}");
    assert_eq!(ok(&text), spec);
    // The mask is part of the fingerprint.
    let plain = ok(r#"input = "N,T,D", axes = "T,D", affine = "D""#);
    assert_ne!(
        norm_spec::shapes::fingerprint(&spec),
        norm_spec::shapes::fingerprint(&plain)
    );
}

#[test]
fn mask_axis_not_in_input() {
    let src = r#"input = "N,T,D", axes = "T,D", mask = "N,S""#;
    assert_eq!(
        errors(src),
        vec![(
            "unknown axis `S` in `mask`; `input` has N, T, D".to_string(),
            at(src, r#""N,S""#)
        )]
    );
    let src = r#"input = "N,T,D", axes = "T,D", mask = "n""#;
    assert_eq!(
        errors(src),
        vec![(
            "unknown axis `n` in `mask`; `input` has N, T, D; did you mean `N`?".to_string(),
            at(src, r#""n""#)
        )]
    );
}

#[test]
fn mask_must_name_axes() {
    let src = r#"input = "N,T,D", axes = "T,D", mask = """#;
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].0.contains("mask = \"N,T\""), "{errs:?}");
    let src = r#"input = "N,T,D", axes = "T,D", mask = "N,N""#;
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].0.contains("`N`"), "{errs:?}");
}

#[test]
fn mask_with_chain_is_refused_on_the_key() {
    let src = r#"input = "N,C,T", mask = "N,T", chain(bn(axes = "N,T"), ln(axes = "C,T"))"#;
    assert_eq!(
        errors(src),
        vec![(
            "`mask` is not supported with `chain`: declare the masked normalization as its \
             own layer"
                .to_string(),
            at(src, "mask")
        )]
    );
    let src = r#"input = "N,C,T", chain(bn(axes = "N,T", mask = "N"))"#;
    assert_eq!(
        errors(src),
        vec![(
            "`mask` cannot be nested inside stage `bn`".to_string(),
            at(src, "mask")
        )]
    );
}

#[test]
fn misspelled_mask_is_suggested() {
    let src = r#"input = "N,T,D", axes = "T,D", padding_mask = "N,T""#;
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].0.contains("did you mean `mask`?"), "{errs:?}");
}

#[test]
fn mask_with_a_post_2017_statistics_key_is_refused_on_that_key() {
    let message = |name: &str| {
        format!(
            "`{name}` is not supported together with `mask`: masked statistics are plain \
             means and variances over the unmasked positions"
        )
    };
    let base = r#"input = "N,T,C", axes = "N,T", mask = "N,T", affine = "C", running_stats"#;
    for (key, name) in [
        ("ghost = 2", "ghost"),
        ("renorm(rmax = 3.0, dmax = 5.0)", "renorm"),
    ] {
        let src = format!("{base}, {key}");
        let word = key.split([' ', '(']).next().unwrap();
        assert_eq!(errors(&src), vec![(message(name), at(&src, word))], "{src}");
    }
    let src = r#"input = "N,C,T", axes = "T", mask = "N,T", affine = "C", tlu"#;
    assert_eq!(errors(src), vec![(message("tlu"), at(src, "tlu"))]);
    let src = r#"input = "N,T,D", axes = "D", mask = "N,T", center = false, statistic = "sum""#;
    assert_eq!(
        errors(src),
        vec![(message("statistic = \"sum\""), at(src, "statistic"))]
    );
    // Without the mask, the same declarations are valid.
    ok(r#"input = "N,T,C", axes = "N,T", affine = "C", running_stats, ghost = 2"#);
    ok(r#"input = "N,T,D", axes = "D", center = false, statistic = "sum""#);
}
