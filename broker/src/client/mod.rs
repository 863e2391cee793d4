//! The broker side of the binary protocol (`protocol/README.md`): modern
//! clients publish to and subscribe from topics, with credits, consumer
//! groups and token auth.
//!
//! # Layout
//! - [`listener`]: [`ClientListener`] accepts connections within the
//!   connection cap and starts a session for each.
//! - [`session`]: [`ClientSession`], one per connection: Hello, then
//!   requests; publishes are answered once durable.
//! - [`dispatcher`]: [`Dispatcher`], one per private subscription and one per
//!   (consumer group, topic): reads the topic on every commit and hands
//!   records to members within their credit windows.
//! - [`auth`]: tokens (stored hashed) and topic patterns.

pub mod auth;
pub mod dispatcher;
pub mod listener;
pub mod session;

pub use auth::{Auth, Principal};
pub use dispatcher::{Dispatcher, Groups};
pub use listener::{ClientListener, ProtocolContext};
pub use session::ClientSession;
