//! `[retention]`: how long topics keep records, so that the message store
//! never grows until the disk gives out. Limits by age, bytes and record
//! count, a default for every topic and overrides per topic glob. Records a
//! route, destination or consumer group has not yet read are kept unless
//! `force = true`.

use crate::route::Glob;
use crate::units::{ByteSize, HumanDuration};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::time::Duration;

/// Default time between retention passes.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Default age limit of every topic.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Records older than this are removed (default `"30d"`; `"0s"`: no age limit).
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// Oldest records are removed while a topic's payload bytes exceed this.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// Oldest records are removed while a topic holds more than this.
    #[serde(default)]
    pub max_records: Option<u64>,
    /// Remove records even when a route, destination or consumer group has
    /// not read them yet (default false: their cursors hold retention back).
    #[serde(default)]
    pub force: bool,
    /// Time between retention passes (default `"1m"`).
    #[serde(default = "default_interval")]
    pub interval: Spanned<HumanDuration>,
    /// Per-topic overrides; the first whose glob matches applies.
    #[serde(default)]
    pub topics: Vec<TopicRetention>,
}

/// `[[retention.topics]]`: limits for topics matching a glob; unset limits
/// fall back to the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRetention {
    /// Topic glob (`"dlq.*"`, `"fhir.Observation"`).
    pub topic: Spanned<String>,
    /// Age limit.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// Byte limit.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// Record limit.
    #[serde(default)]
    pub max_records: Option<u64>,
    /// Override of `force`.
    #[serde(default)]
    pub force: Option<bool>,
}

fn default_max_age() -> HumanDuration {
    HumanDuration(DEFAULT_MAX_AGE)
}
fn default_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(DEFAULT_RETENTION_INTERVAL))
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: default_max_age(),
            max_bytes: None,
            max_records: None,
            force: false,
            interval: default_interval(),
            topics: Vec::new(),
        }
    }
}

/// The limits in force for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Age limit (`None`: none).
    pub max_age: Option<Duration>,
    /// Byte limit.
    pub max_bytes: Option<u64>,
    /// Record limit.
    pub max_records: Option<u64>,
    /// Ignore cursors.
    pub force: bool,
}

impl RetentionConfig {
    /// The limits for `topic`.
    pub fn limits(&self, topic: &str) -> Limits {
        let over = self
            .topics
            .iter()
            .find(|t| Glob::new(t.topic.get_ref()).is_ok_and(|g| g.matches(topic)));
        let age = over.and_then(|o| o.max_age).unwrap_or(self.max_age).0;
        Limits {
            max_age: (!age.is_zero()).then_some(age),
            max_bytes: over
                .and_then(|o| o.max_bytes)
                .or(self.max_bytes)
                .map(|b| b.0),
            max_records: over.and_then(|o| o.max_records).or(self.max_records),
            force: over.and_then(|o| o.force).unwrap_or(self.force),
        }
    }
}
