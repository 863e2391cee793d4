//! `Retention`: removes the oldest records of every topic past its limits
//! (age, bytes, record count), in bounded batches through the committer, so
//! the store never grows without end and ingest is never stalled for long.
//!
//! A record a route, destination, consumer group, the FHIR view or a FHIR
//! Subscription has not yet read is kept (its durable cursor is the floor)
//! unless the topic's retention says `force = true`. Cursors of routes and
//! destinations that are no longer configured do not hold retention back;
//! every other cursor does.

use crate::events::RetentionPass;
use crate::metrics::Metrics;
use crate::storage::{now_ms, StorageError, Store};
use actix::prelude::*;
use medbus_config::retention::{Limits, RetentionConfig};
use medbus_config::Config;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The cursor keys (`kind/name/topic`) of the routes and destinations
/// configured now, shared with the server, which replaces them when a
/// `SIGHUP` reloads routes and destinations. A pass holds the lock
/// throughout, so a reload waits for it: a route or destination it adds is
/// never trimmed past by a pass that started before it existed.
pub type LiveCursors = Arc<tokio::sync::Mutex<HashSet<String>>>;

/// The cursor keys of every route source and destination of `config`.
pub fn live_cursors(config: &Config) -> HashSet<String> {
    let key = |kind: &str, name: &str, topic: &str| {
        String::from_utf8_lossy(&crate::storage::cursor_key(kind, name, topic)).into_owned()
    };
    config
        .routes
        .iter()
        .flat_map(|r| {
            r.sources()
                .into_iter()
                .map(|t| key(crate::route::router::CURSOR_KIND, r.name(), &t))
                .collect::<Vec<_>>()
        })
        .chain(config.destinations.iter().map(|d| {
            key(
                crate::destination::delivery::CURSOR_KIND,
                d.name(),
                d.from.get_ref(),
            )
        }))
        .collect()
}

/// Most records examined per topic and pass to find the age and byte cut.
const SCAN_LIMIT: usize = 100_000;
/// Records read per storage call while scanning.
const SCAN_PAGE: usize = 1_000;

/// The retention actor.
pub struct Retention {
    /// Limits.
    config: RetentionConfig,
    /// The store.
    store: Store,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Cursor keys (`kind/name/topic`) of configured routes and destinations.
    live: LiveCursors,
}

impl Retention {
    /// A retention actor; `live` are the cursor keys (`kind/name/topic`) of
    /// the routes and destinations configured, kept up to date by the
    /// server.
    pub fn new(
        config: RetentionConfig,
        store: Store,
        metrics: Arc<Metrics>,
        live: LiveCursors,
    ) -> Self {
        Retention {
            config,
            store,
            metrics,
            live,
        }
    }
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let interval = self.config.interval.get_ref().0;
        let task = run(
            self.config.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.live.clone(),
            interval,
        );
        ctx.spawn(actix::fut::wrap_future(task));
    }
}

async fn run(
    config: RetentionConfig,
    store: Store,
    metrics: Arc<Metrics>,
    live: LiveCursors,
    interval: std::time::Duration,
) {
    let mut holders = HashMap::new();
    loop {
        let outcome = {
            let live = live.lock().await;
            pass(&config, &store, &metrics, &live, &mut holders).await
        };
        match outcome {
            Ok(()) => {}
            Err(StorageError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "retention pass failed; trying again next interval")
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One pass over every topic. `holders`: which reader held each topic's
/// retention back at the last pass (a hold is logged when it starts or
/// changes hands, not again at every pass).
pub async fn pass(
    config: &RetentionConfig,
    store: &Store,
    metrics: &Metrics,
    live: &HashSet<String>,
    holders: &mut HashMap<String, String>,
) -> Result<(), StorageError> {
    let cursors = store.cursors()?;
    for t in store.topics()? {
        if let Some(first) = t.first {
            metrics.set_topic_first_offset(&t.name, first);
        }
        metrics.set_topic_bytes(&t.name, t.bytes);
        let (Some(first), Some(last)) = (t.first, t.last) else {
            continue;
        };
        let limits = config.limits(&t.name);
        // One topic that cannot be scanned must not stop retention of the
        // others.
        let mut below = match cut(store, &t.name, first, last, t.bytes, &limits) {
            Ok(below) => below,
            Err(e) => {
                tracing::error!(topic = %t.name, error = %e, "retention skipped a topic it cannot scan");
                continue;
            }
        };
        if below <= first {
            continue;
        }
        let mut held_by = None;
        if !limits.force {
            // Every cursor but those of routes and destinations no longer
            // configured, and every configured route and destination reading
            // this topic (one that never wrote a cursor still needs everything).
            let configured = |k: &str| {
                k.starts_with(&format!("{}/", crate::route::router::CURSOR_KIND))
                    || k.starts_with(&format!("{}/", crate::destination::delivery::CURSOR_KIND))
            };
            let readers = cursors
                .iter()
                .filter(|(k, _)| !configured(k))
                .map(|(k, n)| (k.clone(), *n))
                .chain(live.iter().map(|k| {
                    let next = cursors
                        .iter()
                        .find(|(c, _)| c == k)
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    (k.clone(), next)
                }));
            for (key, next) in readers {
                let Some((owner, topic)) = key.rsplit_once('/') else {
                    continue;
                };
                if topic == t.name && next < below {
                    below = next;
                    held_by = Some(owner.to_string());
                }
            }
        }
        let mut removed = 0u64;
        let mut bytes = 0u64;
        loop {
            let r = store.trim(&t.name, below).await?;
            removed += r.records;
            bytes += r.bytes;
            // A trim that removed nothing (held back) reports no size.
            if r.records > 0 {
                metrics.set_topic_bytes(&t.name, r.remaining_bytes);
            }
            if !r.more {
                break;
            }
        }
        let newly_held = match &held_by {
            Some(owner) => holders.insert(t.name.clone(), owner.clone()).as_ref() != Some(owner),
            None => {
                holders.remove(&t.name);
                false
            }
        };
        RetentionPass {
            topic: &t.name,
            removed,
            bytes,
            held_by: held_by.as_deref(),
            newly_held,
        }
        .emit(metrics);
        if let Ok(Some(f)) = store.first_offset(&t.name) {
            metrics.set_topic_first_offset(&t.name, f);
        }
    }
    // Read again: a group deleted during the pass must not get its gauge
    // back from the list taken at its start.
    report_group_lags(store, metrics, &store.cursors()?);
    if let Ok(b) = store.size_on_disk() {
        metrics
            .storage_disk_bytes
            .set(i64::try_from(b).unwrap_or(i64::MAX));
    }
    Ok(())
}

/// Every durable consumer group's lag, connected or not: a group whose
/// members are gone (after a restart, say) still shows how far behind it
/// is, and that it holds retention back.
fn report_group_lags(store: &Store, metrics: &Metrics, cursors: &[(String, u64)]) {
    let prefix = format!("{}/", crate::client::dispatcher::CURSOR_KIND);
    for (key, next) in cursors {
        let Some((group, topic)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit_once('/'))
        else {
            continue;
        };
        let (Ok(Some(last)), Ok(first)) = (store.last_offset(topic), store.first_offset(topic))
        else {
            continue;
        };
        crate::events::ConsumerLagChanged {
            topic,
            group,
            lag: crate::client::dispatcher::group_lag(last + 1, *next, first),
        }
        .emit(metrics);
    }
}

/// The first offset to keep in `topic` under `limits` (ignoring cursors).
fn cut(
    store: &Store,
    topic: &str,
    first: u64,
    last: u64,
    total_bytes: u64,
    limits: &Limits,
) -> Result<u64, StorageError> {
    let mut below = first;
    if let Some(max) = limits.max_records {
        let count = last + 1 - first;
        if count > max {
            below = below.max(last + 1 - max);
        }
    }
    let age_cutoff = limits
        .max_age
        .map(|a| now_ms().saturating_sub(a.as_millis() as u64));
    let mut excess = limits
        .max_bytes
        .map(|m| total_bytes.saturating_sub(m))
        .unwrap_or(0);
    if age_cutoff.is_none() && excess == 0 {
        return Ok(below);
    }
    // Walk from the oldest record while it is too old or bytes are in excess.
    let mut next = first;
    let mut scanned = 0;
    'scan: while scanned < SCAN_LIMIT {
        let page = match store.read(topic, next, SCAN_PAGE) {
            Ok(page) => page,
            // A record damaged on disk has no age to read: it goes with the
            // records before it rather than hold the topic's retention.
            Err(StorageError::Damaged { offset, .. }) if offset >= next => {
                scanned += 1;
                below = below.max(offset + 1);
                next = offset + 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if page.is_empty() {
            break;
        }
        for (offset, r) in &page {
            scanned += 1;
            let too_old = age_cutoff.is_some_and(|c| r.timestamp_ms < c);
            if !too_old && excess == 0 {
                break 'scan;
            }
            excess = excess.saturating_sub(r.payload.len() as u64);
            below = below.max(offset + 1);
            next = offset + 1;
        }
    }
    Ok(below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{block, damage_on_disk, open_with_segments};
    use crate::storage::{AppendRequest, Record};

    /// A record damaged on disk (no age to read) does not hold the age
    /// limit up: it is cut with the expired records around it.
    #[test]
    fn a_damaged_record_does_not_hold_retention_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 1 << 20);
        for (ts, p) in [
            (1, b"first"),
            (2, b"secnd"),
            (3, b"third"),
            (now_ms(), b"fresh"),
        ] {
            block(store.append(AppendRequest {
                topic: "t".into(),
                record: Record {
                    timestamp_ms: ts,
                    headers: vec![],
                    content_type: "text/plain".into(),
                    payload: p.to_vec(),
                },
                dedup: None,
            }))
            .expect("append");
        }
        store.close();
        drop(store);
        damage_on_disk(dir.path(), "t", b"secnd");
        let store = open_with_segments(dir.path(), 1 << 20);
        let limits = Limits {
            max_age: Some(std::time::Duration::from_secs(3600)),
            max_bytes: None,
            max_records: None,
            force: false,
        };
        assert_eq!(cut(&store, "t", 0, 3, 20, &limits).expect("cut"), 3);
        store.close();
    }
}
