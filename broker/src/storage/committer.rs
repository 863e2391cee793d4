//! Group commit: the only place where records become durable.
//!
//! One thread owns every write. It takes whatever appends are queued (up to
//! a batch cap — no batching timer: under load the queue fills while the
//! previous batch syncs, which is the batching), inserts each record, makes
//! the batch durable with one sled `flush` plus one `fdatasync` of sled's
//! files, and only then answers every waiter of the batch. sled 0.34's flush
//! ends in `sync_file_range`, which does not reach stable storage (sled issue
//! #1452), and its blob files (values over a quarter segment) are never
//! synced by sled at all: hence the explicit `fdatasync` calls here.
//!
//! Durability guarantee, in one sentence: when an append's reply is `Ok` and
//! `durability = "fsync"`, the record is on stable storage and survives a
//! crash of the process or the machine.

use super::{AppendOutcome, AppendRequest, AtomicWrite, DedupKey, StorageError};
use medbus_config::Durability;
use sled::Transactional;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// Tree holding retransmission keys: key = dedup key, value = expiry (ms,
/// big-endian u64) + offset (u64) + content fingerprint (u64) + topic. It
/// lives in its own sled database (see [`super::DEDUP_DIR`]).
pub(crate) const DEDUP_TREE: &str = "dedup";
/// The retransmission keys in expiry order: key = expiry (ms, u64 BE) +
/// dedup key, empty value; the sweep reads it from the front, so it only
/// ever looks at keys that have expired.
pub(crate) const DEDUP_EXPIRY_TREE: &str = "dedup-expiry";
/// How often expired retransmission keys are swept.
const DEDUP_SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Longest a sweep runs (then it goes on at the next one): 2 % of the
/// committer's time at most.
const DEDUP_SWEEP_BUDGET: Duration = Duration::from_millis(100);
/// How long the committer waits for work before doing its idle chores
/// (health re-check after a failure, dedup sweep).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Work for the committer thread.
pub(crate) enum Op {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<AppendOutcome, StorageError>>,
    },
    /// Remove a topic's records below an offset (retention), at most
    /// [`TRIM_BATCH`] of them.
    Trim {
        topic: String,
        below: u64,
        reply: oneshot::Sender<Result<Trimmed, StorageError>>,
    },
    /// Write a consistent snapshot of the whole store to a file.
    Backup {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<super::backup::BackupSummary, StorageError>>,
    },
    /// Records plus cursor positions, applied in one atomic sled step.
    Atomic {
        write: AtomicWrite,
        reply: oneshot::Sender<Result<Vec<(String, u64)>, StorageError>>,
    },
}

/// Most records one trim removes, so retention never stalls ingest for long.
pub const TRIM_BATCH: usize = 5_000;

/// What one trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trimmed {
    /// Records removed.
    pub records: u64,
    /// Payload bytes removed.
    pub bytes: u64,
    /// Payload bytes left in the topic.
    pub remaining_bytes: u64,
    /// Whether records below the requested offset remain (call again).
    pub more: bool,
}

/// Key of a topic's next offset in [`META_TREE`], kept so that an emptied
/// topic never reuses offsets after a restart.
pub(crate) fn next_key(topic: &str) -> Vec<u8> {
    format!("next/{topic}").into_bytes()
}

/// The tree of durable cursors: key `kind/name/topic` → next offset (u64 BE).
pub(crate) const CURSOR_TREE: &str = "cursors";

/// What one group commit did, handed to the observer (metrics).
#[derive(Debug, Clone)]
pub struct CommitStats {
    /// Records in the batch (duplicates included).
    pub records: usize,
    /// Time from the first insert to durability.
    pub elapsed: Duration,
    /// Whether the batch was made durable.
    pub ok: bool,
    /// Per topic written: records added, payload bytes added, newest offset
    /// and the topic's payload bytes in total.
    pub topics: Vec<TopicAppend>,
}

/// Appends to one topic within one group commit.
#[derive(Debug, Clone)]
pub struct TopicAppend {
    /// Topic name.
    pub topic: String,
    /// Records added by this batch.
    pub records: u64,
    /// Newest offset after this batch.
    pub last_offset: u64,
    /// Payload bytes stored in the topic in total.
    pub total_bytes: u64,
}

/// Tree of per-topic bookkeeping: key `bytes/<topic>` → payload bytes (u64 BE).
pub(crate) const META_TREE: &str = "meta";

/// Key of a topic's byte total in [`META_TREE`].
pub(crate) fn bytes_key(topic: &str) -> Vec<u8> {
    format!("bytes/{topic}").into_bytes()
}

/// Called after every group commit (metrics hook).
pub type CommitObserver = Box<dyn Fn(&CommitStats) + Send>;

pub(crate) struct Committer {
    pub db: sled::Db,
    /// Retransmission keys ([`DEDUP_TREE`] of the dedup database).
    pub dedup: sled::Tree,
    /// The same keys in expiry order ([`DEDUP_EXPIRY_TREE`]).
    pub dedup_expiry: sled::Tree,
    pub dir: PathBuf,
    pub durability: Durability,
    pub max_batch: usize,
    pub ops: Receiver<Op>,
    pub committed: watch::Sender<u64>,
    pub observer: Option<CommitObserver>,
    /// Appends of the batch being built, per topic: (records, bytes, last offset).
    pub batch_topics: HashMap<String, (u64, u64, u64)>,
    /// Next offset per topic, recovered from the trees at start.
    pub next: HashMap<String, (sled::Tree, u64)>,
    /// sled's log file, opened once for `fdatasync`.
    pub log_file: Option<File>,
    /// Highest blob id already synced.
    pub synced_blob: u64,
    /// Free disk space below which appends are refused.
    pub min_free: u64,
    /// Whether the last batch failed (for the idle health re-check).
    pub last_failed: bool,
    /// Modification time of the blob directory at the last listing.
    pub blobs_seen: Option<std::time::SystemTime>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum Reply {
    Append(
        oneshot::Sender<Result<AppendOutcome, StorageError>>,
        Result<AppendOutcome, StorageError>,
    ),
    Atomic(
        oneshot::Sender<Result<Vec<(String, u64)>, StorageError>>,
        Result<Vec<(String, u64)>, StorageError>,
    ),
    Trim(
        oneshot::Sender<Result<Trimmed, StorageError>>,
        Result<Trimmed, StorageError>,
    ),
}

struct Pending {
    reply: Reply,
    /// Dedup key inserted by this batch, removed again if the batch fails.
    dedup_inserted: Option<Vec<u8>>,
}

impl Committer {
    pub fn run(mut self) {
        let mut batch: Vec<Op> = Vec::with_capacity(self.max_batch);
        let mut last_sweep = Instant::now();
        let mut batch_no = 0u64;
        loop {
            // Block for the first op, then take whatever else is queued.
            let first = match self.ops.recv_timeout(IDLE_TICK) {
                Ok(op) => op,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if last_sweep.elapsed() >= DEDUP_SWEEP_EVERY {
                        self.sweep_dedup();
                        last_sweep = Instant::now();
                    }
                    self.report_idle_health();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            self.commit(&mut batch);
            batch_no += 1;
            self.committed.send_replace(batch_no);
            if last_sweep.elapsed() >= DEDUP_SWEEP_EVERY {
                self.sweep_dedup();
                last_sweep = Instant::now();
            }
        }
        if let Err(e) = self.make_durable() {
            tracing::error!(error = %e, "final flush of the message store failed");
        }
    }

    /// While idle after a failed batch, tell the observer as soon as the
    /// disk has room again, so readiness recovers without waiting for
    /// traffic that a load balancer would not send to an unready broker.
    fn report_idle_health(&mut self) {
        if !self.last_failed || self.disk_full().is_some() {
            return;
        }
        if self.make_durable().is_ok() {
            self.last_failed = false;
            if let Some(observer) = &self.observer {
                observer(&CommitStats {
                    records: 0,
                    elapsed: Duration::ZERO,
                    ok: true,
                    topics: Vec::new(),
                });
            }
        }
    }

    /// `Some(error)` when the disk is below its reserve: then nothing that
    /// writes new data is applied (sled must never meet ENOSPC: it does not
    /// recover from it without a restart).
    fn disk_full(&self) -> Option<StorageError> {
        if self.min_free == 0 || self.durability == Durability::None {
            return None;
        }
        match fs2::available_space(&self.dir) {
            Ok(available) if available < self.min_free => Some(StorageError::DiskFull {
                available,
                reserve: self.min_free,
            }),
            _ => None,
        }
    }

    fn commit(&mut self, batch: &mut Vec<Op>) {
        let started = Instant::now();
        let now = now_ms();
        let full = self.disk_full();
        if let Some(e) = &full {
            tracing::error!(error = %e, "refusing writes until space is freed");
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                Op::Backup { path, reply } => {
                    // Everything before it in this batch is made durable
                    // first, so the snapshot shows what was acknowledged.
                    let result = self
                        .make_durable()
                        .map_err(|e| StorageError::Durability(e.to_string()))
                        .and_then(|_| {
                            super::backup::write(&self.db, &path)
                                .map_err(|e| StorageError::Sled(format!("backup failed: {e}")))
                        });
                    let _ = reply.send(result);
                }
                Op::Append { reply, .. } if full.is_some() => {
                    pending.push(Pending {
                        reply: Reply::Append(
                            reply,
                            Err(full.clone().unwrap_or(StorageError::Closed)),
                        ),
                        dedup_inserted: None,
                    });
                }
                Op::Atomic { reply, .. } if full.is_some() => {
                    pending.push(Pending {
                        reply: Reply::Atomic(
                            reply,
                            Err(full.clone().unwrap_or(StorageError::Closed)),
                        ),
                        dedup_inserted: None,
                    });
                }
                Op::Append { request, reply } => {
                    let (result, dedup_inserted) = self.apply(request, now);
                    pending.push(Pending {
                        reply: Reply::Append(reply, result),
                        dedup_inserted,
                    });
                }
                Op::Trim {
                    topic,
                    below,
                    reply,
                } => {
                    let result = self.apply_trim(&topic, below);
                    pending.push(Pending {
                        reply: Reply::Trim(reply, result),
                        dedup_inserted: None,
                    });
                }
                Op::Atomic { write, reply } => {
                    let result = self.apply_atomic(write);
                    pending.push(Pending {
                        reply: Reply::Atomic(reply, result),
                        dedup_inserted: None,
                    });
                }
            }
        }
        let topics = self.record_topic_bytes();
        let durable = self.make_durable();
        if let Err(e) = &durable {
            tracing::error!(error = %e, records = pending.len(), "group commit failed: answering every append of the batch with an error");
            // A failed batch must not make a resend look like a duplicate of
            // something that was never acknowledged.
            for p in &pending {
                if let Some(k) = &p.dedup_inserted {
                    let _ = self.dedup.remove(k);
                }
            }
        }
        let records = pending.len();
        let failure = durable
            .as_ref()
            .err()
            .map(|e| StorageError::Durability(e.to_string()));
        // Health and metrics first: whoever is told of a failure must find
        // readiness already showing it.
        self.last_failed = durable.is_err() || full.is_some();
        if let Some(observer) = &self.observer {
            observer(&CommitStats {
                records,
                elapsed: started.elapsed(),
                ok: durable.is_ok() && full.is_none(),
                topics,
            });
        }
        // A waiter that went away (connection closed) is not an error.
        for p in pending {
            match p.reply {
                Reply::Append(tx, result) => {
                    let _ = tx.send(match &failure {
                        None => result,
                        Some(f) => Err(f.clone()),
                    });
                }
                Reply::Trim(tx, result) => {
                    let _ = tx.send(match &failure {
                        None => result,
                        Some(f) => Err(f.clone()),
                    });
                }
                Reply::Atomic(tx, result) => {
                    let _ = tx.send(match &failure {
                        None => result,
                        Some(f) => Err(f.clone()),
                    });
                }
            }
        }
    }

    /// Insert one record (or recognise a retransmission).
    fn apply(
        &mut self,
        req: AppendRequest,
        now: u64,
    ) -> (Result<AppendOutcome, StorageError>, Option<Vec<u8>>) {
        if let Some(dedup) = &req.dedup {
            match self.check_dedup(dedup, now) {
                Ok(Some(hit)) => return (Ok(hit), None),
                Ok(None) => {}
                // Not knowing is not a reason to refuse: stored again, at
                // worst twice.
                Err(e) => tracing::warn!(error = %e, "cannot check for a retransmission: storing"),
            }
        }
        let value = match req.record.encode() {
            Ok(v) => v,
            Err(e) => return (Err(StorageError::Record(e.to_string())), None),
        };
        let (tree, next) = match self.topic(&req.topic) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let offset = *next;
        if let Err(e) = tree.insert(offset.to_be_bytes(), value) {
            return (Err(StorageError::Sled(e.to_string())), None);
        }
        *next += 1;
        let added = req.record.payload.len() as u64;
        let entry = self.batch_topics.entry(req.topic.clone()).or_default();
        entry.0 += 1;
        entry.1 += added;
        entry.2 = offset;
        let mut inserted = None;
        if let Some(dedup) = &req.dedup {
            let expires = now.saturating_add(dedup.window.as_millis() as u64);
            let mut v = Vec::with_capacity(24 + req.topic.len());
            v.extend_from_slice(&expires.to_be_bytes());
            v.extend_from_slice(&offset.to_be_bytes());
            v.extend_from_slice(&dedup.fingerprint.to_be_bytes());
            v.extend_from_slice(req.topic.as_bytes());
            let mut by_expiry = expires.to_be_bytes().to_vec();
            by_expiry.extend_from_slice(&dedup.key);
            match self
                .dedup
                .insert(&dedup.key, v)
                .and_then(|_| self.dedup_expiry.insert(by_expiry, &[]))
            {
                Ok(_) => inserted = Some(dedup.key.clone()),
                // The record is stored; losing its dedup key only means a
                // resend would be stored again.
                Err(e) => tracing::warn!(error = %e, "cannot record retransmission key"),
            }
        }
        (
            Ok(AppendOutcome::Stored {
                topic: req.topic,
                offset,
            }),
            inserted,
        )
    }

    /// Remove records of `topic` below `below` (oldest first, bounded).
    fn apply_trim(&mut self, topic: &str, below: u64) -> Result<Trimmed, StorageError> {
        let (tree, next) = self.topic(topic)?;
        let tree = tree.clone();
        let next = *next;
        let mut out = Trimmed::default();
        let mut keys = Vec::new();
        for item in tree.range(..below.to_be_bytes()).take(TRIM_BATCH + 1) {
            let (k, v) = item?;
            if keys.len() == TRIM_BATCH {
                out.more = true;
                break;
            }
            let size = super::Record::decode(&v)
                .map(|r| r.payload.len() as u64)
                .unwrap_or(0);
            out.bytes += size;
            keys.push(k);
        }
        let meta = self.db.open_tree(META_TREE)?;
        // Remember the next offset first: an emptied topic must not restart at 0.
        meta.insert(next_key(topic), &next.to_be_bytes())?;
        for k in &keys {
            tree.remove(k)?;
        }
        out.records = keys.len() as u64;
        let remaining = meta
            .update_and_fetch(bytes_key(topic), |old| {
                let old = old
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some(old.saturating_sub(out.bytes).to_be_bytes().to_vec())
            })?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        out.remaining_bytes = remaining;
        Ok(out)
    }

    /// Apply records and cursor positions in one sled transaction: all of
    /// them or none, so a crash never separates outputs from their cursor.
    fn apply_atomic(&mut self, write: AtomicWrite) -> Result<Vec<(String, u64)>, StorageError> {
        let mut topics: Vec<String> = Vec::new();
        let mut encoded: Vec<(usize, Vec<u8>, u64)> = Vec::with_capacity(write.records.len());
        for (topic, record) in &write.records {
            let idx = match topics.iter().position(|t| t == topic) {
                Some(i) => i,
                None => {
                    self.topic(topic)?;
                    topics.push(topic.clone());
                    topics.len() - 1
                }
            };
            let value = record
                .encode()
                .map_err(|e| StorageError::Record(e.to_string()))?;
            encoded.push((idx, value, record.payload.len() as u64));
        }
        let mut trees: Vec<sled::Tree> = Vec::with_capacity(topics.len() + 1);
        let mut starts: Vec<u64> = Vec::with_capacity(topics.len());
        for t in &topics {
            let (tree, next) = self.topic(t)?;
            trees.push(tree.clone());
            starts.push(*next);
        }
        trees.push(self.db.open_tree(CURSOR_TREE)?);
        let cursor_idx = topics.len();
        let result = trees.as_slice().transaction(|txs| {
            let mut next = starts.clone();
            let mut assigned = Vec::with_capacity(encoded.len());
            for (idx, value, _) in &encoded {
                let (Some(tx), Some(n)) = (txs.get(*idx), next.get_mut(*idx)) else {
                    continue;
                };
                tx.insert(&n.to_be_bytes(), value.as_slice())?;
                assigned.push((*idx, *n));
                *n += 1;
            }
            if let Some(tx) = txs.get(cursor_idx) {
                for (key, offset) in &write.cursors {
                    tx.insert(key.as_slice(), &offset.to_be_bytes())?;
                }
                for key in &write.released {
                    tx.remove(key.as_slice())?;
                }
            }
            Ok(assigned)
        });
        let assigned: Vec<(usize, u64)> =
            result.map_err(|e: sled::transaction::TransactionError<()>| {
                StorageError::Sled(format!("atomic write failed: {e:?}"))
            })?;
        let mut out = Vec::with_capacity(assigned.len());
        for ((idx, offset), (_, _, bytes)) in assigned.into_iter().zip(&encoded) {
            let Some(topic) = topics.get(idx) else {
                continue;
            };
            if let Some((_, next)) = self.next.get_mut(topic) {
                *next = (*next).max(offset + 1);
            }
            let entry = self.batch_topics.entry(topic.clone()).or_default();
            entry.0 += 1;
            entry.1 += bytes;
            entry.2 = offset;
            out.push((topic.clone(), offset));
        }
        Ok(out)
    }

    fn check_dedup(
        &mut self,
        dedup: &DedupKey,
        now: u64,
    ) -> Result<Option<AppendOutcome>, StorageError> {
        let Some(v) = self.dedup.get(&dedup.key)? else {
            return Ok(None);
        };
        let word = |at: usize| {
            v.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let (Some(expires), Some(offset), Some(fp)) = (word(0), word(8), word(16)) else {
            return Ok(None);
        };
        if expires < now {
            return Ok(None);
        }
        if fp != dedup.fingerprint {
            tracing::warn!("control id reused with different content: stored as a new message");
            return Ok(None);
        }
        let topic = String::from_utf8_lossy(v.get(24..).unwrap_or(&[])).into_owned();
        // The key may have reached the disk without its record (the dedup
        // database is written on its own schedule): only a record that is
        // really there, with the same content, makes a duplicate.
        let (tree, _) = self.topic(&topic)?;
        let stored = tree
            .get(offset.to_be_bytes())?
            .and_then(|b| super::Record::decode(&b).ok())
            .is_some_and(|r| super::fingerprint(&r.payload) == fp);
        if !stored {
            return Ok(None);
        }
        Ok(Some(AppendOutcome::Duplicate { topic, offset }))
    }

    fn topic(&mut self, name: &str) -> Result<(&sled::Tree, &mut u64), StorageError> {
        if !self.next.contains_key(name) {
            let tree = super::open_topic_tree(&self.db, name)?;
            let remembered = self
                .db
                .open_tree(META_TREE)?
                .get(next_key(name))?
                .and_then(|v| v.as_ref().try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let next = super::last_offset(&tree)?
                .map(|o| o + 1)
                .unwrap_or(0)
                .max(remembered);
            self.next.insert(name.to_string(), (tree, next));
        }
        match self.next.get_mut(name) {
            Some((tree, next)) => Ok((&*tree, next)),
            None => Err(StorageError::Sled("topic vanished".into())),
        }
    }

    /// Add the batch's payload bytes to each topic's stored total (written in
    /// the same flush as the records).
    fn record_topic_bytes(&mut self) -> Vec<TopicAppend> {
        let mut out = Vec::with_capacity(self.batch_topics.len());
        let meta = match self.db.open_tree(META_TREE) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the meta tree");
                self.batch_topics.clear();
                return out;
            }
        };
        for (topic, (records, bytes, last)) in self.batch_topics.drain() {
            let key = bytes_key(&topic);
            let total = meta
                .update_and_fetch(&key, |old| {
                    let old = old
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    Some(old.saturating_add(bytes).to_be_bytes().to_vec())
                })
                .ok()
                .flatten()
                .and_then(|v| v.as_ref().try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push(TopicAppend {
                topic,
                records,
                last_offset: last,
                total_bytes: total,
            });
        }
        out
    }

    /// Make everything inserted so far durable, per the configured level.
    fn make_durable(&mut self) -> Result<(), std::io::Error> {
        match self.durability {
            Durability::None => Ok(()),
            Durability::Flush => self.db.flush().map(|_| ()).map_err(sled_io),
            Durability::Fsync => {
                self.db.flush().map_err(sled_io)?;
                if let Some(f) = &self.log_file {
                    f.sync_data()?;
                }
                self.sync_new_blobs()
            }
        }
    }

    /// fdatasync blob files sled wrote since the last batch (sled never syncs
    /// them), then the blob directory so their names are durable too.
    fn sync_new_blobs(&mut self) -> Result<(), std::io::Error> {
        let dir = self.dir.join("blobs");
        // A stat is cheaper than a listing: only list when the directory
        // changed (a blob was added or removed) since the last look.
        let modified = match std::fs::metadata(&dir).and_then(|m| m.modified()) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => None,
        };
        // Timestamps are only as fine as the kernel's clock tick: trust an
        // unchanged mtime only once it is well in the past, so a blob added
        // in the same tick as the last listing is still found.
        let settled = modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(1));
        if settled && modified == self.blobs_seen {
            return Ok(());
        }
        self.blobs_seen = modified;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut highest = self.synced_blob;
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if id > self.synced_blob {
                File::open(entry.path())?.sync_data()?;
                highest = highest.max(id);
            }
        }
        if highest > self.synced_blob {
            File::open(&dir)?.sync_all()?;
            self.synced_blob = highest;
        }
        Ok(())
    }

    /// Remove expired retransmission keys, oldest first, for at most
    /// [`DEDUP_SWEEP_BUDGET`]; what is left waits for the next sweep.
    fn sweep_dedup(&mut self) {
        let started = Instant::now();
        let now = now_ms();
        let mut removed = 0u64;
        for item in self.dedup_expiry.range(..now.to_be_bytes().to_vec()) {
            let Ok((ek, _)) = item else { break };
            let Some(key) = ek.get(8..) else { continue };
            // The key may have been stored again since, with a later
            // expiry (then a later index entry stands for it).
            let expired = self
                .dedup
                .get(key)
                .ok()
                .flatten()
                .and_then(|v| v.get(0..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_be_bytes)
                .is_none_or(|e| e < now);
            if expired {
                let _ = self.dedup.remove(key);
            }
            let _ = self.dedup_expiry.remove(&ek);
            removed += 1;
            if removed.is_multiple_of(256) && started.elapsed() >= DEDUP_SWEEP_BUDGET {
                break;
            }
        }
        if removed > 0 {
            tracing::debug!(removed, "swept expired retransmission keys");
        }
    }
}

fn sled_io(e: sled::Error) -> std::io::Error {
    match e {
        sled::Error::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}
