//! The configuration schema: the structs users write in TOML.
//!
//! Each field's `///` doc is the user documentation (README's config section
//! repeats it). Unknown keys are refused so that a typo is an error, not a
//! silently ignored setting.

use crate::route::RouteConfig;
use crate::units::{ByteSize, HumanDuration};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::time::Duration;

/// Default MLLP frame cap.
pub const DEFAULT_MAX_FRAME: ByteSize = ByteSize(1 << 20);
/// Default cap on concurrent connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time a connection may stay silent before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: HumanDuration = HumanDuration(Duration::from_secs(600));
/// Default window in which a retransmitted message (same MSH-3, MSH-4,
/// MSH-10) is acknowledged again without being stored twice.
pub const DEFAULT_DEDUP_WINDOW: HumanDuration = HumanDuration(Duration::from_secs(600));
/// Default topic a listener writes to.
pub const DEFAULT_LISTENER_TOPIC: &str = "hl7.inbound";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "medbus-data";
/// Default address of the HTTP endpoint (metrics, health, status).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9575";
/// Default time between "not ready" and closing the listeners on shutdown,
/// so that load balancers stop sending first.
pub const DEFAULT_SHUTDOWN_GRACE: HumanDuration = HumanDuration(Duration::from_secs(2));
/// Default free-space reserve: room for what a write has started (a
/// journal generation, a segment, sled's key-value pages) so that the store
/// never meets ENOSPC in the middle of one.
pub const DEFAULT_MIN_FREE: ByteSize = ByteSize(64 << 20);
/// Default longest wait for a group commit.
pub const DEFAULT_COMMIT_TIMEOUT: HumanDuration = HumanDuration(Duration::from_secs(10));
/// Default page cache of the key-value trees' sled database (sled's own
/// default is 1 GiB).
pub const DEFAULT_STORAGE_CACHE: ByteSize = ByteSize(64 << 20);
/// Default size at which a topic starts a new segment file.
pub const DEFAULT_SEGMENT_SIZE: ByteSize = ByteSize(4 << 20);
/// Default cap on records per group commit.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 4096;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the message store lives. `--data-dir` overrides it.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Log message bodies and field values (patient data). Off by default;
    /// turning it on is the only way patient data reaches the logs.
    #[serde(default)]
    pub log_payloads: bool,
    /// How records are made durable.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/api/status`.
    #[serde(default)]
    pub http: HttpConfig,
    /// MLLP listeners: one per feed. A config file names all of them.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Routes: content-based fan-out from topics to topics.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// MLLP destinations: deliver a topic to a legacy system.
    #[serde(default)]
    pub destinations: Vec<crate::destination::DestinationConfig>,
    /// How long topics keep records.
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// How HL7 v2 is mapped to FHIR by `fhir` routes and `medbus convert`.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// The binary protocol listener for modern clients; absent: none.
    #[serde(default)]
    pub protocol: Option<crate::protocol::ProtocolConfig>,
    /// Applications allowed on the binary protocol, with hashed tokens and
    /// topic patterns. None: development mode (loopback, empty token).
    #[serde(default)]
    pub clients: Vec<crate::protocol::ClientConfig>,
    /// The FHIR R4 REST gateway; absent: none.
    #[serde(default)]
    pub fhir: Option<crate::fhir::FhirConfig>,
}

/// `[mapping]`: site settings of the HL7 v2 → FHIR mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Mixed into every resource id, so that sites sharing one FHIR server
    /// never produce the same id for different resources (default empty).
    #[serde(default)]
    pub id_namespace: String,
    /// UTC offset (`"+0100"`, `"-05:00"`, `"Z"`) of HL7 times written
    /// without one. Unset: such FHIR `instant`s are left out, never guessed.
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
    /// Which PID-3 repetition keys the Patient id: the first whose CX-5
    /// identifier type is this (e.g. `"MR"`); unset: the first repetition.
    #[serde(default)]
    pub patient_identifier_type: Option<String>,
    /// Threads a route's backlog is converted on, in parallel (1 to 256;
    /// unset: one per core). 1: every route converts on the routes' own
    /// thread. Order and exactly-once writes do not depend on it.
    #[serde(default)]
    pub threads: Option<Spanned<usize>>,
}

/// Most `[mapping] threads`.
pub const MAX_MAPPING_THREADS: usize = 256;

impl MappingConfig {
    /// The conversion threads to start: `threads`, or one per core.
    pub fn threads(&self) -> usize {
        self.threads.as_ref().map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |t| *t.get_ref(),
        )
    }
}

fn default_data_dir() -> String {
    DEFAULT_DATA_DIR.to_string()
}

/// `[storage]`: durability of the message store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `"fsync"` (default): a record is acknowledged only after its group
    /// commit's journal entry is written and `fdatasync`ed, so it survives
    /// power loss. `"flush"`: once written to the journal (survives a
    /// process crash, not necessarily power loss). `"none"`: the same, and
    /// nothing is ever synced (tests, throwaway data).
    #[serde(default)]
    pub durability: Durability,
    /// Memory sled may use to cache the key-value trees' pages (default
    /// `"64MiB"`); topics are read through the operating system's cache.
    #[serde(default = "default_cache")]
    pub cache: ByteSize,
    /// Free disk space kept in reserve (default `"64MiB"`): below it,
    /// appends are refused with negative ACKs before the store is touched,
    /// and accepted again by themselves once space is freed.
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
    /// Longest wait for a group commit (default `"10s"`); an append still
    /// waiting then is answered with an error (AE), never left hanging.
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout: HumanDuration,
    /// Most records one group commit takes; more wait for the next one.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: Spanned<usize>,
    /// Size at which a topic starts a new segment file (default `"4MiB"`,
    /// 64 KiB to 4 GiB). Retention deletes whole segments, so a topic takes
    /// up to about one segment more than its live records.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Most topics the store holds (default 4096). An append that would
    /// create one more is refused (a route dead-letters the record): each
    /// topic keeps two files open, and topic names come from clients and
    /// from templates filled with message fields.
    #[serde(default = "default_max_topics")]
    pub max_topics: Spanned<usize>,
}

/// Default `storage.max_topics`.
pub const DEFAULT_MAX_TOPICS: usize = 4096;

fn default_max_topics() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_TOPICS)
}

fn default_segment_size() -> ByteSize {
    DEFAULT_SEGMENT_SIZE
}

fn default_min_free() -> ByteSize {
    DEFAULT_MIN_FREE
}

fn default_commit_timeout() -> HumanDuration {
    DEFAULT_COMMIT_TIMEOUT
}

fn default_cache() -> ByteSize {
    DEFAULT_STORAGE_CACHE
}

fn default_max_batch_records() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_BATCH_RECORDS)
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            cache: DEFAULT_STORAGE_CACHE,
            min_free: DEFAULT_MIN_FREE,
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
            max_batch_records: default_max_batch_records(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_topics: default_max_topics(),
        }
    }
}

/// `[http]`: the operations endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to bind, `host:port` (default `127.0.0.1:9575`).
    #[serde(default = "default_http_listen")]
    pub listen: Spanned<String>,
    /// On SIGTERM/SIGINT, `/readyz` turns 503 this long before the
    /// listeners close (default `"2s"`), so load balancers stop first.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
}

fn default_http_listen() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_HTTP_LISTEN.to_string())
}
fn default_shutdown_grace() -> HumanDuration {
    DEFAULT_SHUTDOWN_GRACE
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Flush and fdatasync before acknowledging.
    #[default]
    Fsync,
    /// Flush (written to the OS) before acknowledging.
    Flush,
    /// Acknowledge once applied in memory.
    None,
}

impl Durability {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Flush => "flush",
            Durability::None => "none",
        }
    }
}

/// `[[listeners]]`: an MLLP listener, one per sending system or feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name; used in metrics, headers and the dead-letter topic
    /// `dlq.<name>`. Letters, digits, `_` and `-`, at most 64.
    pub name: Spanned<String>,
    /// Address to bind, `host:port`. Use `127.0.0.1` unless other machines
    /// must connect.
    pub listen: Spanned<String>,
    /// Topic every accepted message is appended to (default `hl7.inbound`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Largest MLLP frame accepted (default `"1MiB"`); a larger one is
    /// answered AR and the connection closed.
    #[serde(default = "default_max_frame")]
    pub max_frame: Spanned<ByteSize>,
    /// Most concurrent connections (default 256); more are refused with a
    /// log line and a counter.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// A connection silent this long is closed (default `"10m"`).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Spanned<HumanDuration>,
    /// A message whose MSH-3, MSH-4 and MSH-10 match one stored within this
    /// window is a retransmission: acknowledged again, not stored twice
    /// (default `"10m"`; `"0s"` turns it off).
    #[serde(default = "default_dedup_window")]
    pub dedup_window: HumanDuration,
    /// Source addresses allowed to connect (CIDR blocks or addresses);
    /// empty (default): any. Others are refused, logged and counted.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// `"auto"` (default): original-mode ACKs (AA/AE/AR), or enhanced-mode
    /// commit ACKs (CA/CE/CR, sent per MSH-15) when a message carries MSH-15.
    /// `"original"`: always original mode, whatever MSH-15 says — for
    /// senders that set MSH-15 but still wait for an ACK.
    #[serde(default)]
    pub acknowledgments: AckPolicy,
    /// TLS (rustls): `{ cert, key }`, plus `client_ca` to require client
    /// certificates (mutual TLS). Without it the listener speaks plain MLLP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTls>,
}

fn default_max_frame() -> Spanned<ByteSize> {
    Spanned::new(0..0, DEFAULT_MAX_FRAME)
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_CONNECTIONS)
}
fn default_idle_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, DEFAULT_IDLE_TIMEOUT)
}
fn default_dedup_window() -> HumanDuration {
    DEFAULT_DEDUP_WINDOW
}

impl ListenerConfig {
    /// The topic this listener writes to.
    pub fn topic(&self) -> &str {
        self.topic
            .as_ref()
            .map(|t| t.get_ref().as_str())
            .unwrap_or(DEFAULT_LISTENER_TOPIC)
    }

    /// The name, as a plain string.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The frame cap in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        usize::try_from(self.max_frame.get_ref().0).unwrap_or(usize::MAX)
    }

    /// The allowlist, parsed (validation guarantees every entry parses).
    pub fn allowlist(&self) -> Vec<crate::cidr::Cidr> {
        self.allow
            .iter()
            .filter_map(|a| a.get_ref().parse().ok())
            .collect()
    }

    /// The dead-letter topic for this listener's rejected input.
    pub fn dead_letter_topic(&self) -> String {
        format!("dlq.{}", self.name.get_ref())
    }
}

/// How a listener acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// Follow MSH-15 when present.
    #[default]
    Auto,
    /// Always original mode.
    Original,
}
