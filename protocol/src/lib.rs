//! # Layout
//!
//! `medbus-protocol` is the binary protocol modern clients use to publish to
//! and subscribe from medbus topics. `protocol/README.md` is the
//! specification (enough to implement a client in another language); this
//! crate is its Rust implementation, used by the broker and by clients.
//!
//! - [`frame`]: only the wire format — a u32 big-endian length, a version
//!   byte, a bincode 2 (`legacy()` config) body decoded under a size limit;
//!   [`frame::FrameError::Incomplete`] (wait for more bytes) is kept apart
//!   from bad input.
//! - [`message`]: what frames carry — [`ClientFrame`] (requests), and
//!   [`ServerFrame`] (replies and pushed deliveries), error codes and the
//!   protocol's limits, each a named constant.
//! - [`connection`]: bytes ↔ frames over any tokio `AsyncRead`/`AsyncWrite`,
//!   with a read buffer that never grows past the frame cap; also a
//!   `tokio_util` codec for servers built on `Framed*`.
//! - [`client`]: [`Client`], an async client: connect with a token, publish
//!   (single and batch, answered once durable), subscribe (optionally in a
//!   consumer group) as a `Stream` of deliveries, ack, nack, list topics,
//!   ping.

pub mod client;
pub mod connection;
pub mod frame;
pub mod message;

pub use client::{Client, ClientError, ClientOptions, Delivery, SubscribeOptions, Subscription};
pub use message::{
    ClientFrame, ErrorCode, PublishRecord, Record, ReplayTarget, ServerFrame, ServerOut, StartAt,
    TopicSummary, WireRecord,
};
