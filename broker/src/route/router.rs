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
use super::workers::Workers;
use crate::events::{RouteBatchWritten, RouteStalled};
use crate::headers;
use crate::metrics::Metrics;
use crate::storage::{
    cursor_key, is_dead_letter_topic, now_ms, EncodedRecord, EncodedWrite, Record, SharedHeaders,
    StorageError, Store,
};
use crate::task::LoopHandle;
use medbus_config::route::CompiledRoute;
use medbus_config::Transform;
use medbus_fhir::ConvertOptions;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

/// Records read from one source per step: bounds memory and the size of one
/// atomic write, while amortising the commit.
pub const BATCH_RECORDS: usize = 4096;

/// Most output bytes (outputs and dead letters) one batch gathers before it
/// is written: bounds the router's memory (and one atomic write) when
/// outputs are large.
pub const MAX_BATCH_BYTES: usize = 2 << 20;

/// Cursor kind of routes in the cursor tree.
pub const CURSOR_KIND: &str = "route";

/// One running route: a [`crate::task`] loop on the routes' arbiter.
pub struct Router;

/// Stops a running route once the batches it has handed to the committer
/// (at most `PIPELINE_DEPTH`) are confirmed.
pub type RouterHandle = LoopHandle;

impl Router {
    /// Start a router for `route` on `arbiter`.
    pub fn spawn(
        route: CompiledRoute,
        store: Store,
        metrics: Arc<Metrics>,
        fhir: Arc<ConvertOptions>,
        workers: Arc<Workers>,
        arbiter: &actix::ArbiterHandle,
    ) -> RouterHandle {
        let name = route.name.clone();
        crate::task::spawn(name, arbiter, move |stop| {
            metrics.init_route(&route.name);
            run(Arc::new(route), store, metrics, (fhir, workers), stop)
        })
    }
}

/// One batch, routed and ready to write.
struct Prepared {
    /// Outputs, dead letters and the cursor advance, encoded as they were
    /// made (so each conversion's buffers are freed, and reused, at once).
    write: EncodedWrite,
    /// How many records the next batch from this source should read.
    next_read: usize,
    /// What happened, for the event once written.
    source: String,
    from: u64,
    to: u64,
    matched: u64,
    filtered: u64,
    dead_lettered: u64,
    outputs: u64,
    oldest_received_ms: Option<u64>,
}

/// Records to read for the next batch, given how many the last one used:
/// when the byte cap cut the last batch short, reading all
/// [`BATCH_RECORDS`] again would mostly copy records only to drop them, so
/// read a little more than was used instead.
fn next_read_size(used: usize, cut_short: bool) -> usize {
    if cut_short {
        (used + used / 2).clamp(16, BATCH_RECORDS)
    } else {
        BATCH_RECORDS
    }
}

/// Route every record of `source` from `next` on, one batch of at most
/// `max` records (no write yet); `None` when there is nothing to read.
/// Records are decoded only once the batch takes them.
fn prepare(
    route: &CompiledRoute,
    store: &Store,
    metrics: &Metrics,
    (fhir, workers): (&ConvertOptions, &Workers),
    (source, next, max): (&str, u64, usize),
) -> Result<Option<Prepared>, StorageError> {
    let batch = match store.read_raw(source, next, max) {
        Ok(batch) => batch,
        // The next record is damaged on disk: like a value that does not
        // decode, it is dead-lettered (with the bytes as they are on disk)
        // rather than stall the route for ever. (It may lie past `next`
        // when the offsets before it are gone: retention, a restore.)
        Err(StorageError::Damaged { offset, what, .. }) if offset >= next => {
            return dead_letter_damaged(route, store, (source, next), offset, what).map(Some);
        }
        Err(e) => return Err(e),
    };
    if batch.is_empty() {
        return Ok(None);
    }
    let mut write = EncodedWrite::default();
    let push = |write: &mut EncodedWrite, topic: String, r: Record| {
        write.records.push((topic, EncodedRecord::new(r)?));
        Ok::<(), StorageError>(())
    };
    let (mut matched, mut filtered, mut failed) = (0u64, 0u64, 0u64);
    let mut oldest_ms = u64::MAX;
    let mut last = next;
    let mut bytes = 0usize;
    let mut cut_short = false;
    // A round of records is transformed at once (on the conversion workers
    // when the route converts and there is a pool), then taken in order.
    let round = if route.transform == Transform::None {
        1
    } else {
        workers.round()
    };
    // Topics this batch creates (counted against the store's topic cap).
    let mut creating: Vec<String> = Vec::new();
    'batch: for chunk in batch.chunks(round) {
        let views: Vec<_> = chunk
            .iter()
            .map(|(offset, raw)| (*offset, raw.view()))
            .collect();
        let results = workers.map(&views, |(offset, view)| {
            view.as_ref()
                .ok()
                .map(|record| route_record(route, source, *offset, record, fhir))
        });
        for (((offset, raw), (_, view)), result) in chunk.iter().zip(&views).zip(results) {
            // Bound the memory one batch holds (FHIR outputs are many times
            // the size of their source): the rest waits for the next batch.
            if bytes >= MAX_BATCH_BYTES {
                cut_short = true;
                break 'batch;
            }
            last = *offset;
            // A stored value that no longer decodes must not stall the route
            // for ever: its bytes are dead-lettered like any other failure.
            // (Read in place: its headers are copied only into the outputs.)
            let (record, result) = match (view, result) {
                (Ok(record), Some(result)) => (record, result),
                (view, _) => {
                    failed += 1;
                    let e = view
                        .as_ref()
                        .err()
                        .map_or_else(String::new, ToString::to_string);
                    tracing::error!(route = %route.name, topic = %source, offset, error = %e, "stored record does not decode: dead-lettered");
                    let reason = format!("the stored record does not decode: {e}");
                    let dead =
                        raw_dead_letter(route, (source, *offset), reason, raw.stored().to_vec());
                    push(&mut write, route.dead_letter_topic.clone(), dead)?;
                    bytes += raw.stored().len();
                    continue;
                }
            };
            if let Some((message_type, took)) = &result.conversion {
                metrics.observe_conversion(message_type, *took);
            }
            // Outputs to topics past `storage.max_topics` would fail the
            // whole batch: the record is dead-lettered instead.
            // A template filled from the message may name a dead-letter
            // topic, which only the broker writes (and which the cap does
            // not count): refused the same way.
            let routed = match result.routed {
                Routed::Outputs(o) => {
                    let refused = o.records.iter().find_map(|(t, _)| {
                        if is_dead_letter_topic(t) {
                            Some(format!(
                                "target {t:?} is a dead-letter topic, which only the broker writes"
                            ))
                        } else if !may_create(store, &mut creating, t) {
                            Some(
                                StorageError::TooManyTopics {
                                    topic: t.clone(),
                                    max: store.max_topics(),
                                }
                                .to_string(),
                            )
                        } else {
                            None
                        }
                    });
                    match refused {
                        Some(reason) => Routed::Failed(reason),
                        None => Routed::Outputs(o),
                    }
                }
                other => other,
            };
            match routed {
                Routed::Filtered => filtered += 1,
                Routed::Outputs(outputs) => {
                    matched += 1;
                    oldest_ms = oldest_ms.min(record.timestamp_ms());
                    let shared = SharedHeaders::new(&outputs.shared);
                    for (topic, o) in outputs.records {
                        bytes += o.payload_len();
                        write.records.push((topic, o.encode(&shared)?));
                    }
                }
                Routed::Failed(reason) => {
                    failed += 1;
                    let span = tracing::debug_span!("route.record", route = %route.name, topic = %source, offset);
                    let _enter = span.enter();
                    tracing::warn!(%reason, "record dead-lettered");
                    let mut dead = record.to_record();
                    dead.headers =
                        dead_letter_headers(dead.headers, reason, route, source, *offset);
                    bytes += dead.payload.len();
                    push(&mut write, route.dead_letter_topic.clone(), dead)?;
                }
            }
        }
    }
    advance_cursor(&mut write, route, source, next, last + 1);
    let outputs = write.records.len() as u64 - failed;
    let used = (last + 1 - next) as usize;
    Ok(Some(Prepared {
        next_read: next_read_size(used, cut_short),
        write,
        source: source.to_string(),
        from: next,
        to: last,
        matched,
        filtered,
        dead_lettered: failed,
        outputs,
        oldest_received_ms: (oldest_ms != u64::MAX).then_some(oldest_ms),
    }))
}

/// Whether an output to `topic` fits under the store's topic cap, given
/// the topics this batch already creates (`creating`, extended with it).
fn may_create(store: &Store, creating: &mut Vec<String>, topic: &str) -> bool {
    if store.topic_exists(topic) || creating.iter().any(|c| c == topic) {
        return true;
    }
    if store.topic_count() + creating.len() < store.max_topics() {
        creating.push(topic.to_string());
        return true;
    }
    false
}

/// Move the route's cursor on `source` from `from` to `to` with `write`,
/// applied only where the batch before it left the cursor.
fn advance_cursor(
    write: &mut EncodedWrite,
    route: &CompiledRoute,
    source: &str,
    from: u64,
    to: u64,
) {
    let key = cursor_key(CURSOR_KIND, &route.name, source);
    write.expect.push((key.clone(), from));
    write.cursors.push((key, to));
}

/// A one-record batch: the damaged record at `offset` of `source`
/// dead-lettered, the cursor moved from `next` past it.
fn dead_letter_damaged(
    route: &CompiledRoute,
    store: &Store,
    (source, next): (&str, u64),
    offset: u64,
    what: &str,
) -> Result<Prepared, StorageError> {
    tracing::error!(route = %route.name, topic = %source, offset, what, "stored record is damaged on disk: dead-lettered");
    let payload = store.read_damaged(source, offset)?;
    let record = raw_dead_letter(
        route,
        (source, offset),
        Store::damaged_reason(what),
        payload,
    );
    let mut write = EncodedWrite::default();
    write
        .records
        .push((route.dead_letter_topic.clone(), EncodedRecord::new(record)?));
    advance_cursor(&mut write, route, source, next, offset + 1);
    Ok(Prepared {
        write,
        next_read: BATCH_RECORDS,
        source: source.to_string(),
        from: next,
        to: offset,
        matched: 0,
        filtered: 0,
        dead_lettered: 1,
        outputs: 0,
        oldest_received_ms: None,
    })
}

/// The dead letter of a stored value that cannot be read as a record: its
/// bytes as they are, for `reason`.
fn raw_dead_letter(
    route: &CompiledRoute,
    (source, offset): (&str, u64),
    reason: String,
    payload: Vec<u8>,
) -> Record {
    Record {
        timestamp_ms: now_ms(),
        headers: dead_letter_headers(Vec::new(), reason, route, source, offset),
        content_type: headers::CONTENT_TYPE_RAW.to_string(),
        payload,
    }
}

/// A dead letter's headers: the source record's, plus why and whence.
fn dead_letter_headers(
    mut h: Vec<(String, String)>,
    reason: String,
    route: &CompiledRoute,
    source: &str,
    offset: u64,
) -> Vec<(String, String)> {
    h.push((headers::ERROR.to_string(), reason));
    h.push((headers::SOURCE.to_string(), format!("route/{}", route.name)));
    h.push((headers::SOURCE_TOPIC.to_string(), source.to_string()));
    h.push((headers::SOURCE_OFFSET.to_string(), offset.to_string()));
    h
}

/// The committer's answer to a write, still to come.
type WriteReply =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<(String, u64)>, StorageError>>>>;

/// A batch handed to the committer, not yet confirmed.
struct InFlight {
    reply: WriteReply,
    done: Prepared,
}

impl InFlight {
    fn submit(store: &Store, mut prepared: Prepared) -> InFlight {
        let write = std::mem::take(&mut prepared.write);
        InFlight {
            reply: Box::pin(store.write_encoded(Ok(write))),
            done: prepared,
        }
    }

    /// Wait for the commit and report it.
    async fn settle(self, route: &CompiledRoute, metrics: &Metrics) -> Result<(), StorageError> {
        self.reply.await?;
        let d = self.done;
        RouteBatchWritten {
            route: &route.name,
            source: &d.source,
            from: d.from,
            to: d.to,
            matched: d.matched,
            filtered: d.filtered,
            dead_lettered: d.dead_lettered,
            outputs: d.outputs,
            oldest_received_ms: d.oldest_received_ms,
            now_ms: now_ms(),
        }
        .emit(metrics);
        Ok(())
    }
}

/// Batches a route keeps handed to the committer and not yet confirmed.
/// With two, the committer always has the next batch queued while the
/// route converts a third, so neither waits for the other's latency
/// (`fdatasync`). Each batch requires its source's cursor to be where the
/// one before left it (a cursor expectation), so a batch can never land
/// without the batches before it: after any failure, those behind it are
/// refused and every position is taken back from the durable cursors.
const PIPELINE_DEPTH: usize = 2;

/// What confirming the oldest batch in flight led to.
enum Confirmed {
    /// It was written (or nothing was in flight).
    Written,
    /// It failed: the batches behind it were settled and every position
    /// taken back from the durable cursors.
    Recovered,
    /// The store is closed.
    Closed,
}

/// A running route's state between batches.
struct Running {
    route: Arc<CompiledRoute>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Per source: its name, the next offset, and how many records to read.
    cursors: Vec<(String, u64, usize)>,
    /// Batches handed to the committer, oldest first.
    in_flight: VecDeque<InFlight>,
    stop: watch::Receiver<bool>,
}

impl Running {
    /// Confirm every batch still in flight, in order, after a failure or
    /// before stopping: those that were written are reported; the others'
    /// errors add nothing to the one being handled.
    async fn drain(&mut self) {
        while let Some(f) = self.in_flight.pop_front() {
            let _ = f.settle(&self.route, &self.metrics).await;
        }
    }

    /// After a failed write: pause (a stop ends the pause), then take every
    /// source's position back from its durable cursor, so nothing is
    /// skipped.
    async fn recover(&mut self, e: &StorageError) {
        RouteStalled {
            route: &self.route.name,
            error: e,
        }
        .emit(&self.metrics);
        crate::task::pause(&mut self.stop, self.route.retry).await;
        for (source, next, _) in self.cursors.iter_mut() {
            if let Ok(n) = self
                .store
                .cursor(&cursor_key(CURSOR_KIND, &self.route.name, source))
            {
                *next = n;
            }
        }
    }

    /// Confirm the oldest batch in flight; after a failure, settle the rest
    /// and recover the positions.
    async fn confirm_oldest(&mut self) -> Confirmed {
        let Some(f) = self.in_flight.pop_front() else {
            return Confirmed::Written;
        };
        match f.settle(&self.route, &self.metrics).await {
            Ok(()) => Confirmed::Written,
            Err(StorageError::Closed) => Confirmed::Closed,
            Err(e) => {
                self.drain().await;
                self.recover(&e).await;
                Confirmed::Recovered
            }
        }
    }

    /// Records not yet written past, over all sources: a source's batches
    /// still in flight count as behind until they are confirmed.
    fn lag(&self) -> u64 {
        self.cursors
            .iter()
            .map(|(source, next, _)| {
                let done = self
                    .in_flight
                    .iter()
                    .find(|f| &f.done.source == source)
                    .map_or(*next, |f| f.done.from);
                self.store
                    .last_offset(source)
                    .ok()
                    .flatten()
                    .map(|last| (last + 1).saturating_sub(done))
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The route's loop: read and transform a batch per source, hand it to the
/// committer with at most [`PIPELINE_DEPTH`] batches unconfirmed, and sleep
/// until the next group commit when there is nothing new.
async fn run(
    route: Arc<CompiledRoute>,
    store: Store,
    metrics: Arc<Metrics>,
    (fhir, workers): (Arc<ConvertOptions>, Arc<Workers>),
    mut stop: watch::Receiver<bool>,
) {
    let mut commits = store.commits();
    let mut cursors = Vec::new();
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
                    if !crate::task::pause(&mut stop, route.retry).await {
                        return;
                    }
                }
            }
        };
        cursors.push((source.clone(), next, BATCH_RECORDS));
    }
    tracing::info!(route = %route.name, sources = ?route.sources, "route started");
    let mut r = Running {
        route,
        store,
        metrics,
        cursors,
        in_flight: VecDeque::with_capacity(PIPELINE_DEPTH),
        stop,
    };
    'outer: loop {
        if *r.stop.borrow() {
            r.drain().await;
            tracing::info!(route = %r.route.name, "route stopped");
            return;
        }
        // Mark the commit counter as seen before reading: a commit that
        // lands after this point wakes the wait below.
        commits.borrow_and_update();
        let mut progressed = false;
        for i in 0..r.cursors.len() {
            let (source, next, max) = (r.cursors[i].0.clone(), r.cursors[i].1, r.cursors[i].2);
            let prepared = match prepare(
                &r.route,
                &r.store,
                &r.metrics,
                (&fhir, &workers),
                (&source, next, max),
            ) {
                Ok(p) => p,
                Err(StorageError::Closed) => return,
                Err(e) => {
                    r.drain().await;
                    r.recover(&e).await;
                    continue 'outer;
                }
            };
            let Some(p) = prepared else { continue };
            // Room for this one: confirm the oldest first.
            if r.in_flight.len() >= PIPELINE_DEPTH {
                match r.confirm_oldest().await {
                    Confirmed::Written => {}
                    Confirmed::Recovered => continue 'outer,
                    Confirmed::Closed => return,
                }
            }
            r.cursors[i].1 = p.to + 1;
            r.cursors[i].2 = p.next_read;
            r.in_flight.push_back(InFlight::submit(&r.store, p));
            progressed = true;
        }
        r.metrics.set_route_lag(&r.route.name, r.lag());
        if !progressed {
            // Nothing new: confirm what is in flight, then sleep until the
            // next commit.
            if !r.in_flight.is_empty() {
                match r.confirm_oldest().await {
                    Confirmed::Written | Confirmed::Recovered => continue,
                    Confirmed::Closed => return,
                }
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = r.stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{block, damage_on_disk, open_with_segments};
    use crate::storage::AppendRequest;
    use medbus_config::route::{parse_template, Condition};
    use medbus_config::Transform;

    /// Append a `text/plain` record to topic `in`.
    fn append_in(store: &Store, payload: &[u8]) {
        block(store.append(AppendRequest {
            topic: "in".into(),
            record: Record {
                timestamp_ms: 1,
                headers: vec![],
                content_type: "text/plain".into(),
                payload: payload.to_vec(),
            },
            dedup: None,
        }))
        .expect("append");
    }

    /// One batch of route `r` (`in` → `out`, dead letters to `dlq.r`) from
    /// offset 0.
    fn prepare_from_start(transform: Transform, store: &Store) -> Prepared {
        prepare_at(transform, store, 0)
    }

    /// One batch of route `r` from offset `next`.
    fn prepare_at(transform: Transform, store: &Store, next: u64) -> Prepared {
        prepare_on(transform, store, next, &Workers::new(1))
    }

    /// One batch of route `r` from offset `next`, converting on `workers`.
    fn prepare_on(transform: Transform, store: &Store, next: u64, workers: &Workers) -> Prepared {
        let route = CompiledRoute {
            name: "r".into(),
            sources: vec!["in".into()],
            condition: Condition::Always,
            transform,
            targets: vec![parse_template("out").expect("template")],
            dead_letter_topic: "dlq.r".into(),
            retry: std::time::Duration::from_secs(1),
        };
        let metrics = Metrics::new().expect("metrics");
        prepare(
            &route,
            store,
            &metrics,
            (&ConvertOptions::default(), workers),
            ("in", next, BATCH_RECORDS),
        )
        .expect("prepared")
        .expect("records")
    }

    #[test]
    fn a_stored_value_that_does_not_decode_is_dead_lettered_and_the_route_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 1 << 20);
        append_in(&store, b"first");
        // The right version byte, then bytes that are no envelope.
        let bad = [&[crate::storage::record::RECORD_VERSION][..], &[0xff; 16]].concat();
        block(store.append_envelope("in", bad.clone())).expect("append");
        append_in(&store, b"third");
        // An envelope version this build does not know (written by a newer
        // medbus before a downgrade).
        let newer = [&[crate::storage::record::RECORD_VERSION + 1][..], b"later"].concat();
        block(store.append_envelope("in", newer.clone())).expect("append");
        let p = prepare_from_start(Transform::None, &store);
        assert_eq!((p.from, p.to, p.matched, p.dead_lettered), (0, 3, 2, 2));
        let topics: Vec<&str> = p.write.records.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["out", "dlq.r", "out", "dlq.r"]);
        let out: Vec<Record> = p
            .write
            .records
            .iter()
            .map(|(_, e)| Record::decode(&e.to_vec()).expect("decodes"))
            .collect();
        assert_eq!(out[3].payload, newer);
        assert!(out[3]
            .header(headers::ERROR)
            .is_some_and(|e| e.contains("version")));
        let dead = &out[1];
        assert_eq!(dead.payload, bad);
        assert!(dead
            .header(headers::ERROR)
            .is_some_and(|e| e.contains("does not decode")));
        assert_eq!(dead.header(headers::SOURCE_OFFSET), Some("1"));
        assert_eq!(out[2].payload, b"third");
        assert_eq!(p.write.cursors, [(cursor_key(CURSOR_KIND, "r", "in"), 4)]);
        assert_eq!(p.write.expect, [(cursor_key(CURSOR_KIND, "r", "in"), 0)]);
        store.close();
    }

    /// Dead letters count toward a batch's byte cap like outputs do: a run of
    /// large records that all fail is written in several bounded batches.
    #[test]
    fn dead_letters_count_toward_the_batch_byte_cap() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 8 << 20);
        for _ in 0..4 {
            // Not HL7: the `fhir` transform fails on every one.
            append_in(&store, &vec![b'x'; 900 << 10]);
        }
        let p = prepare_from_start(Transform::Fhir, &store);
        // 3 × 900 KiB passes 2 MiB: the fourth waits for the next batch.
        assert_eq!((p.from, p.to, p.dead_lettered), (0, 2, 3));
        assert_eq!(p.write.cursors, [(cursor_key(CURSOR_KIND, "r", "in"), 3)]);
        store.close();
    }

    /// A source record damaged on disk is dead-lettered with the bytes as
    /// they are on disk, and the route goes on past it.
    #[test]
    fn a_source_record_damaged_on_disk_is_dead_lettered_and_the_route_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 1 << 20);
        for p in [b"first", b"secnd", b"third"] {
            append_in(&store, p);
        }
        store.close();
        drop(store);
        damage_on_disk(dir.path(), "in", b"secnd");
        let store = open_with_segments(dir.path(), 1 << 20);
        // The batch stops before the damaged record …
        let p = prepare_at(Transform::None, &store, 0);
        assert_eq!((p.from, p.to, p.matched, p.dead_lettered), (0, 0, 1, 0));
        // … which is then dead-lettered on its own …
        let p = prepare_at(Transform::None, &store, 1);
        assert_eq!((p.from, p.to, p.matched, p.dead_lettered), (1, 1, 0, 1));
        assert_eq!(p.write.cursors, [(cursor_key(CURSOR_KIND, "r", "in"), 2)]);
        assert_eq!(p.write.expect, [(cursor_key(CURSOR_KIND, "r", "in"), 1)]);
        let (topic, dead) = &p.write.records[0];
        assert_eq!(topic, "dlq.r");
        let dead = Record::decode(&dead.to_vec()).expect("decodes");
        assert!(
            dead.payload.windows(5).any(|w| w == b"Secnd"),
            "the bytes on disk"
        );
        assert!(dead
            .header(headers::ERROR)
            .is_some_and(|e| e.contains("damaged on disk: frame checksum")));
        assert_eq!(dead.header(headers::SOURCE_OFFSET), Some("1"));
        // … and the route goes on.
        let p = prepare_at(Transform::None, &store, 2);
        assert_eq!((p.from, p.to, p.matched), (2, 2, 1));
        store.close();
    }

    /// Converting on the workers changes nothing in a batch: the same
    /// outputs, byte for byte, in the same order, the same dead letters and
    /// cursor, and the byte cap still cuts the batch at the same record.
    #[test]
    fn a_batch_converted_on_the_workers_is_the_batch_converted_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 8 << 20);
        let corpus = medbus_tests::corpus_dir().join("microsoft-fhir-converter/input");
        let mut files: Vec<_> = std::fs::read_dir(&corpus)
            .expect("corpus")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            .collect();
        files.sort();
        // Enough records that the byte cap cuts the batch, with records the
        // transform refuses among them.
        for (i, path) in files.iter().cycle().take(400).enumerate() {
            let payload = if i % 37 == 5 {
                b"not hl7".to_vec()
            } else {
                std::fs::read(path).expect("read")
            };
            block(store.append(AppendRequest {
                topic: "in".into(),
                record: Record {
                    timestamp_ms: 1,
                    headers: vec![],
                    content_type: headers::CONTENT_TYPE_HL7.into(),
                    payload,
                },
                dedup: None,
            }))
            .expect("append");
        }
        let alone = prepare_on(Transform::Fhir, &store, 0, &Workers::new(1));
        let pool = Workers::new(2);
        let shared = prepare_on(Transform::Fhir, &store, 0, &pool);
        assert!(
            alone.next_read < BATCH_RECORDS,
            "the byte cap cut the batch"
        );
        let bytes = |p: &Prepared| -> Vec<(String, Vec<u8>)> {
            p.write
                .records
                .iter()
                .map(|(t, e)| (t.clone(), e.to_vec()))
                .collect()
        };
        assert!(alone.dead_lettered > 0 && alone.matched > 0);
        assert_eq!(
            (
                alone.from,
                alone.to,
                alone.matched,
                alone.dead_lettered,
                alone.outputs
            ),
            (
                shared.from,
                shared.to,
                shared.matched,
                shared.dead_lettered,
                shared.outputs
            )
        );
        assert_eq!(alone.write.cursors, shared.write.cursors);
        // Dead letters carry the time they were made: compare the outputs.
        let outputs = |p: &Prepared| -> Vec<(String, Vec<u8>)> {
            bytes(p).into_iter().filter(|(t, _)| t == "out").collect()
        };
        assert_eq!(outputs(&alone), outputs(&shared));
        store.close();
    }
}
