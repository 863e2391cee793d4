//! # medbus-mllp — the Minimal Lower Layer Protocol framing
//!
//! HL7 v2 travels over TCP wrapped in MLLP frames: a start block `0x0B`, the
//! message bytes, then the end block `0x1C 0x0D`. This crate turns a byte
//! stream into frames and back, and nothing else: no HL7 parsing, no I/O of
//! its own (it plugs into `tokio_util::codec::Framed`).
//!
//! # Layout
//! - [`codec`]: [`MllpCodec`], the decoder/encoder with a frame-size cap and a
//!   count of the bytes discarded outside frames.
//!
//! # Behaviour in one place
//! - Bytes before a start block are discarded and counted
//!   ([`MllpCodec::discarded_bytes`]); a newline between frames is harmless.
//! - A frame whose payload grows past the cap yields [`Decoded::Oversized`]
//!   with its first bytes; the rest of it is read and discarded, so the
//!   stream stays in step and no unread data is left when the caller closes.
//! - A start block inside an unfinished frame means the previous frame was cut
//!   short: it is reported as [`Decoded::Truncated`] (so the caller can answer
//!   it) and decoding restarts at the new start block.
//! - Pipelined frames are yielded one by one, in order, never merged.

pub mod codec;

pub use codec::{Decoded, MllpCodec, MllpError, END_BLOCK, START_BLOCK, TRAILER};
