//! Rest-hook endpoints and how a notification is posted: with the crate's
//! HTTP/1.1 client ([`crate::http1`]) over one kept-alive connection per
//! Subscription (a new TCP connection per notification would cap a busy
//! Subscription at a few hundred notifications a second), plain `http://`
//! endpoints, a bounded wait for the whole exchange. Small on purpose: a
//! notification needs a POST and a status code, nothing more.

use std::time::Duration;

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

/// Largest response body read (and thrown away) so that the connection can
/// carry the next notification; a larger one ends the connection.
const MAX_RESPONSE_BODY: usize = 64 << 10;

/// Posts notifications to one endpoint over a kept-alive connection,
/// reconnecting when the endpoint closes it.
pub struct Poster {
    endpoint: Endpoint,
    conn: Option<crate::http1::Client>,
}

impl Poster {
    /// No connection yet: the first post connects.
    pub fn new(endpoint: Endpoint) -> Poster {
        Poster {
            endpoint,
            conn: None,
        }
    }

    /// POST `body`; the status code, or why there is none. A connection
    /// reused from an earlier post that turns out closed is replaced once
    /// (the endpoint may close idle connections whenever it likes).
    pub async fn post(
        &mut self,
        headers: &[(String, String)],
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u16, HookError> {
        let reused = self.conn.is_some();
        match self.exchange(headers, content_type, body, timeout).await {
            Err(HookError::Protocol(_)) if reused => {
                self.exchange(headers, content_type, body, timeout).await
            }
            other => other,
        }
    }

    async fn exchange(
        &mut self,
        headers: &[(String, String)],
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u16, HookError> {
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => crate::http1::Client::connect(&self.endpoint.host, self.endpoint.port, timeout)
                .await
                .map_err(|e| HookError::Unreachable(e.to_string()))?,
        };
        let head = crate::http1::request_head(
            "POST",
            &self.endpoint.path,
            c.host(),
            headers,
            content_type,
            body.len(),
            false,
        );
        let exchange = async {
            c.send(&head, body).await?;
            // Interim answers (100 Continue, 103 Early Hints) have no body
            // and are followed by the real one.
            loop {
                let h = c.response_head().await?;
                match h.status() {
                    Some(s) if (100..200).contains(&s) && s != 101 => continue,
                    _ => return Ok::<_, crate::http1::Http1Error>(h),
                }
            }
        };
        let head = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return Err(HookError::Timeout(timeout)),
            Ok(Err(e)) => return Err(HookError::Protocol(e.to_string())),
            Ok(Ok(h)) => h,
        };
        let status = head
            .status()
            .ok_or_else(|| HookError::Protocol("not an HTTP status line".into()))?;
        // The status is the answer. The body is read (and thrown away) only
        // so the connection can carry the next notification; one too large
        // or too slow ends the connection, not the notification.
        if !head.close {
            let mut sink = Vec::new();
            let read =
                tokio::time::timeout(timeout, c.body(&head, MAX_RESPONSE_BODY, &mut sink)).await;
            if matches!(read, Ok(Ok(()))) {
                self.conn = Some(c);
            }
        }
        Ok(status)
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
