//! `[protocol]` (the binary-protocol listener for modern clients) and
//! `[[clients]]` (who may connect, with which token, to which topics).
//!
//! Tokens are never written in a config: `token_sha256` holds the lowercase
//! hex SHA-256 of the token, so a leaked config file does not leak access.
//! With no `[[clients]]` the listener is a development listener: it must be
//! bound to loopback, and accepts only loopback peers presenting an empty
//! token (validation refuses a non-loopback `listen` without clients).

use crate::route::Glob;
use crate::units::ByteSize;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

/// Default address of the binary protocol: loopback only.
pub const DEFAULT_PROTOCOL_LISTEN: &str = "127.0.0.1:7575";
/// Default frame cap of frames the broker reads (publishes).
pub const DEFAULT_PROTOCOL_MAX_FRAME: ByteSize = ByteSize(1 << 20);
/// Smallest frame cap: a Hello with a long token must fit.
pub const MIN_PROTOCOL_FRAME: u64 = 4 << 10;
/// Largest frame cap: the largest record medbus stores, plus headers.
pub const MAX_PROTOCOL_FRAME: u64 = 64 << 20;
/// Default cap on concurrent protocol connections.
pub const DEFAULT_PROTOCOL_MAX_CONNECTIONS: usize = 256;
/// Default largest credit window a subscription may ask for.
pub const DEFAULT_MAX_CREDITS: u32 = 1024;
/// Largest `max_credits` allowed: a subscription's memory is its credit
/// window times the record size.
pub const MAX_CREDITS_LIMIT: u32 = 100_000;

/// `[protocol]`: the binary protocol listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Address to bind, `host:port` (default `127.0.0.1:7575`). A
    /// non-loopback address needs `[[clients]]` (tokens).
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Largest frame the broker reads (default `"1MiB"`, 4KiB to 64MiB): a
    /// publish over it is refused and the connection closed.
    #[serde(default = "default_max_frame")]
    pub max_frame: Spanned<ByteSize>,
    /// Most concurrent connections (default 256); more get an error frame
    /// and are closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// Largest credit window (unacknowledged deliveries) one subscription
    /// may ask for (default 1024).
    #[serde(default = "default_max_credits")]
    pub max_credits: Spanned<u32>,
    /// Most bytes queued for one connection that it has not read yet
    /// (default `"64MiB"`): a client that stops reading while it sends
    /// requests or has deliveries coming is closed as a slow consumer (its
    /// unacknowledged group records go back to the group).
    #[serde(default = "default_max_pending")]
    pub max_pending: ByteSize,
    /// TLS: `{ cert = "server.pem", key = "server.key" }` (PEM files;
    /// optional `client_ca` for mutual TLS). Unset: plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTls>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_PROTOCOL_LISTEN.to_string())
}
fn default_max_frame() -> Spanned<ByteSize> {
    Spanned::new(0..0, DEFAULT_PROTOCOL_MAX_FRAME)
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_PROTOCOL_MAX_CONNECTIONS)
}
fn default_max_pending() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_credits() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_MAX_CREDITS)
}

impl ProtocolConfig {
    /// The frame cap in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        usize::try_from(self.max_frame.get_ref().0).unwrap_or(usize::MAX)
    }
}

/// `[[clients]]`: one application allowed to use the binary protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Unique name, shown in logs (letters, digits, `_`, `-`, at most 64).
    pub name: Spanned<String>,
    /// Lowercase or uppercase hex of the SHA-256 of the client's token
    /// (`printf %s "$TOKEN" | sha256sum`).
    pub token_sha256: Spanned<String>,
    /// Topic globs it may subscribe to (`*` any run, `?` one character),
    /// e.g. `["fhir.*"]`; default none.
    #[serde(default)]
    pub subscribe: Vec<Spanned<String>>,
    /// Topic globs it may publish to; default none.
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    /// May send admin requests (replay); default false.
    #[serde(default)]
    pub admin: bool,
}

impl ClientConfig {
    /// The name, as a plain string.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The compiled subscribe globs (validation guarantees they compile).
    pub fn subscribe_globs(&self) -> Vec<Glob> {
        self.subscribe
            .iter()
            .filter_map(|g| Glob::new(g.get_ref()).ok())
            .collect()
    }

    /// The compiled publish globs.
    pub fn publish_globs(&self) -> Vec<Glob> {
        self.publish
            .iter()
            .filter_map(|g| Glob::new(g.get_ref()).ok())
            .collect()
    }
}

/// Whether `s` is 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `p` is a topic glob: topic characters plus `*` and `?`.
fn is_topic_glob(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= crate::validate::MAX_TOPIC_NAME
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?'))
}

/// Check `[protocol]` and `[[clients]]`; `used` holds addresses other
/// components bind, to refuse a collision.
pub(crate) fn validate(
    protocol: Option<&ProtocolConfig>,
    clients: &[ClientConfig],
    used: &HashMap<SocketAddr, String>,
    err: &mut impl FnMut(Range<usize>, String, String),
) {
    if let Some(p) = protocol {
        match p.listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => {
                if addr.port() != 0 {
                    if let Some(other) = used.get(&addr) {
                        err(
                            p.listen.span(),
                            "protocol.listen".into(),
                            format!("address {addr} is already used by {other}"),
                        );
                    }
                }
                if clients.is_empty() && !addr.ip().is_loopback() {
                    err(
                        p.listen.span(),
                        "protocol.listen".into(),
                        format!("{addr} is not a loopback address: without [[clients]] (tokens) the binary protocol may only listen on loopback"),
                    );
                }
            }
            Err(_) => err(
                p.listen.span(),
                "protocol.listen".into(),
                format!(
                    "invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:7575\"",
                    p.listen.get_ref()
                ),
            ),
        }
        let frame = p.max_frame.get_ref().0;
        if !(MIN_PROTOCOL_FRAME..=MAX_PROTOCOL_FRAME).contains(&frame) {
            err(
                p.max_frame.span(),
                "protocol.max_frame".into(),
                format!("{} is out of range: 4KiB to 64MiB", p.max_frame.get_ref()),
            );
        }
        if *p.max_connections.get_ref() == 0 {
            err(
                p.max_connections.span(),
                "protocol.max_connections".into(),
                "must be at least 1".into(),
            );
        }
        let credits = *p.max_credits.get_ref();
        if credits == 0 || credits > MAX_CREDITS_LIMIT {
            err(
                p.max_credits.span(),
                "protocol.max_credits".into(),
                format!("{credits} is out of range: 1 to {MAX_CREDITS_LIMIT}"),
            );
        }
        if let Some(tls) = &p.tls {
            for (span, field, message) in crate::tls::check_server(tls) {
                err(span, format!("protocol.tls.{field}"), message);
            }
        }
    }
    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut hashes: HashMap<String, &str> = HashMap::new();
    for (i, c) in clients.iter().enumerate() {
        let key = |field: &str| format!("clients[{i}].{field}");
        let name = c.name();
        let valid_name = !name.is_empty()
            && name.len() <= crate::validate::MAX_COMPONENT_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            err(
                c.name.span(),
                key("name"),
                format!("invalid name {name:?}: use 1 to 64 letters, digits, '_' or '-'"),
            );
        } else if names.insert(name, ()).is_some() {
            err(
                c.name.span(),
                key("name"),
                format!("duplicate client name {name:?}"),
            );
        }
        let hash = c.token_sha256.get_ref();
        if !is_sha256_hex(hash) {
            err(
                c.token_sha256.span(),
                key("token_sha256"),
                "must be the 64 hex digits of the token's SHA-256 (printf %s \"$TOKEN\" | sha256sum)".into(),
            );
        } else if let Some(other) = hashes.insert(hash.to_ascii_lowercase(), name) {
            err(
                c.token_sha256.span(),
                key("token_sha256"),
                format!("the same token is already given to client {other:?}"),
            );
        }
        for (field, globs) in [("subscribe", &c.subscribe), ("publish", &c.publish)] {
            for g in globs {
                if !is_topic_glob(g.get_ref()) || Glob::new(g.get_ref()).is_err() {
                    err(
                        g.span(),
                        key(field),
                        format!(
                            "bad topic pattern {:?}: use topic characters (A-Z a-z 0-9 . _ -) with * and ?",
                            g.get_ref()
                        ),
                    );
                }
            }
        }
    }
    if !clients.is_empty() && protocol.is_none() {
        if let Some(c) = clients.first() {
            err(
                c.name.span(),
                "clients".into(),
                "[[clients]] without a [protocol] section: add [protocol] listen = \"…\"".into(),
            );
        }
    }
}
