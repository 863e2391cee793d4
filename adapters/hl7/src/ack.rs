//! A pure ACK builder: given the original message (or nothing, when it could not be parsed), an
//! acknowledgment code and an optional error, produce the ACK bytes. The caller supplies the
//! fresh control id and timestamp, so the output is deterministic.
//!
//! Layout (segments separated and terminated by CR, original delimiters and charset):
//! `MSH|^~\&|<MSH-5>|<MSH-6>|<MSH-3>|<MSH-4>|<ts>||ACK^<trigger>^ACK|<id>|<MSH-11>|<MSH-12>[||||||<MSH-18>]`,
//! `MSA|<code>|<MSH-10>[|<text>]`, and for AE/AR/CE/CR with an error an ERR segment: v2.5+
//! `ERR||<location ERL>|<code>^<text>^HL70357|E||||<text>`, before v2.5
//! `ERR|<seg>^<seq>^<field>^<code>&<text>&HL70357`.

use std::fmt;

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::error::{ErrorCode, Location, ParseError};
use crate::escape::escape;
use crate::message::Message;

/// Acknowledgment codes (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept.
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Whether this code reports an error or rejection (AE, AR, CE, CR).
    pub fn is_error(self) -> bool {
        !matches!(self, AckCode::AA | AckCode::CA)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error an ACK reports (MSA-3, ERR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// Table 0357 condition (ERR-3).
    pub code: ErrorCode,
    /// Where (ERR-2), when known.
    pub location: Option<Location>,
    /// Human-readable text (MSA-3, ERR-8).
    pub text: String,
}

impl AckError {
    /// An error without location.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> AckError {
        AckError {
            code,
            location: None,
            text: text.into(),
        }
    }
}

impl From<&ParseError> for AckError {
    fn from(e: &ParseError) -> AckError {
        AckError {
            code: e.code,
            location: e.location.clone(),
            text: e.message.clone(),
        }
    }
}

struct Writer {
    d: Delimiters,
    charset: Charset,
    out: Vec<u8>,
}

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    fn text(&mut self, t: &str) {
        let e = escape(t, &self.d);
        let bytes = self.charset.encode(&e);
        self.out.extend_from_slice(&bytes);
    }
    fn f(&mut self) {
        self.out.push(self.d.field);
    }
    fn c(&mut self) {
        self.out.push(self.d.component);
    }
    fn s(&mut self) {
        self.out.push(self.d.subcomponent);
    }
    fn end(&mut self) {
        self.out.push(b'\r');
    }
}

/// What the ACK copies from the original MSH (raw, still-escaped bytes).
#[derive(Default)]
struct Original<'a> {
    sending_app: &'a [u8],
    sending_fac: &'a [u8],
    receiving_app: &'a [u8],
    receiving_fac: &'a [u8],
    trigger: &'a [u8],
    control_id: &'a [u8],
    processing_id: &'a [u8],
    version: &'a [u8],
    charset: &'a [u8],
    /// MSH-12.1 as numbers; decides the layout of MSH-9, MSA and ERR.
    version_number: Version,
}

/// An HL7 version as (major, minor, patch); `2.3.1` → (2, 3, 1).
type Version = (u32, u32, u32);

/// The version used when MSH-12 is missing or unreadable.
const DEFAULT_VERSION: Version = (2, 5, 0);
/// [`DEFAULT_VERSION`] as MSH-12 writes it.
const DEFAULT_VERSION_TEXT: &[u8] = b"2.5";

/// Parse MSH-12.1; missing or unparseable versions count as 2.5.
fn parse_version(version: &str) -> Version {
    let mut parts = version.trim().split('.');
    let mut next = |default: Option<u32>| match parts.next() {
        Some(p) => p.parse::<u32>().ok(),
        None => default,
    };
    match (next(None), next(Some(0)), next(Some(0))) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => DEFAULT_VERSION,
    }
}

fn write_ack(
    d: Delimiters,
    charset: Charset,
    o: &Original<'_>,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let mut w = Writer {
        d,
        charset,
        out: Vec::with_capacity(256),
    };
    // MSH
    w.raw(b"MSH");
    w.f();
    // The truncation character (MSH-2.5) exists from v2.7 on; an older ACK
    // declares only the four classic encoding characters.
    let mut encoding = d.encoding_characters();
    if o.version_number < (2, 7, 0) && d.truncation.is_some() {
        encoding.pop();
    }
    w.raw(&encoding);
    for part in [
        o.receiving_app,
        o.receiving_fac,
        o.sending_app,
        o.sending_fac,
    ] {
        w.f();
        w.raw(part);
    }
    w.f();
    w.text(timestamp);
    w.f();
    w.f();
    w.raw(b"ACK");
    if !o.trigger.is_empty() {
        w.c();
        w.raw(o.trigger);
        // MSH-9.3 (message structure) exists from v2.3.1 on.
        if o.version_number >= (2, 3, 1) {
            w.c();
            w.raw(b"ACK");
        }
    }
    w.f();
    w.text(control_id);
    w.f();
    // MSH-11 is required in an ACK: echo the original's, "P" when it had none.
    if o.processing_id.is_empty() {
        w.raw(b"P");
    } else {
        w.raw(o.processing_id);
    }
    w.f();
    w.raw(o.version);
    if !o.charset.is_empty() {
        for _ in 13..=18 {
            w.f();
        }
        w.raw(o.charset);
    }
    w.end();
    // MSA
    w.raw(b"MSA");
    w.f();
    w.raw(code.as_str().as_bytes());
    w.f();
    w.raw(o.control_id);
    // MSA-3 (text message) was withdrawn in v2.7; ERR-8 carries the text.
    if let Some(e) = error.filter(|e| !e.text.is_empty() && o.version_number < (2, 7, 0)) {
        w.f();
        w.text(&e.text);
    }
    w.end();
    // ERR
    if let Some(e) = error.filter(|_| code.is_error()) {
        w.raw(b"ERR");
        w.f();
        if o.version_number >= (2, 5, 0) {
            w.f();
            if let Some(loc) = &e.location {
                let num = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
                let parts = [
                    loc.segment.clone(),
                    loc.sequence.to_string(),
                    num(loc.field),
                    num(loc.repetition),
                    num(loc.component),
                    num(loc.subcomponent),
                ];
                let used = parts
                    .iter()
                    .rposition(|p| !p.is_empty())
                    .map_or(0, |i| i + 1);
                for (i, p) in parts.iter().take(used).enumerate() {
                    if i > 0 {
                        w.c();
                    }
                    w.text(p);
                }
            }
            w.f();
            w.raw(e.code.code().to_string().as_bytes());
            w.c();
            w.text(e.code.text());
            w.c();
            w.raw(b"HL70357");
            w.f();
            w.raw(b"E");
            if !e.text.is_empty() {
                for _ in 5..=8 {
                    w.f();
                }
                w.text(&e.text);
            }
        } else {
            if let Some(loc) = &e.location {
                w.text(&loc.segment);
                w.c();
                w.text(&loc.sequence.to_string());
                w.c();
                if let Some(field) = loc.field {
                    w.text(&field.to_string());
                }
            } else {
                w.c();
                w.c();
            }
            w.c();
            w.raw(e.code.code().to_string().as_bytes());
            w.s();
            w.text(e.code.text());
            w.s();
            w.raw(b"HL70357");
        }
        w.end();
    }
    w.out
}

/// Build an ACK for a parsed message. See the module docs for the layout.
pub fn build_ack(
    original: &Message<'_>,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let msh = original.msh();
    let raw = |n: usize| {
        msh.and_then(|m| m.field(n))
            .map(|f| f.raw())
            .unwrap_or_default()
    };
    let version = msh
        .and_then(|m| m.field(12))
        .and_then(|f| f.component(1))
        .map(|c| c.decoded())
        .unwrap_or_default();
    let o = Original {
        version_number: parse_version(&version),
        sending_app: raw(3),
        sending_fac: raw(4),
        receiving_app: raw(5),
        receiving_fac: raw(6),
        trigger: msh
            .and_then(|m| m.field(9))
            .and_then(|f| f.component(2))
            .map(|c| c.raw())
            .unwrap_or_default(),
        control_id: raw(10),
        processing_id: raw(11),
        // MSH-12 is required in the ACK too: the version it answers in.
        version: Some(raw(12))
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_VERSION_TEXT),
        // Echoed only when it is one we write in: an ACK that names a
        // charset it is not written in cannot be read back (the sender's
        // parser refuses it, as ours does).
        charset: Some(raw(18))
            .filter(|c| Charset::from_msh18(c).is_ok())
            .unwrap_or_default(),
    };
    write_ack(
        original.delimiters(),
        original.charset(),
        &o,
        code,
        error,
        control_id,
        timestamp,
    )
}

/// Build an ACK when the input could not be parsed at all: default delimiters, empty MSH-3..6,
/// MSH-9 `ACK`, MSH-11 `P`, MSH-12 `2.5`, empty MSA-2.
pub fn build_ack_for_unparsed(
    code: AckCode,
    error: &AckError,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let o = Original {
        processing_id: b"P",
        version: DEFAULT_VERSION_TEXT,
        version_number: DEFAULT_VERSION,
        ..Original::default()
    };
    write_ack(
        Delimiters::default(),
        Charset::Utf8,
        &o,
        code,
        Some(error),
        control_id,
        timestamp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message refused for its MSH-18 gets an AR that names no charset
    /// (one it is not written in), so the sender can read it.
    #[test]
    fn an_unsupported_charset_is_not_echoed() {
        let input = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|X1|P|2.5||||||ISO IR87\rPID|1\r";
        assert!(crate::Message::parse(input).is_err());
        let header = crate::Message::parse_header_only(input).expect("header");
        let err = AckError {
            code: ErrorCode::DataTypeError,
            location: None,
            text: "unsupported character set in MSH-18".into(),
        };
        let ack = build_ack(&header, AckCode::AR, Some(&err), "A1", "20250101");
        let parsed = crate::Message::parse(&ack).expect("the ACK parses");
        assert_eq!(parsed.get("MSA-1").ok().flatten().as_deref(), Some("AR"));
        assert_eq!(parsed.get("MSA-2").ok().flatten().as_deref(), Some("X1"));
        assert_eq!(parsed.get("MSH-18").ok().flatten(), None);
        // A supported one is kept.
        let latin = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|X2|P|2.5||||||8859/1\r";
        let m = crate::Message::parse(latin).expect("parse");
        let ack = build_ack(&m, AckCode::AA, None, "A2", "20250101");
        let parsed = crate::Message::parse(&ack).expect("the ACK parses");
        assert_eq!(
            parsed.get("MSH-18").ok().flatten().as_deref(),
            Some("8859/1")
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("2.5"), (2, 5, 0));
        assert_eq!(parse_version("2.5.1"), (2, 5, 1));
        assert_eq!(parse_version("2.10"), (2, 10, 0));
        assert_eq!(parse_version(""), DEFAULT_VERSION);
        assert_eq!(parse_version("x"), DEFAULT_VERSION);
        assert_eq!(parse_version("2"), (2, 0, 0));
        assert!(parse_version("2.3.1") < (2, 5, 0));
        assert!(parse_version("2.3") < (2, 3, 1));
    }

    #[test]
    fn codes() {
        assert_eq!(AckCode::CE.as_str(), "CE");
        assert!(AckCode::AR.is_error());
        assert!(!AckCode::CA.is_error());
    }
}
