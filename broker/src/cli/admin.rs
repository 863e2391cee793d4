//! Operator commands that act on a running broker through its HTTP
//! endpoint, found via the `medbus.broker.json` file `serve` writes into its
//! data directory: today `medbus replay`.

use super::backup::BROKER_FILE;
use std::io::{Read, Write};
use std::path::Path;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No running broker found for the data directory.
    #[error("no running broker for {dir}: {why}")]
    NoBroker {
        /// The data directory.
        dir: String,
        /// Why.
        why: String,
    },
    /// The request failed.
    #[error("{0}")]
    Request(String),
    /// The broker refused it.
    #[error("refused ({status}): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The broker's reason.
        body: String,
    },
}

/// Largest answer read from the broker.
const MAX_ANSWER: u64 = 1 << 20;

/// The HTTP endpoint of the broker running on `data_dir`.
pub fn broker_http(data_dir: &Path) -> Result<String, AdminError> {
    let no = |why: String| AdminError::NoBroker {
        dir: data_dir.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(data_dir.join(BROKER_FILE))
        .map_err(|e| no(format!("{BROKER_FILE}: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| no(e.to_string()))?;
    v["http"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| no(format!("{BROKER_FILE} names no HTTP endpoint")))
}

/// One HTTP/1.0 request; the body of a 2xx answer.
pub fn request(addr: &str, method: &str, path: &str) -> Result<String, AdminError> {
    let mut s = std::net::TcpStream::connect(addr)
        .map_err(|e| AdminError::Request(format!("{addr}: {e}")))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| AdminError::Request(e.to_string()))?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| AdminError::Request(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AdminError::Request("bad HTTP answer".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| AdminError::Request("bad HTTP status".into()))?;
    if (200..300).contains(&status) {
        Ok(body.to_string())
    } else {
        Err(AdminError::Refused {
            status,
            body: body.trim().to_string(),
        })
    }
}
