//! [`MessageBuf`]: an owned, editable copy of a message.
//!
//! Segments are kept as owned, still-escaped bytes together with their own terminators (CR, LF,
//! CRLF, none, or a terminator followed by blank lines), plus the BOM flag and any leading blank
//! lines, so that an unedited buffer encodes byte-identically to the parsed input.

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::error::ParseError;
use crate::escape::escape;
use crate::message::{Message, Segment, BOM};
use crate::path::Path;

/// One owned segment: still-escaped content and the bytes that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentBuf {
    raw: Vec<u8>,
    terminator: Vec<u8>,
}

/// An owned, editable HL7 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuf {
    delims: Delimiters,
    charset: Charset,
    bom: bool,
    prefix: Vec<u8>,
    segments: Vec<SegmentBuf>,
}

/// Replace piece `idx` (0-based) of `raw` split on `sep` with `f(old)`, creating missing pieces.
fn with_piece(raw: &[u8], sep: u8, idx: usize, f: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut pieces: Vec<&[u8]> = raw.split(|&b| b == sep).collect();
    while pieces.len() <= idx {
        pieces.push(&[]);
    }
    let new = f(pieces.get(idx).copied().unwrap_or_default());
    let mut out = Vec::with_capacity(raw.len() + new.len() + idx);
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        if i == idx {
            out.extend_from_slice(&new);
        } else {
            out.extend_from_slice(p);
        }
    }
    out
}

impl MessageBuf {
    /// Parse bytes straight into an owned buffer.
    pub fn parse(bytes: &[u8]) -> Result<MessageBuf, ParseError> {
        Ok(Message::parse(bytes)?.to_buf())
    }

    pub(crate) fn from_message(msg: &Message<'_>) -> MessageBuf {
        let input = msg.input();
        let body_start = if msg.has_bom() { BOM.len() } else { 0 };
        let spans = msg.spans();
        let prefix = spans
            .first()
            .and_then(|&(s, _)| input.get(body_start..s))
            .unwrap_or_default()
            .to_vec();
        let segments = spans
            .iter()
            .enumerate()
            .map(|(i, &(s, e))| {
                let next = spans.get(i + 1).map_or(input.len(), |&(ns, _)| ns);
                SegmentBuf {
                    raw: input.get(s..e).unwrap_or_default().to_vec(),
                    terminator: input.get(e..next).unwrap_or_default().to_vec(),
                }
            })
            .collect();
        MessageBuf {
            delims: msg.delimiters(),
            charset: msg.charset(),
            bom: msg.has_bom(),
            prefix,
            segments,
        }
    }

    /// The delimiters used for escaping and splitting.
    pub fn delimiters(&self) -> Delimiters {
        self.delims
    }

    /// The charset values are encoded and decoded with (fixed at parse time).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Ids of the segments, in order.
    pub fn segment_ids(&self) -> Vec<String> {
        self.segments
            .iter()
            .map(|s| String::from_utf8_lossy(s.raw.get(..3).unwrap_or(&s.raw)).into_owned())
            .collect()
    }

    fn find(&self, id: &str, occurrence: usize) -> Option<usize> {
        if occurrence == 0 {
            return None;
        }
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.raw.get(..3) == Some(id.as_bytes()))
            .nth(occurrence - 1)
            .map(|(i, _)| i)
    }

    /// Decoded value at `path`; `None` when absent or empty.
    pub fn get(&self, path: &Path) -> Option<String> {
        let i = self.find(&path.segment, path.occurrence)?;
        let seg = self.segments.get(i)?;
        Segment::new(&seg.raw, self.delims, self.charset)
            .get(path)
            .map(|c| c.into_owned())
    }

    /// The separator used between segments: that of the first segment (CR when none).
    fn line_separator(&self) -> Vec<u8> {
        let t = self
            .segments
            .first()
            .map(|s| s.terminator.as_slice())
            .unwrap_or_default();
        match t {
            [b'\r', b'\n', ..] => b"\r\n".to_vec(),
            [b'\n', ..] => b"\n".to_vec(),
            _ => b"\r".to_vec(),
        }
    }

    /// Append a segment after the last one, then return its index.
    fn append(&mut self, raw: Vec<u8>) -> usize {
        let sep = self.line_separator();
        let terminator = match self.segments.last_mut() {
            Some(last) => std::mem::replace(&mut last.terminator, sep),
            None => Vec::new(),
        };
        self.segments.push(SegmentBuf { raw, terminator });
        self.segments.len() - 1
    }

    /// Set the value at `path` to `value` (escaped and encoded in the message charset).
    ///
    /// Missing repetitions, components, subcomponents and fields are created; missing segments
    /// (`OBX(3)` when there are two) are appended at the end. MSH-1 and MSH-2 define the
    /// delimiters and cannot be changed: setting them does nothing.
    pub fn set(&mut self, path: &Path, value: &str) {
        let is_msh = path.segment == "MSH";
        if is_msh && path.field <= 2 || path.field == 0 || path.repetition == 0 {
            return;
        }
        let d = self.delims;
        let escaped = escape(value, &d);
        let bytes = self.charset.encode(&escaped).into_owned();
        let idx = match self.find(&path.segment, path.occurrence) {
            Some(i) => i,
            None => {
                let have = self
                    .segments
                    .iter()
                    .filter(|s| s.raw.get(..3) == Some(path.segment.as_bytes()))
                    .count();
                let mut last = 0;
                for _ in have..path.occurrence {
                    last = self.append(path.segment.as_bytes().to_vec());
                }
                last
            }
        };
        let Some(seg) = self.segments.get_mut(idx) else {
            return;
        };
        // piece index of the field within the segment
        let field_piece = if is_msh { path.field - 1 } else { path.field };
        let (comp, sub) = (path.component, path.subcomponent);
        seg.raw = with_piece(&seg.raw, d.field, field_piece, |field| {
            with_piece(field, d.repetition, path.repetition - 1, |rep| match comp {
                None | Some(0) => bytes,
                Some(c) => with_piece(rep, d.component, c - 1, |component| match sub {
                    None | Some(0) => bytes,
                    Some(s) => with_piece(component, d.subcomponent, s - 1, |_| bytes),
                }),
            })
        });
    }

    /// Append a segment `id|f1|f2…`; each field value is escaped (delimiters in values are
    /// data, not structure). The id is written as given.
    pub fn push_segment(&mut self, id: &str, fields: &[&str]) {
        let mut raw = id.as_bytes().to_vec();
        for f in fields {
            raw.push(self.delims.field);
            let escaped = escape(f, &self.delims);
            raw.extend_from_slice(&self.charset.encode(&escaped));
        }
        self.append(raw);
    }

    /// The message bytes: BOM, leading blank lines, then each segment and its own terminator.
    pub fn encode(&self) -> Vec<u8> {
        let len = self
            .segments
            .iter()
            .map(|s| s.raw.len() + s.terminator.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(len + self.prefix.len() + BOM.len());
        if self.bom {
            out.extend_from_slice(BOM);
        }
        out.extend_from_slice(&self.prefix);
        for s in &self.segments {
            out.extend_from_slice(&s.raw);
            out.extend_from_slice(&s.terminator);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|C1|P|2.5\rPID|1||123^^^H~456^^^X||DOE^JOHN\rOBX|1|ST|X||a\r";

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip() {
        let b = Message::parse(MSG).unwrap().to_buf();
        assert_eq!(b.encode(), MSG);
    }

    #[test]
    fn set_existing_and_escape() {
        let mut b = MessageBuf::parse(MSG).unwrap();
        b.set(&p("PID-5.1"), "O'NEIL|X^Y");
        assert_eq!(b.get(&p("PID-5.1")).as_deref(), Some("O'NEIL|X^Y"));
        assert_eq!(b.get(&p("PID-5.2")).as_deref(), Some("JOHN"));
        let enc = b.encode();
        let m = Message::parse(&enc).unwrap();
        assert_eq!(m.get("PID-5.1").unwrap().as_deref(), Some("O'NEIL|X^Y"));
        let text = String::from_utf8(enc).unwrap();
        assert!(text.contains("|O'NEIL\\F\\X\\S\\Y^JOHN\r"), "{text}");
    }

    #[test]
    fn set_creates_missing_parts() {
        let mut b = MessageBuf::parse(MSG).unwrap();
        b.set(&p("PID-3[3].4.2"), "NEW");
        b.set(&p("PID-30"), "Y");
        b.set(&p("OBX(2)-5"), "second");
        b.set(&p("ZZZ-2.2"), "z");
        let enc = b.encode();
        let m = Message::parse(&enc).unwrap();
        assert_eq!(m.get("PID-3[3].4.2").unwrap().as_deref(), Some("NEW"));
        assert_eq!(m.get("PID-3[2].1").unwrap().as_deref(), Some("456"));
        assert_eq!(m.get("PID-30").unwrap().as_deref(), Some("Y"));
        assert_eq!(m.get("OBX(2)-5").unwrap().as_deref(), Some("second"));
        assert_eq!(m.get("ZZZ-2.2").unwrap().as_deref(), Some("z"));
        let text = String::from_utf8(enc).unwrap();
        assert!(text.contains("PID|1||123^^^H~456^^^X~^^^&NEW||DOE^JOHN|"));
        assert!(text.ends_with("OBX|1|ST|X||a\rOBX|||||second\rZZZ||^z\r"));
    }

    #[test]
    fn set_msh_fields() {
        let mut b = MessageBuf::parse(MSG).unwrap();
        b.set(&p("MSH-3"), "NEWAPP");
        b.set(&p("MSH-1"), "*");
        b.set(&p("MSH-2"), "xxxx");
        b.set(&p("MSH-18"), "UNICODE UTF-8");
        let enc = b.encode();
        assert!(enc.starts_with(b"MSH|^~\\&|NEWAPP|FAC|"));
        let m = Message::parse(&enc).unwrap();
        assert_eq!(m.get("MSH-3").unwrap().as_deref(), Some("NEWAPP"));
        assert_eq!(m.charset(), Charset::Utf8);
    }

    #[test]
    fn push_segment_keeps_terminators() {
        // no trailing separator, LF separators
        let src = b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5\nPID|1";
        let mut b = MessageBuf::parse(src).unwrap();
        b.push_segment("NTE", &["1", "", "a|b"]);
        assert_eq!(
            b.encode(),
            b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5\nPID|1\nNTE|1||a\\F\\b".to_vec()
        );
        assert_eq!(b.segment_ids(), ["MSH", "PID", "NTE"]);
    }
}
