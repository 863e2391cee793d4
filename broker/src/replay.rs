//! Replay: run a route again over a range of its source topic, or send a
//! range of a destination's source topic to its receiver again.
//!
//! A replay never moves the live component's cursor: it is an extra, bounded
//! pass whose outputs carry the header `medbus.replayed = true`, logged and
//! counted. Route replay writes its outputs (and dead letters) atomically per
//! batch; destination replay delivers in order with the destination's own
//! ACK checks, retries and dead-lettering.

use crate::destination::delivery::{replay_range as destination_range, Settings};
use crate::headers;
use crate::metrics::Metrics;
use crate::route::transform::{route_record, Routed};
use crate::storage::{AtomicWrite, Record, RecordView, StorageError, Store};
use medbus_config::route::compile_route;
use medbus_config::Config;
use std::sync::Arc;

/// Most source records one replay may cover: a replay is an operator's
/// repair, not a bulk export.
pub const MAX_REPLAY_RECORDS: u64 = 1_000_000;
/// Records routed per atomic write.
const BATCH: usize = 512;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A configured route.
    Route(String),
    /// A configured destination.
    Destination(String),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Source records read.
    pub read: u64,
    /// Records written (route) or delivered (destination).
    pub written: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Records a route's condition filtered out.
    pub filtered: u64,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No such route or destination in the running config.
    #[error("no {0} named {1:?} is configured")]
    Unknown(&'static str, String),
    /// A bad range.
    #[error("{0}")]
    Range(String),
    /// Storage failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The destination's settings could not be used.
    #[error("{0}")]
    Settings(String),
}

fn mark(record: &mut Record) {
    record.headers.retain(|(k, _)| k != headers::REPLAYED);
    record
        .headers
        .push((headers::REPLAYED.to_string(), "true".into()));
}

/// Replay `target` over offsets `from..=to` (to: the current end when None).
pub async fn replay(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    target: &Target,
    from: u64,
    to: Option<u64>,
) -> Result<ReplaySummary, ReplayError> {
    let source = match target {
        Target::Route(name) => {
            let r = config
                .routes
                .iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| ReplayError::Unknown("route", name.clone()))?;
            r.sources().into_iter().next().unwrap_or_default()
        }
        Target::Destination(name) => config
            .destinations
            .iter()
            .find(|d| d.name() == name)
            .map(|d| d.from.get_ref().clone())
            .ok_or_else(|| ReplayError::Unknown("destination", name.clone()))?,
    };
    let last = store.last_offset(&source)?.unwrap_or(0);
    let to = to.unwrap_or(last).min(last);
    if to < from {
        return Err(ReplayError::Range(format!(
            "empty range {from}..={to} (the topic ends at {last})"
        )));
    }
    if to - from + 1 > MAX_REPLAY_RECORDS {
        return Err(ReplayError::Range(format!(
            "{} records is more than one replay may cover ({MAX_REPLAY_RECORDS})",
            to - from + 1
        )));
    }
    tracing::info!(?target, %source, from, to, "replay started");
    let summary = match target {
        Target::Route(name) => {
            let (i, r) = config
                .routes
                .iter()
                .enumerate()
                .find(|(_, r)| r.name() == name)
                .ok_or_else(|| ReplayError::Unknown("route", name.clone()))?;
            let route = compile_route(r, &format!("routes[{i}]"))
                .map_err(|p| ReplayError::Settings(format!("{p:?}")))?;
            let fhir = crate::server::convert_options(config);
            let mut s = ReplaySummary::default();
            let mut next = from;
            while next <= to {
                let batch = store.read(&source, next, BATCH)?;
                let mut write = AtomicWrite::default();
                let Some(&(batch_last, _)) = batch.last() else {
                    break;
                };
                for (offset, record) in batch.into_iter().filter(|(o, _)| *o <= to) {
                    s.read += 1;
                    let view = RecordView::from(&record);
                    match route_record(&route, &source, offset, &view, &fhir).routed {
                        Routed::Filtered => s.filtered += 1,
                        Routed::Outputs(outputs) => {
                            for (topic, mut out) in outputs.into_records() {
                                mark(&mut out);
                                write.records.push((topic, out));
                                s.written += 1;
                            }
                        }
                        Routed::Failed(reason) => {
                            let mut dead = record.clone();
                            dead.headers.push((headers::ERROR.to_string(), reason));
                            dead.headers
                                .push((headers::SOURCE.to_string(), format!("route/{name}")));
                            mark(&mut dead);
                            write.records.push((route.dead_letter_topic.clone(), dead));
                            s.dead_lettered += 1;
                        }
                    }
                }
                store.write_atomic(write).await?;
                next = batch_last + 1;
            }
            s
        }
        Target::Destination(name) => {
            let d = config
                .destinations
                .iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| ReplayError::Unknown("destination", name.clone()))?;
            let settings = Settings::from_config(d, config).map_err(ReplayError::Settings)?;
            destination_range(settings, store.clone(), metrics.clone(), from, to).await?
        }
    };
    metrics
        .replayed_records
        .with_label_values(&[match target {
            Target::Route(_) => "route",
            Target::Destination(_) => "destination",
        }])
        .inc_by(summary.read);
    tracing::info!(
        ?target,
        read = summary.read,
        written = summary.written,
        dead_lettered = summary.dead_lettered,
        "replay finished"
    );
    Ok(summary)
}
