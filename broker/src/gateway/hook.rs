//! The HTTP/1.1 client that posts rest-hook notifications: one request per
//! connection (`Connection: close`), plain `http://` endpoints, a bounded
//! wait for the status line. Small on purpose: a notification needs a POST
//! and a status code, nothing more.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head read: the status line is all we need.
const MAX_HEAD: usize = 8 << 10;

/// Where a rest-hook posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a notification was not answered with a status.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Connecting failed: the endpoint is down (no attempt is spent).
    #[error("endpoint unreachable: {0}")]
    Unreachable(String),
    /// No status line within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the answer was not HTTP.
    #[error("bad answer: {0}")]
    Protocol(String),
}

/// Parse an `http://host[:port][/path]` URL.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err("https endpoints are not supported yet: use an http:// endpoint (for example behind a local TLS proxy)".into());
    } else {
        return Err("the endpoint must be an http:// URL".into());
    };
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the endpoint contains spaces or control characters".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("credentials in the endpoint URL are not supported: use channel.header".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("bad IPv6 address in the endpoint")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port in the endpoint")?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| "bad port in the endpoint")?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err("the endpoint has no host".into());
    }
    Ok(Endpoint {
        host,
        port,
        path: path.to_string(),
    })
}

/// POST `body` to `ep`; the response status.
pub async fn post(
    ep: &Endpoint,
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, HookError> {
    let addr = (ep.host.as_str(), ep.port);
    let mut s = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(HookError::Unreachable(e.to_string())),
        Err(_) => {
            return Err(HookError::Unreachable(format!(
                "no connection within {timeout:?}"
            )))
        }
    };
    let _ = s.set_nodelay(true);
    let host = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: medbus/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
        ep.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let exchange = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                return Ok::<_, std::io::Error>(Some(buf[..end].to_vec()));
            }
            if buf.len() > MAX_HEAD {
                return Ok(None);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let line = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(HookError::Timeout(timeout)),
        Ok(Err(e)) => return Err(HookError::Protocol(e.to_string())),
        Ok(Ok(None)) => return Err(HookError::Protocol("no status line".into())),
        Ok(Ok(Some(l))) => l,
    };
    let line = String::from_utf8_lossy(&line);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(HookError::Protocol("not an HTTP status line".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1"),
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hook?x=1".into()
            })
        );
        assert_eq!(
            parse_url("http://h").map(|e| (e.port, e.path)),
            Ok((80, "/".into()))
        );
        assert_eq!(
            parse_url("http://[::1]:9/").map(|e| e.host),
            Ok("::1".into())
        );
        assert!(parse_url("https://h/").is_err());
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://h:x/").is_err());
        assert!(parse_url("http://h/a b").is_err());
    }
}
