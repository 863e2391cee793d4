//! # medbus — the broker
//!
//! HL7 v2 feeds arrive over MLLP, land in durable topics before anyone is
//! told they arrived, and flow on from there.
//!
//! # Layout
//! - [`storage`]: durable topics (segment files behind a write-ahead journal), group commit, the record envelope.
//! - [`mllp`]: the MLLP listener and one session actor per connected system.
//! - [`ack`]: fresh control ids and HL7 timestamps for the ACKs we send.
//! - [`headers`]: the record header names medbus writes.
//! - [`metrics`]: the Prometheus registry and every metric family.
//! - [`events`]: one struct per internal event; `emit` logs and counts.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/api/status`.
//! - [`http1`]: a small HTTP/1.1 client and message reader (rest-hooks,
//!   `medbus bench fhir`).
//! - [`gateway`]: the FHIR REST API: reads from a current-state view,
//!   writes into `fhir.inbound`, Subscriptions, SMART on FHIR tokens.
//! - [`destination`]: one actor per MLLP destination: ordered, ACK-checked delivery.
//! - [`replay`]: run a route or a destination again over a range.
//! - [`retention`]: removes old records per topic limits, in bounded batches.
//! - [`route`]: one router actor per configured route.
//! - [`client`]: the binary protocol: a listener and one session actor per
//!   client connection, dispatchers for subscriptions and consumer groups.
//! - [`server`]: starts every component of a config inside an actix system.
//! - [`task`]: long-running loops as actors that stop cleanly.
//! - [`tls`]: rustls acceptors and connectors from the TLS settings.
//! - [`accept`]: accepted TCP connections as a stream for listener actors.
//! - [`counted`]: socket halves that count the bytes passing through.
//! - [`cli`]: the subcommands other than `serve` (`send`, `dump`, `topics`, …).
//! - [`bench`]: `medbus bench`, the load generator and the machine's limits.

pub mod accept;
pub mod ack;
pub mod bench;
pub mod cli;
pub mod client;
pub mod counted;
pub mod destination;
pub mod events;
pub mod gateway;
pub mod headers;
pub mod http;
pub mod http1;
pub mod metrics;
pub mod mllp;
pub mod replay;
pub mod retention;
pub mod route;
pub mod server;
pub mod storage;
pub mod task;
pub mod tls;
