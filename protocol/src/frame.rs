//! The wire format, and nothing else: how one message becomes bytes and back.
//!
//! ```text
//! +----------------+---------+--------------------------------------+
//! | length: u32 BE | version | body: bincode 2, legacy() config     |
//! +----------------+---------+--------------------------------------+
//!   counts version + body     FRAME_VERSION
//! ```
//!
//! `length` counts the version byte and the body (never the 4 length bytes
//! themselves), so a frame occupies `4 + length` bytes. Decoding refuses a
//! length over the reader's frame cap as soon as the 4 length bytes are in,
//! before any body byte is buffered, and decodes the body under a bincode
//! size limit of the frame cap (rounded up to a power of two, because
//! bincode's limit is a compile-time constant), so a body can never make us
//! allocate more than that, whatever lengths it claims inside.
//!
//! [`FrameError::Incomplete`] means "not enough bytes yet": the caller reads
//! more and tries again. Every other error is bad input.

use bincode::{Decode, Encode};

/// The frame format version this build reads and writes.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Smallest frame cap: below this not even a Hello with a token fits.
pub const MIN_FRAME: usize = 4 << 10;

/// Largest frame cap anyone may configure: a delivery must carry the largest
/// record medbus stores (64 MiB from an MLLP listener) plus its headers.
pub const MAX_FRAME: usize = 66 << 20;

/// Why bytes are not (yet) a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed; not an error in the input.
    #[error("incomplete frame")]
    Incomplete,
    /// The length prefix is over the cap; the stream cannot be trusted.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the frame claims.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// A length of zero: not even a version byte.
    #[error("empty frame")]
    Empty,
    /// A version byte this build does not speak.
    #[error("unsupported frame version {0} (this build speaks {FRAME_VERSION})")]
    Version(u8),
    /// The body is not a valid message (unknown variant, bad UTF-8, a length
    /// that runs past the frame, over the size limit).
    #[error("undecodable frame body: {0}")]
    Decode(String),
    /// The body decoded but left bytes over.
    #[error("frame body has {0} trailing bytes")]
    Trailing(usize),
    /// Encoding failed (a message over the cap).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

impl FrameError {
    /// Whether more bytes may turn this into a frame.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, FrameError::Incomplete)
    }

    /// A short, fixed label (metrics: `protocol_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Incomplete => "incomplete",
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::Empty => "empty_frame",
            FrameError::Version(_) => "bad_version",
            FrameError::Decode(_) | FrameError::Trailing(_) => "undecodable",
            FrameError::Encode(_) => "encode",
        }
    }
}

/// The length of the frame at the start of `buf` (version + body), checked
/// against `max`; `Incomplete` until all of it has arrived.
pub fn check(buf: &[u8], max: usize) -> Result<usize, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Err(FrameError::Incomplete);
    };
    let mut len_bytes = [0u8; LENGTH_BYTES];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < LENGTH_BYTES + len {
        return Err(FrameError::Incomplete);
    }
    Ok(len)
}

/// Decode the frame at the start of `buf`; returns the message and the bytes
/// it occupied (to be consumed by the caller).
pub fn parse<T: Decode<()>>(buf: &[u8], max: usize) -> Result<(T, usize), FrameError> {
    let len = check(buf, max)?;
    let frame = buf
        .get(LENGTH_BYTES..LENGTH_BYTES + len)
        .ok_or(FrameError::Incomplete)?;
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let (msg, used) = decode_body::<T>(body, max)?;
    if used != body.len() {
        return Err(FrameError::Trailing(body.len() - used));
    }
    Ok((msg, LENGTH_BYTES + len))
}

/// A buffer frames are appended to: `Vec<u8>`, or the `BytesMut` of a
/// codec (encoding straight into it saves a copy of every frame).
pub trait FrameBuf: bytes::BufMut {
    /// Bytes in the buffer.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Cut it back to `len` bytes.
    fn truncate(&mut self, len: usize);
    /// The bytes, to patch the length prefix.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl FrameBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl FrameBuf for bytes::BytesMut {
    fn len(&self) -> usize {
        bytes::BytesMut::len(self)
    }
    fn truncate(&mut self, len: usize) {
        bytes::BytesMut::truncate(self, len)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Append the frame of `msg` to `out`; refuses a frame over `max`, leaving
/// `out` as it was.
pub fn encode<T: Encode, B: FrameBuf>(msg: &T, out: &mut B, max: usize) -> Result<(), FrameError> {
    let start = out.len();
    out.put_slice(&[0; LENGTH_BYTES]);
    out.put_u8(FRAME_VERSION);
    let written = {
        let mut w = bytes::BufMut::writer(&mut *out);
        bincode::encode_into_std_write(msg, &mut w, bincode::config::legacy())
    };
    if let Err(e) = written {
        out.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = out.len() - start - LENGTH_BYTES;
    if len > max {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len)
        .map_err(|_| FrameError::TooLarge { len, max })?
        .to_be_bytes();
    if let Some(slot) = out.bytes_mut().get_mut(start..start + LENGTH_BYTES) {
        slot.copy_from_slice(&prefix);
    }
    Ok(())
}

/// The frame of `msg` as a new buffer.
pub fn to_bytes<T: Encode>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(msg, &mut out, max)?;
    Ok(out)
}

/// bincode's size limit is a const generic: decode under the smallest power
/// of two that is at least `max` (equal to `max` for the default 1 MiB).
fn decode_body<T: Decode<()>>(body: &[u8], max: usize) -> Result<(T, usize), FrameError> {
    fn limited<T: Decode<()>, const N: usize>(body: &[u8]) -> Result<(T, usize), FrameError> {
        bincode::decode_from_slice(body, bincode::config::legacy().with_limit::<N>())
            .map_err(|e| FrameError::Decode(e.to_string()))
    }
    match max.max(MIN_FRAME).next_power_of_two() {
        n if n <= 1 << 12 => limited::<T, { 1 << 12 }>(body),
        n if n <= 1 << 13 => limited::<T, { 1 << 13 }>(body),
        n if n <= 1 << 14 => limited::<T, { 1 << 14 }>(body),
        n if n <= 1 << 15 => limited::<T, { 1 << 15 }>(body),
        n if n <= 1 << 16 => limited::<T, { 1 << 16 }>(body),
        n if n <= 1 << 17 => limited::<T, { 1 << 17 }>(body),
        n if n <= 1 << 18 => limited::<T, { 1 << 18 }>(body),
        n if n <= 1 << 19 => limited::<T, { 1 << 19 }>(body),
        n if n <= 1 << 20 => limited::<T, { 1 << 20 }>(body),
        n if n <= 1 << 21 => limited::<T, { 1 << 21 }>(body),
        n if n <= 1 << 22 => limited::<T, { 1 << 22 }>(body),
        n if n <= 1 << 23 => limited::<T, { 1 << 23 }>(body),
        n if n <= 1 << 24 => limited::<T, { 1 << 24 }>(body),
        n if n <= 1 << 25 => limited::<T, { 1 << 25 }>(body),
        n if n <= 1 << 26 => limited::<T, { 1 << 26 }>(body),
        _ => limited::<T, { 1 << 27 }>(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientFrame, PublishRecord, ServerFrame, StartAt};
    use proptest::prelude::*;

    const CAP: usize = 1 << 20;

    fn samples() -> Vec<ClientFrame> {
        vec![
            ClientFrame::Hello {
                version: 1,
                client_name: "portal".into(),
                token: "s3cret".into(),
            },
            ClientFrame::Publish {
                request_id: 7,
                topic: "fhir.inbound".into(),
                records: vec![PublishRecord {
                    headers: vec![("a".into(), "b".into())],
                    content_type: "application/fhir+json".into(),
                    payload: b"{}".to_vec(),
                }],
            },
            ClientFrame::Subscribe {
                request_id: 8,
                topic: "fhir.Patient".into(),
                group: Some("g".into()),
                start: StartAt::Timestamp(1_700_000_000_000),
                credits: 100,
            },
            ClientFrame::Ack {
                request_id: 9,
                subscription: 1,
                offsets: vec![1, 2, 3],
            },
            ClientFrame::Ping { request_id: 10 },
        ]
    }

    #[test]
    fn round_trip() {
        for msg in samples() {
            let bytes = to_bytes(&msg, CAP).expect("encode");
            let (back, used) = parse::<ClientFrame>(&bytes, CAP).expect("decode");
            assert_eq!(back, msg);
            assert_eq!(used, bytes.len());
            // Every strict prefix is Incomplete, never an error.
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse::<ClientFrame>(&bytes[..cut], CAP).map(|_| ()),
                    Err(FrameError::Incomplete),
                    "prefix of {cut} bytes"
                );
            }
        }
    }

    #[test]
    fn ping_is_byte_for_byte() {
        // length 13 = version + u32 variant index 7 + u64 request id 5.
        let bytes = to_bytes(&ClientFrame::Ping { request_id: 5 }, CAP).expect("encode");
        assert_eq!(bytes, [0, 0, 0, 13, 1, 7, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_input_is_not_incomplete() {
        assert_eq!(
            parse::<ClientFrame>(&[0, 0, 0, 0], CAP).map(|_| ()),
            Err(FrameError::Empty)
        );
        assert!(matches!(
            parse::<ClientFrame>(&[0xff, 0xff, 0xff, 0xff], CAP),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            parse::<ClientFrame>(&[0, 0, 0, 1, 9], CAP).map(|_| ()),
            Err(FrameError::Version(9))
        );
        // Unknown variant 200.
        assert!(matches!(
            parse::<ClientFrame>(&[0, 0, 0, 5, 1, 200, 0, 0, 0], CAP),
            Err(FrameError::Decode(_))
        ));
        // A Publish whose payload claims 2^60 bytes: refused, not allocated.
        let mut body = vec![FRAME_VERSION, 1, 0, 0, 0];
        body.extend_from_slice(&1u64.to_le_bytes()); // request id
        body.extend_from_slice(&1u64.to_le_bytes()); // topic length
        body.push(b't');
        body.extend_from_slice(&(1u64 << 60).to_le_bytes()); // records count
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        assert!(matches!(
            parse::<ClientFrame>(&frame, CAP),
            Err(FrameError::Decode(_))
        ));
        // Trailing bytes after a valid body.
        let mut bytes = to_bytes(&ClientFrame::Ping { request_id: 1 }, CAP).expect("encode");
        bytes[3] += 1;
        bytes.push(0);
        assert_eq!(
            parse::<ClientFrame>(&bytes, CAP).map(|_| ()),
            Err(FrameError::Trailing(1))
        );
    }

    #[test]
    fn encode_refuses_over_the_cap() {
        let msg = ServerFrame::Pong { request_id: 1 };
        let mut out = vec![1, 2];
        assert!(matches!(
            encode(&msg, &mut out, 4),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(out, vec![1, 2]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..4096), cap in 1usize..8192) {
            let _ = parse::<ClientFrame>(&input, cap);
            let _ = parse::<ServerFrame>(&input, cap);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_prefix_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            frame.push(FRAME_VERSION);
            frame.extend(body);
            let _ = parse::<ClientFrame>(&frame, CAP);
            let _ = parse::<ServerFrame>(&frame, CAP);
        }

        #[test]
        fn publish_round_trips(topic in "[a-z.]{1,20}", payload in proptest::collection::vec(any::<u8>(), 0..512), id in any::<u64>()) {
            let msg = ClientFrame::Publish {
                request_id: id,
                topic,
                records: vec![PublishRecord { headers: vec![], content_type: "x".into(), payload }],
            };
            let bytes = to_bytes(&msg, CAP).expect("encode");
            let (back, _) = parse::<ClientFrame>(&bytes, CAP).expect("decode");
            prop_assert_eq!(back, msg);
        }
    }
}
