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

/// Why a connection was refused.
#[derive(Debug, Clone)]
pub enum RefusalReason {
    /// The peer is outside the listener's allowlist.
    NotAllowed,
    /// The listener is at its cap (the cap).
    MaxConnections(usize),
    /// The TLS handshake failed (why).
    Tls(String),
}

/// A connection was refused.
pub struct ConnectionRefused<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Peer address.
    pub peer: SocketAddr,
    /// Why.
    pub reason: RefusalReason,
}

impl ConnectionRefused<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        let label = match &self.reason {
            RefusalReason::NotAllowed => "not_allowed",
            RefusalReason::MaxConnections(_) => "max_connections",
            RefusalReason::Tls(_) => "tls",
        };
        m.mllp_connections_refused
            .with_label_values(&[self.listener, label])
            .inc();
        match self.reason {
            RefusalReason::NotAllowed => tracing::warn!(
                listener = %self.listener, peer = %self.peer,
                "connection refused: the peer is not in the listener's allow list"
            ),
            RefusalReason::MaxConnections(limit) => tracing::warn!(
                listener = %self.listener, peer = %self.peer, limit,
                "connection refused: listener is at its max_connections limit"
            ),
            RefusalReason::Tls(error) => tracing::warn!(
                listener = %self.listener, peer = %self.peer, %error,
                "connection refused: TLS handshake failed"
            ),
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The MSA-1 code sent; `None` when MSH-15 asked for no ACK.
    pub ack_code: Option<&'a str>,
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
        if let Some(code) = self.ack_code {
            m.mllp_acks.with_label_values(&[self.listener, code]).inc();
        }
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

/// What one delivery attempt of a destination came to.
pub enum AttemptResult<'a> {
    /// An ACK naming the message, with this MSA-1 code.
    Acked(&'a str),
    /// No usable ACK: `timeout` or `connection`.
    Failed(&'static str),
    /// The receiver could not be reached (before sending).
    Unreachable(String),
}

/// One delivery attempt of a destination.
pub struct DestinationAttempt<'a> {
    /// Destination name.
    pub destination: &'a str,
    /// Its result.
    pub result: AttemptResult<'a>,
}

impl<'a> DestinationAttempt<'a> {
    /// An ACK arrived.
    pub fn acked(destination: &'a str, code: &'a str) -> Self {
        Self {
            destination,
            result: AttemptResult::Acked(code),
        }
    }
    /// No usable ACK.
    pub fn failed(destination: &'a str, kind: &'static str) -> Self {
        Self {
            destination,
            result: AttemptResult::Failed(kind),
        }
    }
    /// Could not connect.
    pub fn unreachable(destination: &'a str, error: &dyn std::fmt::Display) -> Self {
        Self {
            destination,
            result: AttemptResult::Unreachable(error.to_string()),
        }
    }

    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        let d = self.destination;
        match self.result {
            // Retries are counted where one is decided (the last attempt
            // before a dead letter is not one).
            AttemptResult::Acked(code) => {
                m.destination_acks.with_label_values(&[d, code]).inc();
            }
            AttemptResult::Failed(kind) => {
                tracing::debug!(destination = %d, kind, "delivery attempt failed");
            }
            AttemptResult::Unreachable(e) => {
                m.destination_retries
                    .with_label_values(&[d, "unreachable"])
                    .inc();
                tracing::warn!(destination = %d, error = %e, "receiver unreachable; retrying with backoff");
            }
        }
    }
}

/// How a destination finished with one message.
#[derive(Debug, Clone, Copy)]
pub enum DoneOutcome {
    /// Positively acknowledged.
    Delivered,
    /// Written to the dead-letter topic.
    DeadLettered,
    /// Skipped by the destination's `when`.
    Filtered,
}

/// A destination finished with one message (the cursor has moved).
pub struct DestinationDone<'a> {
    /// Destination name.
    pub destination: &'a str,
    /// How.
    pub outcome: DoneOutcome,
    /// Source offset.
    pub offset: u64,
    /// Why it was dead-lettered.
    pub reason: Option<&'a str>,
}

impl DestinationDone<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        let d = self.destination;
        let label = match self.outcome {
            DoneOutcome::Delivered => "delivered",
            DoneOutcome::DeadLettered => "dead_lettered",
            DoneOutcome::Filtered => "filtered",
        };
        m.destination_messages.with_label_values(&[d, label]).inc();
        m.set_destination_blocked(d, false);
        match self.outcome {
            DoneOutcome::DeadLettered => {
                m.dead_letters
                    .with_label_values(&[&format!("destination/{d}")])
                    .inc();
                tracing::warn!(destination = %d, offset = self.offset, reason = self.reason.unwrap_or(""), "message dead-lettered");
            }
            _ => {
                tracing::debug!(destination = %d, offset = self.offset, outcome = label, "message done")
            }
        }
    }
}

/// A destination's connection opened or closed.
pub struct DestinationLink<'a> {
    /// Destination name.
    pub destination: &'a str,
    /// Now connected?
    pub connected: bool,
}

impl DestinationLink<'_> {
    /// Log and set the gauge.
    pub fn emit(self, m: &Metrics) {
        let g = m
            .destination_connected
            .with_label_values(&[self.destination]);
        if self.connected && g.get() == 0 {
            tracing::info!(destination = %self.destination, "connected to the receiver");
        }
        g.set(i64::from(self.connected));
    }
}

/// A binary-protocol client connected (before Hello).
pub struct ClientConnected {
    /// Peer address.
    pub peer: SocketAddr,
}

impl ClientConnected {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.client_connections.inc();
        tracing::debug!(peer = %self.peer, "protocol connection opened");
    }
}

/// A binary-protocol client said Hello with a valid token.
pub struct ClientAuthenticated<'a> {
    /// Peer address.
    pub peer: SocketAddr,
    /// The `[[clients]]` name (never the token).
    pub client: &'a str,
}

impl ClientAuthenticated<'_> {
    /// Log.
    pub fn emit(self, _m: &Metrics) {
        tracing::info!(peer = %self.peer, client = %self.client, "protocol client authenticated");
    }
}

/// A binary-protocol connection ended.
pub struct ClientDisconnected<'a> {
    /// Peer address.
    pub peer: SocketAddr,
    /// The `[[clients]]` name, once authenticated.
    pub client: Option<&'a str>,
}

impl ClientDisconnected<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.client_connections.dec();
        tracing::info!(peer = %self.peer, client = self.client.unwrap_or("-"), "protocol connection closed");
    }
}

/// A binary-protocol request or frame was answered with an error frame.
pub struct ProtocolErrorSent<'a> {
    /// Peer address.
    pub peer: SocketAddr,
    /// One of [`crate::metrics::PROTOCOL_ERROR_KINDS`].
    pub kind: &'static str,
    /// The request (0: the connection, which is then closed).
    pub request_id: u64,
    /// The text sent to the client (never record content).
    pub message: &'a str,
}

impl ProtocolErrorSent<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.protocol_errors.with_label_values(&[self.kind]).inc();
        if self.request_id == 0 {
            tracing::warn!(peer = %self.peer, kind = self.kind, message = %self.message, "protocol error: closing the connection");
        } else {
            tracing::info!(peer = %self.peer, kind = self.kind, request_id = self.request_id, message = %self.message, "protocol request refused");
        }
    }
}

/// A consumer group found records gone (removed by retention, `force =
/// true`, or a store restored from an older backup) that it had not read.
pub struct ConsumerSkipped<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Group.
    pub group: &'a str,
    /// The first offset it had not read.
    pub from: u64,
    /// The first offset still there.
    pub to: u64,
}

impl ConsumerSkipped<'_> {
    /// Count and warn: the group will never see these records.
    pub fn emit(self, m: &Metrics) {
        let skipped = self.to.saturating_sub(self.from);
        m.consumer_skipped_records
            .with_label_values(&[self.topic, self.group])
            .inc_by(skipped);
        tracing::warn!(
            topic = %self.topic, group = %self.group, from = self.from, to = self.to, skipped,
            "consumer group skipped records removed before it read them"
        );
    }
}

/// A consumer group's position changed (acks, new records).
pub struct ConsumerLagChanged<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Group.
    pub group: &'a str,
    /// Records not yet acknowledged.
    pub lag: u64,
}

impl ConsumerLagChanged<'_> {
    /// Set the gauge.
    pub fn emit(self, m: &Metrics) {
        m.consumer_lag_records
            .with_label_values(&[self.topic, self.group])
            .set(i64::try_from(self.lag).unwrap_or(i64::MAX));
        tracing::trace!(topic = %self.topic, group = %self.group, lag = self.lag, "consumer lag");
    }
}

/// Retention went over one topic.
pub struct RetentionPass<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Records removed.
    pub removed: u64,
    /// Payload bytes removed.
    pub bytes: u64,
    /// The cursor (`kind/name`) that held retention back, if any.
    pub held_by: Option<&'a str>,
    /// Whether that reader did not hold this topic at the last pass.
    pub newly_held: bool,
}

impl RetentionPass<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        if self.removed > 0 {
            m.retention_deleted_records
                .with_label_values(&[self.topic])
                .inc_by(self.removed);
            tracing::info!(topic = %self.topic, removed = self.removed, bytes = self.bytes, "retention removed old records");
        }
        match self.held_by {
            Some(owner) if self.newly_held => {
                tracing::info!(topic = %self.topic, %owner, "retention held back by a reader that has not caught up")
            }
            Some(owner) => {
                tracing::debug!(topic = %self.topic, %owner, "retention still held back")
            }
            None => {}
        }
    }
}

/// The FHIR gateway answered a request.
pub struct FhirRequestServed {
    /// One of [`crate::gateway::INTERACTIONS`].
    pub interaction: &'static str,
    /// HTTP status sent.
    pub status: u16,
    /// Request received → answer ready.
    pub took: Duration,
}

impl FhirRequestServed {
    /// Log and count (no URL: ids and search values can be patient data).
    pub fn emit(self, m: &Metrics) {
        m.fhir_requests
            .with_label_values(&[self.interaction, &self.status.to_string()])
            .inc();
        m.fhir_request_seconds
            .with_label_values(&[self.interaction])
            .observe(self.took.as_secs_f64());
        tracing::debug!(
            interaction = self.interaction,
            status = self.status,
            took_us = self.took.as_micros() as u64,
            "FHIR request"
        );
    }
}

/// The FHIR gateway appended resources durably.
pub struct FhirResourcesStored {
    /// Records written (one per resource).
    pub records: usize,
}

impl FhirResourcesStored {
    /// Count.
    pub fn emit(self, m: &Metrics) {
        m.fhir_resources_stored.inc_by(self.records as u64);
        tracing::debug!(records = self.records, "FHIR resources stored");
    }
}

/// The current-state view indexed one batch of a topic.
pub struct ViewBatchIndexed<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Records read.
    pub records: u64,
    /// New resource versions (or deletions) they made.
    pub versions: u64,
}

impl ViewBatchIndexed<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        m.fhir_view_versions.inc_by(self.versions);
        tracing::debug!(topic = %self.topic, records = self.records, versions = self.versions, "FHIR view batch indexed");
    }
}

/// How one Subscription notification attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum SubscriptionOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// A non-2xx answer or a timeout; it is sent again.
    Retried,
    /// The endpoint could not be reached; sent again, no attempt spent.
    Unreachable,
    /// Out of attempts: written to the dead-letter topic.
    DeadLettered,
}

/// A Subscription notification attempt ended.
pub struct SubscriptionDelivery<'a> {
    /// The Subscription's id (server-assigned or the client's; not patient data).
    pub subscription: &'a str,
    /// How.
    pub outcome: SubscriptionOutcome,
    /// Record received → delivered (for `Delivered`).
    pub latency: Duration,
}

impl SubscriptionDelivery<'_> {
    /// Log and count.
    pub fn emit(self, m: &Metrics) {
        let label = match self.outcome {
            SubscriptionOutcome::Delivered => "delivered",
            SubscriptionOutcome::Retried => "retried",
            SubscriptionOutcome::Unreachable => "unreachable",
            SubscriptionOutcome::DeadLettered => "dead_lettered",
        };
        m.fhir_subscription_deliveries
            .with_label_values(&[label])
            .inc();
        match self.outcome {
            SubscriptionOutcome::Delivered => {
                m.fhir_subscription_latency_seconds
                    .observe(self.latency.as_secs_f64());
                tracing::debug!(subscription = %self.subscription, "notification delivered");
            }
            SubscriptionOutcome::DeadLettered => {
                m.dead_letters.with_label_values(&["subscription"]).inc();
                tracing::warn!(subscription = %self.subscription, "notification dead-lettered");
            }
            SubscriptionOutcome::Retried => {
                tracing::info!(subscription = %self.subscription, "notification refused; retrying");
            }
            SubscriptionOutcome::Unreachable => {}
        }
    }
}

/// The set of active Subscriptions changed.
pub struct SubscriptionsChanged {
    /// How many now run.
    pub active: usize,
}

impl SubscriptionsChanged {
    /// Log and set the gauge.
    pub fn emit(self, m: &Metrics) {
        m.fhir_subscriptions_active
            .set(i64::try_from(self.active).unwrap_or(i64::MAX));
        tracing::info!(active = self.active, "subscriptions updated");
    }
}
