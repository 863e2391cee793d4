//! The command-line tools that talk to a running broker over the binary
//! protocol: `medbus tail` (live read, optionally in a consumer group),
//! `medbus publish` (one record per file), `medbus topics --server`.
//!
//! `tail` prints exactly what `dump` prints ([`super::dump::record_json`]),
//! so scripts read both the same way. It acknowledges each record after it
//! is written out, so a `--group` tail resumes after the last record it
//! printed.

use crate::headers::{CONTENT_TYPE_FHIR, CONTENT_TYPE_HL7, CONTENT_TYPE_RAW};
use crate::storage::{Record, TopicInfo};
use futures_util::FutureExt;
use medbus_protocol::{
    Client, ClientError, ClientOptions, PublishRecord, StartAt, SubscribeOptions,
};
use std::io::{Read, Write};
use std::path::Path;

/// Most records acknowledged in one ack: keeps acks cheap while the credit
/// window stays open.
const ACK_BATCH: usize = 64;

/// Credit window `tail` asks for.
const TAIL_CREDITS: u32 = 256;

/// Content type of JSON that is not FHIR.
const CONTENT_TYPE_JSON: &str = "application/json";

/// Why a remote command failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The broker refused or the connection failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Local I/O (reading the file, writing stdout).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The broker went away while records were followed.
    #[error(
        "the broker closed the connection after {0} records printed (resume with the same --group)"
    )]
    Lost(u64),
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `host:port` of the protocol listener.
    pub server: String,
    /// The client token (empty for a development broker).
    pub token: String,
}

impl Remote {
    async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(
            &self.server,
            ClientOptions {
                name: "medbus-cli".into(),
                token: self.token.clone(),
                ..ClientOptions::default()
            },
        )
        .await
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RemoteError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Parse `--from`: `earliest`, `latest`, an offset, or `@` and a time in
/// milliseconds since the epoch.
pub fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        _ => {
            if let Some(ms) = s.strip_prefix('@') {
                ms.parse()
                    .map(StartAt::Timestamp)
                    .map_err(|_| format!("{s:?}: write @ and milliseconds since the epoch"))
            } else {
                s.parse()
                    .map(StartAt::Offset)
                    .map_err(|_| format!("{s:?}: use earliest, latest, an offset or @TIMESTAMP_MS"))
            }
        }
    }
}

/// Guess a payload's content type: HL7 v2 if it starts with `MSH`, FHIR if
/// it is JSON with a `resourceType`, JSON if it parses, else raw bytes.
pub fn guess_content_type(bytes: &[u8]) -> &'static str {
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0x0b)
        .unwrap_or(text.len());
    if text.get(start..).is_some_and(|t| t.starts_with(b"MSH")) {
        return CONTENT_TYPE_HL7;
    }
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v) if v.get("resourceType").is_some() => CONTENT_TYPE_FHIR,
        Ok(_) => CONTENT_TYPE_JSON,
        Err(_) => CONTENT_TYPE_RAW,
    }
}

/// What `tail` reads.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Topic.
    pub topic: String,
    /// Where to start.
    pub start: StartAt,
    /// Consumer group, if any.
    pub group: Option<String>,
    /// Stop after this many records.
    pub count: Option<u64>,
}

/// Print records as JSON lines until `count`; returns how many were
/// printed. A connection that ends first is [`RemoteError::Lost`].
pub fn tail(
    remote: &Remote,
    options: &TailOptions,
    out: &mut dyn Write,
) -> Result<u64, RemoteError> {
    runtime()?.block_on(async {
        let client = remote.connect().await?;
        let mut sub_options = SubscribeOptions::new(&options.topic)
            .start(options.start)
            .credits(TAIL_CREDITS.min(client.welcome().max_credits.max(1)));
        sub_options.group = options.group.clone();
        let mut sub = client.subscribe(sub_options).await?;
        let mut printed = 0u64;
        let mut unacked: Vec<u64> = Vec::new();
        loop {
            if options.count.is_some_and(|c| printed >= c) {
                break;
            }
            // Acknowledge what was printed whenever the stream pauses.
            let next = match sub.next().now_or_never() {
                Some(item) => item,
                None => {
                    out.flush()?;
                    if !unacked.is_empty() {
                        sub.ack_many(std::mem::take(&mut unacked)).await?;
                    }
                    sub.next().await
                }
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                // Following stops only at --count: a connection that ends
                // first is a failure the caller must see (exit 1).
                Some(Err(ClientError::Closed)) | None => {
                    out.flush()?;
                    return Err(RemoteError::Lost(printed));
                }
                Some(Err(e)) => return Err(e.into()),
            };
            let r = delivery.record;
            let record = Record {
                timestamp_ms: r.timestamp_ms,
                headers: r.headers,
                content_type: r.content_type,
                payload: r.payload,
            };
            writeln!(
                out,
                "{}",
                super::dump::record_json(&delivery.topic, delivery.offset, &record)
            )?;
            printed += 1;
            unacked.push(delivery.offset);
            if unacked.len() >= ACK_BATCH {
                out.flush()?;
                sub.ack_many(std::mem::take(&mut unacked)).await?;
            }
        }
        out.flush()?;
        if !unacked.is_empty() {
            sub.ack_many(unacked).await?;
        }
        client.close().await;
        Ok(printed)
    })
}

/// Publish one record read from `file` (`None` or `-`: stdin); returns its
/// offset once durable.
pub fn publish(remote: &Remote, topic: &str, file: Option<&Path>) -> Result<u64, RemoteError> {
    let mut payload = Vec::new();
    match file {
        Some(p) if p != Path::new("-") => {
            payload = std::fs::read(p).map_err(|e| {
                RemoteError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", p.display()),
                ))
            })?;
        }
        _ => {
            std::io::stdin().read_to_end(&mut payload)?;
        }
    }
    let content_type = guess_content_type(&payload).to_string();
    runtime()?.block_on(async {
        let client = remote.connect().await?;
        let offset = client
            .publish(
                topic,
                PublishRecord {
                    headers: Vec::new(),
                    content_type,
                    payload,
                },
            )
            .await?;
        client.close().await;
        Ok(offset)
    })
}

/// The topics the broker lets this client see, as `topics` lists them.
pub fn topics(remote: &Remote) -> Result<Vec<TopicInfo>, RemoteError> {
    runtime()?.block_on(async {
        let client = remote.connect().await?;
        let topics = client.list_topics().await?;
        client.close().await;
        Ok(topics
            .into_iter()
            .map(|t| TopicInfo {
                name: t.name,
                first: t.first,
                last: t.last,
                count: t.count,
                bytes: t.bytes,
            })
            .collect())
    })
}

/// Admin: forget consumer `group` on `topic`.
pub fn delete_group(remote: &Remote, group: &str, topic: &str) -> Result<(), RemoteError> {
    runtime()?.block_on(async {
        let client = remote.connect().await?;
        client.delete_group(group, topic).await?;
        client.close().await;
        Ok(())
    })
}

/// Admin: replay a route (`destination = false`) or a destination over
/// `from..=to`; returns the broker's summary as JSON.
pub fn replay(
    remote: &Remote,
    destination: bool,
    name: &str,
    from: u64,
    to: Option<u64>,
) -> Result<serde_json::Value, RemoteError> {
    let target = if destination {
        medbus_protocol::ReplayTarget::Destination
    } else {
        medbus_protocol::ReplayTarget::Route
    };
    runtime()?.block_on(async {
        let client = remote.connect().await?;
        let (read, written, dead_lettered, filtered) =
            client.replay(target, name, from, to).await?;
        client.close().await;
        Ok(serde_json::json!({
            "read": read,
            "written": written,
            "dead_lettered": dead_lettered,
            "filtered": filtered,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse() {
        assert_eq!(parse_start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartAt::Latest));
        assert_eq!(parse_start("42"), Ok(StartAt::Offset(42)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("yesterday").is_err());
    }

    #[test]
    fn content_types_are_guessed() {
        assert_eq!(guess_content_type(b"MSH|^~\\&|A\r"), CONTENT_TYPE_HL7);
        assert_eq!(
            guess_content_type(b"\xef\xbb\xbfMSH|^~\\&|A\r"),
            CONTENT_TYPE_HL7
        );
        assert_eq!(
            guess_content_type(br#"{"resourceType":"Patient"}"#),
            CONTENT_TYPE_FHIR
        );
        assert_eq!(guess_content_type(b"[1,2]"), CONTENT_TYPE_JSON);
        assert_eq!(guess_content_type(b"\x00\x01"), CONTENT_TYPE_RAW);
    }
}
