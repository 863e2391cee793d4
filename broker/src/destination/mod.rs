//! MLLP destinations: one [`Destination`] actor per `[[destinations]]`
//! delivers its source topic to a legacy system, one message at a time, in
//! order, and advances its durable cursor only after a positive ACK that
//! names the message sent.
//!
//! # Layout
//! - [`link`]: the MLLP client connection: send a frame, wait for the ACK
//!   whose MSA-2 names it, within a deadline.
//! - [`delivery`]: the actor and its deliver–retry–dead-letter loop.
//! - [`progress`]: the fast, crash-safe record of how far delivery got.
//! - [`prepare`]: what is sent: separators normalised to CR, field rewrites.

pub mod delivery;
pub mod link;
pub mod prepare;
pub mod progress;

pub use delivery::{Destination, DestinationHandle};
