//! A small Rust-like lexer: turns configuration text into [`TokenTree`]s with byte-range spans,
//! so that `NormSpec::parse` runs the same parser as the `#[norm]` macro.
//!
//! It knows identifiers (including raw `r#ident`), single-character punctuation, string
//! literals (with escapes; raw strings `r"…"`/`r#"…"#`), integer and float literals
//! (`32`, `1_000`, `0x20`, `0.1`, `1.`, `1e-5`), char/byte literals (classified as
//! [`LitKind::Other`]), `//` and `/* */` comments and the groups `()`, `[]`, `{}`.
//! It never panics; malformed input gives an [`Error`] that points at the bad bytes.

use std::ops::Range;

use crate::token::{Delimiter, LitKind, Literal, TokenTree};
use crate::Error;

type Span = Range<usize>;
type Tok = TokenTree<Span>;

/// Lex `src` into token trees; the first lexical error stops lexing.
pub(crate) fn lex(src: &str) -> Result<Vec<Tok>, Error<Span>> {
    let mut lexer = Lexer { src, pos: 0 };
    // Stack of open groups: (delimiter, open-delimiter span, tokens so far).
    let mut stack: Vec<(Delimiter, Span, Vec<Tok>)> = Vec::new();
    let mut top: Vec<Tok> = Vec::new();
    loop {
        lexer.skip_trivia()?;
        let start = lexer.pos;
        let Some(c) = lexer.peek() else { break };
        let open = match c {
            '(' => Some(Delimiter::Parenthesis),
            '[' => Some(Delimiter::Bracket),
            '{' => Some(Delimiter::Brace),
            _ => None,
        };
        if let Some(delim) = open {
            lexer.bump();
            stack.push((delim, start..lexer.pos, std::mem::take(&mut top)));
            continue;
        }
        let close = match c {
            ')' => Some(Delimiter::Parenthesis),
            ']' => Some(Delimiter::Bracket),
            '}' => Some(Delimiter::Brace),
            _ => None,
        };
        if let Some(delim) = close {
            lexer.bump();
            let Some((open_delim, open_span, outer)) = stack.pop() else {
                return Err(err(
                    start..lexer.pos,
                    format!("unmatched closing delimiter `{c}`"),
                ));
            };
            if open_delim != delim {
                return Err(err(
                    start..lexer.pos,
                    format!(
                        "mismatched closing delimiter `{c}`; the `{}` at byte {} is closed by `{}`",
                        open_char(open_delim),
                        open_span.start,
                        close_char(open_delim)
                    ),
                ));
            }
            let inner = std::mem::replace(&mut top, outer);
            top.push(TokenTree::Group {
                delimiter: delim,
                inner,
                span: open_span.start..lexer.pos,
            });
            continue;
        }
        let tok = lexer.token()?;
        top.push(tok);
    }
    if let Some((delim, span, _)) = stack.pop() {
        return Err(err(
            span,
            format!(
                "unclosed delimiter `{}`; expected a matching `{}`",
                open_char(delim),
                close_char(delim)
            ),
        ));
    }
    Ok(top)
}

fn err(span: Span, message: String) -> Error<Span> {
    Error { span, message }
}

fn open_char(d: Delimiter) -> char {
    match d {
        Delimiter::Parenthesis => '(',
        Delimiter::Bracket => '[',
        Delimiter::Brace => '{',
    }
}

fn close_char(d: Delimiter) -> char {
    match d {
        Delimiter::Parenthesis => ')',
        Delimiter::Bracket => ']',
        Delimiter::Brace => '}',
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

const PUNCT: &str = "=,-+;:.!#$%&*/<>?@^|~'\\";

struct Lexer<'a> {
    src: &'a str,
    /// Always on a char boundary.
    pos: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_nth(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn text(&self, span: &Span) -> String {
        self.src.get(span.clone()).unwrap_or("").to_string()
    }

    /// Skip whitespace and comments.
    fn skip_trivia(&mut self) -> Result<(), Error<Span>> {
        loop {
            let rest = self.rest();
            if rest.starts_with("//") {
                self.eat_while(|c| c != '\n');
            } else if rest.starts_with("/*") {
                let start = self.pos;
                self.pos += 2;
                let mut depth = 1usize;
                while depth > 0 {
                    let rest = self.rest();
                    if rest.is_empty() {
                        return Err(err(start..start + 2, "unterminated block comment".into()));
                    } else if rest.starts_with("/*") {
                        depth += 1;
                        self.pos += 2;
                    } else if rest.starts_with("*/") {
                        depth -= 1;
                        self.pos += 2;
                    } else {
                        self.bump();
                    }
                }
            } else if self.peek().is_some_and(char::is_whitespace) {
                self.eat_while(char::is_whitespace);
            } else {
                return Ok(());
            }
        }
    }

    /// One non-group token starting at `self.pos` (which is not at the end).
    fn token(&mut self) -> Result<Tok, Error<Span>> {
        let start = self.pos;
        let c = self.peek().unwrap_or('\0');
        // Raw strings and raw identifiers.
        if c == 'r' && matches!(self.peek_nth(1), Some('"' | '#')) {
            if let Some(tok) = self.raw_string_or_ident()? {
                return Ok(tok);
            }
        }
        // Byte strings, byte chars, C strings: always `LitKind::Other`.
        if (c == 'b' || c == 'c') && matches!(self.peek_nth(1), Some('"' | '\'')) {
            self.bump();
            let quote = self.peek().unwrap_or('"');
            if quote == '"' {
                self.string_body(start)?;
            } else {
                self.char_body(start)?;
            }
            self.eat_while(is_ident_continue);
            return Ok(self.other_lit(start));
        }
        if c == 'b' && self.peek_nth(1) == Some('r') && matches!(self.peek_nth(2), Some('"' | '#'))
        {
            self.bump();
            if self.raw_string_or_ident()?.is_some() {
                return Ok(self.other_lit(start));
            }
            self.pos = start;
        }
        if is_ident_start(c) {
            self.eat_while(is_ident_continue);
            let span = start..self.pos;
            return Ok(TokenTree::Ident {
                name: self.text(&span),
                span,
            });
        }
        if c.is_ascii_digit() {
            return Ok(self.number());
        }
        if c == '"' {
            let value = self.string_body(start)?;
            let suffix_start = self.pos;
            self.eat_while(is_ident_continue);
            let span = start..self.pos;
            let kind = if self.pos == suffix_start {
                LitKind::Str(value)
            } else {
                LitKind::Other
            };
            return Ok(TokenTree::Literal {
                lit: Literal {
                    kind,
                    text: self.text(&span),
                },
                span,
            });
        }
        if c == '\'' {
            // A char literal `'x'` / `'\n'`; otherwise a lone `'` (as in a lifetime).
            let is_char = match (self.peek_nth(1), self.peek_nth(2)) {
                (Some('\\'), _) => true,
                (Some(x), Some('\'')) => x != '\'',
                _ => false,
            };
            if is_char {
                self.char_body(start)?;
                self.eat_while(is_ident_continue);
                return Ok(self.other_lit(start));
            }
        }
        if PUNCT.contains(c) {
            self.bump();
            return Ok(TokenTree::Punct {
                ch: c,
                span: start..self.pos,
            });
        }
        self.bump();
        Err(err(
            start..self.pos,
            format!("unexpected character `{}`", c.escape_debug()),
        ))
    }

    fn other_lit(&self, start: usize) -> Tok {
        let span = start..self.pos;
        TokenTree::Literal {
            lit: Literal {
                kind: LitKind::Other,
                text: self.text(&span),
            },
            span,
        }
    }

    /// At `r"`, `r#"` or `r#ident`: lex a raw string (Some) or raw identifier (Some); `None`
    /// when it is neither (then nothing is consumed).
    fn raw_string_or_ident(&mut self) -> Result<Option<Tok>, Error<Span>> {
        let start = self.pos;
        self.bump(); // r
        let mut hashes = 0usize;
        while self.peek() == Some('#') {
            hashes += 1;
            self.bump();
        }
        if self.peek() != Some('"') {
            if hashes == 1 && self.peek().is_some_and(is_ident_start) {
                self.eat_while(is_ident_continue);
                let span = start..self.pos;
                return Ok(Some(TokenTree::Ident {
                    name: self.text(&span),
                    span,
                }));
            }
            self.pos = start;
            return Ok(None);
        }
        self.bump(); // opening quote
        let body_start = self.pos;
        let closing: String = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        match self.rest().find(&closing) {
            Some(at) => {
                let value = self
                    .src
                    .get(body_start..body_start + at)
                    .unwrap_or("")
                    .to_string();
                self.pos = body_start + at + closing.len();
                let suffix_start = self.pos;
                self.eat_while(is_ident_continue);
                let span = start..self.pos;
                let kind = if self.pos == suffix_start {
                    LitKind::Str(value)
                } else {
                    LitKind::Other
                };
                Ok(Some(TokenTree::Literal {
                    lit: Literal {
                        kind,
                        text: self.text(&span),
                    },
                    span,
                }))
            }
            None => Err(err(
                start..self.src.len(),
                "unterminated raw string literal".into(),
            )),
        }
    }

    /// At `"`: consume a string literal and return its value with escapes resolved.
    fn string_body(&mut self, start: usize) -> Result<String, Error<Span>> {
        self.bump(); // opening quote
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => {
                    return Err(err(
                        start..self.src.len(),
                        "unterminated string literal".into(),
                    ))
                }
                Some('"') => return Ok(out),
                Some('\\') => {
                    if let Some(c) = self.escape(at, true)? {
                        out.push(c);
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// At `'`: consume a char literal.
    fn char_body(&mut self, start: usize) -> Result<(), Error<Span>> {
        self.bump(); // opening quote
        let at = self.pos;
        match self.bump() {
            Some('\\') => {
                self.escape(at, false)?;
            }
            Some(_) => {}
            None => {
                return Err(err(
                    start..self.src.len(),
                    "unterminated char literal".into(),
                ))
            }
        }
        if self.peek() == Some('\'') {
            self.bump();
            Ok(())
        } else {
            Err(err(start..self.pos, "unterminated char literal".into()))
        }
    }

    /// After a backslash at byte `at`: resolve one escape. `None` for a line continuation.
    fn escape(&mut self, at: usize, in_string: bool) -> Result<Option<char>, Error<Span>> {
        let Some(c) = self.bump() else {
            return Err(err(
                at..self.src.len(),
                "unterminated string literal".into(),
            ));
        };
        let simple = match c {
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            '\\' => Some('\\'),
            '0' => Some('\0'),
            '\'' => Some('\''),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(Some(s));
        }
        match c {
            '\n' if in_string => {
                self.eat_while(char::is_whitespace);
                Ok(None)
            }
            '\r' if in_string && self.peek() == Some('\n') => {
                self.eat_while(char::is_whitespace);
                Ok(None)
            }
            'x' => {
                let digits: String = self.rest().chars().take(2).collect();
                let value = (digits.len() == 2)
                    .then(|| u8::from_str_radix(&digits, 16).ok())
                    .flatten()
                    .filter(|v| *v <= 0x7f);
                match value {
                    Some(v) => {
                        self.pos += 2;
                        Ok(Some(char::from(v)))
                    }
                    None => Err(err(
                        at..self.pos,
                        "invalid `\\x` escape: expected two hex digits up to 7f".into(),
                    )),
                }
            }
            'u' => {
                let rest = self.rest();
                let close = rest.find('}');
                let value = match (rest.starts_with('{'), close) {
                    (true, Some(close)) => {
                        let hex: String = rest[1..close].chars().filter(|&c| c != '_').collect();
                        let v = (!hex.is_empty() && hex.len() <= 6)
                            .then(|| u32::from_str_radix(&hex, 16).ok())
                            .flatten()
                            .and_then(char::from_u32);
                        v.map(|v| (v, close + 1))
                    }
                    _ => None,
                };
                match value {
                    Some((v, len)) => {
                        self.pos += len;
                        Ok(Some(v))
                    }
                    None => Err(err(
                        at..self.pos,
                        "invalid unicode escape: expected `\\u{…}` with up to 6 hex digits".into(),
                    )),
                }
            }
            other => Err(err(
                at..self.pos,
                format!("unknown character escape `\\{}`", other.escape_debug()),
            )),
        }
    }

    /// At an ASCII digit: an integer or float literal (with an optional suffix, which makes
    /// it [`LitKind::Other`]).
    fn number(&mut self) -> Tok {
        let start = self.pos;
        let radix = match (self.rest().starts_with('0'), self.peek_nth(1)) {
            (true, Some('x')) => 16,
            (true, Some('o')) => 8,
            (true, Some('b')) => 2,
            _ => 10,
        };
        if radix != 10 {
            return self.radix_integer(start, radix);
        }
        self.eat_while(|c| c.is_ascii_digit() || c == '_');
        let fraction = self.fraction();
        let exponent = self.exponent();
        let float = fraction || exponent;
        let number_end = self.pos;
        self.eat_while(is_ident_continue);
        let span = start..self.pos;
        let text = self.text(&span);
        let digits: String = self
            .text(&(start..number_end))
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let kind = if number_end != self.pos {
            LitKind::Other
        } else if float {
            digits.parse::<f64>().map_or(LitKind::Other, LitKind::Float)
        } else {
            digits.parse::<u128>().map_or(LitKind::Other, LitKind::Int)
        };
        TokenTree::Literal {
            lit: Literal { kind, text },
            span,
        }
    }

    /// After `0x`/`0o`/`0b` at `start`: an integer in that radix.
    fn radix_integer(&mut self, start: usize, radix: u32) -> Tok {
        self.pos += 2;
        let digits_start = self.pos;
        self.eat_while(|c| c.is_ascii_hexdigit() || c == '_');
        let digits: String = self
            .text(&(digits_start..self.pos))
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let suffix_start = self.pos;
        self.eat_while(is_ident_continue);
        let span = start..self.pos;
        let kind = match u128::from_str_radix(&digits, radix) {
            Ok(v) if suffix_start == self.pos => LitKind::Int(v),
            _ => LitKind::Other,
        };
        TokenTree::Literal {
            lit: Literal {
                kind,
                text: self.text(&span),
            },
            span,
        }
    }

    /// A fraction after the integer part: `1.5`, `1.` (but not `1..` or `1.foo`). Whether
    /// one was read.
    fn fraction(&mut self) -> bool {
        if self.peek() != Some('.') {
            return false;
        }
        let next = self.peek_nth(1);
        if next.is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.eat_while(|c| c.is_ascii_digit() || c == '_');
            true
        } else if !next.is_some_and(|c| c == '.' || is_ident_start(c)) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// An exponent: `e5`, `E-5`, `e+05` (at least one digit). Whether one was read.
    fn exponent(&mut self) -> bool {
        if !matches!(self.peek(), Some('e' | 'E')) {
            return false;
        }
        let mut n = if matches!(self.peek_nth(1), Some('+' | '-')) {
            2
        } else {
            1
        };
        let mut has_digit = false;
        while let Some(c) = self.peek_nth(n) {
            if c.is_ascii_digit() {
                has_digit = true;
            } else if c != '_' {
                break;
            }
            n += 1;
        }
        if has_digit {
            for _ in 0..n {
                self.bump();
            }
        }
        has_digit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<LitKind> {
        lex(src)
            .unwrap()
            .into_iter()
            .filter_map(|t| match t {
                TokenTree::Literal { lit, .. } => Some(lit.kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn numbers() {
        assert_eq!(
            kinds("32 1_000 0.1 1. 1e-5 2.5E+3 0x20 1u8 1e 1_0.5_0"),
            vec![
                LitKind::Int(32),
                LitKind::Int(1000),
                LitKind::Float(0.1),
                LitKind::Float(1.0),
                LitKind::Float(1e-5),
                LitKind::Float(2.5e3),
                LitKind::Int(32),
                LitKind::Other,
                LitKind::Other,
                LitKind::Float(10.5),
            ]
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            kinds(r##""a\"b\n" r"x\y" r#"q"q"# "\u{41}\x41" b"x" 'c'"##),
            vec![
                LitKind::Str("a\"b\n".into()),
                LitKind::Str("x\\y".into()),
                LitKind::Str("q\"q".into()),
                LitKind::Str("AA".into()),
                LitKind::Other,
                LitKind::Other,
            ]
        );
    }

    #[test]
    fn groups_and_errors() {
        let toks = lex("chain(bn(axes = \"C\"))").unwrap();
        assert_eq!(toks.len(), 2);
        assert!(matches!(&toks[1], TokenTree::Group { span, .. } if *span == (5..21)));
        assert_eq!(lex("(").unwrap_err().span, 0..1);
        assert_eq!(lex("a)").unwrap_err().span, 1..2);
        assert_eq!(lex("(]").unwrap_err().span, 1..2);
        assert_eq!(lex("x = \"abc").unwrap_err().span, 4..8);
        assert_eq!(lex("a § b").unwrap_err().span, 2..4);
        assert_eq!(lex("/* x").unwrap_err().span, 0..2);
    }
}
