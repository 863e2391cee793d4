//! Who a binary-protocol client is, and which topics it may use.
//!
//! Tokens are compared by their SHA-256 (the config holds only hashes). With
//! no `[[clients]]` configured the broker is in development mode: loopback
//! peers presenting an empty token may use every topic; everything else is
//! refused.

use medbus_config::protocol::ClientConfig;
use medbus_config::route::Glob;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// An authenticated client.
#[derive(Debug)]
pub struct Principal {
    /// The `[[clients]]` name (`development` in development mode).
    pub name: String,
    /// Topics it may publish to.
    publish: Vec<Glob>,
    /// Topics it may subscribe to (and see in topic lists).
    subscribe: Vec<Glob>,
    /// Development mode: every topic.
    unrestricted: bool,
    /// May send admin requests (replay).
    pub admin: bool,
}

impl Principal {
    /// Whether it may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.unrestricted || self.publish.iter().any(|g| g.matches(topic))
    }

    /// Whether it may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.unrestricted || self.subscribe.iter().any(|g| g.matches(topic))
    }
}

/// How tokens are checked.
#[derive(Debug)]
pub enum Auth {
    /// No `[[clients]]`: loopback peers with an empty token only.
    Development,
    /// Lowercase hex SHA-256 of a token → its client.
    Tokens(HashMap<String, Arc<Principal>>),
}

/// Lowercase hex SHA-256 of `token`.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Auth {
    /// From the `[[clients]]` of a validated config.
    pub fn from_config(clients: &[ClientConfig]) -> Auth {
        if clients.is_empty() {
            return Auth::Development;
        }
        Auth::Tokens(
            clients
                .iter()
                .map(|c| {
                    (
                        c.token_sha256.get_ref().to_ascii_lowercase(),
                        Arc::new(Principal {
                            name: c.name().to_string(),
                            publish: c.publish_globs(),
                            subscribe: c.subscribe_globs(),
                            unrestricted: false,
                            admin: c.admin,
                        }),
                    )
                })
                .collect(),
        )
    }

    /// The client `token` belongs to, or why not (never echoing the token).
    pub fn authenticate(&self, token: &str, peer: SocketAddr) -> Result<Arc<Principal>, String> {
        match self {
            Auth::Development if token.is_empty() && peer.ip().is_loopback() => {
                Ok(Arc::new(Principal {
                    name: "development".into(),
                    publish: Vec::new(),
                    subscribe: Vec::new(),
                    unrestricted: true,
                    admin: true,
                }))
            }
            Auth::Development if !token.is_empty() => Err(
                "this broker has no [[clients]] configured: connect with an empty token from loopback"
                    .into(),
            ),
            Auth::Development => {
                Err("without [[clients]] only loopback connections are accepted".into())
            }
            Auth::Tokens(_) if token.is_empty() => Err("a token is required".into()),
            Auth::Tokens(map) => map
                .get(&sha256_hex(token))
                .cloned()
                .ok_or_else(|| "unknown token".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_test_is_known() {
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn development_mode_is_loopback_and_empty_token_only() {
        let auth = Auth::Development;
        let lo: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let far: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        assert!(auth.authenticate("", lo).is_ok());
        assert!(auth.authenticate("x", lo).is_err());
        assert!(auth.authenticate("", far).is_err());
    }
}
