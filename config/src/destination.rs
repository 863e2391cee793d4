//! `[[destinations]]`: deliver a topic to a legacy system over MLLP, in
//! order, ACK-checked, retried with a bounded budget, dead-lettered or
//! blocking on failure — what Mirth destination queues should have done.

use crate::route::ConditionConfig;
use crate::units::HumanDuration;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default time to wait for a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for an ACK.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default first retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// Default attempts per message before `on_failure` applies (NAKs and ACK
/// timeouts count; a downstream that cannot be reached does not).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;

/// One MLLP destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name (metrics label, cursor, dead-letter topic `dlq.<name>`).
    pub name: Spanned<String>,
    /// The topic delivered, in offset order.
    pub from: Spanned<String>,
    /// `host:port` of the receiving system.
    pub connect: Spanned<String>,
    /// Only records meeting this condition are sent (others are skipped).
    #[serde(default)]
    pub when: Option<Spanned<ConditionConfig>>,
    /// Field-level rewrites applied before sending, e.g.
    /// `set = { "MSH-5" = "BILLING", "MSH-6" = "HQ" }`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// How long to wait for a connection (default `"10s"`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long to wait for the ACK of a message (default `"30s"`). On
    /// timeout the connection is closed — so a late ACK can never be taken
    /// for the next message's — and the message is sent again.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// Retry policy for NAKs (AE/CE), ACK timeouts and lost connections.
    #[serde(default)]
    pub retry: RetryConfig,
    /// What to do with a message the receiver rejects (AR/CR) or that spent
    /// its retry budget: `"dead-letter"` (default: to `dlq.<name>`, then go
    /// on) or `"block"` (keep retrying it; later messages wait, in order).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Largest ACK accepted (default 1MiB).
    #[serde(default = "default_max_ack")]
    pub max_ack: crate::units::ByteSize,
    /// TLS to the receiver: `{ ca }`, plus `cert`/`key` for mutual TLS.
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTls>,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_CONNECT_TIMEOUT)
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_ACK_TIMEOUT)
}
fn default_max_ack() -> crate::units::ByteSize {
    crate::units::ByteSize(1 << 20)
}

/// `retry = { initial = "1s", max = "5m", max_attempts = 20 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay (default `"1s"`); each retry doubles it, with jitter.
    #[serde(default = "default_initial")]
    pub initial: HumanDuration,
    /// Longest delay (default `"5m"`).
    #[serde(default = "default_max")]
    pub max: HumanDuration,
    /// Attempts per message before `on_failure` applies (default 20).
    #[serde(default = "default_attempts")]
    pub max_attempts: Spanned<u32>,
}

fn default_initial() -> HumanDuration {
    HumanDuration(DEFAULT_RETRY_INITIAL)
}
fn default_max() -> HumanDuration {
    HumanDuration(DEFAULT_RETRY_MAX)
}
fn default_attempts() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_MAX_ATTEMPTS)
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
            max_attempts: default_attempts(),
        }
    }
}

/// What happens to a message that cannot be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OnFailure {
    /// To `dlq.<destination>`, then the next message.
    #[default]
    #[serde(rename = "dead-letter")]
    DeadLetter,
    /// Keep retrying at the longest delay; later messages wait.
    #[serde(rename = "block")]
    Block,
}

impl DestinationConfig {
    /// The name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("dlq.{}", self.name.get_ref())
    }
}
