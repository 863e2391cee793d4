//! `medbus-hl7`: an HL7 v2 (ER7, "pipe and hat") codec with no I/O.
//!
//! # Layout
//!
//! - [`error`]: typed errors — [`ParseError`] with HL7 table 0357 [`ErrorCode`]s and a
//!   [`Location`] that an ACK's ERR segment can carry.
//! - [`delimiters`]: the [`Delimiters`] of a message, read from MSH-1/MSH-2 and validated.
//! - [`charset`]: the [`Charset`] named by MSH-18 and how bytes become text under it.
//! - [`escape`]: decoding (`\F\`, `\S\`, `\Xhh\` …) and encoding of HL7 escape sequences.
//! - [`path`]: the textual field address syntax (`PID-3[2].1`, `OBX(2)-5.1.2`) as [`Path`].
//! - [`scan`]: fast byte scanning helpers (line breaks, delimiter splitting) shared by the parser.
//! - [`message`]: the zero-copy [`Message`] over the input bytes, with [`Segment`], [`Field`],
//!   [`Repetition`], [`Component`], [`Subcomponent`] and the decoded MSH [`Header`].
//! - [`located`]: [`LocatedRepetition`], a repetition whose components were found in one pass,
//!   for readers that take many components of the same value.
//! - [`buf`]: [`MessageBuf`], an owned, editable copy of a message that re-encodes byte-identically.
//! - [`ack`]: a pure ACK builder ([`build_ack`], [`build_ack_for_unparsed`]).
//! - [`split`]: [`split_messages`], cutting a stream of concatenated, unframed messages at each MSH.
//!
//! Nothing in this crate panics on input data: every accessor returns `Option`/`Result`.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod ack;
pub mod buf;
pub mod charset;
pub mod delimiters;
pub mod error;
pub mod escape;
pub mod located;
pub mod message;
pub mod path;
pub mod scan;
pub mod split;

pub use ack::{build_ack, build_ack_for_unparsed, AckCode, AckError};
pub use buf::MessageBuf;
pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::{ErrorCode, Location, ParseError};
pub use escape::{escape, unescape};
pub use located::LocatedRepetition;
pub use message::{Component, Field, Header, Message, Repetition, Segment, Subcomponent};
pub use path::{Path, PathError};
pub use split::split_messages;

/// Maximum number of segments accepted in one message; larger inputs are rejected with a
/// [`ParseError`] instead of consuming unbounded memory.
pub const MAX_SEGMENTS: usize = 100_000;
