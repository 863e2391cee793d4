//! The MLLP frame codec: `0x0B` payload `0x1C 0x0D`.
//!
//! Kept apart from any socket so that it can be tested byte by byte and
//! reused by the listener, the destination client and `medbus send`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::codec::{Decoder, Encoder};

/// Start of a frame (vertical tab).
pub const START_BLOCK: u8 = 0x0B;
/// End of a frame's payload (file separator).
pub const END_BLOCK: u8 = 0x1C;
/// The carriage return that follows [`END_BLOCK`].
pub const TRAILER: u8 = 0x0D;

/// Default frame cap: 1 MiB of payload. Large enough for reports with
/// embedded PDFs of ordinary size, small enough that a hostile peer cannot
/// make a session hold more than this per connection.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// What the decoder hands to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame's payload, without the framing bytes.
    Frame(Bytes),
    /// A frame that was cut short by a new start block; its partial payload
    /// (capped at the frame limit) so that the caller can answer and
    /// dead-letter it.
    Truncated(Bytes),
    /// A frame whose payload grew past the cap. Its first bytes (at most
    /// 64 KiB) are kept so the caller can still address its answer to the
    /// sender's MSH; the rest of the frame is read and discarded, so the
    /// stream stays in step (the caller decides whether to close).
    Oversized {
        /// The cap in force.
        limit: usize,
        /// The first bytes of the payload.
        head: Bytes,
    },
}

/// Errors that end a stream.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// The underlying socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// How much of an oversized frame is kept to address the rejection.
const OVERSIZE_HEAD: usize = 64 * 1024;

/// Decoder/encoder for MLLP frames.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    /// Largest payload accepted; see [`DEFAULT_MAX_FRAME`].
    max_frame: usize,
    /// Whether a start block has been seen for the frame being assembled.
    in_frame: bool,
    /// How far the current frame has been scanned for an end block, so that
    /// a slowly arriving frame is not rescanned from the start each time.
    scanned: usize,
    /// Discarding the rest of an oversized frame.
    skipping: bool,
    /// The last frame's end block was the last byte received: its trailer
    /// CR may still come, and is then dropped quietly.
    after_end: bool,
    /// Bytes dropped outside frames; shared so that the owner of a framed
    /// stream can read it while the codec is inside the stream.
    discarded: Arc<AtomicU64>,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl MllpCodec {
    /// A codec that accepts payloads of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self::with_discard_counter(max_frame, Arc::default())
    }

    /// A codec that counts discarded bytes into `counter`.
    pub fn with_discard_counter(max_frame: usize, counter: Arc<AtomicU64>) -> Self {
        Self {
            max_frame,
            in_frame: false,
            scanned: 0,
            skipping: false,
            after_end: false,
            discarded: counter,
        }
    }

    /// Bytes discarded so far because they were outside any frame.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    fn discard(&self, n: usize) {
        self.discarded.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The payload cap in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Wrap `payload` in MLLP framing into `dst`.
    pub fn frame_into(payload: &[u8], dst: &mut BytesMut) {
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_u8(END_BLOCK);
        dst.put_u8(TRAILER);
    }

    /// Wrap `payload` in MLLP framing.
    pub fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 3);
        out.push(START_BLOCK);
        out.extend_from_slice(payload);
        out.push(END_BLOCK);
        out.push(TRAILER);
        out
    }

    fn reset(&mut self) {
        self.in_frame = false;
        self.scanned = 0;
    }
}

impl Decoder for MllpCodec {
    type Item = Decoded;
    type Error = MllpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, MllpError> {
        if self.after_end && !src.is_empty() {
            if src[0] == TRAILER {
                src.advance(1);
            }
            self.after_end = false;
        }
        loop {
            if self.skipping {
                match src.iter().position(|&b| b == END_BLOCK || b == START_BLOCK) {
                    Some(pos) if src[pos] == START_BLOCK => {
                        self.discard(pos);
                        src.advance(pos);
                        self.skipping = false;
                    }
                    Some(pos) => {
                        let mut end = pos + 1;
                        if src.get(end) == Some(&TRAILER) {
                            end += 1;
                        }
                        self.discard(end);
                        src.advance(end);
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        self.discard(src.len());
                        src.clear();
                        return Ok(None);
                    }
                }
            }
            if !self.in_frame {
                match src.iter().position(|&b| b == START_BLOCK) {
                    Some(start) => {
                        self.discard(start);
                        src.advance(start + 1);
                        self.in_frame = true;
                        self.scanned = 0;
                    }
                    None => {
                        self.discard(src.len());
                        src.clear();
                        return Ok(None);
                    }
                }
            }

            // Scan for the end block (or a premature new start block) from where
            // the previous call stopped.
            let from = self.scanned.min(src.len());
            let found = src[from..]
                .iter()
                .position(|&b| b == END_BLOCK || b == START_BLOCK)
                .map(|p| p + from);

            return match found {
                Some(0) if src[0] == START_BLOCK => {
                    // A repeated start block: nothing was lost, skip it.
                    self.discard(1);
                    src.advance(1);
                    self.scanned = 0;
                    continue;
                }
                Some(pos) if src[pos] == START_BLOCK => {
                    // The frame in progress never ended: hand it over as truncated
                    // and start over at the new start block (left in `src`).
                    let partial = src.split_to(pos).freeze();
                    self.reset();
                    let capped = partial.slice(..partial.len().min(self.max_frame));
                    Ok(Some(Decoded::Truncated(capped)))
                }
                Some(pos) => {
                    if pos > self.max_frame {
                        return Ok(Some(self.too_large(src)));
                    }
                    let payload = src.split_to(pos).freeze();
                    // Drop END_BLOCK, and the trailer when present (a lone 0x1C is
                    // accepted: some senders omit the CR). The frame is whole
                    // at END_BLOCK: it is not held back waiting for the byte
                    // after it, which a sender that omits the CR never sends.
                    src.advance(1);
                    self.reset();
                    match src.first() {
                        Some(&TRAILER) => src.advance(1),
                        None => self.after_end = true,
                        Some(_) => {}
                    }
                    Ok(Some(Decoded::Frame(payload)))
                }
                None => {
                    if src.len() > self.max_frame {
                        return Ok(Some(self.too_large(src)));
                    }
                    self.scanned = src.len();
                    Ok(None)
                }
            };
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, MllpError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                if self.in_frame && !src.is_empty() {
                    let partial = src.split().freeze();
                    self.reset();
                    Ok(Some(Decoded::Truncated(partial)))
                } else {
                    self.discard(src.len());
                    src.clear();
                    Ok(None)
                }
            }
        }
    }
}

impl MllpCodec {
    /// Report an oversized frame and switch to discarding its rest (what is
    /// in `src` stays there for the skipping state to consume).
    fn too_large(&mut self, src: &mut BytesMut) -> Decoded {
        let head = Bytes::copy_from_slice(&src[..src.len().min(OVERSIZE_HEAD)]);
        self.reset();
        self.skipping = true;
        Decoded::Oversized {
            limit: self.max_frame,
            head,
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, payload: T, dst: &mut BytesMut) -> Result<(), MllpError> {
        Self::frame_into(payload.as_ref(), dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn decode_all(codec: &mut MllpCodec, input: &[u8]) -> Vec<Decoded> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(d)) = codec.decode(&mut buf) {
            out.push(d);
        }
        out
    }

    fn frame(s: &[u8]) -> Decoded {
        Decoded::Frame(Bytes::copy_from_slice(s))
    }

    #[test]
    fn single_frame() {
        let mut c = MllpCodec::default();
        assert_eq!(
            decode_all(&mut c, b"\x0bMSH|x\r\x1c\x0d"),
            vec![frame(b"MSH|x\r")]
        );
        assert_eq!(c.discarded_bytes(), 0);
    }

    #[test]
    fn pipelined_frames_are_not_merged() {
        let mut c = MllpCodec::default();
        let input = b"\x0bA\x1c\x0d\x0bB\x1c\x0d\r\n\x0bC\x1c\x0d";
        assert_eq!(
            decode_all(&mut c, input),
            vec![frame(b"A"), frame(b"B"), frame(b"C")]
        );
        assert_eq!(c.discarded_bytes(), 2);
    }

    #[test]
    fn garbage_before_start_is_counted() {
        let mut c = MllpCodec::default();
        assert_eq!(decode_all(&mut c, b"junk\x0bA\x1c\x0d"), vec![frame(b"A")]);
        assert_eq!(c.discarded_bytes(), 4);
    }

    #[test]
    fn frame_split_across_reads() {
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::new();
        for chunk in [&b"\x0bMS"[..], b"H|", b"1\x1c", b"\x0d"] {
            buf.extend_from_slice(chunk);
            if let Some(d) = c.decode(&mut buf).expect("decode") {
                assert_eq!(d, frame(b"MSH|1"));
                assert!(buf.is_empty());
                return;
            }
        }
        panic!("frame never completed");
    }

    #[test]
    fn lone_end_block_is_accepted() {
        let mut c = MllpCodec::default();
        assert_eq!(decode_all(&mut c, b"\x0bA\x1cX"), vec![frame(b"A")]);
    }

    /// A frame that ends with a lone 0x1C as the last byte received is
    /// handed over at once (its sender waits for the ACK and sends nothing
    /// more); a CR that follows later is the trailer, not stray bytes.
    #[test]
    fn a_frame_ending_the_input_with_a_lone_end_block_is_not_held_back() {
        let mut c = MllpCodec::default();
        assert_eq!(decode_all(&mut c, b"\x0bA\x1c"), vec![frame(b"A")]);
        assert_eq!(decode_all(&mut c, b"\x0d\x0bB\x1c"), vec![frame(b"B")]);
        assert_eq!(decode_all(&mut c, b"\x0bC\x1c\x0d"), vec![frame(b"C")]);
        assert_eq!(c.discarded_bytes(), 0);
        // At the end of the stream too: a whole frame, not a truncated one.
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::from(&b"\x0bD\x1c"[..]);
        assert_eq!(c.decode_eof(&mut buf).ok().flatten(), Some(frame(b"D")));
    }

    #[test]
    fn start_inside_frame_reports_truncation() {
        let mut c = MllpCodec::default();
        assert_eq!(
            decode_all(&mut c, b"\x0bAB\x0bC\x1c\x0d"),
            vec![Decoded::Truncated(Bytes::from_static(b"AB")), frame(b"C")]
        );
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut c = MllpCodec::new(4);
        let mut buf = BytesMut::from(&b"\x0b123456"[..]);
        match c.decode(&mut buf) {
            Ok(Some(Decoded::Oversized { limit, head })) => {
                assert_eq!(limit, 4);
                assert_eq!(&head[..], b"123456");
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        // The rest of the oversized frame is skipped; the next one decodes.
        buf.extend_from_slice(b"789\x1c\x0d\x0bOK\x1c\x0d");
        assert_eq!(c.decode(&mut buf).expect("decode"), Some(frame(b"OK")));
        // A frame exactly at the cap is fine.
        let mut c = MllpCodec::new(4);
        assert_eq!(
            decode_all(&mut c, b"\x0b1234\x1c\x0d"),
            vec![frame(b"1234")]
        );
    }

    #[test]
    fn eof_inside_frame_yields_truncated() {
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::from(&b"\x0bMSH|partial"[..]);
        assert_eq!(c.decode(&mut buf).expect("decode"), None);
        assert_eq!(
            c.decode_eof(&mut buf).expect("eof"),
            Some(Decoded::Truncated(Bytes::from_static(b"MSH|partial")))
        );
    }

    #[test]
    fn encode_frames() {
        let mut c = MllpCodec::default();
        let mut dst = BytesMut::new();
        c.encode(b"MSA", &mut dst).expect("encode");
        assert_eq!(&dst[..], b"\x0bMSA\x1c\x0d");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), cap in 1usize..512) {
            let mut c = MllpCodec::new(cap);
            let mut buf = BytesMut::from(&input[..]);
            for _ in 0..4096 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = c.decode_eof(&mut buf);
        }

        #[test]
        fn framed_payloads_round_trip(payloads in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY.prop_filter("no framing bytes", |b| *b != START_BLOCK && *b != END_BLOCK), 0..300), 1..8),
            split in 1usize..64)
        {
            let mut wire = Vec::new();
            for p in &payloads { wire.extend(MllpCodec::frame(p)); }
            let mut c = MllpCodec::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(d) = c.decode(&mut buf).expect("decode") { got.push(d); }
            }
            let want: Vec<Decoded> = payloads.iter().map(|p| frame(p)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
