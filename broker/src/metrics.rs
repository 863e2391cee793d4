//! The Prometheus registry and every metric medbus exports.
//!
//! Names follow DESIGN.md (`medbus_` prefix, base units, `_total` on
//! counters). Label values are bounded: listener, topic, source and code
//! names come from the config or fixed sets, never from message content
//! (no control ids, no patient ids). Later capabilities add their families
//! here, so `/metrics` is described in one place.

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    /// Messages received per listener, by outcome: `stored`, `duplicate`,
    /// `rejected` (AR, dead-lettered), `failed` (AE, storage error).
    pub mllp_messages: IntCounterVec,
    /// ACKs sent per listener, by MSA-1 code.
    pub mllp_acks: IntCounterVec,
    /// Open MLLP connections per listener.
    pub mllp_connections: IntGaugeVec,
    /// Connections refused at the max_connections cap.
    pub mllp_connections_refused: IntCounterVec,
    /// Bytes discarded outside MLLP frames.
    pub mllp_discarded_bytes: IntCounterVec,
    /// Time from a complete frame to its ACK being queued for writing.
    pub mllp_ack_latency: HistogramVec,
    /// Duration of a group commit (inserts + flush + fdatasync).
    pub storage_commit_seconds: Histogram,
    /// Records per group commit.
    pub storage_commit_batch_records: Histogram,
    /// Group commits that failed (every append in them answered with an error).
    pub storage_commit_failures: IntCounter,
    /// Bytes the store uses on disk (sampled at scrape time).
    pub storage_disk_bytes: IntGauge,
    /// Reads refused since start because a stored record was damaged on
    /// disk (sampled at scrape time).
    pub storage_damaged_reads: IntCounter,
    /// Records appended per topic since start.
    pub topic_records: IntCounterVec,
    /// Newest offset per topic.
    pub topic_last_offset: IntGaugeVec,
    /// Payload bytes stored per topic.
    pub topic_bytes: IntGaugeVec,
    /// Records written to a dead-letter topic, by source (`listener/<name>`, …).
    pub dead_letters: IntCounterVec,
    /// Source records a route read, by outcome: `matched`, `filtered`,
    /// `dead_lettered`.
    pub route_records: IntCounterVec,
    /// Records a route wrote to its targets.
    pub route_outputs: IntCounterVec,
    /// Source records not yet routed (sum over the route's sources).
    pub route_lag_records: IntGaugeVec,
    /// HL7 → FHIR conversion time, by message type (mapped types; others
    /// count as `other`).
    pub fhir_convert_seconds: HistogramVec,
    /// Received by a listener → written to a route's targets.
    pub end_to_end_latency_seconds: Histogram,
    /// Open binary-protocol connections.
    pub client_connections: IntGauge,
    /// Records a consumer group has not yet acknowledged, per topic and
    /// group (groups are capped, so the label set is bounded).
    pub consumer_lag_records: IntGaugeVec,
    /// Records removed (retention) before a consumer group read them.
    pub consumer_skipped_records: IntCounterVec,
    /// Binary-protocol errors, by kind (a fixed set: [`PROTOCOL_ERROR_KINDS`]).
    pub protocol_errors: IntCounterVec,
    /// Oldest offset still stored, per topic.
    pub topic_first_offset: IntGaugeVec,
    /// Records removed by retention, per topic.
    pub retention_deleted_records: IntCounterVec,
    /// Source records replayed, by kind (`route`, `destination`).
    pub replayed_records: IntCounterVec,
    /// Messages a destination finished, by outcome: `delivered`,
    /// `dead_lettered`, `filtered`.
    pub destination_messages: IntCounterVec,
    /// ACKs a destination received, by MSA-1 code (`wrong`: naming another
    /// message).
    pub destination_acks: IntCounterVec,
    /// Retries, by reason: `nak`, `timeout`, `connection`, `unreachable`.
    pub destination_retries: IntCounterVec,
    /// Source records not yet delivered.
    pub destination_lag_records: IntGaugeVec,
    /// 1 while connected to the receiver.
    pub destination_connected: IntGaugeVec,
    /// 1 while `on_failure = "block"` holds a message.
    pub destination_blocked: IntGaugeVec,
    /// When the message in flight was first sent (Unix seconds; 0: none).
    pub destination_inflight_since: GaugeVec,
    /// FHIR gateway requests, by interaction (a fixed set) and HTTP status.
    pub fhir_requests: IntCounterVec,
    /// FHIR gateway request latency, by interaction.
    pub fhir_request_seconds: HistogramVec,
    /// Resources the FHIR gateway stored (records appended).
    pub fhir_resources_stored: IntCounter,
    /// Records of the `fhir.*` topics the current-state view has not indexed.
    pub fhir_view_lag_records: IntGauge,
    /// Resource versions the view indexed.
    pub fhir_view_versions: IntCounter,
    /// Subscription notification attempts, by outcome: `delivered`,
    /// `retried`, `unreachable`, `dead_lettered`.
    pub fhir_subscription_deliveries: IntCounterVec,
    /// Records not yet examined, summed over active Subscriptions.
    pub fhir_subscription_lag_records: IntGauge,
    /// From receipt of the record to the endpoint's 2xx.
    pub fhir_subscription_latency_seconds: Histogram,
    /// Active Subscriptions.
    pub fhir_subscriptions_active: IntGauge,
}

/// Message types that get their own `fhir_convert_seconds` label value; the
/// rest share `other`, so a sender cannot create series at will.
const CONVERT_LABELS: [&str; 27] = [
    "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A11", "ADT^A13",
    "ADT^A28", "ADT^A31", "ADT^A40", "ORU^R01", "ORM^O01", "OML^O21", "SIU^S12", "SIU^S13",
    "SIU^S14", "SIU^S15", "SIU^S26", "MDM^T01", "MDM^T02", "MDM^T06", "MDM^T08", "MDM^T10",
    "VXU^V04", "RDE^O11", "DFT^P03",
];

/// Every `protocol_errors_total{kind}` value, so the series exist from
/// start-up and a client cannot create new ones.
pub const PROTOCOL_ERROR_KINDS: [&str; 15] = [
    "frame_too_large",
    "empty_frame",
    "bad_version",
    "undecodable",
    "truncated",
    "unsupported_version",
    "not_authenticated",
    "auth_failed",
    "forbidden",
    "invalid_request",
    "unknown_subscription",
    "limit_reached",
    "storage_failed",
    "max_connections",
    "hello_timeout",
];

/// Why the registry could not be built (a duplicate name: a build defect).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Create and register every family.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let latency = exponential_buckets(0.0001, 2.0, 17)?; // 100 µs … 6.5 s
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(format!("medbus_{name}"), help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(format!("medbus_{name}"), help), labels)
        };
        let m = Metrics {
            mllp_messages: counter(
                "mllp_messages_total",
                "MLLP messages received, by outcome",
                &["listener", "outcome"],
            )?,
            mllp_acks: counter(
                "mllp_acks_total",
                "ACKs sent, by MSA-1 code",
                &["listener", "code"],
            )?,
            mllp_connections: gauge("mllp_connections", "Open MLLP connections", &["listener"])?,
            mllp_connections_refused: counter(
                "mllp_connections_refused_total",
                "Connections refused, by reason: not_allowed, max_connections, tls",
                &["listener", "reason"],
            )?,
            mllp_discarded_bytes: counter(
                "mllp_discarded_bytes_total",
                "Bytes received outside MLLP frames and discarded",
                &["listener"],
            )?,
            mllp_ack_latency: HistogramVec::new(
                HistogramOpts::new(
                    "medbus_mllp_ack_latency_seconds",
                    "Time from a complete MLLP frame to its ACK",
                )
                .buckets(latency.clone()),
                &["listener"],
            )?,
            storage_commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "medbus_storage_commit_seconds",
                    "Duration of a group commit: inserts, flush and fdatasync",
                )
                .buckets(latency),
            )?,
            storage_commit_batch_records: Histogram::with_opts(
                HistogramOpts::new(
                    "medbus_storage_commit_batch_records",
                    "Records per group commit",
                )
                .buckets(exponential_buckets(1.0, 2.0, 13)?),
            )?,
            storage_commit_failures: IntCounter::new(
                "medbus_storage_commit_failures_total",
                "Group commits that could not be made durable",
            )?,
            storage_disk_bytes: IntGauge::new(
                "medbus_storage_disk_bytes",
                "Bytes the message store uses on disk",
            )?,
            storage_damaged_reads: IntCounter::new(
                "medbus_storage_damaged_reads_total",
                "Reads refused since start because a stored record was damaged on disk",
            )?,
            topic_records: counter(
                "topic_records_total",
                "Records appended since start",
                &["topic"],
            )?,
            topic_last_offset: gauge("topic_last_offset", "Newest offset", &["topic"])?,
            topic_bytes: gauge("topic_bytes", "Payload bytes stored", &["topic"])?,
            dead_letters: counter(
                "dead_letters_total",
                "Records written to a dead-letter topic",
                &["source"],
            )?,
            route_records: counter(
                "route_records_total",
                "Source records a route read, by outcome",
                &["route", "outcome"],
            )?,
            route_outputs: counter(
                "route_outputs_total",
                "Records a route wrote to its targets",
                &["route"],
            )?,
            route_lag_records: gauge(
                "route_lag_records",
                "Source records not yet routed",
                &["route"],
            )?,
            fhir_convert_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "medbus_fhir_convert_seconds",
                    "HL7 v2 to FHIR conversion time",
                )
                .buckets(exponential_buckets(0.000005, 2.0, 16)?),
                &["message_type"],
            )?,
            topic_first_offset: gauge(
                "topic_first_offset",
                "Oldest offset still stored",
                &["topic"],
            )?,
            replayed_records: counter(
                "replayed_records_total",
                "Source records replayed by an operator",
                &["kind"],
            )?,
            retention_deleted_records: counter(
                "retention_deleted_records_total",
                "Records removed by retention",
                &["topic"],
            )?,
            destination_messages: counter(
                "destination_messages_total",
                "Messages a destination finished, by outcome",
                &["destination", "outcome"],
            )?,
            destination_acks: counter(
                "destination_acks_total",
                "ACKs received by a destination, by MSA-1 code",
                &["destination", "code"],
            )?,
            destination_retries: counter(
                "destination_retries_total",
                "Delivery retries, by reason",
                &["destination", "reason"],
            )?,
            destination_lag_records: gauge(
                "destination_lag_records",
                "Source records not yet delivered",
                &["destination"],
            )?,
            destination_connected: gauge(
                "destination_connected",
                "1 while connected to the receiver",
                &["destination"],
            )?,
            destination_blocked: gauge(
                "destination_blocked",
                "1 while a failing message blocks delivery",
                &["destination"],
            )?,
            destination_inflight_since: GaugeVec::new(
                Opts::new(
                    "medbus_destination_inflight_since_timestamp_seconds",
                    "When the message in flight was first sent (0: none in flight)",
                ),
                &["destination"],
            )?,
            fhir_requests: counter(
                "fhir_requests_total",
                "FHIR gateway requests, by interaction and HTTP status",
                &["interaction", "status"],
            )?,
            fhir_request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "medbus_fhir_request_seconds",
                    "FHIR gateway request latency",
                )
                .buckets(exponential_buckets(0.00005, 2.0, 17)?),
                &["interaction"],
            )?,
            fhir_resources_stored: IntCounter::new(
                "medbus_fhir_resources_stored_total",
                "Resources the FHIR gateway appended to topics",
            )?,
            fhir_view_lag_records: IntGauge::new(
                "medbus_fhir_view_lag_records",
                "Records of fhir.* topics not yet in the current-state view",
            )?,
            fhir_view_versions: IntCounter::new(
                "medbus_fhir_view_versions_total",
                "Resource versions indexed by the current-state view",
            )?,
            fhir_subscription_deliveries: counter(
                "fhir_subscription_deliveries_total",
                "Subscription notification attempts, by outcome",
                &["outcome"],
            )?,
            fhir_subscription_lag_records: IntGauge::new(
                "medbus_fhir_subscription_lag_records",
                "Records not yet examined, summed over active Subscriptions",
            )?,
            fhir_subscription_latency_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "medbus_fhir_subscription_latency_seconds",
                    "From receipt of a record to the rest-hook's 2xx",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 17)?),
            )?,
            fhir_subscriptions_active: IntGauge::new(
                "medbus_fhir_subscriptions_active",
                "Active Subscriptions",
            )?,
            client_connections: IntGauge::new(
                "medbus_client_connections",
                "Open binary-protocol connections",
            )?,
            consumer_lag_records: gauge(
                "consumer_lag_records",
                "Records a consumer group has not acknowledged yet",
                &["topic", "group"],
            )?,
            consumer_skipped_records: counter(
                "consumer_skipped_records_total",
                "Records removed by retention before a consumer group read them",
                &["topic", "group"],
            )?,
            protocol_errors: counter(
                "protocol_errors_total",
                "Binary-protocol errors answered with an error frame, by kind",
                &["kind"],
            )?,
            end_to_end_latency_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "medbus_end_to_end_latency_seconds",
                    "From receipt by a listener to being written to a route's targets",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 17)?),
            )?,
            registry,
        };
        m.register()?;
        Ok(m)
    }

    fn register(&self) -> Result<(), MetricsError> {
        let r = &self.registry;
        r.register(Box::new(self.mllp_messages.clone()))?;
        r.register(Box::new(self.mllp_acks.clone()))?;
        r.register(Box::new(self.mllp_connections.clone()))?;
        r.register(Box::new(self.mllp_connections_refused.clone()))?;
        r.register(Box::new(self.mllp_discarded_bytes.clone()))?;
        r.register(Box::new(self.mllp_ack_latency.clone()))?;
        r.register(Box::new(self.storage_commit_seconds.clone()))?;
        r.register(Box::new(self.storage_commit_batch_records.clone()))?;
        r.register(Box::new(self.storage_commit_failures.clone()))?;
        r.register(Box::new(self.storage_disk_bytes.clone()))?;
        r.register(Box::new(self.storage_damaged_reads.clone()))?;
        r.register(Box::new(self.topic_records.clone()))?;
        r.register(Box::new(self.topic_last_offset.clone()))?;
        r.register(Box::new(self.topic_bytes.clone()))?;
        r.register(Box::new(self.dead_letters.clone()))?;
        r.register(Box::new(self.route_records.clone()))?;
        r.register(Box::new(self.route_outputs.clone()))?;
        r.register(Box::new(self.route_lag_records.clone()))?;
        r.register(Box::new(self.fhir_convert_seconds.clone()))?;
        r.register(Box::new(self.end_to_end_latency_seconds.clone()))?;
        r.register(Box::new(self.client_connections.clone()))?;
        r.register(Box::new(self.consumer_lag_records.clone()))?;
        r.register(Box::new(self.consumer_skipped_records.clone()))?;
        r.register(Box::new(self.protocol_errors.clone()))?;
        for kind in PROTOCOL_ERROR_KINDS {
            self.protocol_errors.with_label_values(&[kind]);
        }
        r.register(Box::new(self.topic_first_offset.clone()))?;
        r.register(Box::new(self.retention_deleted_records.clone()))?;
        r.register(Box::new(self.replayed_records.clone()))?;
        r.register(Box::new(self.destination_messages.clone()))?;
        r.register(Box::new(self.destination_acks.clone()))?;
        r.register(Box::new(self.destination_retries.clone()))?;
        r.register(Box::new(self.destination_lag_records.clone()))?;
        r.register(Box::new(self.destination_connected.clone()))?;
        r.register(Box::new(self.destination_blocked.clone()))?;
        r.register(Box::new(self.destination_inflight_since.clone()))?;
        r.register(Box::new(self.fhir_requests.clone()))?;
        r.register(Box::new(self.fhir_request_seconds.clone()))?;
        r.register(Box::new(self.fhir_resources_stored.clone()))?;
        r.register(Box::new(self.fhir_view_lag_records.clone()))?;
        r.register(Box::new(self.fhir_view_versions.clone()))?;
        r.register(Box::new(self.fhir_subscription_deliveries.clone()))?;
        r.register(Box::new(self.fhir_subscription_lag_records.clone()))?;
        r.register(Box::new(self.fhir_subscription_latency_seconds.clone()))?;
        r.register(Box::new(self.fhir_subscriptions_active.clone()))?;
        Ok(())
    }

    /// Make a listener's series exist (at zero) before its first message,
    /// so dashboards and alerts see it from start-up.
    pub fn init_listener(&self, listener: &str) {
        for outcome in ["stored", "duplicate", "rejected", "failed"] {
            self.mllp_messages.with_label_values(&[listener, outcome]);
        }
        for code in ["AA", "AE", "AR"] {
            self.mllp_acks.with_label_values(&[listener, code]);
        }
        self.mllp_connections.with_label_values(&[listener]);
        for reason in ["not_allowed", "max_connections", "tls"] {
            self.mllp_connections_refused
                .with_label_values(&[listener, reason]);
        }
        self.mllp_discarded_bytes.with_label_values(&[listener]);
        self.mllp_ack_latency.with_label_values(&[listener]);
        self.dead_letters
            .with_label_values(&[&format!("listener/{listener}")]);
    }

    /// Make a route's series exist before its first record.
    pub fn init_route(&self, route: &str) {
        for outcome in ["matched", "filtered", "dead_lettered"] {
            self.route_records.with_label_values(&[route, outcome]);
        }
        self.route_outputs.with_label_values(&[route]);
        self.route_lag_records.with_label_values(&[route]);
        self.dead_letters
            .with_label_values(&[&format!("route/{route}")]);
    }

    /// Drop the gauges of a route that is no longer configured (its
    /// counters stay until restart, as Prometheus expects of counters).
    pub fn forget_route(&self, route: &str) {
        let _ = self.route_lag_records.remove_label_values(&[route]);
    }

    /// Drop the gauges of a destination that is no longer configured.
    pub fn forget_destination(&self, d: &str) {
        for g in [
            &self.destination_lag_records,
            &self.destination_connected,
            &self.destination_blocked,
        ] {
            let _ = g.remove_label_values(&[d]);
        }
        let _ = self.destination_inflight_since.remove_label_values(&[d]);
    }

    /// Set a topic's oldest offset.
    pub fn set_topic_first_offset(&self, topic: &str, first: u64) {
        self.topic_first_offset
            .with_label_values(&[topic])
            .set(i64::try_from(first).unwrap_or(i64::MAX));
    }

    /// Set a topic's stored payload bytes.
    pub fn set_topic_bytes(&self, topic: &str, bytes: u64) {
        self.topic_bytes
            .with_label_values(&[topic])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Make a destination's series exist before its first message.
    pub fn init_destination(&self, d: &str) {
        for outcome in ["delivered", "dead_lettered", "filtered"] {
            self.destination_messages.with_label_values(&[d, outcome]);
        }
        for reason in ["nak", "timeout", "connection", "unreachable"] {
            self.destination_retries.with_label_values(&[d, reason]);
        }
        self.destination_acks.with_label_values(&[d, "AA"]);
        self.destination_lag_records.with_label_values(&[d]);
        self.destination_connected.with_label_values(&[d]);
        self.destination_blocked.with_label_values(&[d]);
        self.destination_inflight_since.with_label_values(&[d]);
        self.dead_letters
            .with_label_values(&[&format!("destination/{d}")]);
    }

    /// Make the FHIR gateway's series exist before its first request.
    pub fn init_fhir(&self, interactions: &[&str]) {
        for i in interactions {
            self.fhir_request_seconds.with_label_values(&[i]);
        }
        for o in ["delivered", "retried", "unreachable", "dead_lettered"] {
            self.fhir_subscription_deliveries.with_label_values(&[o]);
        }
        self.dead_letters.with_label_values(&["subscription"]);
    }

    /// Set a destination's lag.
    pub fn set_destination_lag(&self, d: &str, lag: u64) {
        self.destination_lag_records
            .with_label_values(&[d])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Mark a message in flight since `ms` (0: none).
    pub fn set_destination_inflight(&self, d: &str, ms: u64) {
        self.destination_inflight_since
            .with_label_values(&[d])
            .set(ms as f64 / 1000.0);
    }

    /// Mark a destination blocked or not.
    pub fn set_destination_blocked(&self, d: &str, blocked: bool) {
        self.destination_blocked
            .with_label_values(&[d])
            .set(i64::from(blocked));
    }

    /// Record one conversion's time under a bounded label.
    pub fn observe_conversion(&self, message_type: &str, took: std::time::Duration) {
        let label = if CONVERT_LABELS.contains(&message_type) {
            message_type
        } else {
            "other"
        };
        self.fhir_convert_seconds
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    /// Set a route's lag.
    pub fn set_route_lag(&self, route: &str, lag: u64) {
        self.route_lag_records
            .with_label_values(&[route])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// The text exposition format 0.0.4.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}
