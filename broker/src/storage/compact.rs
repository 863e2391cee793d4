//! The compact record envelope (version 2): what a record costs on disk.
//!
//! Version 1 stored a record in the wire protocol's layout (bincode's
//! `legacy()` config): every string behind an 8-byte length, every header
//! name spelt out. A FHIR resource routed from an HL7 message carries some
//! fifteen headers, so that was ~700 bytes of envelope around a resource of
//! about the same size, written twice (journal, segment), for every resource
//! of every message. Version 2 writes lengths as LEB128 varints and the
//! header names medbus itself writes ([`crate::headers`]) as one-byte codes:
//!
//! ```text
//! timestamp_ms   u64 little-endian
//! header count   varint
//! per header     key (varint code: 0 = a name follows as varint length +
//!                UTF-8 bytes; n = KNOWN_KEYS[n - 1]), value (varint length +
//!                UTF-8 bytes)
//! content type   varint code (0 = literal as above; n = KNOWN_CONTENT_TYPES[n - 1])
//! payload        varint length + bytes, which end the envelope exactly
//! ```
//!
//! The code tables are part of the format: entries are only ever appended.
//! A delivery is written in the wire layout straight from these bytes
//! ([`write_wire`]), without building a [`Record`].

use super::record::Record;
use crate::headers;
use bincode::enc::write::Writer;
use bincode::error::EncodeError;

/// Defines the header-name table and its reverse lookup from one list, so
/// the two cannot disagree. Codes are explicit: the table is on disk.
macro_rules! known_keys {
    ($($code:literal => $name:path),* $(,)?) => {
        /// Header names written as one-byte codes: `KNOWN_KEYS[code - 1]`.
        pub(crate) const KNOWN_KEYS: &[&str] = &[$($name),*];

        /// The code of a header name in [`KNOWN_KEYS`].
        fn key_code(name: &str) -> Option<u64> {
            match name {
                $($name => Some($code),)*
                _ => None,
            }
        }
    };
}

known_keys! {
    1 => headers::LISTENER,
    2 => headers::CLIENT,
    3 => headers::PEER,
    4 => headers::ERROR,
    5 => headers::SOURCE,
    6 => headers::MESSAGE_TYPE,
    7 => headers::CONTROL_ID,
    8 => headers::SENDING_APPLICATION,
    9 => headers::SENDING_FACILITY,
    10 => headers::RECEIVING_APPLICATION,
    11 => headers::RECEIVING_FACILITY,
    12 => headers::VERSION,
    13 => headers::ROUTE,
    14 => headers::HOPS,
    15 => headers::SOURCE_TOPIC,
    16 => headers::SOURCE_OFFSET,
    17 => headers::FHIR_RESOURCE_TYPE,
    18 => headers::FHIR_ID,
    19 => headers::FHIR_PARTIAL,
    20 => headers::FHIR_DELETED,
    21 => headers::FHIR_INTERACTION,
    22 => headers::REPLAYED,
}

/// Content types written as one-byte codes: `KNOWN_CONTENT_TYPES[code - 1]`.
pub(crate) const KNOWN_CONTENT_TYPES: &[&str] = &[
    headers::CONTENT_TYPE_HL7,
    headers::CONTENT_TYPE_FHIR,
    headers::CONTENT_TYPE_RAW,
];

/// Why bytes are not a version 2 envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// It ends before a field it announces.
    #[error("envelope cut short")]
    Truncated,
    /// A varint longer than 64 bits.
    #[error("malformed length")]
    Varint,
    /// A code that is in none of the tables.
    #[error("unknown code {0}")]
    Code(u64),
    /// A header name or value, or the content type, is not UTF-8.
    #[error("text is not UTF-8")]
    Utf8,
    /// Bytes after the payload.
    #[error("{0} bytes after the payload")]
    Trailing(usize),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A name: its table code, or 0 and the literal (read by [`Cursor::name`]).
fn put_name(out: &mut Vec<u8>, code: Option<u64>, name: &str) {
    match code {
        Some(code) => put_varint(out, code),
        None => {
            out.push(0);
            put_text(out, name);
        }
    }
}

fn put_headers<K: AsRef<str>, V: AsRef<str>>(out: &mut Vec<u8>, headers: &[(K, V)]) {
    for (k, v) in headers {
        let k = k.as_ref();
        put_name(out, key_code(k), k);
        put_text(out, v.as_ref());
    }
}

/// Headers that many records carry first (a route's outputs of one source
/// record), encoded once and copied into each envelope.
#[derive(Debug, Default)]
pub(crate) struct SharedHeaders {
    count: u64,
    block: Vec<u8>,
}

impl SharedHeaders {
    pub fn new<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> SharedHeaders {
        let mut block = Vec::with_capacity(headers.len() * 24);
        put_headers(&mut block, headers);
        SharedHeaders {
            count: headers.len() as u64,
            block,
        }
    }

    /// Bytes of the encoded block.
    pub fn len(&self) -> usize {
        self.block.len()
    }
}

/// Append the version 2 body of a record whose headers are `shared`, then
/// `record`'s own.
pub(crate) fn encode_shared(shared: &SharedHeaders, record: &Record, out: &mut Vec<u8>) {
    encode_head_parts(shared, Parts::of(record), out);
    out.extend_from_slice(&record.payload);
}

/// What a head is written from, borrowed (a record need not be built).
pub(crate) struct Parts<'a, K, V> {
    pub timestamp_ms: u64,
    /// The record's own headers, after the shared ones.
    pub headers: &'a [(K, V)],
    pub content_type: &'a str,
    pub payload_len: usize,
}

impl<'a> Parts<'a, String, String> {
    /// The parts of `record`.
    pub fn of(record: &'a Record) -> Self {
        Parts {
            timestamp_ms: record.timestamp_ms,
            headers: &record.headers,
            content_type: &record.content_type,
            payload_len: record.payload.len(),
        }
    }
}

/// The body up to and including the payload's length, from borrowed parts:
/// the payload bytes that end it are left for the caller to write after it.
pub(crate) fn encode_head_parts<K: AsRef<str>, V: AsRef<str>>(
    shared: &SharedHeaders,
    parts: Parts<'_, K, V>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&parts.timestamp_ms.to_le_bytes());
    put_varint(out, shared.count + parts.headers.len() as u64);
    out.extend_from_slice(&shared.block);
    put_headers(out, parts.headers);
    let ct = parts.content_type;
    let code = KNOWN_CONTENT_TYPES.iter().position(|c| *c == ct);
    put_name(out, code.map(|i| i as u64 + 1), ct);
    put_varint(out, parts.payload_len as u64);
}

/// A reader over an envelope's bytes; every length is checked against what
/// is left, so nothing is allocated on a length's say-so.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        if n > self.0.len() {
            return Err(CompactError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, CompactError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or(CompactError::Truncated)?;
            self.0 = rest;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CompactError::Varint);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CompactError::Varint)
    }

    fn len(&mut self) -> Result<usize, CompactError> {
        usize::try_from(self.varint()?).map_err(|_| CompactError::Truncated)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CompactError> {
        let n = self.len()?;
        self.take(n)
    }

    fn text(&mut self) -> Result<&'a str, CompactError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CompactError::Utf8)
    }

    /// A name's bytes: a table code, or 0 and the literal (not checked for
    /// UTF-8: [`Cursor::name`] does).
    fn name_bytes(&mut self, table: &[&'static str]) -> Result<&'a [u8], CompactError> {
        match self.varint()? {
            0 => self.bytes(),
            code => usize::try_from(code - 1)
                .ok()
                .and_then(|i| table.get(i))
                .map(|n| n.as_bytes())
                .ok_or(CompactError::Code(code)),
        }
    }

    /// A name: a table code, or 0 and the literal.
    fn name(&mut self, table: &[&'static str]) -> Result<&'a str, CompactError> {
        std::str::from_utf8(self.name_bytes(table)?).map_err(|_| CompactError::Utf8)
    }
}

/// Write a version 2 `body` in the wire protocol's layout — `legacy()`
/// bincode of a `Record`: u64 little-endian lengths before every string and
/// sequence — in one pass, without building a [`Record`]. The texts are not
/// checked for UTF-8 again: [`Compact::parse`] did when the record was read
/// for delivery ([`super::RawRecord::check`]).
pub(crate) fn write_wire(body: &[u8], out: &mut dyn Writer) -> Result<(), EncodeError> {
    let bad = |e: CompactError| EncodeError::OtherString(format!("stored record: {e}"));
    let mut c = Cursor(body);
    // Everything before the payload is laid out in `head` and written in few
    // pieces (many small writes through the frame writer cost more than the
    // copy). A damaged value with millions of empty headers would grow ~20x
    // in this layout: `head` is flushed every 64 KiB and the whole refused
    // once it outgrows a frame.
    let mut head = Vec::with_capacity(body.len().min(1024) + 64);
    let mut written = 0usize;
    let mut flush = |head: &mut Vec<u8>, out: &mut dyn Writer| {
        written += head.len();
        if written > medbus_protocol::frame::MAX_FRAME {
            return Err(EncodeError::OtherString(
                "stored record does not fit in a frame".into(),
            ));
        }
        out.write(head)?;
        head.clear();
        Ok(())
    };
    fn sized(head: &mut Vec<u8>, b: &[u8]) {
        head.extend_from_slice(&(b.len() as u64).to_le_bytes());
        head.extend_from_slice(b);
    }
    head.extend_from_slice(c.take(8).map_err(bad)?);
    let count = c.varint().map_err(bad)?;
    head.extend_from_slice(&count.to_le_bytes());
    for _ in 0..count {
        sized(&mut head, c.name_bytes(KNOWN_KEYS).map_err(bad)?);
        sized(&mut head, c.bytes().map_err(bad)?);
        if head.len() >= 64 << 10 {
            flush(&mut head, out)?;
        }
    }
    sized(&mut head, c.name_bytes(KNOWN_CONTENT_TYPES).map_err(bad)?);
    let payload = c.bytes().map_err(bad)?;
    if !c.0.is_empty() {
        return Err(bad(CompactError::Trailing(c.0.len())));
    }
    head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    flush(&mut head, out)?;
    out.write(payload)
}

/// A checked version 2 envelope body, borrowed: the headers stay encoded
/// and are walked again by whoever needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compact<'a> {
    pub timestamp_ms: u64,
    header_count: u64,
    /// The encoded headers.
    headers: &'a [u8],
    pub content_type: &'a str,
    pub payload: &'a [u8],
}

impl<'a> Compact<'a> {
    /// Check `body` (after the version byte) from end to end.
    pub fn parse(body: &'a [u8]) -> Result<Compact<'a>, CompactError> {
        let mut c = Cursor(body);
        let timestamp = c.take(8)?;
        let timestamp_ms = u64::from_le_bytes(timestamp.try_into().unwrap_or_default());
        let header_count = c.varint()?;
        let start = c.0;
        for _ in 0..header_count {
            c.name(KNOWN_KEYS)?;
            c.text()?;
        }
        let headers = start.get(..start.len() - c.0.len()).unwrap_or_default();
        let content_type = c.name(KNOWN_CONTENT_TYPES)?;
        let n = c.len()?;
        let payload = c.take(n)?;
        if !c.0.is_empty() {
            return Err(CompactError::Trailing(c.0.len()));
        }
        Ok(Compact {
            timestamp_ms,
            header_count,
            headers,
            content_type,
            payload,
        })
    }

    /// The headers, in order (already checked by [`Compact::parse`]).
    pub fn headers(self) -> Headers<'a> {
        Headers {
            cursor: Cursor(self.headers),
            left: self.header_count,
        }
    }

    /// The record, owned.
    pub fn to_record(self) -> Record {
        Record {
            timestamp_ms: self.timestamp_ms,
            headers: self
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: self.content_type.to_string(),
            payload: self.payload.to_vec(),
        }
    }
}

/// The headers of a [`Compact`] envelope, walked in place.
pub(crate) struct Headers<'a> {
    cursor: Cursor<'a>,
    left: u64,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = self.cursor.name(KNOWN_KEYS).ok()?;
        let value = self.cursor.text().ok()?;
        Some((key, value))
    }
}

/// Tests: a writer that keeps what it is given (a delivery's bytes).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Kept(pub Vec<u8>);

#[cfg(test)]
impl Writer for Kept {
    fn write(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.0.extend_from_slice(b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn routed() -> Record {
        Record {
            timestamp_ms: 1_764_000_000_123,
            headers: vec![
                (headers::CONTROL_ID.into(), "MSG00001".into()),
                ("x-site".into(), "north".into()),
                (headers::FHIR_RESOURCE_TYPE.into(), "Patient".into()),
                (headers::FHIR_ID.into(), "0f0e-ü".into()),
            ],
            content_type: headers::CONTENT_TYPE_FHIR.into(),
            payload: br#"{"resourceType":"Patient"}"#.to_vec(),
        }
    }

    fn encode(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        encode_shared(&SharedHeaders::default(), r, &mut out);
        out
    }

    #[test]
    fn the_layout_is_pinned() {
        // The code tables are on disk: moving an entry breaks every data
        // directory written before. This test fails if one moves.
        let r = Record {
            timestamp_ms: 1,
            headers: vec![
                (headers::LISTENER.into(), "a".into()),
                (headers::REPLAYED.into(), "true".into()),
                ("z".into(), "".into()),
            ],
            content_type: headers::CONTENT_TYPE_RAW.into(),
            payload: vec![0xAB; 200],
        };
        let mut want = vec![1, 0, 0, 0, 0, 0, 0, 0, 3];
        want.extend_from_slice(&[1, 1, b'a']);
        want.extend_from_slice(&[22, 4, b't', b'r', b'u', b'e']);
        want.extend_from_slice(&[0, 1, b'z', 0]);
        want.extend_from_slice(&[3, 200, 1]);
        want.extend_from_slice(&[0xAB; 200]);
        assert_eq!(encode(&r), want);
        for (i, name) in KNOWN_KEYS.iter().enumerate() {
            assert_eq!(key_code(name), Some(i as u64 + 1), "{name}");
        }
        // The names too: renaming a header constant would rename it in
        // every record already stored.
        assert_eq!(
            KNOWN_KEYS,
            [
                "medbus.listener",
                "medbus.client",
                "medbus.peer",
                "medbus.error",
                "medbus.source",
                "hl7.message_type",
                "hl7.control_id",
                "hl7.sending_application",
                "hl7.sending_facility",
                "hl7.receiving_application",
                "hl7.receiving_facility",
                "hl7.version",
                "medbus.route",
                "medbus.hops",
                "medbus.source_topic",
                "medbus.source_offset",
                "fhir.resource_type",
                "fhir.id",
                "fhir.partial",
                "fhir.deleted",
                "fhir.interaction",
                "medbus.replayed",
            ]
        );
        assert_eq!(
            KNOWN_CONTENT_TYPES,
            [
                "application/hl7-v2+er7",
                "application/fhir+json",
                "application/octet-stream"
            ]
        );
    }

    #[test]
    fn shared_headers_come_first() {
        let mut r = routed();
        let own = r.headers.split_off(2);
        let shared = SharedHeaders::new(&r.headers);
        let mut out = Vec::new();
        encode_shared(
            &shared,
            &Record {
                headers: own,
                ..routed()
            },
            &mut out,
        );
        assert_eq!(out, encode(&routed()));
    }

    #[test]
    fn round_trip_and_smaller_than_the_wire_layout() {
        let r = routed();
        let bytes = encode(&r);
        let c = Compact::parse(&bytes).expect("parses");
        assert_eq!(c.to_record(), r);
        let wire = bincode::encode_to_vec(&r, bincode::config::legacy()).expect("wire");
        assert!(
            bytes.len() + 60 < wire.len(),
            "{} vs {}",
            bytes.len(),
            wire.len()
        );
    }

    #[test]
    fn a_delivery_is_written_byte_for_byte_in_the_wire_layout() {
        for r in [
            routed(),
            Record {
                timestamp_ms: 0,
                headers: Vec::new(),
                content_type: "text/x-custom".into(),
                payload: Vec::new(),
            },
        ] {
            let bytes = encode(&r);
            let mut out = bincode::enc::write::SizeWriter::default();
            let mut written = Kept::default();
            write_wire(&bytes, &mut written).expect("written");
            write_wire(&bytes, &mut out).expect("sized");
            let wire = bincode::encode_to_vec(&r, bincode::config::legacy()).expect("wire");
            assert_eq!(written.0, wire);
            assert_eq!(out.bytes_written, wire.len());
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let bytes = encode(&routed());
        for cut in 0..bytes.len() {
            assert!(Compact::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Compact::parse(&trailing).err(),
            Some(CompactError::Trailing(1))
        );
        let mut unknown = bytes.clone();
        unknown[9] = 99; // the first header's key code
        assert_eq!(Compact::parse(&unknown).err(), Some(CompactError::Code(99)));
        // A varint running past 64 bits.
        let mut long = vec![0; 8];
        long.extend_from_slice(&[0xff; 11]);
        assert_eq!(Compact::parse(&long).err(), Some(CompactError::Varint));
        // A length claiming far more than there is allocates nothing.
        let mut huge = vec![0; 8];
        huge.extend_from_slice(&[1, 0]);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(Compact::parse(&huge).err(), Some(CompactError::Truncated));
    }

    #[test]
    fn a_value_too_large_for_a_frame_is_refused_not_laid_out() {
        // Millions of empty literal headers: 3 bytes each stored, ~17 in
        // the wire layout.
        let n = (medbus_protocol::frame::MAX_FRAME / 16) as u64 + 1;
        let mut v = vec![0; 8];
        put_varint(&mut v, n);
        for _ in 0..n {
            v.extend_from_slice(&[0, 0, 0]);
        }
        v.extend_from_slice(&[1, 0]);
        assert!(Compact::parse(&v).is_ok());
        let mut sized = bincode::enc::write::SizeWriter::default();
        assert!(write_wire(&v, &mut sized).is_err());
        assert!(sized.bytes_written <= medbus_protocol::frame::MAX_FRAME);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let parsed = Compact::parse(&input);
            let wire = write_wire(&input, &mut Kept::default());
            // What the read check accepts, a delivery can lay out.
            prop_assert!(parsed.is_err() || wire.is_ok());
            if let Ok(c) = parsed {
                let r = c.to_record();
                prop_assert_eq!(Compact::parse(&encode(&r)).map(|c| c.to_record()).ok(), Some(r));
            }
        }

        #[test]
        fn any_record_round_trips(
            ts in any::<u64>(),
            headers in proptest::collection::vec((".{0,12}", ".{0,12}"), 0..6),
            known in proptest::collection::vec(0usize..KNOWN_KEYS.len(), 0..4),
            ct in prop_oneof![Just(headers::CONTENT_TYPE_HL7.to_string()), ".{0,20}"],
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut hs = headers;
            for k in known {
                hs.push((KNOWN_KEYS[k].to_string(), "v".into()));
            }
            let r = Record { timestamp_ms: ts, headers: hs, content_type: ct, payload };
            let bytes = encode(&r);
            let c = Compact::parse(&bytes).expect("parses");
            prop_assert_eq!(c.to_record(), r.clone());
            let mut laid = Kept::default();
            write_wire(&bytes, &mut laid).expect("laid out");
            let wire = bincode::encode_to_vec(&r, bincode::config::legacy()).expect("wire");
            prop_assert_eq!(laid.0, wire);
        }
    }
}
