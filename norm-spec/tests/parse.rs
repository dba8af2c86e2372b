//! The configuration language: every valid form gives the expected `Spec`, every invalid one
//! the expected messages at the expected byte ranges, and the canonical text roundtrips.

use std::borrow::Cow;
use std::ops::Range;

use norm_spec::{
    parse_str, parse_tokens, Affine, Axis, Delimiter, EpsMode, LitKind, Literal, Momentum,
    ParamAxis, Renorm, Spec, Stage, Statistic, TokenTree,
};

// ---------------------------------------------------------------- helpers

fn axis(name: &'static str, size: Option<usize>) -> Axis {
    Axis {
        name: Cow::Borrowed(name),
        size,
    }
}

fn input(names: &[&'static str]) -> Vec<Axis> {
    names
        .iter()
        .map(|n| match n.split_once('=') {
            Some((name, size)) => axis(name, Some(size.parse().unwrap())),
            None => axis(n, None),
        })
        .collect()
}

fn nchw() -> Vec<Axis> {
    input(&["N", "C", "H", "W"])
}

/// A stage with every default and the given reduced-axes mask.
fn stage(axes: u16) -> Stage {
    Stage {
        name: Cow::Borrowed(""),
        axes,
        groups: None,
        affine: Affine::None,
        bias: false,
        center: true,
        eps: 1e-5,
        eps_mode: EpsMode::Var,
        unbiased: false,
        running_stats: false,
        momentum: Momentum::Exponential(0.1),
        statistic: Statistic::Mean,
        tlu: false,
        ghost: None,
        renorm: None,
        mask: 0,
        switch: Cow::Borrowed(&[]),
    }
}

fn per(axes: &[ParamAxis]) -> Affine {
    Affine::Axes(Cow::Owned(axes.to_vec()))
}

fn spec(input: Vec<Axis>, stages: Vec<Stage>, chain: bool) -> Spec {
    let channel = input.iter().position(|a| a.name == "C");
    let batch = input.iter().position(|a| a.name == "N");
    Spec {
        input: Cow::Owned(input),
        channel,
        batch,
        stages: Cow::Owned(stages),
        chain,
    }
}

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

/// The byte range of the first occurrence of `needle` in `src`.
fn at(src: &str, needle: &str) -> Range<usize> {
    let start = src
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in `{src}`"));
    start..start + needle.len()
}

/// The byte range of the last occurrence of `needle` in `src`.
fn last(src: &str, needle: &str) -> Range<usize> {
    let start = src
        .rfind(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in `{src}`"));
    start..start + needle.len()
}

/// `src` gives exactly one error, with this message, at the first occurrence of `span`.
#[track_caller]
fn one(src: &str, message: &str, span: &str) {
    assert_eq!(
        errors(src),
        vec![(message.to_string(), at(src, span))],
        "for `{src}`"
    );
}

/// Like [`one`], at the last occurrence of `span`.
#[track_caller]
fn one_last(src: &str, message: &str, span: &str) {
    assert_eq!(
        errors(src),
        vec![(message.to_string(), last(src, span))],
        "for `{src}`"
    );
}

const VALID_KEYS: &str = "valid keys: input, axes, groups, affine, bias, center, eps, eps_mode, \
                          unbiased, running_stats, momentum, chain, statistic, tlu, ghost, renorm, \
                          mask";
const STAGE_KEYS: &str = "valid keys: axes, groups, affine, bias, center, eps, eps_mode, \
                          unbiased, running_stats, momentum, statistic, tlu, ghost, renorm";

// ---------------------------------------------------------------- valid forms

#[test]
fn minimal_layer_uses_every_default() {
    assert_eq!(
        ok(r#"axes = "C,H,W""#),
        spec(nchw(), vec![stage(0b1110)], false)
    );
}

#[test]
fn group_norm() {
    let mut s = stage(0b1110);
    s.groups = Some(32);
    s.affine = per(&[ParamAxis::Input(1)]);
    s.bias = true;
    assert_eq!(
        ok(r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#),
        spec(nchw(), vec![s], false)
    );
}

#[test]
fn batch_norm_with_running_stats() {
    let mut s = stage(0b1101);
    s.affine = per(&[ParamAxis::Input(1)]);
    s.bias = true;
    s.running_stats = true;
    s.momentum = Momentum::Exponential(0.01);
    assert_eq!(
        ok(r#"axes = "N,H,W", affine, running_stats, momentum = 0.01"#),
        spec(nchw(), vec![s], false)
    );
}

#[test]
fn layer_norm_over_a_fixed_last_axis() {
    let mut s = stage(0b100);
    s.affine = per(&[ParamAxis::Input(2)]);
    s.eps = 1e-6;
    assert_eq!(
        ok(r#"input = "N,T,D=512", axes = "D", affine = "D", bias = false, eps = 1e-6"#),
        spec(input(&["N", "T", "D=512"]), vec![s], false)
    );
    let spec = ok(r#"input = "N,T,D=512", axes = "D""#);
    assert_eq!((spec.batch, spec.channel), (Some(0), None));
}

#[test]
fn rms_norm_and_weight_standardization() {
    let mut s = stage(0b10);
    s.center = false;
    assert_eq!(
        ok(r#"input = "B,D", axes = "D", center = false"#),
        spec(input(&["B", "D"]), vec![s], false)
    );
    let mut s = stage(0b1110);
    s.eps_mode = EpsMode::Std;
    s.unbiased = true;
    s.eps = 0.0;
    assert_eq!(
        ok(r#"input = "O,I,kh,kw", axes = "I,kh,kw", eps_mode = "std", unbiased, eps = 0"#),
        spec(input(&["O", "I", "kh", "kw"]), vec![s], false)
    );
}

#[test]
fn affine_axis_lists_are_stored_in_memory_order() {
    let mut s = stage(0b1110);
    s.affine = per(&[
        ParamAxis::Input(1),
        ParamAxis::Input(2),
        ParamAxis::Input(3),
    ]);
    s.bias = true;
    assert_eq!(
        ok(r#"axes = "C,H,W", affine = "W,C,H""#),
        spec(nchw(), vec![s], false)
    );
    // `G` sits at the position of `C`.
    let mut s = stage(0b1110);
    s.groups = Some(4);
    s.affine = per(&[ParamAxis::Group, ParamAxis::Input(3)]);
    s.bias = true;
    assert_eq!(
        ok(r#"axes = "C,H,W", groups = 4, affine = "W, G""#),
        spec(nchw(), vec![s], false)
    );
    let mut s = stage(0b0010);
    s.groups = Some(2);
    s.affine = per(&[ParamAxis::Input(0), ParamAxis::Group]);
    s.bias = true;
    assert_eq!(
        ok(r#"input = "T,C,N", axes = "C", groups = 2, affine = "G,T""#),
        spec(input(&["T", "C", "N"]), vec![s], false)
    );
}

#[test]
fn an_input_axis_named_g_is_an_ordinary_axis_without_groups() {
    let mut s = stage(0b100);
    s.affine = per(&[ParamAxis::Input(1)]);
    s.bias = true;
    assert_eq!(
        ok(r#"input = "N,G,D", axes = "D", affine = "G""#),
        spec(input(&["N", "G", "D"]), vec![s], false)
    );
}

#[test]
fn affine_forms() {
    let mut s = stage(0b1110);
    s.affine = Affine::External;
    assert_eq!(
        ok(r#"axes = "C,H,W", affine = external"#),
        spec(nchw(), vec![s], false)
    );
    // `affine = true` is the flag, `affine = false` means none.
    assert_eq!(
        ok(r#"axes = "H", affine = true"#),
        ok(r#"axes = "H", affine"#)
    );
    assert_eq!(ok(r#"axes = "H", affine = false"#), ok(r#"axes = "H""#));
    let mut s = stage(0b1000);
    s.affine = per(&[ParamAxis::Input(1)]);
    s.bias = false;
    assert_eq!(
        ok(r#"axes = "W", affine, bias = false"#),
        spec(nchw(), vec![s], false)
    );
    assert_eq!(
        ok(r#"axes = "W", affine, bias = true"#),
        ok(r#"axes = "W", affine"#)
    );
}

#[test]
fn flags_accept_booleans() {
    assert_eq!(
        ok(r#"axes = "C", unbiased = true"#),
        ok(r#"axes = "C", unbiased"#)
    );
    assert_eq!(ok(r#"axes = "C", unbiased = false"#), ok(r#"axes = "C""#));
    assert_eq!(
        ok(r#"axes = "C", running_stats = true"#),
        ok(r#"axes = "C", running_stats"#)
    );
    assert_eq!(
        ok(r#"axes = "C", running_stats = false"#),
        ok(r#"axes = "C""#)
    );
    assert_eq!(ok(r#"axes = "C", center = true"#), ok(r#"axes = "C""#));
}

#[test]
fn momentum_forms() {
    let mut s = stage(0b1101);
    s.running_stats = true;
    s.momentum = Momentum::Cumulative;
    assert_eq!(
        ok(r#"axes = "N,H,W", running_stats, momentum = "cumulative""#),
        spec(nchw(), vec![s.clone()], false)
    );
    s.momentum = Momentum::Exponential(1.0);
    assert_eq!(
        ok(r#"axes = "N,H,W", running_stats, momentum = 1"#),
        spec(nchw(), vec![s], false)
    );
}

#[test]
fn chain_of_stages() {
    let mut bn = stage(0b1101);
    bn.name = Cow::Borrowed("bn");
    bn.affine = per(&[ParamAxis::Input(1)]);
    bn.bias = true;
    bn.running_stats = true;
    let mut gn = stage(0b1110);
    gn.name = Cow::Borrowed("gn");
    gn.groups = Some(2);
    assert_eq!(
        ok(
            r#"input = "N,C,H,W", chain(bn(axes="N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2))"#
        ),
        spec(nchw(), vec![bn, gn], true)
    );
    let mut only = stage(0b10);
    only.name = Cow::Borrowed("ln_2");
    assert_eq!(
        ok(r#"chain(ln_2(axes = "C",),),"#),
        spec(nchw(), vec![only], true)
    );
}

#[test]
fn lexical_variety() {
    let plain = ok(r#"axes = "C,H,W", groups = 8, eps = 0.001"#);
    for src in [
        "axes=\"C,H,W\",groups=8,eps=0.001,",
        "axes = r\"C, H, W\", groups = 0x8, eps = 1e-3",
        "axes = r#\"C,H,W\"#, groups = 0_8, eps = 1_0e-4 // comment\n",
        "/* a /* nested */ comment */ axes = \"C,\\\n   H,W\", groups = 8, eps = 0.1e-2",
        "  axes\t=\n\"C , H , W\" ,groups = 8 , eps = 1.0E-3  ",
    ] {
        assert_eq!(ok(src), plain, "for `{src}`");
    }
    assert_eq!(ok(r#"axes = "C", eps = 1."#).stages[0].eps, 1.0);
    assert_eq!(
        ok(r#"axes = "C", eps = -0.0"#).stages[0].eps.to_bits(),
        0.0f64.to_bits()
    );
}

#[test]
fn eight_axes_are_allowed() {
    let spec = ok(r#"input = "A,B,C,D,E,F,G,H", axes = "H""#);
    assert_eq!(spec.input.len(), 8);
    assert_eq!(spec.stages[0].axes, 0b1000_0000);
}

#[test]
fn same_messages_for_any_span_type() {
    // `axes = X, eps = -1` built by hand with `&str` spans.
    let tokens: Vec<TokenTree<&str>> = vec![
        TokenTree::Ident {
            name: "axes".into(),
            span: "axes",
        },
        TokenTree::Punct { ch: '=', span: "=" },
        TokenTree::Literal {
            lit: Literal {
                kind: LitKind::Str("X".into()),
                text: "\"X\"".into(),
            },
            span: "\"X\"",
        },
        TokenTree::Punct { ch: ',', span: "," },
        TokenTree::Ident {
            name: "eps".into(),
            span: "eps",
        },
        TokenTree::Punct { ch: '=', span: "=" },
        TokenTree::Punct { ch: '-', span: "-" },
        TokenTree::Literal {
            lit: Literal {
                kind: LitKind::Int(1),
                text: "1".into(),
            },
            span: "1",
        },
        TokenTree::Punct { ch: ',', span: "," },
        TokenTree::Ident {
            name: "chain".into(),
            span: "chain",
        },
        TokenTree::Group {
            delimiter: Delimiter::Parenthesis,
            inner: vec![],
            span: "()",
        },
    ];
    let by_tokens = parse_tokens(&tokens, "whole").unwrap_err();
    let by_str = parse_str(r#"axes = "X", eps = -1, chain()"#).unwrap_err();
    let a: Vec<&str> = by_tokens.iter().map(|e| e.message.as_str()).collect();
    let b: Vec<&str> = by_str.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(a, b);
    let spans: Vec<&str> = by_tokens.iter().map(|e| e.span).collect();
    assert_eq!(spans, ["1", "()", "axes", "eps"]);
}

// ---------------------------------------------------------------- errors, one per kind

#[test]
fn unknown_keys_with_suggestions() {
    one(
        r#"axis = "C,H,W""#,
        &format!("unknown key `axis`; did you mean `axes`? {VALID_KEYS}"),
        "axis",
    );
    one(
        r#"axes = "C", epsilon = 1e-3"#,
        &format!("unknown key `epsilon`; did you mean `eps`? {VALID_KEYS}"),
        "epsilon",
    );
    one(
        r#"axes = "C", runing_stats"#,
        &format!("unknown key `runing_stats`; did you mean `running_stats`? {VALID_KEYS}"),
        "runing_stats",
    );
    one(
        r#"axes = "C", zzz"#,
        &format!("unknown key `zzz`; {VALID_KEYS}"),
        "zzz",
    );
    one(
        r#"chain(bn(axes = "C", momentun = 0.5))"#,
        &format!("unknown key `momentun` in stage `bn`; did you mean `momentum`? {STAGE_KEYS}"),
        "momentun",
    );
}

#[test]
fn duplicate_keys() {
    one_last(
        r#"axes = "C", eps = 1e-3, eps = 1e-4"#,
        "duplicate key `eps`",
        "eps",
    );
    one_last(r#"axes = "C", axes = "H""#, "duplicate key `axes`", "axes");
    one_last(
        r#"axes = "C", affine, affine = "C""#,
        "duplicate key `affine`",
        "affine",
    );
    one_last(
        r#"input = "N,C", input = "N,C", chain(a(axes = "C"))"#,
        "duplicate key `input`",
        "input",
    );
}

#[test]
fn axes_errors() {
    one(
        r#"axes = "C,H,X""#,
        "unknown axis `X` in `axes`; `input` has N, C, H, W",
        r#""C,H,X""#,
    );
    one(
        r#"axes = "c""#,
        "unknown axis `c` in `axes`; `input` has N, C, H, W; did you mean `C`?",
        r#""c""#,
    );
    one(
        r#"axes = "C,H,H""#,
        "duplicate axis `H` in `axes`",
        r#""C,H,H""#,
    );
    one(
        r#"axes = """#,
        "empty `axes`: say which axes the statistics run over, e.g. axes = \"C,H,W\"",
        r#""""#,
    );
    one(
        r#"axes = "C,,H""#,
        "empty axis name in `axes` \"C,,H\"",
        r#""C,,H""#,
    );
    one(
        r#"axes = "C=3""#,
        "`axes` lists axis names only, got `C=3`; fix sizes in `input`, e.g. input = \"N,C=3\"",
        r#""C=3""#,
    );
    one(
        "",
        "missing `axes`: say which axes the statistics run over, e.g. axes = \"C,H,W\"",
        "",
    );
    let src = r#"input = "N,D", eps = 0.1"#;
    assert_eq!(
        errors(src),
        vec![(
            "missing `axes`: say which axes the statistics run over, e.g. axes = \"C,H,W\"".into(),
            0..src.len()
        )]
    );
    one(
        r#"axes = 3"#,
        "expected a string literal for `axes`, e.g. axes = \"C,H,W\"; found `3`",
        "3",
    );
    one(
        r#"axes"#,
        "expected a string literal for `axes`, e.g. axes = \"C,H,W\"",
        "axes",
    );
    // An unquoted list is one error, not one per axis.
    one(
        r#"axes = C, H, W, affine"#,
        "expected a string literal for `axes`, e.g. axes = \"C,H,W\"; found `C, H, W` \
         (write axes = \"C,H,W\")",
        "C",
    );
}

#[test]
fn input_errors() {
    let s = r#"input = "N,C,H,N", axes = "C""#;
    one(s, "duplicate axis `N` in `input`", r#""N,C,H,N""#);
    let s = r#"input = "", axes = "C""#;
    one(
        s,
        "empty `input`: name the axes of the input tensor, e.g. input = \"N,C,H,W\"",
        r#""""#,
    );
    let s = r#"input = "A,B,C,D,E,F,G,H,I", axes = "C""#;
    one(
        s,
        "`input` has 9 axes; at most 8 are supported",
        r#""A,B,C,D,E,F,G,H,I""#,
    );
    let s = r#"input = "N,C=0", axes = "C""#;
    one(
        s,
        "the size of `C` in `input` must be an integer ≥ 1, got `0`",
        r#""N,C=0""#,
    );
    let s = r#"input = "N,C=x", axes = "C""#;
    one(
        s,
        "the size of `C` in `input` must be an integer ≥ 1, got `x`",
        r#""N,C=x""#,
    );
    let s = r#"input = "N,1x", axes = "C""#;
    one(
        s,
        "axis name `1x` in `input` is not an identifier (use letters, digits and `_`, e.g. `C` or `kh`)",
        r#""N,1x""#,
    );
    let s = r#"input = "N,In", axes = "In""#;
    one(
        s,
        "axis name `In` in `input` cannot be used: its lower-case form `in` (the name of its `new` \
         argument) is a Rust keyword",
        r#""N,In""#,
    );
    let s = r#"input = "N,C,c", axes = "C""#;
    one(
        s,
        "axes `C` and `c` in `input` differ only in case; both would name the `new` argument `c`",
        r#""N,C,c""#,
    );
    let s = r#"input = N, axes = "C""#;
    one(
        s,
        "expected a string literal for `input`, e.g. input = \"N,C,H,W\"; found `N` (write input = \"N\")",
        "N",
    );
}

#[test]
fn an_invalid_input_does_not_cascade() {
    // Neither the axes, nor groups, nor affine are checked against an unusable `input`.
    let s = r#"input = "N,C,C", axes = "C,X", groups = 3, affine = "Q""#;
    one(s, "duplicate axis `C` in `input`", r#""N,C,C""#);
}

#[test]
fn groups_errors() {
    one(
        r#"input = "N,C=48,H,W", axes = "C,H,W", groups = 32"#,
        "`groups = 32` does not divide `C = 48`",
        "32",
    );
    one(
        r#"axes = "H,W", groups = 2"#,
        "`groups` requires `C` in `axes` (statistics must run over the channels of each group)",
        "groups",
    );
    one(
        r#"input = "N,D", axes = "D", groups = 2"#,
        "`groups` requires an axis named `C` in `input` (groups split the channels); `input` has N, D",
        "groups",
    );
    one(
        r#"axes = "C", groups = 0"#,
        "`groups` must be an integer ≥ 1, got 0",
        "0",
    );
    one(
        r#"axes = "C", groups = -2"#,
        "`groups` must be an integer ≥ 1, got -2",
        "2",
    );
    one(
        r#"axes = "C", groups = 2.5"#,
        "`groups` must be an integer ≥ 1, got 2.5",
        "2.5",
    );
    one(
        r#"axes = "C", groups = "2""#,
        "expected an integer for `groups`, e.g. groups = 32; found `\"2\"`",
        "\"2\"",
    );
    one(
        r#"input = "N,C,G", axes = "C", groups = 2"#,
        "`groups` creates the group axis `G`, but `input` already has an axis named `G`; rename that axis",
        "groups",
    );
}

#[test]
fn affine_errors() {
    one(
        r#"input = "N,D", axes = "D", affine"#,
        "`affine` (per-channel) needs an axis named `C` in `input`; use an axis list such as affine = \"D\"",
        "affine",
    );
    one(
        r#"axes = "C", affine = "N,C""#,
        "affine parameters cannot be indexed by the batch axis `N`",
        r#""N,C""#,
    );
    one(
        r#"axes = "C", affine = "G""#,
        "`G` names the group axis and needs `groups`",
        r#""G""#,
    );
    one(
        r#"axes = "C", groups = 2, affine = "G,C""#,
        "`affine` lists both `G` and `C`; `C` already contains the groups, so list only one of them",
        r#""G,C""#,
    );
    one(
        r#"axes = "C", affine = "C,Z""#,
        "unknown axis `Z` in `affine`; `input` has N, C, H, W",
        r#""C,Z""#,
    );
    one(
        r#"axes = "C", affine = "H,H""#,
        "duplicate axis `H` in `affine`",
        r#""H,H""#,
    );
    one(
        r#"axes = "C", affine = extrnal"#,
        "expected `external`, `true`, `false` or an axis list for `affine`, e.g. affine = \"C\"; \
         found `extrnal`; did you mean `external`?",
        "extrnal",
    );
    one(
        r#"axes = "C", affine = """#,
        "empty `affine`: name the axes that index the parameters, e.g. affine = \"C\", or write \
         the bare flag `affine`",
        r#""""#,
    );
}

#[test]
fn bias_errors() {
    one(
        r#"axes = "C", bias = false"#,
        "`bias` without `affine`: there is no learnable shift to drop; add `affine` or remove `bias`",
        "bias",
    );
    one(
        r#"axes = "C", affine = false, bias = true"#,
        "`bias` without `affine` (`affine = false`): there is no learnable shift to drop; remove `bias`",
        "bias",
    );
    one(
        r#"axes = "C", affine = external, bias = false"#,
        "`bias` cannot be combined with `affine = external`: scale and shift are passed to `forward`",
        "bias",
    );
    one(
        r#"axes = "C", affine, bias"#,
        "`bias` needs a value: bias = true or bias = false (the default is true)",
        "bias",
    );
    one(
        r#"axes = "C", affine, bias = 0"#,
        "expected `true` or `false` for `bias`; found `0`",
        "0",
    );
}

#[test]
fn eps_errors() {
    one(
        r#"axes = "C", eps = -1e-5"#,
        "`eps` must be a finite number ≥ 0, got -1e-5",
        "1e-5",
    );
    one(
        r#"axes = "C", eps = 1e999"#,
        "`eps` must be a finite number ≥ 0, got 1e999",
        "1e999",
    );
    one(
        r#"axes = "C", eps = "1e-5""#,
        "expected a number for `eps`, e.g. eps = 1e-5; found `\"1e-5\"`",
        "\"1e-5\"",
    );
    one(
        r#"axes = "C", eps = 1e-5f32"#,
        "expected a number for `eps`, e.g. eps = 1e-5; found `1e-5f32`",
        "1e-5f32",
    );
    one(
        r#"axes = "C", eps_mode = "variance""#,
        "`eps_mode` must be \"var\" or \"std\", got \"variance\"",
        "\"variance\"",
    );
    one(
        r#"axes = "C", eps_mode = std"#,
        "expected a string literal for `eps_mode`, \"var\" or \"std\", e.g. eps_mode = \"std\"; found `std`",
        "std",
    );
}

#[test]
fn momentum_and_statistics_errors() {
    one(
        r#"axes = "C", running_stats, momentum = 1.5"#,
        "`momentum` must be in (0, 1] or \"cumulative\", got 1.5",
        "1.5",
    );
    one(
        r#"axes = "C", running_stats, momentum = 0"#,
        "`momentum` must be in (0, 1] or \"cumulative\", got 0",
        "0",
    );
    one(
        r#"axes = "C", running_stats, momentum = -0.5"#,
        "`momentum` must be in (0, 1] or \"cumulative\", got -0.5",
        "0.5",
    );
    one(
        r#"axes = "C", running_stats, momentum = "cumul""#,
        "`momentum` must be in (0, 1] or \"cumulative\", got \"cumul\"",
        "\"cumul\"",
    );
    one(
        r#"axes = "C", momentum = 0.5"#,
        "`momentum` has no effect without `running_stats`",
        "momentum",
    );
    one(
        r#"axes = "C", running_stats = false, momentum = 0.5"#,
        "`momentum` has no effect without `running_stats`",
        "momentum",
    );
    one(
        r#"axes = "C", center = false, unbiased"#,
        "`unbiased` has no meaning with `center = false`: the n − 1 correction is for a variance \
         around the mean",
        "unbiased",
    );
    one(
        r#"axes = "C", center = false, running_stats"#,
        "`running_stats` needs centering: a running mean and variance are not defined with \
         `center = false`",
        "running_stats",
    );
    one(
        r#"axes = "C", unbiased = yes"#,
        "expected `true` or `false` for `unbiased`; found `yes`",
        "yes",
    );
}

#[test]
fn chain_errors() {
    one(
        r#"chain()"#,
        "empty `chain`: list at least one stage, e.g. chain(bn(axes = \"N,H,W\"), gn(axes = \"C,H,W\", groups = 2))",
        "()",
    );
    one(
        r#"axes = "C", chain(bn(axes = "N,H,W"))"#,
        "`axes` belongs inside a chain stage when `chain` is used, e.g. chain(bn(axes = ...))",
        "axes",
    );
    one_last(
        r#"chain(bn(axes = "C"), bn(axes = "H"))"#,
        "duplicate stage name `bn` in `chain`",
        "bn",
    );
    one(
        r#"chain(dx(axes = "C"))"#,
        "stage name `dx` is reserved: the generated gradients struct has a field `dx`",
        "dx",
    );
    one(
        r#"chain(BN(axes = "C"))"#,
        "stage name `BN` must be a lower-case identifier (it names a field), e.g. `bn`",
        "BN",
    );
    one(
        r#"chain(type(axes = "C"))"#,
        "stage name `type` is a Rust keyword; choose another name",
        "type",
    );
    one(
        r#"chain(gn())"#,
        "missing `axes` in stage `gn`: say which axes the statistics run over, e.g. gn(axes = \"C,H,W\")",
        "gn",
    );
    one(
        r#"chain(bn, gn(axes = "C"))"#,
        "expected `(` after stage name `bn`, e.g. bn(axes = \"C,H,W\"), found `,`",
        "bn",
    );
    one(
        r#"chain(bn(axes = "C", input = "N,C"))"#,
        "`input` belongs at the top level, not inside stage `bn`: all stages of a chain share one input",
        "input",
    );
    one_last(
        r#"chain(bn(axes = "C", chain(x(axes = "C"))))"#,
        "`chain` cannot be nested inside stage `bn`",
        "chain",
    );
    one(
        r#"chain(axes = "C")"#,
        "`axes` inside `chain(...)` belongs to a named stage, e.g. chain(bn(axes = ...), ...)",
        "axes",
    );
    one(
        r#"chain = 3"#,
        "`chain` lists stages in parentheses, e.g. chain(bn(axes = \"N,H,W\"), gn(axes = \"C,H,W\", groups = 2))",
        "3",
    );
    // The rules of a stage apply inside a chain.
    one(
        r#"chain(bn(axes = "N,H,W"), gn(axes = "H,W", groups = 2))"#,
        "`groups` requires `C` in `axes` (statistics must run over the channels of each group)",
        "groups",
    );
}

#[test]
fn syntax_errors() {
    one(
        r#"axes = "C", eps 1e-5"#,
        "expected `=` or `,` after `eps`, found `1e-5`",
        "1e-5",
    );
    one_last(
        r#"axes = "C", eps ="#,
        "expected a value after `eps =`",
        "=",
    );
    one(
        r#"axes = "C", eps = -"#,
        "expected a number after `eps = -`",
        "-",
    );
    one(
        r#"axes = "C" groups = 2"#,
        "expected `,` after the value of `axes`, found `groups`",
        "groups",
    );
    assert_eq!(
        errors(r#"axes = "C",, eps = 0.1"#),
        [("expected a key before `,`".to_string(), 11..12)]
    );
    one_last(
        r#"axes = "C", = 3"#,
        "expected a key such as `axes`, found `=`",
        "=",
    );
    one(
        r#"axes = "C", "eps" = 3"#,
        "expected a key such as `axes`, found `\"eps\"`",
        "\"eps\"",
    );
    one(
        r#"axes = "C", eps(1e-5)"#,
        "`eps` does not take parentheses; write eps = 1e-5",
        "(1e-5)",
    );
}

#[test]
fn lexical_errors() {
    one(r#"axes = "C"#, "unterminated string literal", r#""C"#);
    one(
        r#"chain(bn(axes = "C")"#,
        "unclosed delimiter `(`; expected a matching `)`",
        "(",
    );
    one(r#"axes = "C")"#, "unmatched closing delimiter `)`", ")");
    one(
        r#"chain(bn(axes = "C"]"#,
        "mismatched closing delimiter `]`; the `(` at byte 8 is closed by `)`",
        "]",
    );
    one(r#"axes = "C", eps = 1€"#, "unexpected character `€`", "€");
    one(r#"axes = "\q""#, "unknown character escape `\\q`", r"\q");
}

#[test]
fn all_errors_of_a_declaration_are_reported() {
    let src = r#"input = "N,C=48,H,W", axis = "C", axes = "C,H,X", groups = 32, eps = -1, eps_mode = "vaR", momentum = 2, bias = false"#;
    assert_eq!(
        errors(src),
        vec![
            (
                format!("unknown key `axis`; did you mean `axes`? {VALID_KEYS}"),
                at(src, "axis")
            ),
            ("`eps` must be a finite number ≥ 0, got -1".into(), at(src, "1, eps_mode").start..at(src, "1, eps_mode").start + 1),
            ("`eps_mode` must be \"var\" or \"std\", got \"vaR\"".into(), at(src, "\"vaR\"")),
            ("`momentum` must be in (0, 1] or \"cumulative\", got 2".into(), {
                let r = at(src, "= 2,");
                r.start + 2..r.start + 3
            }),
            ("unknown axis `X` in `axes`; `input` has N, C, H, W".into(), at(src, "\"C,H,X\"")),
            ("`groups = 32` does not divide `C = 48`".into(), at(src, "32")),
            (
                "`bias` without `affine`: there is no learnable shift to drop; add `affine` or remove `bias`".into(),
                at(src, "bias")
            ),
        ]
    );
    // Every stage of a chain is checked.
    let src = r#"chain(a(axes = "Q"), b(axes = "C", momentum = 0.5), c(axes = "C", center = false, unbiased))"#;
    let messages: Vec<String> = errors(src).into_iter().map(|e| e.0).collect();
    assert_eq!(
        messages,
        [
            "unknown axis `Q` in `axes`; `input` has N, C, H, W",
            "`momentum` has no effect without `running_stats`",
            "`unbiased` has no meaning with `center = false`: the n − 1 correction is for a variance around the mean",
        ]
    );
}

#[test]
fn a_misspelled_axes_is_not_also_reported_missing() {
    one(
        r#"axis = "C,H,W", affine"#,
        &format!("unknown key `axis`; did you mean `axes`? {VALID_KEYS}"),
        "axis",
    );
    one(
        r#"chain(bn(dims = "C"))"#,
        &format!("unknown key `dims` in stage `bn`; did you mean `axes`? {STAGE_KEYS}"),
        "dims",
    );
}

// ---------------------------------------------------------------- canonical text

const ROUNDTRIP: &[&str] = &[
    r#"input = "N,D", axes = "D", center = false, statistic = "sum", affine = "D""#,
    r#"axes = "H,W", center = false, affine, tlu, eps = 1e-6"#,
    r#"axes = "N,H,W", ghost = 8, affine, running_stats"#,
    r#"axes = "N,H,W", affine, running_stats, renorm(rmax = 3.0, dmax = 5.0)"#,
    r#"axes = "N,H,W", running_stats, renorm, ghost = 2"#,
    r#"axes = "C,H,W""#,
    r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
    r#"axes = "N,H,W", affine, running_stats, momentum = 0.01"#,
    r#"axes = "N,H,W", affine = "C", bias = false, running_stats, momentum = "cumulative""#,
    r#"input = "N,T,D=512", axes = "D", affine = "D", bias = false, eps = 1e-6"#,
    r#"input = "B,D", axes = "D", center = false, eps = 0"#,
    r#"input = "O,I,kh,kw", axes = "I,kh,kw", eps_mode = "std", unbiased, eps = 1e-10"#,
    r#"axes = "C,H,W", groups = 4, affine = "W,G""#,
    r#"axes = "C,H,W", affine = external, eps = 3.25e20"#,
    r#"input = "N,G,D", axes = "D", affine = "G""#,
    r#"input = "A,B,C=6,D,E,F,X,H", axes = "C,H", groups = 3, affine = "G,A""#,
    r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine = "G"))"#,
    r#"input = "N,C=8,L", chain(a(axes = "L", eps = 0.5, momentum = 1, running_stats), b_2(axes = "C,L", groups = 8, eps_mode = "std", center = false))"#,
];

#[test]
fn canonical_text_roundtrips() {
    for src in ROUNDTRIP {
        let spec = ok(src);
        let text = spec.to_string();
        assert_eq!(ok(&text), spec, "`{src}` → `{text}`");
        // And the canonical text is a fixed point.
        assert_eq!(ok(&text).to_string(), text);
    }
}

// ------------------------------------------------------------- issue 18, part A

#[test]
fn post2017_keys_lower() {
    let l2 = ok(r#"input = "N,D", axes = "D", center = false, statistic = "sum""#);
    assert_eq!(l2.stages[0].statistic, Statistic::Sum);
    assert_eq!(ok(r#"axes = "C""#).stages[0].statistic, Statistic::Mean);
    let frn = ok(r#"axes = "H,W", center = false, affine, tlu, eps = 1e-6"#);
    assert!(frn.stages[0].tlu);
    assert!(!ok(r#"axes = "C", affine, tlu = false"#).stages[0].tlu);
    let ghost = ok(r#"axes = "N,H,W", ghost = 4, running_stats"#);
    assert_eq!(ghost.stages[0].ghost, Some(4));
    let r = ok(r#"axes = "N,H,W", running_stats, renorm(rmax = 2, dmax = 0.5)"#);
    assert_eq!(
        r.stages[0].renorm,
        Some(Renorm {
            rmax: 2.0,
            dmax: 0.5
        })
    );
    let bare = ok(r#"axes = "N,H,W", running_stats, renorm"#);
    assert_eq!(
        bare.stages[0].renorm,
        Some(Renorm {
            rmax: 3.0,
            dmax: 5.0
        })
    );
    let half = ok(r#"axes = "N,H,W", running_stats, renorm(dmax = 1)"#);
    assert_eq!(
        half.stages[0].renorm,
        Some(Renorm {
            rmax: 3.0,
            dmax: 1.0
        })
    );
}

#[test]
fn post2017_errors() {
    one(
        r#"axes = "N,H,W", ghost = 0"#,
        "`ghost` must be an integer ≥ 1, got 0",
        "0",
    );
    one(
        r#"axes = "C,H,W", ghost = 4"#,
        "`ghost` needs `N` in `axes`: each chunk of the batch gets its own statistics over `N`",
        "ghost",
    );
    one(
        r#"input = "B,C", axes = "B", ghost = 4"#,
        "`ghost` splits the batch axis `N` into chunks, but `input` has no axis named `N`; \
         `input` has B, C",
        "ghost",
    );
    one(
        r#"axes = "N,H,W", affine, renorm(rmax = 3.0, dmax = 5.0)"#,
        "`renorm` needs `running_stats`: r and d compare the batch statistics with the \
         running statistics",
        "renorm",
    );
    one(
        r#"axes = "N,H,W", running_stats, renorm(rmax = 0.5)"#,
        "`rmax` must be a finite number ≥ 1, got 0.5",
        "0.5",
    );
    one(
        r#"axes = "N,H,W", running_stats, renorm(dmax = -1)"#,
        "`dmax` must be a finite number ≥ 0, got -1",
        "1",
    );
    one(
        r#"axes = "N,H,W", running_stats, renorm(rmin = 2)"#,
        "unknown key `rmin` in `renorm`; valid keys: rmax, dmax",
        "rmin",
    );
    one(
        r#"axes = "N,H,W", running_stats, renorm = 3"#,
        "`renorm` takes its limits in parentheses, e.g. renorm(rmax = 3.0, dmax = 5.0)",
        "3",
    );
    one(
        r#"axes = "H,W", center = false, tlu"#,
        "`tlu` needs `affine`: the threshold τ is learned per parameter index, like γ and β; \
         add `affine`",
        "tlu",
    );
    one(
        r#"axes = "H,W", center = false, affine = false, tlu"#,
        "`tlu` needs `affine` (`affine = false`): the threshold τ is learned per parameter \
         index, like γ and β",
        "tlu",
    );
    one(
        r#"axes = "H,W", affine = external, tlu"#,
        "`tlu` needs learnable parameters (`affine` or `affine = \"C\"`), not \
         `affine = external`",
        "tlu",
    );
    one(
        r#"axes = "C", statistic = "median""#,
        "`statistic` must be \"mean\" or \"sum\", got \"median\"",
        "\"median\"",
    );
    one(
        r#"axes = "N,H,W", statistic = "sum", running_stats"#,
        "`running_stats` cannot be combined with `statistic = \"sum\"`: a running sum of \
         squares would depend on the batch size",
        "running_stats",
    );
    one(
        r#"axes = "C,H,W", statistic = "sum", unbiased"#,
        "`unbiased` has no meaning with `statistic = \"sum\"`: the n − 1 correction is for a \
         mean",
        "unbiased",
    );
    // All at once, in stage order.
    let src = r#"axes = "C,H,W", ghost = 2, tlu, renorm"#;
    assert_eq!(errors(src).len(), 3, "{:?}", errors(src));
}
