//! `parse_str` never panics, every error has a message and a span inside the input, and
//! every accepted declaration roundtrips through its canonical text.

use proptest::prelude::*;

use norm_spec::parse_str;

/// Parse `src` and check the invariants that hold for any input.
fn check(src: &str) {
    match parse_str(src) {
        Ok(spec) => {
            let text = spec.to_string();
            let again = parse_str(&text)
                .unwrap_or_else(|e| panic!("canonical text `{text}` of `{src}` rejected: {e:?}"));
            assert_eq!(again, spec, "`{src}` → `{text}`");
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "`{src}`: Err without errors");
            for e in errors {
                assert!(!e.message.is_empty(), "`{src}`: empty message");
                assert!(
                    e.span.start <= e.span.end && src.get(e.span.clone()).is_some(),
                    "`{src}`: span {:?} is not inside the input ({} bytes)",
                    e.span,
                    src.len()
                );
            }
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "input",
    "axes",
    "groups",
    "affine",
    "bias",
    "center",
    "eps",
    "eps_mode",
    "unbiased",
    "running_stats",
    "momentum",
    "chain",
    "statistic",
    "tlu",
    "ghost",
    "renorm",
    "rmax",
    "dmax",
    "\"sum\"",
    "\"mean\"",
    "mask",
    "external",
    "true",
    "false",
    "bn",
    "gn",
    "dx",
    "type",
    "=",
    ",",
    ",",
    "-",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "#",
    "r#\"x\"#",
    "\"N,C,H,W\"",
    "\"C,H,W\"",
    "\"C\"",
    "\"G\"",
    "\"N,C=64,H,W\"",
    "\"\"",
    "\"var\"",
    "\"std\"",
    "\"cumulative\"",
    "32",
    "0",
    "1",
    "1e-5",
    "0.1",
    "1.",
    "1e999",
    "0x20",
    "1_000",
    "2.5",
    "1e",
    "5u8",
    "\\",
    "\\u{41}",
    "//",
    "/*",
    "*/",
    "\n",
    " ",
    "é",
    "€",
    "🦀",
    "\u{0}",
    "C",
    "N",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&["", " ", ""][..]),
        ),
        0..24,
    )
    .prop_map(|parts| parts.into_iter().map(|(a, b)| format!("{a}{b}")).collect())
}

const VALID: &[&str] = &[
    r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
    r#"axes = "N,H,W", affine, running_stats, momentum = 0.01"#,
    r#"input = "N,T,D=512", axes = "D", affine = "D", bias = false, eps = 1e-6"#,
    r#"input = "O,I,kh,kw", axes = "I,kh,kw", eps_mode = "std", unbiased, eps = 0"#,
    r#"axes = "C,H,W", groups = 4, affine = "W,G""#,
    r#"axes = "C,H,W", affine = external, center = false"#,
    r#"input = "N,C=8,H,W", chain(bn(axes="N,H,W", affine, running_stats, momentum = "cumulative"), gn(axes = "C,H,W", groups = 2))"#,
];

/// One mutation of a declaration, on chars (so the result is valid UTF-8).
#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Insert(usize, char),
    SwapItems(usize, usize),
    Number(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (
            any::<usize>(),
            prop_oneof![
                prop::sample::select(
                    &['=', ',', '"', '(', ')', '-', '.', 'e', '0', '9', ' ', 'é', '\\'][..]
                ),
                any::<char>(),
            ]
        )
            .prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapItems(a, b)),
        (
            any::<usize>(),
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| format!("{x:?}")),
                (-3.0f64..3.0).prop_map(|x| format!("{x}")),
                Just("-0".to_string()),
                Just("1e-400".to_string()),
                Just("340282366920938463463374607431768211456".to_string()),
            ]
        )
            .prop_map(|(i, n)| Mutation::Number(i, n)),
    ]
}

fn apply(src: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    let n = chars.len().max(1);
    match m {
        Mutation::Delete(i) => {
            if !chars.is_empty() {
                chars.remove(i % n);
            }
        }
        Mutation::Duplicate(i) => {
            if !chars.is_empty() {
                let c = chars[i % n];
                chars.insert(i % n, c);
            }
        }
        Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), *c),
        Mutation::SwapItems(a, b) => {
            let text: String = chars.iter().collect();
            let mut items: Vec<&str> = text.split(',').collect();
            let len = items.len();
            items.swap(a % len, b % len);
            return items.join(",");
        }
        Mutation::Number(i, number) => {
            // Replace the i-th run of digits with `number`.
            let text: String = chars.iter().collect();
            let runs: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let bytes = text.as_bytes();
                let mut k = 0;
                while k < bytes.len() {
                    if bytes[k].is_ascii_digit() {
                        let s = k;
                        while k < bytes.len() && bytes[k].is_ascii_digit() {
                            k += 1;
                        }
                        runs.push((s, k));
                    } else {
                        k += 1;
                    }
                }
                runs
            };
            if runs.is_empty() {
                return text;
            }
            let (s, e) = runs[i % runs.len()];
            return format!("{}{}{}", &text[..s], number, &text[e..]);
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(src in any::<String>()) {
        check(&src);
    }

    #[test]
    fn token_soups_never_panic(src in soup()) {
        check(&src);
    }

    #[test]
    fn near_misses_never_panic(
        base in prop::sample::select(VALID),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut src = base.to_string();
        for m in &mutations {
            src = apply(&src, m);
        }
        check(&src);
    }

    #[test]
    fn random_configurations_roundtrip(
        input in prop::sample::select(&["", "input = \"N,C,H,W\", ", "input = \"N,C=12,L\", ", "input = \"B,T,D=64\", ", "input = \"N,G,C,X\", "][..]),
        axes in prop::sample::select(&["C", "N,H,W", "C,H,W", "D", "T,D", "L", "C,L", "X", "G"][..]),
        groups in prop::option::of(1usize..13),
        affine in prop::sample::select(&["", ", affine", ", affine = \"C\"", ", affine = \"G\"", ", affine = \"D\"", ", affine = external", ", affine = \"W,C\"", ", affine = false"][..]),
        bias in prop::sample::select(&["", ", bias = false", ", bias = true"][..]),
        center in any::<bool>(),
        eps in prop::option::of(0.0f64..1.0),
        std in any::<bool>(),
        unbiased in any::<bool>(),
        running in any::<bool>(),
        momentum in prop::option::of(prop_oneof![(0.0f64..=1.0).prop_map(|m| format!("{m:?}")), Just("\"cumulative\"".to_string())]),
    ) {
        let mut src = format!("{input}axes = \"{axes}\"");
        if let Some(g) = groups { src += &format!(", groups = {g}"); }
        src += affine;
        src += bias;
        if !center { src += ", center = false"; }
        if let Some(e) = eps { src += &format!(", eps = {e:?}"); }
        if std { src += ", eps_mode = \"std\""; }
        if unbiased { src += ", unbiased"; }
        if running { src += ", running_stats"; }
        if let Some(m) = momentum { src += &format!(", momentum = {m}"); }
        check(&src);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Issue 18's keys (`statistic`, `tlu`, `ghost`, `renorm`) in every combination with
    /// the keys their rules involve: never a panic, accepted ones roundtrip.
    #[test]
    fn post2017_configurations_roundtrip(
        axes in prop::sample::select(&["N,H,W", "C,H,W", "H,W", "N", "D"][..]),
        affine in prop::sample::select(&["", ", affine", ", affine = external", ", affine = false"][..]),
        center in any::<bool>(),
        running in any::<bool>(),
        unbiased in any::<bool>(),
        statistic in prop::sample::select(&["", ", statistic = \"sum\"", ", statistic = \"mean\""][..]),
        tlu in prop::sample::select(&["", ", tlu", ", tlu = false"][..]),
        ghost in prop::option::of(0usize..6),
        renorm in prop::sample::select(&["", ", renorm", ", renorm(rmax = 2.5)", ", renorm(rmax = 1, dmax = 0)", ", renorm(dmax = 0.5, rmax = 4.0)"][..]),
    ) {
        let mut src = format!("axes = \"{axes}\"{affine}{statistic}{tlu}{renorm}");
        if !center { src += ", center = false"; }
        if running { src += ", running_stats"; }
        if unbiased { src += ", unbiased"; }
        if let Some(g) = ghost { src += &format!(", ghost = {g}"); }
        check(&src);
    }
}

#[test]
fn hand_picked_oddities() {
    for src in [
        "",
        " ",
        ",",
        ",,",
        "=",
        "\"",
        "'",
        "'a",
        "'\\",
        "r#",
        "r#\"",
        "b\"",
        "br#\"x",
        "0x",
        "1e+",
        "(((",
        ")))",
        "([)]",
        "/*",
        "axes = \"\\u{110000}\"",
        "axes = \"\\x80\"",
        "axes = \"\\u{\"",
        "axes = '\u{1F980}'",
        "chain(((())))",
        "chain(a(b(c(d()))))",
        "axes = -",
        "eps = --1",
        "axes = \"C\", eps = - 1",
        "\u{FEFF}axes = \"C\"",
        "axes\u{00A0}= \"C\"",
        "r#axes = \"C\"",
    ] {
        check(src);
    }
}
