//! Internal events: one struct per thing that happens, whose `emit` writes
//! both the log line and the metrics, so logs and metrics never drift apart.
//!
//! PHI policy lives here too: no event logs message content. What is logged
//! per message is listener, peer, control id, message type, topic and offset.

use crate::metrics::Metrics;
use crate::storage::CommitStats;
use std::net::SocketAddr;
use std::time::Duration;

/// A sending system connected.
pub struct ConnectionOpened<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Peer address.
    pub peer: SocketAddr,
}

impl ConnectionOpened<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.mllp_connections.with_label_values(&[self.listener]).inc();
        tracing::info!(listener = %self.listener, peer = %self.peer, "connection opened");
    }
}

/// A connection ended (peer closed, idle timeout, error, shutdown).
pub struct ConnectionClosed<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Peer address.
    pub peer: SocketAddr,
}

impl ConnectionClosed<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.mllp_connections.with_label_values(&[self.listener]).dec();
        tracing::info!(listener = %self.listener, peer = %self.peer, "connection closed");
    }
}

/// A connection was refused at the listener's cap.
pub struct ConnectionRefused<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Peer address.
    pub peer: SocketAddr,
    /// The cap in force.
    pub limit: usize,
}

impl ConnectionRefused<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.mllp_connections_refused
            .with_label_values(&[self.listener])
            .inc();
        tracing::warn!(
            listener = %self.listener, peer = %self.peer, limit = self.limit,
            "connection refused: listener is at its max_connections limit"
        );
    }
}

/// Bytes arrived outside any MLLP frame and were dropped.
pub struct BytesDiscarded<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// How many.
    pub bytes: u64,
}

impl BytesDiscarded<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        if self.bytes > 0 {
            m.mllp_discarded_bytes
                .with_label_values(&[self.listener])
                .inc_by(self.bytes);
            tracing::debug!(listener = %self.listener, bytes = self.bytes, "bytes outside MLLP frames discarded");
        }
    }
}

/// How an inbound message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored durably; AA.
    Stored,
    /// A retransmission of a stored message; AA, not stored again.
    Duplicate,
    /// Malformed; AR, dead-lettered.
    Rejected,
    /// Storage failed; AE.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// An inbound message was answered.
pub struct MessageAnswered<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// What happened to it.
    pub outcome: Outcome,
    /// The MSA-1 code sent.
    pub ack_code: &'a str,
    /// Frame complete → ACK queued.
    pub latency: Duration,
    /// Where it went (topic, offset), when stored.
    pub stored_at: Option<(&'a str, u64)>,
    /// Why it was refused or failed (never message content).
    pub reason: Option<&'a str>,
}

impl MessageAnswered<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.mllp_messages
            .with_label_values(&[self.listener, self.outcome.label()])
            .inc();
        m.mllp_acks
            .with_label_values(&[self.listener, self.ack_code])
            .inc();
        m.mllp_ack_latency
            .with_label_values(&[self.listener])
            .observe(self.latency.as_secs_f64());
        let ack_us = self.latency.as_micros() as u64;
        let reason = self.reason.unwrap_or("");
        match (self.outcome, self.stored_at) {
            (Outcome::Stored, Some((topic, offset))) => {
                tracing::debug!(%topic, offset, ack_us, "stored")
            }
            (Outcome::Duplicate, Some((topic, offset))) => tracing::info!(
                %topic, offset, "retransmission acknowledged again, not stored twice"
            ),
            (Outcome::Rejected, _) => {
                tracing::warn!(%reason, code = self.ack_code, "message refused and dead-lettered")
            }
            (Outcome::Failed, _) => {
                tracing::error!(%reason, code = self.ack_code, "message not stored")
            }
            _ => {}
        }
    }
}

/// A record went to a dead-letter topic.
pub struct DeadLettered<'a> {
    /// Where it came from, e.g. `listener/lab`.
    pub source: &'a str,
    /// The dead-letter topic.
    pub topic: &'a str,
    /// Whether it could be stored.
    pub stored: bool,
}

impl DeadLettered<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        if self.stored {
            m.dead_letters.with_label_values(&[self.source]).inc();
        } else {
            tracing::error!(source = %self.source, topic = %self.topic, "rejected input could not be dead-lettered");
        }
    }
}

/// A group commit finished.
pub struct CommitFinished<'a>(pub &'a CommitStats);

impl CommitFinished<'_> {
    /// Count (and log failures).
    pub fn emit(self, m: &Metrics) {
        let s = self.0;
        m.storage_commit_seconds.observe(s.elapsed.as_secs_f64());
        m.storage_commit_batch_records.observe(s.records as f64);
        if !s.ok {
            m.storage_commit_failures.inc();
            return;
        }
        for t in &s.topics {
            m.topic_records
                .with_label_values(&[&t.topic])
                .inc_by(t.records);
            m.topic_last_offset
                .with_label_values(&[&t.topic])
                .set(i64::try_from(t.last_offset).unwrap_or(i64::MAX));
            m.topic_bytes
                .with_label_values(&[&t.topic])
                .set(i64::try_from(t.total_bytes).unwrap_or(i64::MAX));
        }
    }
}

/// A route wrote one batch (outputs, dead letters and cursor, atomically).
pub struct RouteBatchWritten<'a> {
    /// Route name.
    pub route: &'a str,
    /// Source topic.
    pub source: &'a str,
    /// First source offset of the batch.
    pub from: u64,
    /// Last source offset of the batch.
    pub to: u64,
    /// Records that matched.
    pub matched: u64,
    /// Records that did not match.
    pub filtered: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Records written to targets.
    pub outputs: u64,
    /// Receipt time of the oldest matched record, for end-to-end latency.
    pub oldest_received_ms: Option<u64>,
    /// Now.
    pub now_ms: u64,
}

impl RouteBatchWritten<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        let r = self.route;
        m.route_records
            .with_label_values(&[r, "matched"])
            .inc_by(self.matched);
        m.route_records
            .with_label_values(&[r, "filtered"])
            .inc_by(self.filtered);
        m.route_records
            .with_label_values(&[r, "dead_lettered"])
            .inc_by(self.dead_lettered);
        m.route_outputs.with_label_values(&[r]).inc_by(self.outputs);
        if self.dead_lettered > 0 {
            m.dead_letters
                .with_label_values(&[&format!("route/{r}")])
                .inc_by(self.dead_lettered);
        }
        if let Some(t) = self.oldest_received_ms {
            let secs = self.now_ms.saturating_sub(t) as f64 / 1000.0;
            m.end_to_end_latency_seconds.observe(secs);
        }
        tracing::debug!(
            route = %r, topic = %self.source, from = self.from, to = self.to,
            matched = self.matched, filtered = self.filtered, dead_lettered = self.dead_lettered,
            outputs = self.outputs, "route batch written"
        );
    }
}

/// A route could not read or write and pauses.
pub struct RouteStalled<'a> {
    /// Route name.
    pub route: &'a str,
    /// What failed.
    pub error: &'a crate::storage::StorageError,
}

impl RouteStalled<'_> {
    /// Log.
    pub fn emit(self, _m: &Metrics) {
        tracing::error!(route = %self.route, error = %self.error, "route paused after a storage error; it resumes from its durable cursor");
    }
}
