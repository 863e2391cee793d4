//! The zero-copy [`Message`]: segment boundaries are found once at parse time; fields,
//! repetitions, components and subcomponents are split lazily on access and borrow the input.

use std::borrow::Cow;

use crate::buf::MessageBuf;
use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::error::{ErrorCode, Location, ParseError};
use crate::escape::unescape;
use crate::path::{is_segment_id, Path, PathError};
use crate::scan::{find_line_break, nth_piece, pieces, push_offsets};
use crate::MAX_SEGMENTS;

/// The UTF-8 byte order mark, stripped (and remembered) at parse time.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A parsed HL7 v2 message borrowing its input bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    input: &'a [u8],
    bom: bool,
    delims: Delimiters,
    charset: Charset,
    /// `input` as text when it is valid UTF-8 and the charset reads it as it is (see
    /// [`Value::decoded`]); empty otherwise.
    text: &'a str,
    /// `(start, end)` of each non-blank segment's content in `input` (terminators excluded).
    spans: Vec<(usize, usize)>,
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// A printable rendering of a (possibly invalid) segment id for error locations.
fn id_for_location(line: &[u8]) -> String {
    line.iter()
        .take(3)
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

fn seq(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Split `input` (after `start`) into non-blank line spans, skipping blank lines.
fn scan_segments(input: &[u8], start: usize) -> Result<Vec<(usize, usize)>, ParseError> {
    let mut spans = Vec::with_capacity(16);
    let mut pos = start;
    while let Some(rest) = input.get(pos..).filter(|r| !r.is_empty()) {
        let (len, next) = match find_line_break(rest) {
            Some(i) => {
                let crlf = rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n');
                (i, if crlf { i + 2 } else { i + 1 })
            }
            None => (rest.len(), rest.len()),
        };
        let line = rest.get(..len).unwrap_or_default();
        let blank = match line.first() {
            Some(b) if b.is_ascii_uppercase() => false,
            _ => is_blank(line),
        };
        if !blank {
            if spans.len() >= MAX_SEGMENTS {
                return Err(ParseError::new(
                    ErrorCode::SegmentSequenceError,
                    None,
                    format!("message has more than {MAX_SEGMENTS} segments"),
                ));
            }
            spans.push((pos, pos + len));
        }
        pos += next;
    }
    Ok(spans)
}

impl<'a> Message<'a> {
    /// Parse a message. See the crate docs for the rules; never panics on any input.
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Self::parse_with(bytes, true)
    }

    /// `strict = false` skips the required-field and charset checks (used
    /// only to address a NAK to a message that failed them).
    fn parse_with(bytes: &'a [u8], strict: bool) -> Result<Message<'a>, ParseError> {
        let bom = bytes.starts_with(BOM);
        let spans = scan_segments(bytes, if bom { BOM.len() } else { 0 })?;
        let line = |i: usize| {
            spans
                .get(i)
                .and_then(|&(s, e)| bytes.get(s..e))
                .unwrap_or_default()
        };
        if spans.is_empty() {
            return Err(ParseError::new(
                ErrorCode::SegmentSequenceError,
                None,
                "message is empty",
            ));
        }
        let first = line(0);
        if !first.starts_with(b"MSH") {
            // The segment found there; when that is no segment id (bytes
            // that are not HL7), where the MSH should be.
            let found = first.get(..3).filter(|id| is_segment_id(id));
            let id = found.map_or_else(|| "MSH".to_string(), id_for_location);
            return Err(ParseError::new(
                ErrorCode::SegmentSequenceError,
                Some(Location::segment(id, 1)),
                "message must start with an MSH segment",
            ));
        }
        let delims = Delimiters::from_msh(first)?;
        for i in 1..spans.len() {
            let l = line(i);
            let id_ok = is_segment_id(l.get(..3).unwrap_or(l))
                && match l.get(3) {
                    None => true,
                    Some(&b) => b == delims.field,
                };
            if !id_ok {
                return Err(ParseError::new(
                    ErrorCode::SegmentSequenceError,
                    Some(Location::segment(id_for_location(l), seq(i + 1))),
                    // No snippet of the segment: it may hold patient data,
                    // and this text reaches logs and ACKs.
                    format!(
                        "segment {} does not start with a valid segment id ([A-Z][A-Z0-9]{{2}} followed by the field separator)",
                        i + 1
                    ),
                ));
            }
        }
        let mut msg = Message {
            input: bytes,
            bom,
            delims,
            charset: Charset::Ascii,
            text: "",
            spans,
        };
        if !strict {
            return Ok(msg);
        }
        let msh = Segment::new(first, delims, Charset::Ascii);
        let required = |field: usize, raw: Option<&[u8]>, what: &str| {
            if raw.unwrap_or_default().is_empty() {
                Err(ParseError::new(
                    ErrorCode::RequiredFieldMissing,
                    Some(Location::field("MSH", 1, seq(field))),
                    format!("MSH-{field} ({what}) is required but empty or missing"),
                ))
            } else {
                Ok(())
            }
        };
        let code = msh.field(9).and_then(|f| f.component(1)).map(|c| c.raw());
        required(9, code, "message code")?;
        // MSH-10 is required by the standard, but real feeds (and the
        // corpus) send messages without it; refusing them would lose data.
        // Such a message is accepted; its ACK's MSA-2 is empty and it cannot
        // be recognised as a retransmission.
        let version = msh.field(12).map(|f| f.raw());
        required(12, version, "version id")?;
        let cs = msh
            .field(18)
            .and_then(|f| f.repetition(1))
            .map(|r| r.raw())
            .unwrap_or_default();
        msg.charset = Charset::from_msh18(cs)?;
        let text = std::str::from_utf8(bytes);
        if msg.charset == Charset::Utf8 {
            if let Err(e) = text {
                let at = e.valid_up_to();
                let idx = msg.spans.iter().position(|&(_, end)| at < end).unwrap_or(0);
                let l = msg.line(idx);
                return Err(ParseError::new(
                    ErrorCode::DataTypeError,
                    Some(Location::segment(id_for_location(l), seq(idx + 1))),
                    format!("invalid UTF-8 at byte {at} although MSH-18 declares UNICODE UTF-8"),
                ));
            }
        }
        // Every charset decodes valid UTF-8 as it is, except Latin-1 beyond ASCII.
        msg.text = match text {
            Ok(t) if msg.charset != Charset::Latin1 || t.is_ascii() => t,
            _ => "",
        };
        Ok(msg)
    }

    fn line(&self, i: usize) -> &'a [u8] {
        self.spans
            .get(i)
            .and_then(|&(s, e)| self.input.get(s..e))
            .unwrap_or_default()
    }

    /// Parse only the first segment (MSH) of `bytes`, leniently (required
    /// fields and MSH-18 are not checked; text decodes as ASCII/UTF-8):
    /// enough to address an answer to a message that failed [`Message::parse`].
    pub fn parse_header_only(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let end = crate::scan::find_line_break(bytes).unwrap_or(bytes.len());
        Message::parse_with(bytes.get(..end).unwrap_or(bytes), false)
    }

    /// The delimiters declared in MSH-1/MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.delims
    }

    /// The character set declared in MSH-18.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Whether the input started with a UTF-8 byte order mark.
    pub fn has_bom(&self) -> bool {
        self.bom
    }

    /// The input bytes this message borrows.
    pub fn input(&self) -> &'a [u8] {
        self.input
    }

    /// Number of (non-blank) segments.
    pub fn segment_count(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    /// All segments in order (blank lines excluded).
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        (0..self.spans.len()).map(move |i| Segment {
            raw: self.line(i),
            delims: self.delims,
            charset: self.charset,
            text: self.text,
        })
    }

    /// The `occurrence`th (1-based) segment with the given id.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<Segment<'a>> {
        if occurrence == 0 || id.len() != 3 {
            return None;
        }
        self.segments()
            .filter(|s| s.raw().get(..3) == Some(id.as_bytes()))
            .nth(occurrence - 1)
    }

    /// The MSH segment.
    pub fn msh(&self) -> Option<Segment<'a>> {
        self.segments().next()
    }

    /// Decoded value at a textual path (`PID-5.1`); `Ok(None)` when absent or empty.
    pub fn get(&self, path: &str) -> Result<Option<Cow<'a, str>>, PathError> {
        let p: Path = path.parse()?;
        Ok(self.get_path(&p))
    }

    /// Decoded value (escapes and charset) at `path`; `None` when absent or empty.
    pub fn get_path(&self, path: &Path) -> Option<Cow<'a, str>> {
        let v = self.segment(&path.segment, path.occurrence)?.value(path)?;
        if v.raw.is_empty() {
            None
        } else {
            Some(v.decoded())
        }
    }

    /// Still-escaped bytes at `path`; `None` when absent, `Some(b"")` when present but empty.
    pub fn raw(&self, path: &Path) -> Option<&'a [u8]> {
        Some(
            self.segment(&path.segment, path.occurrence)?
                .value(path)?
                .raw,
        )
    }

    /// Decoded MSH fields.
    pub fn header(&self) -> Header<'a> {
        let msh = self.msh();
        let get = |field: usize, comp: Option<usize>| -> Option<Cow<'a, str>> {
            let f = msh?.field(field)?;
            let r = f.repetition(1)?;
            let v = match comp {
                Some(c) => r.component(c)?.value(),
                None => r.value(),
            };
            if v.raw.is_empty() {
                None
            } else {
                Some(v.decoded())
            }
        };
        Header {
            sending_application: get(3, Some(1)),
            sending_facility: get(4, Some(1)),
            receiving_application: get(5, Some(1)),
            receiving_facility: get(6, Some(1)),
            timestamp: get(7, Some(1)),
            message_code: get(9, Some(1)),
            trigger_event: get(9, Some(2)),
            message_structure: get(9, Some(3)),
            control_id: get(10, None),
            processing_id: get(11, Some(1)),
            version: get(12, Some(1)),
            accept_ack_type: get(15, None),
            application_ack_type: get(16, None),
            charset: get(18, Some(1)),
        }
    }

    /// The input bytes, unchanged: BOM, blank lines and each segment's own terminator included.
    pub fn encode(&self) -> Vec<u8> {
        self.input.to_vec()
    }

    /// An owned, editable copy.
    pub fn to_buf(&self) -> MessageBuf {
        MessageBuf::from_message(self)
    }
}

/// The commonly used MSH fields, decoded. Each is `None` when absent or empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header<'a> {
    /// MSH-3.1
    pub sending_application: Option<Cow<'a, str>>,
    /// MSH-4.1
    pub sending_facility: Option<Cow<'a, str>>,
    /// MSH-5.1
    pub receiving_application: Option<Cow<'a, str>>,
    /// MSH-6.1
    pub receiving_facility: Option<Cow<'a, str>>,
    /// MSH-7.1
    pub timestamp: Option<Cow<'a, str>>,
    /// MSH-9.1
    pub message_code: Option<Cow<'a, str>>,
    /// MSH-9.2
    pub trigger_event: Option<Cow<'a, str>>,
    /// MSH-9.3
    pub message_structure: Option<Cow<'a, str>>,
    /// MSH-10
    pub control_id: Option<Cow<'a, str>>,
    /// MSH-11.1
    pub processing_id: Option<Cow<'a, str>>,
    /// MSH-12.1
    pub version: Option<Cow<'a, str>>,
    /// MSH-15
    pub accept_ack_type: Option<Cow<'a, str>>,
    /// MSH-16
    pub application_ack_type: Option<Cow<'a, str>>,
    /// MSH-18.1
    pub charset: Option<Cow<'a, str>>,
}

impl Header<'_> {
    /// `CODE^TRIGGER` (e.g. `ADT^A01`), or just the code when there is no trigger event.
    pub fn message_type(&self) -> String {
        let code = self.message_code.as_deref().unwrap_or_default();
        match self.trigger_event.as_deref() {
            Some(t) => format!("{code}^{t}"),
            None => code.to_string(),
        }
    }
}

/// A located value: raw bytes plus what is needed to decode them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value<'a> {
    pub(crate) raw: &'a [u8],
    delims: Delimiters,
    charset: Charset,
    /// MSH-1 / MSH-2: never split, never unescaped.
    atomic: bool,
    /// Known to hold no escape character (set by [`crate::located`], which saw every byte), so
    /// decoding skips the search for one.
    pub(crate) plain: bool,
    /// The message's text (see [`Message`]), of which `raw` is a part; empty when unknown.
    text: &'a str,
}

impl<'a> Value<'a> {
    pub(crate) fn delims(&self) -> &Delimiters {
        &self.delims
    }

    pub(crate) fn is_atomic(&self) -> bool {
        self.atomic
    }

    /// A part of this value (`raw` lies within it), decoded the same way.
    pub(crate) fn part(&self, raw: &'a [u8], plain: bool) -> Value<'a> {
        Value {
            raw,
            plain,
            ..*self
        }
    }

    /// `raw` as text, borrowed from the message's text without validating it again.
    fn as_text(&self) -> Option<&'a str> {
        let offset = (self.raw.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        self.text.get(offset..offset.checked_add(self.raw.len())?)
    }

    fn decoded(&self) -> Cow<'a, str> {
        let plain =
            self.atomic || self.plain || !self.delims.escape.is_some_and(|e| self.raw.contains(&e));
        if plain {
            match self.as_text() {
                Some(t) => Cow::Borrowed(t),
                None => self.charset.decode(self.raw),
            }
        } else {
            unescape(self.raw, &self.delims, self.charset)
        }
    }

    fn piece(&self, sep: u8, n: usize) -> Option<Value<'a>> {
        if n == 0 {
            return None;
        }
        if self.atomic {
            return (n == 1).then_some(*self);
        }
        Some(Value {
            raw: nth_piece(self.raw, sep, n - 1)?,
            ..*self
        })
    }

    fn pieces(&self, sep: u8) -> impl Iterator<Item = Value<'a>> + 'a {
        let v = *self;
        let split_on = if v.atomic { None } else { Some(sep) };
        pieces(v.raw, split_on).map(move |raw| Value { raw, ..v })
    }
}

/// One segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    raw: &'a [u8],
    delims: Delimiters,
    charset: Charset,
    /// The message's text (see [`Message`]); empty when unknown.
    text: &'a str,
}

impl<'a> Segment<'a> {
    /// Wrap raw segment bytes (no terminator) decoded with the given delimiters and charset.
    pub fn new(raw: &'a [u8], delims: Delimiters, charset: Charset) -> Segment<'a> {
        Segment {
            raw,
            delims,
            charset,
            text: "",
        }
    }

    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'a str {
        self.raw
            .get(..3)
            .and_then(|id| std::str::from_utf8(id).ok())
            .unwrap_or_default()
    }

    /// The segment's bytes, without terminator.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    fn is_msh(&self) -> bool {
        self.raw.starts_with(b"MSH")
    }

    /// Append the offset of every field separator of this segment to `out`, then the
    /// segment's length: what [`Segment::located_field`] reads fields from.
    pub fn locate_fields(&self, out: &mut Vec<u32>) {
        push_offsets(self.raw, self.delims.field, out);
        out.push(self.raw.len() as u32);
    }

    /// Field `n` as [`Segment::field`] returns it, found through `seps`, this segment's
    /// [`Segment::locate_fields`] output, instead of by scanning.
    pub fn located_field(&self, seps: &[u32], n: usize) -> Option<Field<'a>> {
        let raw = self.raw;
        self.field_from(n, |k| {
            let start = match k {
                0 => 0,
                _ => *seps.get(k - 1)? as usize + 1,
            };
            raw.get(start..*seps.get(k)? as usize)
        })
    }

    /// Field `n` in HL7 numbering (MSH-1 is the field separator, MSH-2 the encoding characters);
    /// `None` when the segment has fewer fields.
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        let (raw, sep) = (self.raw, self.delims.field);
        self.field_from(n, |k| nth_piece(raw, sep, k))
    }

    /// Field `n`, given `piece(k)`: the `k`th (0-based) piece of the segment split on the field
    /// separator. MSH-1 is the separator itself and MSH-2 (piece 1) is never split; any other
    /// segment's field `n` is piece `n`.
    fn field_from(&self, n: usize, piece: impl Fn(usize) -> Option<&'a [u8]>) -> Option<Field<'a>> {
        let (raw, atomic) = if self.is_msh() {
            match n {
                0 => return None,
                1 => (self.raw.get(3..4)?, true),
                2 => (piece(1)?, true),
                _ => (piece(n - 1)?, false),
            }
        } else {
            if n == 0 {
                return None;
            }
            (piece(n)?, false)
        };
        Some(self.field_value(raw, atomic))
    }

    /// A field of this segment with these bytes.
    fn field_value(&self, raw: &'a [u8], atomic: bool) -> Field<'a> {
        Field(Value {
            raw,
            delims: self.delims,
            charset: self.charset,
            atomic,
            plain: false,
            text: self.text,
        })
    }

    /// Number of fields (HL7 numbering, so the highest valid `n` for [`Segment::field`]).
    pub fn field_count(&self) -> usize {
        let pieces = self.raw.iter().filter(|&&b| b == self.delims.field).count();
        if self.is_msh() {
            pieces + 1
        } else {
            pieces
        }
    }

    /// Fields 1..=[`Segment::field_count`], split in one pass (the same values as
    /// [`Segment::field`] for each `n`, without rescanning from the segment start).
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        let seg = *self;
        let value = move |raw: &'a [u8], atomic: bool| seg.field_value(raw, atomic);
        // MSH-1 is the separator itself and MSH-2 (piece 1) is never split; any other segment's
        // field n is piece n.
        let msh = self.is_msh();
        let msh1 = if msh { self.raw.get(3..4) } else { None };
        let sep = self.delims.field;
        msh1.map(move |raw| value(raw, true)).into_iter().chain(
            pieces(self.raw, Some(sep))
                .skip(1)
                .enumerate()
                .map(move |(i, raw)| value(raw, msh && i == 0)),
        )
    }

    /// The value addressed by `path`'s field/repetition/component/subcomponent (its segment
    /// and occurrence are ignored).
    pub(crate) fn value(&self, path: &Path) -> Option<Value<'a>> {
        let rep = self.field(path.field)?.repetition(path.repetition)?;
        let Some(c) = path.component else {
            return Some(rep.0);
        };
        let comp = rep.component(c)?;
        match path.subcomponent {
            Some(s) => Some(comp.subcomponent(s)?.0),
            None => Some(comp.0),
        }
    }

    /// Decoded value at `path` within this segment; `None` when absent or empty.
    pub fn get(&self, path: &Path) -> Option<Cow<'a, str>> {
        let v = self.value(path)?;
        if v.raw.is_empty() {
            None
        } else {
            Some(v.decoded())
        }
    }
}

macro_rules! value_accessors {
    () => {
        /// Still-escaped bytes.
        pub fn raw(&self) -> &'a [u8] {
            self.0.raw
        }

        /// Text with escapes and charset decoded (MSH-1/MSH-2 are never unescaped).
        pub fn decoded(&self) -> Cow<'a, str> {
            self.0.decoded()
        }

        /// Whether the value is empty.
        pub fn is_empty(&self) -> bool {
            self.0.raw.is_empty()
        }

        #[allow(dead_code)]
        pub(crate) fn value(&self) -> Value<'a> {
            self.0
        }
    };
}

/// One field (all its repetitions).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a>(Value<'a>);

impl<'a> Field<'a> {
    value_accessors!();

    /// Repetition `i` (1-based).
    pub fn repetition(&self, i: usize) -> Option<Repetition<'a>> {
        self.0.piece(self.0.delims.repetition, i).map(Repetition)
    }

    /// All repetitions.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        self.0.pieces(self.0.delims.repetition).map(Repetition)
    }

    /// Component `j` of the first repetition.
    pub fn component(&self, j: usize) -> Option<Component<'a>> {
        self.repetition(1)?.component(j)
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a>(pub(crate) Value<'a>);

impl<'a> Repetition<'a> {
    value_accessors!();

    /// Component `j` (1-based).
    pub fn component(&self, j: usize) -> Option<Component<'a>> {
        self.0.piece(self.0.delims.component, j).map(Component)
    }

    /// All components.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + 'a {
        self.0.pieces(self.0.delims.component).map(Component)
    }
}

/// One component.
#[derive(Debug, Clone, Copy)]
pub struct Component<'a>(pub(crate) Value<'a>);

impl<'a> Component<'a> {
    value_accessors!();

    /// Subcomponent `k` (1-based).
    pub fn subcomponent(&self, k: usize) -> Option<Subcomponent<'a>> {
        self.0
            .piece(self.0.delims.subcomponent, k)
            .map(Subcomponent)
    }

    /// All subcomponents.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + 'a {
        self.0.pieces(self.0.delims.subcomponent).map(Subcomponent)
    }
}

/// One subcomponent.
#[derive(Debug, Clone, Copy)]
pub struct Subcomponent<'a>(Value<'a>);

impl<'a> Subcomponent<'a> {
    value_accessors!();
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
