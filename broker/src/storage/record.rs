//! The record envelope stored as a topic entry's value.
//!
//! Layout: one version byte, then the record. Version 2 ([`RECORD_VERSION`],
//! written by this build) is the compact layout of [`super::compact`];
//! version 1 ([`LEGACY_VERSION`], still read) is bincode 2 (`legacy()`
//! config) of [`Record`], the wire protocol's layout. The version byte lets a
//! later medbus read what an earlier one wrote; decoding is always
//! size-limited so that a corrupt or hostile value cannot make us allocate
//! without bound.

use super::compact::{self, Compact};
use bincode::{Decode, Encode};

/// Version of the envelope written by this build (compact).
pub const RECORD_VERSION: u8 = 2;

/// The first envelope version (the wire layout), still read.
pub const LEGACY_VERSION: u8 = 1;

/// Largest encoded record accepted on decode: the biggest frame a listener
/// may accept (64 MiB) plus generous room for headers.
pub const MAX_RECORD_BYTES: usize = 65 << 20;

type Limited = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
>;

fn config() -> Limited {
    bincode::config::legacy().with_limit::<MAX_RECORD_BYTES>()
}

/// One stored message with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Record {
    /// When the broker received it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Metadata (listener, peer, message type, …) as ordered pairs; see
    /// [`crate::headers`] for the names medbus writes.
    pub headers: Vec<(String, String)>,
    /// MIME type of `payload`, e.g. [`crate::headers::CONTENT_TYPE_HL7`].
    pub content_type: String,
    /// The message bytes exactly as received.
    pub payload: Vec<u8>,
}

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The value was empty.
    #[error("empty record value")]
    Empty,
    /// Written by a newer (or unknown) envelope version.
    #[error("unsupported record version {0}")]
    Version(u8),
    /// The bytes are not a valid envelope (or exceed the size limit).
    #[error("corrupt record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes are not a valid compact envelope.
    #[error("corrupt record: {0}")]
    Compact(#[from] compact::CompactError),
}

impl Record {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Encode as a versioned envelope.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(self.payload.len() + 256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Append the versioned envelope to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        envelope_into(&compact::SharedHeaders::default(), self, out);
        Ok(())
    }

    /// Decode a versioned envelope (either version), refusing anything over
    /// the size limit.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        match Envelope::of(bytes)? {
            Envelope::Legacy(body) => Ok(bincode::decode_from_slice(body, config())?.0),
            Envelope::Compact(c) => Ok(c.to_record()),
        }
    }
}

/// Append the envelope this build writes: the version byte, then the
/// compact body of a record whose headers are `shared`, then its own.
fn envelope_into(shared: &compact::SharedHeaders, record: &Record, out: &mut Vec<u8>) {
    out.reserve(record.payload.len() + 256);
    out.push(RECORD_VERSION);
    compact::encode_shared(shared, record, out);
}

/// A stored value, its version told apart.
enum Envelope<'a> {
    /// Version 1: the wire layout, as bincode checks it on decode.
    Legacy(&'a [u8]),
    /// Version 2, checked from end to end.
    Compact(Compact<'a>),
}

impl<'a> Envelope<'a> {
    fn of(bytes: &'a [u8]) -> Result<Envelope<'a>, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES + 1 {
            return Err(RecordError::Decode(
                bincode::error::DecodeError::LimitExceeded,
            ));
        }
        match bytes.split_first().ok_or(RecordError::Empty)? {
            (&LEGACY_VERSION, body) => Ok(Envelope::Legacy(body)),
            (&RECORD_VERSION, body) => Ok(Envelope::Compact(Compact::parse(body)?)),
            (&v, _) => Err(RecordError::Version(v)),
        }
    }
}

/// A record encoded on the thread that submits it, so that the serial
/// committer only frames bytes (and the record's many small allocations are
/// freed where they were made). The payload, which ends the envelope, is
/// moved in rather than copied after the head: the committer copies both
/// into the frame once (a route's FHIR outputs are tens of KiB a message).
#[derive(Debug)]
pub(crate) struct EncodedRecord {
    /// The versioned envelope ([`Record::encode`]) up to the payload.
    head: Vec<u8>,
    /// The payload bytes that end the envelope.
    payload: Vec<u8>,
}

impl EncodedRecord {
    /// Encode `record`; its payload must stay under 4 GiB.
    pub fn new(record: Record) -> Result<EncodedRecord, super::StorageError> {
        Self::with_shared(&compact::SharedHeaders::default(), record)
    }

    /// Encode a record whose headers are `shared`, then `record`'s own.
    pub(crate) fn with_shared(
        shared: &compact::SharedHeaders,
        mut record: Record,
    ) -> Result<EncodedRecord, super::StorageError> {
        let mut head = Vec::new();
        head_into(shared, compact::Parts::of(&record), &mut head)?;
        Ok(EncodedRecord {
            head,
            payload: std::mem::take(&mut record.payload),
        })
    }

    /// Encode a record given by its parts (headers `shared`, then
    /// `parts.headers`), its payload `payload`.
    pub(crate) fn from_parts<K: AsRef<str>, V: AsRef<str>>(
        shared: &compact::SharedHeaders,
        parts: compact::Parts<'_, K, V>,
        payload: Vec<u8>,
    ) -> Result<EncodedRecord, super::StorageError> {
        let mut head = Vec::new();
        head_into(shared, parts, &mut head)?;
        Ok(EncodedRecord { head, payload })
    }

    /// Tests: a value stored as given, bypassing the encoder.
    #[cfg(test)]
    pub(crate) fn verbatim(envelope: Vec<u8>) -> EncodedRecord {
        EncodedRecord {
            head: envelope,
            payload: Vec::new(),
        }
    }

    /// Length of the record's payload (what retention and metrics count);
    /// under 4 GiB, checked when encoded.
    pub fn payload_len(&self) -> u32 {
        self.payload.len() as u32
    }

    /// Bytes of the whole envelope.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// Append the whole envelope to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.payload);
    }

    /// The whole envelope, as stored.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// The envelope up to the payload (version byte, compact head) into
/// `head`; the payload must stay under 4 GiB.
fn head_into<K: AsRef<str>, V: AsRef<str>>(
    shared: &compact::SharedHeaders,
    parts: compact::Parts<'_, K, V>,
    head: &mut Vec<u8>,
) -> Result<(), super::StorageError> {
    u32::try_from(parts.payload_len)
        .map_err(|_| super::StorageError::Record("payload over 4 GiB".into()))?;
    head.reserve(64 + shared.len() + 24 * parts.headers.len());
    head.push(RECORD_VERSION);
    compact::encode_head_parts(shared, parts, head);
    Ok(())
}

/// A stored record as it is on disk, not decoded: what a subscriber's
/// delivery is written from (it lays itself out in the protocol's `Record`
/// layout, [`medbus_protocol::WireRecord`]). Cheap to clone (shares the
/// bytes read).
#[derive(Debug, Clone)]
pub struct RawRecord(bytes::Bytes);

impl RawRecord {
    /// Wrap a stored value as it is: [`Self::check`] and [`Self::decode`]
    /// refuse an empty or malformed one, or an envelope version this build
    /// cannot read, so each reader decides what to do with it (a route
    /// dead-letters it).
    pub(crate) fn new(value: bytes::Bytes) -> RawRecord {
        RawRecord(value)
    }

    /// Whether this build can read the envelope (before writing it out as
    /// a delivery): a compact one is checked from end to end.
    pub fn check(&self) -> Result<(), RecordError> {
        Envelope::of(&self.0).map(|_| ())
    }

    /// Decode it.
    pub fn decode(&self) -> Result<Record, RecordError> {
        Record::decode(&self.0)
    }

    /// The envelope as stored (version byte included).
    pub(crate) fn stored(&self) -> &[u8] {
        &self.0
    }

    /// Read it in place: its headers and payload borrowed from the stored
    /// bytes, for a reader that looks at a few headers of many records (a
    /// version 1 envelope is decoded).
    pub fn view(&self) -> Result<RecordView<'_>, RecordError> {
        match Envelope::of(&self.0)? {
            Envelope::Compact(c) => Ok(RecordView(View::Compact(c))),
            Envelope::Legacy(body) => Ok(RecordView(View::Decoded(std::borrow::Cow::Owned(
                bincode::decode_from_slice(body, config())?.0,
            )))),
        }
    }
}

/// A stored record read in place ([`RawRecord::view`]), or a record already
/// decoded seen the same way.
pub struct RecordView<'a>(View<'a>);

enum View<'a> {
    Compact(Compact<'a>),
    Decoded(std::borrow::Cow<'a, Record>),
}

impl<'a> From<&'a Record> for RecordView<'a> {
    fn from(r: &'a Record) -> RecordView<'a> {
        RecordView(View::Decoded(std::borrow::Cow::Borrowed(r)))
    }
}

impl RecordView<'_> {
    /// When it was stored (Unix ms).
    pub fn timestamp_ms(&self) -> u64 {
        match &self.0 {
            View::Compact(c) => c.timestamp_ms,
            View::Decoded(r) => r.timestamp_ms,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (compact, decoded) = match &self.0 {
            View::Compact(c) => (Some(c.headers()), None),
            View::Decoded(r) => (None, Some(r.headers.iter())),
        };
        compact.into_iter().flatten().chain(
            decoded
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        match &self.0 {
            View::Compact(c) => c.content_type,
            View::Decoded(r) => &r.content_type,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        match &self.0 {
            View::Compact(c) => c.payload,
            View::Decoded(r) => &r.payload,
        }
    }

    /// The record, owned.
    pub fn to_record(&self) -> Record {
        match &self.0 {
            View::Compact(c) => c.to_record(),
            View::Decoded(r) => r.clone().into_owned(),
        }
    }
}

impl medbus_protocol::WireRecord for RawRecord {
    /// The wire layout: a version 1 body is already in it; a compact one is
    /// laid out as it is written, without building a [`Record`]. A value
    /// that does not parse (only after [`RawRecord::check`] said it would
    /// not) is an encoding error, never a panic.
    fn write_wire(
        &self,
        out: &mut dyn bincode::enc::write::Writer,
    ) -> Result<(), bincode::error::EncodeError> {
        match self.0.split_first() {
            Some((&LEGACY_VERSION, body)) => out.write(body),
            Some((&RECORD_VERSION, body)) => compact::write_wire(body, out),
            _ => Err(bincode::error::EncodeError::OtherString(
                "stored record of an unknown envelope version".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record {
            timestamp_ms: 1_700_000_000_000,
            headers: vec![("a".into(), "b".into())],
            content_type: "text/plain".into(),
            payload: b"MSH|^~\\&|\r".to_vec(),
        };
        let bytes = r.encode().expect("encode");
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(Record::decode(&bytes).expect("decode"), r);
        // What an earlier medbus wrote is still read.
        let mut legacy = vec![LEGACY_VERSION];
        legacy.extend(bincode::encode_to_vec(&r, bincode::config::legacy()).expect("v1"));
        assert_eq!(Record::decode(&legacy).expect("decode v1"), r);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(Record::decode(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            Record::decode(&[9, 1, 2]),
            Err(RecordError::Version(9))
        ));
        // A length prefix claiming 2^60 bytes must be refused, not allocated.
        let mut v = vec![RECORD_VERSION, 0, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(Record::decode(&v).is_err());
    }
}
