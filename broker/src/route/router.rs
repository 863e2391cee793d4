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
use actix::prelude::*;
use medbus_config::route::CompiledRoute;
use medbus_fhir::ConvertOptions;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Records read from one source per step: bounds memory and the size of one
/// atomic write, while amortising the commit.
pub const BATCH_RECORDS: usize = 512;

/// Cursor kind of routes in the cursor tree.
pub const CURSOR_KIND: &str = "route";

/// One running route.
pub struct Router {
    /// The compiled route.
    route: Arc<CompiledRoute>,
    /// Where it reads and writes.
    store: Store,
    /// Where it counts.
    metrics: Arc<Metrics>,
    /// FHIR mapping options (site id namespace, time zone).
    fhir: Arc<ConvertOptions>,
    /// Set to ask the loop to stop between batches (config reload).
    stop: watch::Receiver<bool>,
    /// Fired when the loop has stopped (no write in flight any more).
    done: Option<oneshot::Sender<()>>,
}

/// Stops a running router.
pub struct RouterHandle {
    /// The route's name.
    pub name: String,
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<()>,
}

impl RouterHandle {
    /// Ask the router to stop and wait until its last batch is written, so
    /// that a successor reading the same durable cursor never repeats it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

impl Router {
    /// Start a router for `route` on `arbiter`.
    pub fn spawn(
        route: CompiledRoute,
        store: Store,
        metrics: Arc<Metrics>,
        fhir: Arc<ConvertOptions>,
        arbiter: &actix::ArbiterHandle,
    ) -> RouterHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let name = route.name.clone();
        let router = Router {
            route: Arc::new(route),
            store,
            metrics,
            fhir,
            stop: stop_rx,
            done: Some(done_tx),
        };
        Router::start_in_arbiter(arbiter, move |_| router);
        RouterHandle {
            name,
            stop: stop_tx,
            done: done_rx,
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.init_route(&self.route.name);
        let task = run(
            self.route.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.fhir.clone(),
            self.stop.clone(),
        );
        let done = self.done.take();
        ctx.spawn(actix::fut::wrap_future(task).map(
            move |_, _act: &mut Self, ctx: &mut Context<Self>| {
                if let Some(d) = done {
                    let _ = d.send(());
                }
                ctx.stop();
            },
        ));
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
