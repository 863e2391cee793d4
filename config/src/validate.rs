//! Checks serde cannot express: address syntax, names, topic names, limits,
//! duplicates. Every problem is collected so that one run of
//! `medbus check-config` shows all of them.

use crate::error::ConfigError;
use crate::schema::Config;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 200;
/// Longest listener name.
pub const MAX_COMPONENT_NAME: usize = 64;
/// Largest frame cap a listener may set: bigger frames belong in a document
/// store, not an HL7 feed, and the cap bounds per-connection memory.
pub const MAX_FRAME_LIMIT: u64 = 64 << 20;

/// Whether `name` is a valid topic name: `[A-Za-z0-9._-]{1,200}`.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_valid_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// All problems in `config` (empty when it is valid).
pub fn validate(config: &Config, file: &str, text: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |span: std::ops::Range<usize>, key: String, msg: String| {
        errors.push(ConfigError::at(file, text, span.start, key, msg));
    };

    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, &str> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let key = |field: &str| format!("listeners[{i}].{field}");
        let name = l.name.get_ref().as_str();
        if !is_valid_component_name(name) {
            err(
                l.name.span(),
                key("name"),
                format!("invalid name {name:?}: use 1 to {MAX_COMPONENT_NAME} letters, digits, '_' or '-'"),
            );
        } else if names.insert(name, ()).is_some() {
            err(
                l.name.span(),
                key("name"),
                format!("duplicate listener name {name:?}"),
            );
        }
        match l.listen.get_ref().parse::<SocketAddr>() {
            // Port 0 (the OS picks) never collides.
            Ok(addr) if addr.port() == 0 => {}
            Ok(addr) => {
                if let Some(other) = addrs.insert(addr, name) {
                    err(
                        l.listen.span(),
                        key("listen"),
                        format!("address {addr} is already used by listener {other:?}"),
                    );
                }
            }
            Err(_) => err(
                l.listen.span(),
                key("listen"),
                format!("invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:2575\"", l.listen.get_ref()),
            ),
        }
        if let Some(topic) = &l.topic {
            check_topic(topic, key("topic"), &mut err);
            let t = topic.get_ref();
            if t.starts_with("dlq.") || t.starts_with("fhir.") {
                err(
                    topic.span(),
                    key("topic"),
                    format!("topic {t:?} uses a reserved prefix (dlq., fhir.): a listener writes HL7, e.g. \"hl7.lab\""),
                );
            }
        }
        let frame = l.max_frame.get_ref().0;
        if frame == 0 || frame > MAX_FRAME_LIMIT {
            err(
                l.max_frame.span(),
                key("max_frame"),
                format!("{} is out of range: 1B to 64MiB", l.max_frame.get_ref()),
            );
        }
        if *l.max_connections.get_ref() == 0 {
            err(
                l.max_connections.span(),
                key("max_connections"),
                "must be at least 1".into(),
            );
        }
        if l.idle_timeout.get_ref().0.is_zero() {
            err(
                l.idle_timeout.span(),
                key("idle_timeout"),
                "must be greater than zero".into(),
            );
        }
    }
    match config.http.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {}
        Ok(addr) => {
            if let Some(other) = addrs.get(&addr) {
                err(
                    config.http.listen.span(),
                    "http.listen".into(),
                    format!("address {addr} is already used by listener {other:?}"),
                );
            }
        }
        Err(_) => err(
            config.http.listen.span(),
            "http.listen".into(),
            format!(
                "invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:9575\"",
                config.http.listen.get_ref()
            ),
        ),
    }
    if *config.storage.max_batch_records.get_ref() == 0 {
        let span = config.storage.max_batch_records.span();
        err(
            span,
            "storage.max_batch_records".into(),
            "must be at least 1".into(),
        );
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

fn check_topic(
    topic: &Spanned<String>,
    key: String,
    err: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    if !is_valid_topic(topic.get_ref()) {
        err(
            topic.span(),
            key,
            format!(
                "invalid topic name {:?}: use 1 to {MAX_TOPIC_NAME} of A-Z a-z 0-9 . _ -",
                topic.get_ref()
            ),
        );
    }
}
