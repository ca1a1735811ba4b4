//! Splits PTX text into tokens, each tagged with its 1-based line.

use crate::ptx::info::LoadError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// Names, opcodes, directives, registers, labels: `ld.global.f32`, `%r1`,
    /// `%tid.x`, `$L__BB0_2`, `.reg`.
    Ident(String),
    /// An integer literal (decimal, hex, octal or binary), as raw 64 bits.
    Int(u64),
    /// `0fXXXXXXXX`: the raw bits of an f32.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX` or a decimal float: the raw bits of an f64.
    F64(u64),
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn err(line: u32, message: String) -> LoadError {
    LoadError { line, message }
}

/// Tokenises `src`. Comments are dropped; `.loc`, `.file` and `@@DWARF`
/// debug lines are dropped whole (they carry no semantics).
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, LoadError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
            line_start = true;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        let at_line_start = std::mem::replace(&mut line_start, false);
        let rest = &src[i..];
        let directive = |d: &str| rest.starts_with(d) && rest[d.len()..].starts_with(|c: char| c.is_ascii_whitespace());
        if at_line_start && (directive(".loc") || directive(".file") || directive("@@DWARF")) {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += 1;
            }
            if i >= b.len() || b[i] != b'"' {
                return Err(err(line, "unterminated string".into()));
            }
            out.push(Token { tok: Tok::Str(src[start..i].to_string()), line });
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            let text = &src[start..i];
            let tok = parse_number(text).ok_or_else(|| err(line, format!("malformed number `{text}`")))?;
            out.push(Token { tok, line });
            continue;
        }
        if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            // `.b8`-style suffix chains and `::` qualifiers (`.L2::128B`) stay in one token.
            while i + 1 < b.len() && b[i] == b':' && b[i + 1] == b':' {
                i += 2;
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_string()), line });
            continue;
        }
        if b",;:[]{}()+-|!@=<>*".contains(&c) {
            out.push(Token { tok: Tok::Punct(c as char), line });
            i += 1;
            continue;
        }
        return Err(err(line, format!("unexpected character `{}`", c as char)));
    }
    Ok(out)
}

fn parse_number(t: &str) -> Option<Tok> {
    let lower = t.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0f") {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Tok::F32);
        }
    }
    if let Some(h) = lower.strip_prefix("0d") {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Tok::F64);
        }
    }
    let digits = lower.strip_suffix('u').unwrap_or(&lower);
    if let Some(h) = digits.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(h) = digits.strip_prefix("0b") {
        return u64::from_str_radix(h, 2).ok().map(Tok::Int);
    }
    if digits.contains('.') || digits.contains('e') {
        return digits.parse::<f64>().ok().map(|f| Tok::F64(f.to_bits()));
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return u64::from_str_radix(&digits[1..], 8).ok().map(Tok::Int);
    }
    digits.parse::<u64>().ok().map(Tok::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_in_every_form() {
        assert_eq!(
            toks("12 0x1F 0f3F800000 0d3FF0000000000000 017 0b101 4U"),
            vec![
                Tok::Int(12),
                Tok::Int(31),
                Tok::F32(0x3F80_0000),
                Tok::F64(0x3FF0_0000_0000_0000),
                Tok::Int(15),
                Tok::Int(5),
                Tok::Int(4)
            ]
        );
    }

    #[test]
    fn idents_comments_and_debug_lines() {
        let t = tokenize("ld.global.f32 %f1, [%rd8+4]; // c\n.loc 1 2 3\n/* x\n */ cp.async.cg.shared.global.L2::128B")
            .unwrap();
        assert_eq!(tokenize(".local .b8 d[4];").unwrap().len(), 7, ".local is not .loc");
        assert_eq!(t[0].tok, Tok::Ident("ld.global.f32".into()));
        assert_eq!(t[5].tok, Tok::Punct('+'));
        let last = t.last().unwrap();
        assert_eq!(last.tok, Tok::Ident("cp.async.cg.shared.global.L2::128B".into()));
        assert_eq!(last.line, 4);
    }
}
