//! The MLLP side of the broker: one listener actor per configured listener,
//! one session actor per connected system.
//!
//! # Layout
//! - [`client`]: a blocking MLLP client for the command-line tools.
//! - [`listener`]: [`MllpListener`] accepts connections within the
//!   listener's connection cap and starts a session for each.
//! - [`ack_mode`]: original vs enhanced (MSH-15) acknowledgment.
//! - [`session`]: [`MllpSession`] turns frames into durable records and
//!   answers each with an ACK — AA only after the durable commit.

pub mod ack_mode;
pub mod client;
pub mod listener;
pub mod session;

pub use listener::{ListenerContext, MllpListener};
pub use session::MllpSession;
