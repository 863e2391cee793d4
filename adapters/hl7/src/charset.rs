//! Character sets named by MSH-18 and how raw bytes become text under each.
//!
//! Decoding policy:
//! - [`Charset::Utf8`] (`UNICODE UTF-8`): strict. [`crate::Message::parse`] validates the whole
//!   message once and rejects invalid UTF-8; afterwards decoding is a borrow. (Bytes produced by
//!   a `\Xhh\` escape that are not valid UTF-8 are replaced with U+FFFD.)
//! - [`Charset::Latin1`] (`8859/1`): every byte maps to the char with the same code point.
//! - [`Charset::Ascii`] (MSH-18 empty or `ASCII`): lenient. Real feeds that leave MSH-18 empty
//!   routinely carry UTF-8, so text is decoded as UTF-8 when it is valid, otherwise as Latin-1.

use std::borrow::Cow;

use crate::error::{ErrorCode, Location, ParseError};

/// The character set of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// MSH-18 empty or `ASCII` (decoded leniently, see the module docs).
    #[default]
    Ascii,
    /// MSH-18 `8859/1`.
    Latin1,
    /// MSH-18 `UNICODE UTF-8`.
    Utf8,
}

/// The MSH-18 values accepted, for error messages.
pub const SUPPORTED: &str = "\"\" (empty), \"ASCII\", \"8859/1\", \"UNICODE UTF-8\"";

impl Charset {
    /// Interpret an MSH-18 value (first repetition, surrounding blanks ignored).
    pub fn from_msh18(value: &[u8]) -> Result<Charset, ParseError> {
        match value.trim_ascii() {
            b"" | b"ASCII" => Ok(Charset::Ascii),
            b"8859/1" => Ok(Charset::Latin1),
            b"UNICODE UTF-8" => Ok(Charset::Utf8),
            // The value is not repeated: error texts end up in logs, which
            // never show message content.
            _ => Err(ParseError::new(
                ErrorCode::DataTypeError,
                Some(Location::field("MSH", 1, 18)),
                format!("unsupported character set in MSH-18; supported: {SUPPORTED}"),
            )),
        }
    }

    /// The MSH-18 spelling of this charset (`""` for ASCII's default).
    pub fn name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    /// Decode bytes to text; borrows whenever the bytes are already valid text.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            // `from_utf8` first: its fast path is several times quicker than
            // `from_utf8_lossy`'s chunk walk on the valid text nearly every
            // value is.
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(bytes),
            },
            Charset::Latin1 => match std::str::from_utf8(bytes) {
                Ok(s) if s.is_ascii() => Cow::Borrowed(s),
                _ => Cow::Owned(latin1(bytes)),
            },
            Charset::Ascii => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(latin1(bytes)),
            },
        }
    }

    /// Decode owned bytes to an owned string.
    pub fn decode_owned(self, bytes: Vec<u8>) -> String {
        match self {
            Charset::Latin1 if !bytes.is_ascii() => latin1(&bytes),
            Charset::Latin1 | Charset::Ascii => match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => latin1(e.as_bytes()),
            },
            Charset::Utf8 => match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            },
        }
    }

    /// Encode text to bytes in this charset. Latin-1 replaces characters above U+00FF with `?`;
    /// ASCII (lenient) and UTF-8 write UTF-8.
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            Charset::Latin1 if !text.is_ascii() => Cow::Owned(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            ),
            _ => Cow::Borrowed(text.as_bytes()),
        }
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Charset::from_msh18(b"").unwrap(), Charset::Ascii);
        assert_eq!(Charset::from_msh18(b"ASCII").unwrap(), Charset::Ascii);
        assert_eq!(Charset::from_msh18(b"8859/1").unwrap(), Charset::Latin1);
        assert_eq!(
            Charset::from_msh18(b"UNICODE UTF-8").unwrap(),
            Charset::Utf8
        );
        let e = Charset::from_msh18(b"ISO IR87").unwrap_err();
        assert_eq!(e.code, ErrorCode::DataTypeError);
        assert_eq!(e.location, Some(Location::field("MSH", 1, 18)));
        assert!(!e.message.contains("ISO IR87"), "no message content");
        assert!(e.message.contains("UNICODE UTF-8"));
        assert!(e.message.contains("8859/1"));
    }

    #[test]
    fn decoding() {
        assert_eq!(Charset::Latin1.decode(b"caf\xe9"), "café");
        assert!(matches!(Charset::Latin1.decode(b"cafe"), Cow::Borrowed(_)));
        assert_eq!(Charset::Ascii.decode("café".as_bytes()), "café");
        assert_eq!(Charset::Ascii.decode(b"caf\xe9"), "café");
        assert_eq!(Charset::Utf8.decode("café".as_bytes()), "café");
        assert_eq!(Charset::Latin1.decode_owned(vec![0xe9]), "é");
        assert_eq!(Charset::Ascii.decode_owned(vec![0xe9]), "é");
        assert_eq!(Charset::Latin1.encode("é€").as_ref(), b"\xe9?");
    }
}
