//! The current-state view: the newest version of every resource medbus has
//! seen, kept up to date from the `fhir.*` topics, so that `GET
//! /fhir/{type}/{id}` and searches answer from an index instead of a scan.
//!
//! The indexer is route-like: it reads every one-resource `fhir.*` topic
//! (records with `fhir.resource_type` and `fhir.id`; `fhir.bundles` is not
//! read) through its own cursors, and writes index entries plus the cursor
//! advance in one atomic key-value batch (tree `kv/fhir.view`). The view is
//! derived state: after a crash it resumes from the cursors written with
//! what they produced, and deleting the tree rebuilds it by replay.
//!
//! Entries (byte `0` separates parts; types and ids cannot contain it):
//! - `r|type|id` → version (u64 BE), last updated (ms, u64 BE), content
//!   fingerprint (u64 BE), then the resource JSON with `meta` set;
//! - `s|type|system|value|id`, `v|type|value|id`: identifier indexes;
//! - `p|type|patient|id`: the patient compartment;
//! - `c|topic` → the next offset to index.
//!
//! A record whose content equals the stored version's is not a new version
//! (a re-sent HL7 message upserts the same resources).

use super::resource;
use crate::events::ViewBatchIndexed;
use crate::headers;
use crate::metrics::Metrics;
use crate::storage::{fingerprint, KvOp, RecordView, StorageError, Store};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The key-value tree of the view.
pub const VIEW_TREE: &str = "fhir.view";
/// Records indexed per topic per step: bounds one batch's memory and size.
pub const VIEW_BATCH: usize = 512;
/// Topics under `fhir.` that do not hold one resource per record.
const NOT_INDEXED: [&str; 1] = ["fhir.bundles"];
/// Pause after a storage error before re-reading from the cursors.
const RETRY: Duration = Duration::from_secs(1);

/// One stored resource version.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `meta.versionId`.
    pub version: u64,
    /// `meta.lastUpdated`, Unix ms.
    pub updated_ms: u64,
    /// The resource JSON, `meta` included.
    pub json: Vec<u8>,
}

impl Stored {
    /// Its weak ETag, `W/"<version>"` (what `If-Match` names).
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

fn key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = vec![kind];
    for p in parts {
        k.push(0);
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// The prefix of every entry of `kind` for `parts` (ends in a separator).
fn prefix(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = key(kind, parts);
    k.push(0);
    k
}

/// Whether a stored value is a deleted resource's tombstone (no JSON).
fn is_tombstone(v: &[u8]) -> bool {
    v.len() == 24
}

/// The version and content fingerprint of a stored value.
fn decode_head(v: &[u8]) -> Option<(u64, u64)> {
    let num = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    Some((num(0..8)?, num(16..24)?))
}

fn decode(v: &[u8]) -> Option<(Stored, u64)> {
    let num = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    Some((
        Stored {
            version: num(0..8)?,
            updated_ms: num(8..16)?,
            json: v.get(24..)?.to_vec(),
        },
        num(16..24)?,
    ))
}

fn encode(s: &Stored, fp: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + s.json.len());
    v.extend_from_slice(&s.version.to_be_bytes());
    v.extend_from_slice(&s.updated_ms.to_be_bytes());
    v.extend_from_slice(&fp.to_be_bytes());
    v.extend_from_slice(&s.json);
    v
}

/// The index entries of a resource (never containing the separator).
fn index_keys(t: &str, id: &str, r: &Map<String, Value>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let clean = |s: &str| !s.contains('\0');
    for (system, value) in resource::identifiers(r) {
        if clean(&system) && clean(&value) {
            out.push(key(b's', &[t, &format!("{system}|{value}"), id]));
            out.push(key(b'v', &[t, &value, id]));
        }
    }
    for p in resource::patients(r) {
        out.push(key(b'p', &[t, &p, id]));
    }
    out.sort();
    out.dedup();
    out
}

/// How far the indexer has come, per topic, for read-your-writes.
#[derive(Default)]
struct Progress {
    next: Mutex<HashMap<String, u64>>,
}

/// The query side of the view; cheap to clone.
#[derive(Clone)]
pub struct View {
    store: Store,
    progress: Arc<Progress>,
    changed: watch::Receiver<u64>,
}

/// Which index a search walks.
#[derive(Debug, Clone, Copy)]
pub enum Index {
    /// `identifier=system|value`.
    SystemValue,
    /// `identifier=value` (any system).
    Value,
    /// `patient=<id>`.
    Patient,
}

impl View {
    /// A resource's newest version (`None` when unknown or deleted).
    pub fn get(&self, t: &str, id: &str) -> Result<Option<Stored>, StorageError> {
        Ok(self
            .store
            .kv_get(VIEW_TREE, &key(b'r', &[t, id]))?
            .filter(|v| !is_tombstone(v))
            .and_then(|v| decode(&v).map(|(s, _)| s)))
    }

    /// The version a deleted resource's delete made, if it was deleted
    /// (and not created again since).
    pub fn deleted(&self, t: &str, id: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .store
            .kv_get(VIEW_TREE, &key(b'r', &[t, id]))?
            .filter(|v| is_tombstone(v))
            .and_then(|v| decode_head(&v).map(|(version, _)| version)))
    }

    /// Up to `max` resources of type `t` in id order, after id `after`
    /// (`None` for a deleted one: it still counts toward `max`).
    pub fn scan_type(
        &self,
        t: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Option<Stored>)>, StorageError> {
        let p = prefix(b'r', &[t]);
        let after = after.map(|a| key(b'r', &[t, a]));
        let rows = self.store.kv_scan(VIEW_TREE, &p, after.as_deref(), max)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| {
                let id = String::from_utf8(k.get(p.len()..)?.to_vec()).ok()?;
                let live = (!is_tombstone(&v)).then(|| decode(&v).map(|(s, _)| s));
                Some((id, live.flatten()))
            })
            .collect())
    }

    /// Up to `max` ids of type `t` whose `index` entry is `value`, in id
    /// order, after id `after`.
    pub fn scan_index(
        &self,
        index: Index,
        t: &str,
        value: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, StorageError> {
        if value.contains('\0') {
            return Ok(Vec::new());
        }
        let kind = match index {
            Index::SystemValue => b's',
            Index::Value => b'v',
            Index::Patient => b'p',
        };
        let p = prefix(kind, &[t, value]);
        let after = after.map(|a| key(kind, &[t, value, a]));
        let rows = self.store.kv_scan(VIEW_TREE, &p, after.as_deref(), max)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, _)| String::from_utf8(k.get(p.len()..)?.to_vec()).ok())
            .collect())
    }

    /// Wait (at most `timeout`) until the record at `offset` of `topic` is
    /// indexed; `false` on timeout.
    pub async fn wait_indexed(&self, topic: &str, offset: u64, timeout: Duration) -> bool {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let done = self
                .progress
                .next
                .lock()
                .ok()
                .and_then(|m| m.get(topic).copied())
                .is_some_and(|n| n > offset);
            if done {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

/// The indexer: a [`crate::task`] loop.
pub struct Indexer;

/// Stops a running indexer (after its current batch).
pub type IndexerHandle = crate::task::LoopHandle;

impl Indexer {
    /// Start the indexer on `arbiter`; returns the query side and a handle.
    pub fn spawn(
        store: Store,
        metrics: Arc<Metrics>,
        arbiter: &actix::ArbiterHandle,
    ) -> (View, IndexerHandle) {
        let (changed_tx, changed_rx) = watch::channel(0);
        let progress = Arc::new(Progress::default());
        let view = View {
            store: store.clone(),
            progress: progress.clone(),
            changed: changed_rx,
        };
        let handle = crate::task::spawn("fhir-view".into(), arbiter, move |stop| {
            run(store, metrics, progress, changed_tx, stop)
        });
        (view, handle)
    }
}

async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
    changed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut commits = store.commits();
    let mut cursors: HashMap<String, u64> = HashMap::new();
    let mut steps = 0u64;
    tracing::info!("FHIR view indexer started");
    loop {
        if *stop.borrow() {
            tracing::info!("FHIR view indexer stopped");
            return;
        }
        commits.borrow_and_update();
        let Some(Pass { progressed, failed }) = pass(&store, &metrics, &progress, &mut cursors)
        else {
            return;
        };
        steps += 1;
        let _ = changed.send(steps);
        if failed {
            tokio::time::sleep(RETRY).await;
        } else if !progressed {
            tokio::select! {
                c = commits.changed() => if c.is_err() { return },
                _ = stop.changed() => {}
            }
        }
    }
}

/// What one pass over the topics did.
struct Pass {
    /// Some topic had new records, and they were written.
    progressed: bool,
    /// A storage error paused a topic or the pass (retry after [`RETRY`]).
    failed: bool,
}

/// One pass over the `fhir.*` topics: a batch of each that has new records,
/// written in one key-value batch with the cursors (one per topic would
/// cost a write each for the few records a commit brings); then the lag
/// metric and the progress readers wait on. `None`: the store is closed.
fn pass(
    store: &Store,
    metrics: &Metrics,
    progress: &Progress,
    cursors: &mut HashMap<String, u64>,
) -> Option<Pass> {
    let mut batch = Batch::default();
    let mut failed = false;
    let topics: Vec<String> = store
        .topic_names("fhir.")
        .into_iter()
        .filter(|t| !NOT_INDEXED.contains(&t.as_str()))
        .collect();
    for topic in &topics {
        let next = match cursors.get(topic) {
            Some(n) => *n,
            None => match store.kv_get(VIEW_TREE, &key(b'c', &[topic])) {
                Ok(v) => {
                    let n = v
                        .and_then(|b| b.as_slice().try_into().ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    cursors.insert(topic.clone(), n);
                    n
                }
                Err(e) => {
                    tracing::error!(error = %e, "FHIR view: cannot read a cursor");
                    continue;
                }
            },
        };
        let mark = batch.mark();
        match step(store, &mut batch, topic, next) {
            Ok(()) => {}
            Err(StorageError::Closed) => return None,
            // This topic waits (what it added to the pass is taken
            // back); the others go on.
            Err(e) => {
                tracing::error!(%topic, error = %e, "FHIR view: a topic paused after a storage error; it resumes from its cursor");
                batch.rollback(mark);
                cursors.remove(topic);
                failed = true;
            }
        }
    }
    let progressed = !batch.topics.is_empty();
    if progressed {
        match store.kv_apply(VIEW_TREE, batch.ops) {
            Ok(()) => {
                for (topic, after, records, versions) in batch.topics {
                    ViewBatchIndexed {
                        topic: &topic,
                        records,
                        versions,
                    }
                    .emit(metrics);
                    cursors.insert(topic, after);
                }
            }
            Err(StorageError::Closed) => return None,
            // No cursor moved: the pass is read again.
            Err(e) => {
                tracing::error!(error = %e, "FHIR view paused after a storage error; it resumes from its cursors");
                failed = true;
            }
        }
    }
    let mut lag = 0u64;
    if let Ok(mut m) = progress.next.lock() {
        for topic in topics {
            // A topic whose cursor could not be read counts whole.
            let n = cursors.get(&topic).copied().unwrap_or(0);
            lag += store
                .last_offset(&topic)
                .ok()
                .flatten()
                .map(|last| (last + 1).saturating_sub(n))
                .unwrap_or(0);
            m.insert(topic, n);
        }
    }
    metrics
        .fhir_view_lag_records
        .set(i64::try_from(lag).unwrap_or(i64::MAX));
    Some(Pass { progressed, failed })
}

/// What one pass over the topics writes: index entries and cursors, in
/// one key-value batch.
#[derive(Default)]
struct Batch {
    ops: Vec<KvOp>,
    overlay: Overlay,
    /// What each overlay entry held before (to take a topic's part back).
    undo: Vec<(Vec<u8>, Option<usize>)>,
    /// (topic, next offset, records read, new versions) of each topic read.
    topics: Vec<(String, u64, u64, u64)>,
}

/// How far a [`Batch`] was built (to go back there).
#[derive(Clone, Copy)]
struct Mark {
    ops: usize,
    undo: usize,
    topics: usize,
}

impl Batch {
    fn mark(&self) -> Mark {
        Mark {
            ops: self.ops.len(),
            undo: self.undo.len(),
            topics: self.topics.len(),
        }
    }

    /// Take back everything added since `mark`.
    fn rollback(&mut self, mark: Mark) {
        self.ops.truncate(mark.ops);
        self.topics.truncate(mark.topics);
        while self.undo.len() > mark.undo {
            let Some((key, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => self.overlay.insert(key, v),
                None => self.overlay.remove(&key),
            };
        }
    }

    /// Put a resource's stored value, and note where (later records of the
    /// same resource in this batch read it there).
    fn put_resource(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let before = self.overlay.insert(key.clone(), self.ops.len());
        self.undo.push((key.clone(), before));
        self.ops.push(KvOp::Put(key, value));
    }
}

/// Add one batch of `topic` from `next` (when it has records there) to
/// `batch`.
fn step(store: &Store, batch: &mut Batch, topic: &str, next: u64) -> Result<(), StorageError> {
    let (records, after) = store.read_sound_raw(topic, next, VIEW_BATCH)?;
    if after == next {
        return Ok(());
    }
    let mut versions = 0u64;
    for (offset, raw) in &records {
        match raw.view() {
            Ok(record) => {
                let made = index_record(store, batch, &record)?;
                versions += u64::from(made);
            }
            // Like a record damaged on disk: passed over, not a stall.
            Err(e) => {
                tracing::warn!(%topic, offset, error = %e, "FHIR view: a stored record does not decode; passed over");
            }
        }
    }
    batch
        .ops
        .push(KvOp::Put(key(b'c', &[topic]), after.to_be_bytes().to_vec()));
    batch
        .topics
        .push((topic.to_string(), after, records.len() as u64, versions));
    Ok(())
}

/// Resources written earlier in the batch being built: key → where in the
/// batch's ops their value (or tombstone) is put. Later records of the same
/// resource read it there, not from the store.
type Overlay = HashMap<Vec<u8>, usize>;

/// Add one record's changes to `ops`; whether it made a new version.
fn index_record(
    store: &Store,
    batch: &mut Batch,
    record: &RecordView<'_>,
) -> Result<bool, StorageError> {
    let (Some(t), Some(id)) = (
        record.header(headers::FHIR_RESOURCE_TYPE),
        record.header(headers::FHIR_ID),
    ) else {
        return Ok(false);
    };
    if !resource::is_resource_type(t) || !resource::is_valid_id(id) {
        return Ok(false);
    }
    let rkey = key(b'r', &[t, id]);
    let fetched;
    let old: Option<&[u8]> = match batch.overlay.get(&rkey) {
        Some(i) => match batch.ops.get(*i) {
            Some(KvOp::Put(_, v)) => Some(v),
            _ => None,
        },
        None => {
            fetched = store.kv_get(VIEW_TREE, &rkey)?;
            fetched.as_deref()
        }
    };
    // (version, fingerprint, index keys) of the stored version; a deleted
    // resource's tombstone has a version and no JSON.
    let old = old.and_then(|v| {
        let (s, fp) = decode_head(v)?;
        let keys = resource::parse_resource(v.get(24..)?)
            .map(|m| index_keys(t, id, &m))
            .unwrap_or_default();
        Some((s, fp, keys, is_tombstone(v)))
    });
    if record.header(headers::FHIR_DELETED) == Some("true") {
        let Some((version, _, old_keys, false)) = old else {
            return Ok(false);
        };
        batch.ops.extend(old_keys.into_iter().map(KvOp::Delete));
        // Kept as a tombstone: a read answers 410 Gone, and a new version
        // goes on from this one.
        let tombstone = Stored {
            version: version + 1,
            updated_ms: record.timestamp_ms(),
            json: Vec::new(),
        };
        batch.put_resource(rkey, encode(&tombstone, 0));
        return Ok(true);
    }
    let payload = record.payload();
    let fp = fingerprint(payload);
    if old
        .as_ref()
        .is_some_and(|(_, f, _, gone)| *f == fp && !gone)
    {
        return Ok(false);
    }
    let Ok(mut map) = resource::parse_resource(payload) else {
        return Ok(false);
    };
    if resource::type_of(&map) != t {
        return Ok(false);
    }
    let version = old.as_ref().map_or(1, |(v, _, _, _)| v + 1);
    let updated_ms = record.timestamp_ms();
    resource::set_id_and_meta(&mut map, id, version, updated_ms);
    let new_keys = index_keys(t, id, &map);
    if let Some((_, _, old_keys, _)) = old {
        batch.ops.extend(
            old_keys
                .into_iter()
                .filter(|k| !new_keys.contains(k))
                .map(KvOp::Delete),
        );
    }
    batch
        .ops
        .extend(new_keys.into_iter().map(|k| KvOp::Put(k, Vec::new())));
    let stored = Stored {
        version,
        updated_ms,
        json: serde_json::to_vec(&Value::Object(map)).unwrap_or_default(),
    };
    batch.put_resource(rkey, encode(&stored, fp));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{block, open_with_segments};
    use crate::storage::{log, segment, AppendRequest, Record};
    use std::path::Path;

    fn put(store: &Store, t: &str, id: &str, json: &str) {
        block(store.append(AppendRequest {
            topic: format!("fhir.{t}"),
            record: Record {
                timestamp_ms: 1_700_000_000_000,
                headers: vec![
                    (headers::FHIR_RESOURCE_TYPE.into(), t.into()),
                    (headers::FHIR_ID.into(), id.into()),
                ],
                content_type: headers::CONTENT_TYPE_FHIR.into(),
                payload: json.as_bytes().to_vec(),
            },
            dedup: None,
        }))
        .expect("append");
    }

    /// Put a directory where `topic`'s first (sealed) segment file was:
    /// reading from it then fails with an I/O error, every time.
    fn break_first_segment(dir: &Path, topic: &str) {
        let seg = dir
            .join(log::TOPICS_DIR)
            .join(topic)
            .join(segment::data_name(0));
        std::fs::remove_file(&seg).expect("remove");
        std::fs::create_dir(&seg).expect("a directory instead");
    }

    /// A topic that cannot be read waits on its own: the others are still
    /// indexed, and the lag counts the waiting topic's records.
    #[test]
    fn a_topic_that_cannot_be_read_does_not_stop_the_others() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 64 << 10);
        // Enough to fill the first 64 KiB segment and start a second.
        let pad = "x".repeat(1000);
        for i in 0..80 {
            put(
                &store,
                "Observation",
                &format!("o{i}"),
                &format!(
                    r#"{{"resourceType":"Observation","status":"final","code":{{"text":"{pad}"}}}}"#
                ),
            );
        }
        put(
            &store,
            "Patient",
            "p1",
            r#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:mrn","value":"7"}]}"#,
        );
        put(
            &store,
            "Patient",
            "p2",
            r#"{"resourceType":"Patient","id":"p2"}"#,
        );
        store.close();
        drop(store);
        // Reopened, nothing is in the in-memory tail.
        let store = open_with_segments(dir.path(), 64 << 10);
        break_first_segment(dir.path(), "fhir.Observation");
        assert!(store.read("fhir.Observation", 0, 1).is_err());
        let metrics = Metrics::new().expect("metrics");
        let progress = Progress::default();
        let mut cursors = HashMap::new();
        let done = pass(&store, &metrics, &progress, &mut cursors).expect("store open");
        assert!(done.progressed && done.failed);
        assert_eq!(cursors.get("fhir.Patient"), Some(&2));
        assert_eq!(cursors.get("fhir.Observation"), None);
        assert_eq!(metrics.fhir_view_lag_records.get(), 80);

        let (changed, _) = watch::channel(0);
        let view = View {
            store: store.clone(),
            progress: Arc::new(progress),
            changed: changed.subscribe(),
        };
        let p1 = view.get("Patient", "p1").expect("get").expect("p1 indexed");
        assert_eq!(p1.version, 1);
        assert!(
            String::from_utf8_lossy(&p1.json).starts_with(
                r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"#
            ),
            "{}",
            String::from_utf8_lossy(&p1.json)
        );
        let found = view
            .scan_index(Index::SystemValue, "Patient", "urn:mrn|7", None, 10)
            .expect("scan");
        assert_eq!(found, ["p1"]);
        assert!(view.get("Observation", "o0").expect("get").is_none());
        store.close();
    }

    /// Within one pass, a later record of a resource builds on the earlier
    /// one (its version, its index entries), and a delete removes both.
    #[test]
    fn versions_within_one_pass_build_on_each_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_with_segments(dir.path(), 1 << 20);
        put(
            &store,
            "Patient",
            "p1",
            r#"{"resourceType":"Patient","identifier":[{"value":"A"}]}"#,
        );
        put(
            &store,
            "Patient",
            "p1",
            r#"{"resourceType":"Patient","identifier":[{"value":"B"}]}"#,
        );
        put(
            &store,
            "Patient",
            "p1",
            r#"{"resourceType":"Patient","identifier":[{"value":"B"}]}"#,
        );
        let metrics = Metrics::new().expect("metrics");
        let progress = Arc::new(Progress::default());
        let mut cursors = HashMap::new();
        let done = pass(&store, &metrics, &progress, &mut cursors).expect("open");
        assert!(done.progressed && !done.failed);
        let (changed, _) = watch::channel(0);
        let view = View {
            store: store.clone(),
            progress: progress.clone(),
            changed: changed.subscribe(),
        };
        let p1 = view.get("Patient", "p1").expect("get").expect("p1");
        assert_eq!(p1.version, 2, "the same content again is not a new version");
        let ids = |v: &str| {
            view.scan_index(Index::Value, "Patient", v, None, 10)
                .expect("scan")
        };
        assert!(ids("A").is_empty());
        assert_eq!(ids("B"), ["p1"]);

        block(store.append(AppendRequest {
            topic: "fhir.Patient".into(),
            record: Record {
                timestamp_ms: 1,
                headers: vec![
                    (headers::FHIR_RESOURCE_TYPE.into(), "Patient".into()),
                    (headers::FHIR_ID.into(), "p1".into()),
                    (headers::FHIR_DELETED.into(), "true".into()),
                ],
                content_type: headers::CONTENT_TYPE_FHIR.into(),
                payload: Vec::new(),
            },
            dedup: None,
        }))
        .expect("append");
        pass(&store, &metrics, &progress, &mut cursors).expect("open");
        assert!(view.get("Patient", "p1").expect("get").is_none());
        assert!(ids("B").is_empty());
        store.close();
    }
}
