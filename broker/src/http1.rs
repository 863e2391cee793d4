//! A small HTTP/1.1 client and message reader over tokio: what rest-hook
//! notifications are posted with ([`crate::gateway::hook`]) and what
//! `medbus bench fhir` drives the gateway with and receives notifications
//! on.
//!
//! Why not a full HTTP library: medbus needs a status code from a hook
//! endpoint, and a load generator that keeps connections alive and reads
//! bodies framed by `Content-Length` or `chunked`; a few hundred lines
//! cover that, with every size read from the network capped.
//!
//! [`Reader`] reads successive messages (requests or responses) from one
//! stream, keeping bytes read past the end of one for the next, so it
//! serves keep-alive connections on both sides. [`Client`] is one
//! connection to a server: write a request, read its response.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest message head (start line and headers) read.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest chunk-size or trailer line read.
const MAX_LINE: usize = 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    Closed,
    /// Not HTTP/1.x as this reader understands it.
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
    /// A head or body above its cap.
    #[error("{what} larger than {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD target HTTP/1.x`.
    Request {
        /// The method.
        method: String,
        /// The request target (path and query).
        target: String,
    },
    /// `HTTP/1.x status reason`.
    Response {
        /// The status code.
        status: u16,
    },
}

/// A message head: what is needed to find the body and keep the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request or status line.
    pub start: StartLine,
    /// `Content-Length`, when given.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The connection ends after this message (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    pub close: bool,
}

impl Head {
    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// Parse a head (without its final empty line).
    fn parse(text: &[u8]) -> Result<Head, Http1Error> {
        let text = std::str::from_utf8(text).map_err(|_| Http1Error::Malformed("not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut parts = first.splitn(3, ' ');
        let (a, b, c) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let (start, version) = if a.starts_with("HTTP/") {
            let status = b
                .parse::<u16>()
                .ok()
                .filter(|s| (100..1000).contains(s))
                .ok_or(Http1Error::Malformed("bad status code"))?;
            (StartLine::Response { status }, a)
        } else if c.starts_with("HTTP/") && !a.is_empty() && !b.is_empty() {
            (
                StartLine::Request {
                    method: a.to_string(),
                    target: b.to_string(),
                },
                c,
            )
        } else {
            return Err(Http1Error::Malformed("bad start line"));
        };
        let mut head = Head {
            start,
            content_length: None,
            chunked: false,
            close: version == "HTTP/1.0",
        };
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or(Http1Error::Malformed("header without a colon"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| Http1Error::Malformed("bad Content-Length"))?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(Http1Error::Malformed("conflicting Content-Length"));
                }
                head.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        head.close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        head.close = false;
                    }
                }
            }
        }
        Ok(head)
    }

    /// Whether a body follows this head at all.
    fn has_body(&self) -> bool {
        match self.start {
            StartLine::Response { status } => !(status < 200 || status == 204 || status == 304),
            StartLine::Request { .. } => self.chunked || self.content_length.is_some(),
        }
    }
}

/// Reads successive HTTP/1.1 messages from one stream.
pub struct Reader<S> {
    stream: S,
    /// Bytes read and not yet consumed start at `pos`.
    buf: Vec<u8>,
    pos: usize,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    /// Read from `stream`.
    pub fn new(stream: S) -> Reader<S> {
        Reader {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
        }
    }

    /// The stream (to write answers on).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    fn available(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Read more bytes; 0 at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.buf).await
    }

    /// The next message's head; `None` when the peer closed the connection
    /// between messages.
    pub async fn head(&mut self) -> Result<Option<Head>, Http1Error> {
        let mut scanned: usize = 0;
        loop {
            let avail = self.available();
            let from = scanned.saturating_sub(3);
            if let Some(end) = avail
                .get(from..)
                .and_then(|a| a.windows(4).position(|w| w == b"\r\n\r\n"))
            {
                let end = from + end;
                let head = Head::parse(avail.get(..end).unwrap_or_default())?;
                self.pos += end + 4;
                return Ok(Some(head));
            }
            scanned = avail.len();
            if scanned > MAX_HEAD {
                return Err(Http1Error::TooLarge {
                    what: "message head",
                    limit: MAX_HEAD,
                });
            }
            if self.fill().await? == 0 {
                return if self.available().is_empty() {
                    Ok(None)
                } else {
                    Err(Http1Error::Closed)
                };
            }
        }
    }

    /// Move `n` bytes of body into `out`.
    async fn take(&mut self, mut n: u64, out: &mut Vec<u8>) -> Result<(), Http1Error> {
        while n > 0 {
            if self.available().is_empty() && self.fill().await? == 0 {
                return Err(Http1Error::Closed);
            }
            let avail = self.available();
            let k = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend_from_slice(avail.get(..k).unwrap_or_default());
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// One CRLF-terminated line (without the CRLF), at most [`MAX_LINE`].
    async fn line(&mut self) -> Result<String, Http1Error> {
        loop {
            let avail = self.available();
            if let Some(end) = avail.windows(2).position(|w| w == b"\r\n") {
                let line =
                    String::from_utf8_lossy(avail.get(..end).unwrap_or_default()).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if avail.len() > MAX_LINE {
                return Err(Http1Error::TooLarge {
                    what: "chunk line",
                    limit: MAX_LINE,
                });
            }
            if self.fill().await? == 0 {
                return Err(Http1Error::Closed);
            }
        }
    }

    /// The body that follows `head`, into `out` (cleared first), at most
    /// `max` bytes. A response without a length runs to the end of the
    /// stream.
    pub async fn body(
        &mut self,
        head: &Head,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Http1Error> {
        out.clear();
        let too_large = Http1Error::TooLarge {
            what: "message body",
            limit: max,
        };
        if !head.has_body() {
            return Ok(());
        }
        if head.chunked {
            loop {
                let line = self.line().await?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| Http1Error::Malformed("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().await?.is_empty() {}
                    return Ok(());
                }
                if out.len() as u64 + size > max as u64 {
                    return Err(too_large);
                }
                self.take(size, out).await?;
                if !self.line().await?.is_empty() {
                    return Err(Http1Error::Malformed("chunk without its CRLF"));
                }
            }
        }
        if let Some(n) = head.content_length {
            if n > max as u64 {
                return Err(too_large);
            }
            return self.take(n, out).await;
        }
        // A response framed by the end of the connection.
        loop {
            let avail = self.available();
            if out.len() + avail.len() > max {
                return Err(too_large);
            }
            out.extend_from_slice(avail);
            self.pos = self.buf.len();
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }
}

/// `host:port` for a `Host` header (IPv6 in brackets).
pub fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A request head, ready to write.
pub fn request_head(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(String, String)],
    content_type: Option<&str>,
    body_len: usize,
    close: bool,
) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: medbus/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if body_len > 0 || !matches!(method, "GET" | "HEAD" | "DELETE") {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// One client connection (keep-alive unless a request says otherwise).
pub struct Client {
    reader: Reader<TcpStream>,
    /// The `Host` header value.
    host: String,
}

impl Client {
    /// Connect to `host:port` within `timeout`.
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<Client> {
        let s = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(s) => s?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                ))
            }
        };
        s.set_nodelay(true)?;
        Ok(Client {
            reader: Reader::new(s),
            host: host_header(host, port),
        })
    }

    /// The `Host` header value for requests on this connection.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Write a request (head from [`request_head`], then the body).
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        let s = self.reader.get_mut();
        if body.is_empty() {
            s.write_all(head).await?;
        } else {
            // One write, so head and body leave in one segment when they fit
            // and the peer is woken once.
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            s.write_all(&all).await?;
        }
        s.flush().await
    }

    /// Read a response head only (the connection is not reusable after).
    pub async fn response_head(&mut self) -> Result<Head, Http1Error> {
        self.reader.head().await?.ok_or(Http1Error::Closed)
    }

    /// Read the body that follows `head` into `out` (at most `max` bytes).
    pub async fn body(
        &mut self,
        head: &Head,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Http1Error> {
        self.reader.body(head, max, out).await
    }

    /// Read a whole response, its body into `out` (at most `max` bytes).
    pub async fn response(&mut self, max: usize, out: &mut Vec<u8>) -> Result<Head, Http1Error> {
        let head = self.response_head().await?;
        self.reader.body(&head, max, out).await?;
        Ok(head)
    }

    /// Send a request and read its response; status and body.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
        max: usize,
    ) -> Result<(u16, Vec<u8>), Http1Error> {
        let head = request_head(
            method,
            target,
            &self.host,
            &[],
            content_type,
            body.len(),
            false,
        );
        self.send(&head, body).await?;
        let mut out = Vec::new();
        let h = self.response(max, &mut out).await?;
        Ok((h.status().unwrap_or(0), out))
    }
}

/// Write a response with an empty body.
pub async fn write_empty_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status_line: &str,
    close: bool,
) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status_line}\r\nContent-Length: 0\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(text.as_bytes()).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Result<(Head, Vec<u8>), String>> {
        let mut r = Reader::new(input);
        let mut out = Vec::new();
        loop {
            match r.head().await {
                Ok(None) => return out,
                Ok(Some(h)) => {
                    let mut body = Vec::new();
                    match r.body(&h, max, &mut body).await {
                        Ok(()) => out.push(Ok((h, body))),
                        Err(e) => {
                            out.push(Err(e.to_string()));
                            return out;
                        }
                    }
                }
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn keep_alive_responses_of_both_framings() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: x\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let got = rt().block_on(read_all(input, 100));
        assert_eq!(got.len(), 3, "{got:?}");
        let (h, b) = got[0].as_ref().expect("first");
        assert_eq!(
            (h.status(), b.as_slice(), h.close),
            (Some(200), &b"hello"[..], false)
        );
        let (h, b) = got[1].as_ref().expect("second");
        assert_eq!((h.status(), b.as_slice()), (Some(404), &b"abcde"[..]));
        assert_eq!(got[2].as_ref().expect("third").0.status(), Some(204));
    }

    #[test]
    fn requests_and_close_framed_responses() {
        let input =
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let got = rt().block_on(read_all(input, 100));
        let (h, b) = got[0].as_ref().expect("request");
        assert_eq!(
            h.start,
            StartLine::Request {
                method: "POST".into(),
                target: "/hook".into()
            }
        );
        assert!(h.close);
        assert_eq!(b, b"{}");
        let got = rt().block_on(read_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 100));
        let (h, b) = got[0].as_ref().expect("response");
        assert!(h.close);
        assert_eq!(b, b"until the end");
    }

    #[test]
    fn sizes_are_capped_and_junk_refused() {
        let got = rt().block_on(read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
            100,
        ));
        assert!(
            matches!(&got[0], Err(e) if e.contains("larger than 100")),
            "{got:?}"
        );
        let got = rt().block_on(read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n",
            100,
        ));
        assert!(matches!(&got[0], Err(e) if e.contains("larger")), "{got:?}");
        let long = vec![b'a'; MAX_HEAD + 10];
        let got = rt().block_on(read_all(&long, 100));
        assert!(matches!(&got[0], Err(e) if e.contains("head")), "{got:?}");
        let got = rt().block_on(read_all(b"nonsense\r\n\r\n", 100));
        assert!(got[0].is_err());
        let got = rt().block_on(read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            100,
        ));
        assert!(matches!(&got[0], Err(e) if e.contains("closed")), "{got:?}");
    }
}
