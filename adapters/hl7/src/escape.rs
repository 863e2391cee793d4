//! HL7 escape sequences: decoding field text to plain text and encoding plain text back.
//!
//! Decoded: `\F\ \S\ \T\ \R\ \E\` (and `\P\` when a truncation character is declared) become the
//! delimiter characters, `\Xhh…\` becomes the raw bytes (then decoded with the message charset).
//! Kept verbatim: `\H\`, `\N\` (highlighting), `\.br\` and other formatting commands, `\Zxx\`,
//! `\Cxxxx\`, `\Mxxxxxx\`, any unknown or malformed sequence, and an unterminated escape.
//! Encoding ([`escape`]) writes the delimiter characters as their sequences and CR/LF as `\X0D\` /
//! `\X0A\`, so a value can never break the segment structure.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::delimiters::Delimiters;

/// Decode the escape sequences in `raw` and the charset, borrowing when nothing changes.
pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let esc = match d.escape {
        Some(e) if raw.contains(&e) => e,
        _ => return charset.decode(raw),
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.iter().position(|&b| b == esc) {
        out.extend_from_slice(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 1..).unwrap_or_default();
        let Some(len) = after.iter().position(|&b| b == esc) else {
            // unterminated: keep verbatim
            out.extend_from_slice(rest.get(start..).unwrap_or_default());
            rest = &[];
            break;
        };
        let body = after.get(..len).unwrap_or_default();
        match decode_sequence(body, d) {
            Some(Decoded::Byte(b)) => out.push(b),
            Some(Decoded::Bytes(bs)) => out.extend_from_slice(&bs),
            None => {
                out.push(esc);
                out.extend_from_slice(body);
                out.push(esc);
            }
        }
        rest = after.get(len + 1..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    Cow::Owned(charset.decode_owned(out))
}

enum Decoded {
    Byte(u8),
    Bytes(Vec<u8>),
}

fn decode_sequence(body: &[u8], d: &Delimiters) -> Option<Decoded> {
    match body {
        b"F" => Some(Decoded::Byte(d.field)),
        b"S" => Some(Decoded::Byte(d.component)),
        b"T" => Some(Decoded::Byte(d.subcomponent)),
        b"R" => Some(Decoded::Byte(d.repetition)),
        b"E" => d.escape.map(Decoded::Byte),
        b"P" => d.truncation.map(Decoded::Byte),
        [b'X', hex @ ..] if !hex.is_empty() && hex.len() % 2 == 0 => {
            let mut bytes = Vec::with_capacity(hex.len() / 2);
            for pair in hex.chunks(2) {
                let (hi, lo) = match pair {
                    [h, l] => (hex_val(*h)?, hex_val(*l)?),
                    _ => return None,
                };
                bytes.push(hi << 4 | lo);
            }
            Some(Decoded::Bytes(bytes))
        }
        _ => None,
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encode `text` for use as a field value: delimiters become `\F\ \S\ \T\ \R\ \E\ (\P\)`,
/// CR and LF become `\X0D\` and `\X0A\`. Borrows when nothing needs escaping. Without an
/// escape character (MSH-2 of length 2 or 3) text cannot be escaped and is returned as is.
pub fn escape<'t>(text: &'t str, d: &Delimiters) -> Cow<'t, str> {
    let Some(esc) = d.escape else {
        return Cow::Borrowed(text);
    };
    let special = |b: u8| d.is_delimiter(b) || b == b'\r' || b == b'\n';
    if !text.bytes().any(special) {
        return Cow::Borrowed(text);
    }
    let e = char::from(esc);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = match u8::try_from(u32::from(c)) {
            Ok(b) if b.is_ascii() && special(b) => b,
            _ => {
                out.push(c);
                continue;
            }
        };
        let seq = if code == d.field {
            "F"
        } else if code == d.component {
            "S"
        } else if code == d.subcomponent {
            "T"
        } else if code == d.repetition {
            "R"
        } else if code == esc {
            "E"
        } else if Some(code) == d.truncation {
            "P"
        } else if code == b'\r' {
            "X0D"
        } else {
            "X0A"
        };
        out.push(e);
        out.push_str(seq);
        out.push(e);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(raw: &str) -> String {
        unescape(raw.as_bytes(), &Delimiters::default(), Charset::Ascii).into_owned()
    }

    #[test]
    fn delimiter_sequences() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
    }

    #[test]
    fn borrowed_when_plain() {
        let d = Delimiters::default();
        assert!(matches!(
            unescape(b"plain", &d, Charset::Ascii),
            Cow::Borrowed("plain")
        ));
        assert!(matches!(escape("plain", &d), Cow::Borrowed("plain")));
    }

    #[test]
    fn hex() {
        assert_eq!(un(r"\X0D0A\"), "\r\n");
        assert_eq!(un(r"A\X41\"), "AA");
        // hex bytes are charset-decoded
        let d = Delimiters::default();
        assert_eq!(unescape(br"caf\XE9\", &d, Charset::Latin1), "café");
        assert_eq!(unescape(br"caf\XC3A9\", &d, Charset::Utf8), "café");
        assert_eq!(unescape(br"\XC3A9\", &d, Charset::Ascii), "é");
        // malformed hex kept verbatim
        assert_eq!(un(r"\XZZ\"), r"\XZZ\");
        assert_eq!(un(r"\X4\"), r"\X4\");
    }

    #[test]
    fn verbatim_sequences() {
        assert_eq!(un(r"line\.br\next"), r"line\.br\next");
        assert_eq!(un(r"\H\bold\N\"), r"\H\bold\N\");
        assert_eq!(un(r"\Zxx\ \C2842\ \M2442\"), r"\Zxx\ \C2842\ \M2442\");
        assert_eq!(un(r"\\"), r"\\");
        assert_eq!(un(r"end\F"), r"end\F");
        assert_eq!(un(r"a\F\b\"), r"a|b\");
    }

    #[test]
    fn truncation_sequence() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        };
        assert_eq!(unescape(br"a\P\b", &d, Charset::Ascii), "a#b");
        assert_eq!(escape("a#b", &d), r"a\P\b");
        assert_eq!(un(r"a\P\b"), r"a\P\b");
    }

    #[test]
    fn encode_round_trip() {
        let d = Delimiters::default();
        let text = "a|b^c&d~e\\f\rg\nh é";
        let enc = escape(text, &d);
        assert_eq!(enc, r"a\F\b\S\c\T\d\R\e\E\f\X0D\g\X0A\h é");
        assert_eq!(unescape(enc.as_bytes(), &d, Charset::Utf8), text);
    }

    #[test]
    fn no_escape_character() {
        let d = Delimiters {
            escape: None,
            ..Delimiters::default()
        };
        assert_eq!(unescape(br"a\F\b", &d, Charset::Ascii), r"a\F\b");
        assert_eq!(escape("a|b", &d), "a|b");
    }
}
