//! How stored names are printed. A name is bytes and need not be UTF-8, so, like GNU `ls`: to a
//! pipe or file the raw bytes (`verfs ls | xargs` sees the real name), on a terminal the
//! `shell-escape` quoting of GNU `ls` (`$'\377\376'` for bytes that are not printable, quotes
//! where a shell would need them: what is shown can be pasted back into a command), and in JSON a
//! lossless encoding ([`json`]).

use std::borrow::Cow;
use std::io::IsTerminal;

/// GNU `ls --quoting-style`: the two styles verfs prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Quoting {
    /// The bytes as stored.
    Literal,
    /// Quoted and escaped for a POSIX shell (GNU `ls` on a terminal).
    ShellEscape,
}

impl Quoting {
    /// The given style, else what GNU `ls` picks: shell-escape on a terminal, literal otherwise.
    pub fn for_stdout(given: Option<Quoting>) -> Quoting {
        given.unwrap_or(if std::io::stdout().is_terminal() {
            Quoting::ShellEscape
        } else {
            Quoting::Literal
        })
    }

    pub fn quote<'a>(self, name: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            Quoting::Literal => Cow::Borrowed(name),
            Quoting::ShellEscape => Cow::Owned(shell_escape(name).into_bytes()),
        }
    }
}

/// A name in JSON, losslessly: a string when it is UTF-8, else `{"bytes_hex": "fffe"}` (every
/// byte as two lowercase hex digits).
pub fn json(name: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(name) {
        Ok(s) => serde_json::Value::String(s.to_owned()),
        Err(_) => {
            let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "bytes_hex": hex })
        }
    }
}

/// One unit of a name: a printable character or a byte that must be escaped.
enum Unit {
    Char(char),
    Byte(u8),
}

fn units(name: &[u8]) -> Vec<Unit> {
    let mut out = Vec::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).bytes().map(Unit::Byte));
            } else {
                out.push(Unit::Char(c));
            }
        }
        out.extend(chunk.invalid().iter().copied().map(Unit::Byte));
    }
    out
}

/// GNU `ls --quoting-style=shell-escape` (coreutils' quotearg), checked against `ls` itself in
/// `cli/tests/names.rs`:
/// - a name of only "safe" characters is printed as is;
/// - one with a single quote and otherwise only characters that mean the same inside double
///   quotes is printed in double quotes (`"it's"`);
/// - else single quotes, with `'` as `'\''` and each unprintable byte in a `$'...'` part
///   (`'a'$'\377''b'`, `''$'\377\376'`).
pub fn shell_escape(name: &[u8]) -> String {
    if name.is_empty() {
        return "''".into();
    }
    let units = units(name);
    let whole_single = units.len() == 1;
    let mut needs_quotes = false;
    let mut has_single_quote = false;
    let mut double_quotable = true;
    for (i, u) in units.iter().enumerate() {
        let Unit::Char(c) = u else {
            needs_quotes = true;
            double_quotable = false;
            continue;
        };
        let (special, compat) = match c {
            ' ' => (true, true),
            '\'' => {
                has_single_quote = true;
                (true, true)
            }
            '#' | '~' => (i == 0, i == 0),
            '{' | '}' => (whole_single, false),
            '!' | '"' | '$' | '&' | '(' | ')' | '*' | ';' | '<' | '=' | '>' | '?' | '[' | '\\'
            | '^' | '`' | '|' => (true, false),
            c if c.is_ascii_alphanumeric() || !c.is_ascii() => (false, true),
            '%' | '+' | ',' | '-' | '.' | '/' | ':' | '@' | ']' | '_' => (false, true),
            _ => (false, false),
        };
        needs_quotes |= special;
        double_quotable &= compat;
    }
    if !needs_quotes {
        return String::from_utf8_lossy(name).into_owned();
    }
    if has_single_quote && double_quotable {
        return format!("\"{}\"", String::from_utf8_lossy(name));
    }
    let mut out = String::from("'");
    let mut escaping = false;
    for u in units {
        match u {
            Unit::Char(c) => {
                if escaping {
                    // Close `$'...'` and reopen a plain single-quoted part.
                    out.push_str("''");
                    escaping = false;
                }
                if c == '\'' {
                    out.push_str(r"'\''");
                } else {
                    out.push(c);
                }
            }
            Unit::Byte(b) => {
                if !escaping {
                    out.push_str("'$'");
                    escaping = true;
                }
                match b {
                    0x07 => out.push_str(r"\a"),
                    0x08 => out.push_str(r"\b"),
                    b'\t' => out.push_str(r"\t"),
                    b'\n' => out.push_str(r"\n"),
                    0x0b => out.push_str(r"\v"),
                    0x0c => out.push_str(r"\f"),
                    b'\r' => out.push_str(r"\r"),
                    b => out.push_str(&format!("\\{b:03o}")),
                }
            }
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: what GNU coreutils 9 `ls --quoting-style=shell-escape` printed for these
    /// names (LC_ALL=C.UTF-8).
    #[test]
    fn shell_escape_matches_gnu_ls() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain", "plain"),
            (b"a b", "'a b'"),
            (b"it's", "\"it's\""),
            (b"a'b c", "\"a'b c\""),
            (b"q'$z", r"'q'\''$z'"),
            (b"a'\xff", r"'a'\'''$'\377'"),
            (b"\xff\xfe", r"''$'\377\376'"),
            (b"a\xffb", r"'a'$'\377''b'"),
            (b"tab\there", r"'tab'$'\t''here'"),
            (b"new\nline", r"'new'$'\n''line'"),
            (b"\x01", r"''$'\001'"),
            (b"a\x7fb", r"'a'$'\177''b'"),
            (b"caf\xc3\xa9", "café"),
            (b"#x", "'#x'"),
            (b"a#b", "a#b"),
            (b"~", "'~'"),
            (b"{", "'{'"),
            (b"{x", "{x"),
            (b"a=b", "'a=b'"),
            (b"a]b", "a]b"),
            (b"#'", "\"#'\""),
            (b"q'#z", r"'q'\''#z'"),
        ];
        for (name, want) in cases {
            assert_eq!(
                shell_escape(name),
                *want,
                "name {:?}",
                name.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn json_is_lossless() {
        assert_eq!(json(b"abc"), serde_json::json!("abc"));
        assert_eq!(
            json(b"\xff\xfe"),
            serde_json::json!({ "bytes_hex": "fffe" })
        );
    }
}
