//! Tokens of an OTTL condition.
//!
//! The token classes follow upstream's lexer (pkg/ottl/grammar.go `buildLexer`): a leading sign
//! belongs to a number (`-1` is one token), `0x..` is a byte literal, words starting with an
//! uppercase letter and made only of `[A-Z0-9_]` are enum symbols, other capitalised words are
//! converter names, lowercase words are path segments or keywords.

use super::ParseError;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    /// `[a-z][a-zA-Z0-9_]*` that is not a keyword.
    Lower,
    /// `[A-Z][A-Z0-9_]*`: an enum symbol.
    Enum,
    /// `[A-Z]` followed by at least one lowercase letter: a converter name.
    Func,
    Not,
    And,
    Or,
    True,
    False,
    Nil,
    Cmp(CmpOp),
    /// `+ - * /` when not part of a number: math, which this subset does not evaluate.
    Math,
    Assign,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Colon,
    Comma,
    Dot,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte range in the source.
    pub start: usize,
    pub end: usize,
}

/// 1-based column (in characters) of a byte offset.
pub(crate) fn column(src: &str, byte: usize) -> usize {
    src.get(..byte).map_or(byte, |s| s.chars().count()) + 1
}

pub(crate) fn err(src: &str, byte: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column: column(src, byte),
        message: message.into(),
        expression: src.to_string(),
        statement: false,
    }
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'"' => {
                let (s, end) = lex_string(src, i)?;
                i = end;
                Tok::Str(s)
            }
            b'0' if bytes.get(i + 1) == Some(&b'x') => {
                let mut j = i + 2;
                while j < bytes.len() && bytes[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let hex = &src[i + 2..j];
                if hex.is_empty() || !hex.len().is_multiple_of(2) {
                    return Err(err(
                        src,
                        i,
                        format!("invalid byte literal {:?}", &src[i..j]),
                    ));
                }
                i = j;
                Tok::Bytes(decode_hex(hex))
            }
            b'0'..=b'9' | b'.' | b'-' | b'+' if starts_number(bytes, i) => {
                let (t, end) = lex_number(src, i)?;
                i = end;
                t
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                let word = &src[i..j];
                i = j;
                classify_word(word)
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Cmp(CmpOp::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Cmp(CmpOp::Ne)
            }
            b'<' | b'>' => {
                let eq = bytes.get(i + 1) == Some(&b'=');
                i += if eq { 2 } else { 1 };
                Tok::Cmp(match (c, eq) {
                    (b'<', false) => CmpOp::Lt,
                    (b'<', true) => CmpOp::Le,
                    (_, false) => CmpOp::Gt,
                    (_, true) => CmpOp::Ge,
                })
            }
            _ => {
                i += 1;
                match c {
                    b'=' => Tok::Assign,
                    b'+' | b'-' | b'*' | b'/' => Tok::Math,
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'[' => Tok::LBracket,
                    b']' => Tok::RBracket,
                    b'{' => Tok::LBrace,
                    b'}' => Tok::RBrace,
                    b':' => Tok::Colon,
                    b',' => Tok::Comma,
                    b'.' => Tok::Dot,
                    _ => {
                        let ch = src[start..].chars().next().unwrap_or('?');
                        return Err(err(src, start, format!("unexpected character {ch:?}")));
                    }
                }
            }
        };
        out.push(Token { tok, start, end: i });
    }
    Ok(out)
}

fn classify_word(word: &str) -> Tok {
    match word {
        "not" => Tok::Not,
        "and" => Tok::And,
        "or" => Tok::Or,
        "true" => Tok::True,
        "false" => Tok::False,
        "nil" => Tok::Nil,
        _ if word.starts_with(|c: char| c.is_ascii_lowercase()) => Tok::Lower,
        _ if word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Tok::Enum
        }
        _ => Tok::Func,
    }
}

/// Upstream: Float `[-+]?\d*\.\d+([eE][-+]?\d+)?`, Int `[-+]?\d+`.
fn starts_number(b: &[u8], i: usize) -> bool {
    let mut j = i;
    if matches!(b.get(j), Some(b'-' | b'+')) {
        j += 1;
    }
    match b.get(j) {
        Some(d) if d.is_ascii_digit() => true,
        Some(b'.') => b.get(j + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

fn lex_number(src: &str, i: usize) -> Result<(Tok, usize), ParseError> {
    let b = src.as_bytes();
    let mut j = i;
    if matches!(b.get(j), Some(b'-' | b'+')) {
        j += 1;
    }
    while b.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    let is_float = b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
    if is_float {
        j += 1;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            if matches!(b.get(k), Some(b'-' | b'+')) {
                k += 1;
            }
            if b.get(k).is_some_and(u8::is_ascii_digit) {
                while b.get(k).is_some_and(u8::is_ascii_digit) {
                    k += 1;
                }
                j = k;
            }
        }
    }
    let text = &src[i..j];
    let tok = if is_float {
        let f: f64 = text
            .parse()
            .map_err(|_| err(src, i, format!("invalid float literal {text:?}")))?;
        Tok::Float(f)
    } else {
        let n: i64 = text
            .parse()
            .map_err(|_| err(src, i, format!("integer literal {text:?} is out of range")))?;
        Tok::Int(n)
    };
    Ok((tok, j))
}

/// Upstream takes `"(\\.|[^\\"])*"` and unquotes it; we accept the escapes a condition needs
/// (a regex backslash is written `\\`) and reject the rest rather than guess.
fn lex_string(src: &str, open: usize) -> Result<(String, usize), ParseError> {
    let mut s = String::new();
    let mut chars = src[open + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = open + 1 + off;
        match c {
            '"' => return Ok((s, at + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => s.push('"'),
                Some((_, '\\')) => s.push('\\'),
                Some((_, 'n')) => s.push('\n'),
                Some((_, 't')) => s.push('\t'),
                Some((_, 'r')) => s.push('\r'),
                Some((_, other)) => {
                    return Err(err(
                        src,
                        at,
                        format!("invalid escape sequence \"\\{other}\" in string (use \"\\\\\" for a backslash)"),
                    ))
                }
                None => break,
            },
            _ => s.push(c),
        }
    }
    Err(err(src, open, "unterminated string"))
}

fn decode_hex(hex: &str) -> Vec<u8> {
    let nib = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10) & 0x0f,
    };
    hex.as_bytes()
        .chunks(2)
        .map(|p| (nib(p[0]) << 4) | nib(p.get(1).copied().unwrap_or(b'0')))
        .collect()
}
