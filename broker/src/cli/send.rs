//! `medbus send`: send HL7 files to an MLLP listener and summarise the ACKs.
//!
//! Each message is sent and its ACK awaited before the next (what most
//! sending systems do). An ACK counts only if its MSA-2 names the message
//! sent; anything else is reported, never matched to the next message.

use super::split::split_messages;
use crate::mllp::client::{BlockingClient, ExchangeError};
use medbus_hl7::Message;
use medbus_mllp::MllpCodec;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

/// What to send and how.
pub struct SendOptions {
    /// `host:port` of the listener.
    pub to: String,
    /// Files of one or many messages.
    pub files: Vec<PathBuf>,
    /// How long to wait for each ACK (and for the connection).
    pub timeout: Duration,
    /// Largest ACK frame accepted.
    pub max_ack: usize,
    /// Print every message's outcome, not only failures.
    pub verbose: bool,
}

/// Why `send` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The input held no HL7 message.
    #[error("no HL7 messages found in the given files")]
    Empty,
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// An ACK with this MSA-1 code that answers the message.
    Ack(String),
    /// An ACK that answers another message (MSA-2 mismatch).
    Mismatch,
    /// No usable ACK: connection error, timeout, or unparseable reply.
    NoAck,
    /// The message asked for no ACK (MSH-15 `NE`) and none came.
    NotRequested,
}

impl Outcome {
    /// AA or CA, or no ACK asked for.
    fn is_accepted(&self) -> bool {
        match self {
            Outcome::Ack(c) => c == "AA" || c == "CA",
            Outcome::NotRequested => true,
            Outcome::Mismatch | Outcome::NoAck => false,
        }
    }

    fn label(&self) -> String {
        match self {
            Outcome::Ack(c) => c.clone(),
            Outcome::Mismatch => "wrong ACK".into(),
            Outcome::NoAck => "no ACK".into(),
            Outcome::NotRequested => "sent without ACK (MSH-15 NE or ER)".into(),
        }
    }
}

/// Counts by outcome.
#[derive(Debug, Default)]
pub struct Summary {
    /// Messages attempted.
    pub sent: usize,
    /// Outcome → count.
    pub counts: BTreeMap<Outcome, usize>,
}

impl Summary {
    /// Whether every message got AA or CA (or asked for no ACK).
    pub fn all_accepted(&self) -> bool {
        self.counts.keys().all(Outcome::is_accepted)
    }

    /// `166 AA, 2 AR`.
    pub fn describe(&self) -> String {
        self.counts
            .iter()
            .map(|(o, n)| format!("{n} {}", o.label()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How long a message that asks for no ACK (MSH-15 `NE`) waits for one.
const NO_ACK_WAIT: Duration = Duration::from_millis(500);

/// Whether a read gave up waiting.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Connect to the first address `to` resolves to that answers.
fn connect(to: &str, timeout: Duration, max_ack: usize) -> std::io::Result<BlockingClient> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{to} resolves to no address"),
    );
    for addr in to.to_socket_addrs()? {
        match BlockingClient::connect(addr, timeout, timeout, max_ack) {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Judge an ACK against the control id of the message it should answer;
/// returns the outcome and a short reason for anything but AA/CA.
pub fn judge_ack(ack: &[u8], control_id: &str) -> (Outcome, String) {
    let Some(reply) = crate::ack::read_ack(ack) else {
        return (Outcome::NoAck, "unparseable ACK, or no MSA-1".into());
    };
    if reply.answers != control_id {
        return (
            Outcome::Mismatch,
            format!("ACK answers {:?}, not {control_id:?}", reply.answers),
        );
    }
    (Outcome::Ack(reply.code), reply.text)
}

/// Send every message of `opts.files`; `on_progress` is called after each.
pub fn run(opts: &SendOptions) -> Result<Summary, SendError> {
    let mut messages = Vec::new();
    for path in &opts.files {
        let bytes = std::fs::read(path).map_err(|source| SendError::Read {
            path: path.display().to_string(),
            source,
        })?;
        for (i, m) in split_messages(&bytes).into_iter().enumerate() {
            messages.push((format!("{}#{}", path.display(), i + 1), m));
        }
    }
    if messages.is_empty() {
        return Err(SendError::Empty);
    }
    let bar = indicatif::ProgressBar::new(messages.len() as u64);
    let mut summary = Summary::default();
    let mut conn: Option<BlockingClient> = None;
    for (name, msg) in &messages {
        let header = Message::parse(msg)
            .or_else(|_| Message::parse_header_only(msg))
            .ok();
        let control_id = header
            .as_ref()
            .and_then(|m| m.header().control_id.map(|c| c.to_string()))
            .unwrap_or_default();
        // MSH-15 `NE` (never) or `ER` (only for errors): a receiver in
        // enhanced mode sends no ACK for an accepted message; one that
        // sends one anyway, or refuses the message, does so at once, so a
        // short wait tells.
        let no_ack_asked = header.as_ref().is_some_and(|m| {
            m.header().accept_ack_type.is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("NE") || v.eq_ignore_ascii_case("ER")
            })
        });
        let result = match conn.as_mut() {
            Some(c) => Ok(c),
            None => connect(&opts.to, opts.timeout, opts.max_ack)
                .map(|c| conn.insert(c))
                .map_err(|e| Some(format!("cannot connect to {}: {e}", opts.to))),
        }
        .and_then(|c| {
            if no_ack_asked {
                c.set_read_timeout(opts.timeout.min(NO_ACK_WAIT))
                    .map_err(|e| Some(e.to_string()))?;
            }
            // `None`: no ACK came, as the message asked.
            c.exchange_framed(&MllpCodec::frame(msg))
                .map_err(|e| match e {
                    ExchangeError::Read(io) if no_ack_asked && is_timeout(&io) => None,
                    other => Some(other.to_string()),
                })
        });
        let (outcome, reason) = match result {
            Ok(ack) => judge_ack(&ack, &control_id),
            Err(None) => (Outcome::NotRequested, String::new()),
            Err(Some(e)) => {
                conn = None;
                (Outcome::NoAck, e)
            }
        };
        // A late ACK must never be read as the next message's answer.
        if no_ack_asked {
            conn = None;
        }
        summary.sent += 1;
        let accepted = outcome.is_accepted();
        if opts.verbose || !accepted {
            bar.suspend(|| {
                if reason.is_empty() {
                    println!("{name} {control_id}: {}", outcome.label());
                } else {
                    println!("{name} {control_id}: {}: {reason}", outcome.label());
                }
            });
        }
        *summary.counts.entry(outcome).or_default() += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}
