//! `Router`: one route, running.
//!
//! The loop: note the commit counter, read a batch from each source at its
//! cursor, route every record, write outputs + dead letters + the cursor
//! advance in one atomic step, repeat; when every source is drained, sleep
//! until the next group commit (no polling). A record that cannot be
//! transformed goes to `dlq.<route>` with the reason and the route goes on
//! (no head-of-line blocking). A storage error pauses the route for its
//! `retry` and then re-reads from the durable cursor, so nothing is skipped.
//!
//! Routers run on their own arbiter (thread): FHIR conversion is CPU work
//! that must not delay MLLP ACKs.

use super::transform::{route_record, Routed};
use crate::events::{RouteBatchWritten, RouteStalled};
use crate::headers;
use crate::metrics::Metrics;
use crate::storage::{cursor_key, now_ms, AtomicWrite, Record, StorageError, Store};
use crate::task::LoopHandle;
use medbus_config::route::CompiledRoute;
use medbus_fhir::ConvertOptions;
use std::sync::Arc;
use tokio::sync::watch;

/// Records read from one source per step: bounds memory and the size of one
/// atomic write, while amortising the commit.
pub const BATCH_RECORDS: usize = 4096;

/// Cursor kind of routes in the cursor tree.
pub const CURSOR_KIND: &str = "route";

/// One running route: a [`crate::task`] loop on the routes' arbiter.
pub struct Router;

/// Stops a running route after the batch it is writing.
pub type RouterHandle = LoopHandle;

impl Router {
    /// Start a router for `route` on `arbiter`.
    pub fn spawn(
        route: CompiledRoute,
        store: Store,
        metrics: Arc<Metrics>,
        fhir: Arc<ConvertOptions>,
        arbiter: &actix::ArbiterHandle,
    ) -> RouterHandle {
        let name = route.name.clone();
        crate::task::spawn(name, arbiter, move |stop| {
            metrics.init_route(&route.name);
            run(Arc::new(route), store, metrics, fhir, stop)
        })
    }
}

/// Route every record of `source` from `next` on, one batch; returns the new
/// next offset, or `None` when there was nothing to read.
async fn step(
    route: &CompiledRoute,
    store: &Store,
    metrics: &Metrics,
    fhir: &ConvertOptions,
    source: &str,
    next: u64,
) -> Result<Option<u64>, StorageError> {
    let batch = store.read(source, next, BATCH_RECORDS)?;
    let Some(&(last, _)) = batch.last() else {
        return Ok(None);
    };
    let mut write = AtomicWrite::default();
    let (mut matched, mut filtered, mut failed) = (0u64, 0u64, 0u64);
    let mut oldest_ms = u64::MAX;
    for (offset, record) in &batch {
        let result = route_record(route, source, *offset, record, fhir);
        if let Some((message_type, took)) = &result.conversion {
            metrics.observe_conversion(message_type, *took);
        }
        match result.routed {
            Routed::Filtered => filtered += 1,
            Routed::Outputs(outputs) => {
                matched += 1;
                oldest_ms = oldest_ms.min(record.timestamp_ms);
                write.records.extend(outputs);
            }
            Routed::Failed(reason) => {
                failed += 1;
                let span = tracing::debug_span!("route.record", route = %route.name, topic = %source, offset);
                let _enter = span.enter();
                tracing::warn!(%reason, "record dead-lettered");
                let mut h = record.headers.clone();
                h.push((headers::ERROR.to_string(), reason));
                h.push((headers::SOURCE.to_string(), format!("route/{}", route.name)));
                h.push((headers::SOURCE_TOPIC.to_string(), source.to_string()));
                h.push((headers::SOURCE_OFFSET.to_string(), offset.to_string()));
                write.records.push((
                    route.dead_letter_topic.clone(),
                    Record {
                        timestamp_ms: record.timestamp_ms,
                        headers: h,
                        content_type: record.content_type.clone(),
                        payload: record.payload.clone(),
                    },
                ));
            }
        }
    }
    write
        .cursors
        .push((cursor_key(CURSOR_KIND, &route.name, source), last + 1));
    let outputs = write.records.len() as u64 - failed;
    store.write_atomic(write).await?;
    RouteBatchWritten {
        route: &route.name,
        source,
        from: next,
        to: last,
        matched,
        filtered,
        dead_lettered: failed,
        outputs,
        oldest_received_ms: (oldest_ms != u64::MAX).then_some(oldest_ms),
        now_ms: now_ms(),
    }
    .emit(metrics);
    Ok(Some(last + 1))
}

async fn run(
    route: Arc<CompiledRoute>,
    store: Store,
    metrics: Arc<Metrics>,
    fhir: Arc<ConvertOptions>,
    mut stop: watch::Receiver<bool>,
) {
    let mut commits = store.commits();
    let mut cursors: Vec<(String, u64)> = Vec::new();
    for source in &route.sources {
        let next = loop {
            match store.cursor(&cursor_key(CURSOR_KIND, &route.name, source)) {
                Ok(n) => break n,
                Err(e) => {
                    RouteStalled {
                        route: &route.name,
                        error: &e,
                    }
                    .emit(&metrics);
                    tokio::time::sleep(route.retry).await;
                }
            }
        };
        cursors.push((source.clone(), next));
    }
    tracing::info!(route = %route.name, sources = ?route.sources, "route started");
    loop {
        if *stop.borrow() {
            tracing::info!(route = %route.name, "route stopped");
            return;
        }
        // Mark the commit counter as seen before reading: a commit that
        // lands after this point wakes the wait below.
        commits.borrow_and_update();
        let mut progressed = false;
        let mut lag = 0u64;
        for (source, next) in cursors.iter_mut() {
            match step(&route, &store, &metrics, &fhir, source, *next).await {
                Ok(Some(n)) => {
                    *next = n;
                    progressed = true;
                }
                Ok(None) => {}
                Err(StorageError::Closed) => return,
                Err(e) => {
                    RouteStalled {
                        route: &route.name,
                        error: &e,
                    }
                    .emit(&metrics);
                    tokio::time::sleep(route.retry).await;
                    // Re-read from the durable cursor: nothing is skipped.
                    if let Ok(n) = store.cursor(&cursor_key(CURSOR_KIND, &route.name, source)) {
                        *next = n;
                    }
                    progressed = true;
                }
            }
            lag += store
                .last_offset(source)
                .ok()
                .flatten()
                .map(|last| (last + 1).saturating_sub(*next))
                .unwrap_or(0);
        }
        metrics.set_route_lag(&route.name, lag);
        if !progressed {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = stop.changed() => {}
            }
        }
    }
}
