//! Group commit: the only place where records become durable.
//!
//! One thread owns every write. It takes whatever work is queued (up to a
//! batch cap — no batching timer: under load the queue fills while the
//! previous batch syncs, which is the batching), assigns offsets, writes the
//! whole group as one journal entry and makes it durable with one
//! `fdatasync` of the journal, however many topics the group touched. Only
//! then are the records written to their topics' segments, shown to
//! readers, and every waiter of the group answered. Every few seconds (or
//! megabytes) it starts a new journal generation and hands a checkpoint to
//! the checkpointer thread ([`super::checkpoint`]).
//!
//! Durability guarantee, in one sentence: when an append's reply is `Ok` and
//! `durability = "fsync"`, the record is on stable storage and survives a
//! crash of the process or the machine.

use super::checkpoint::{self, Checkpointer, Job};
use super::log::{Log, Touched};
use super::record::EncodedRecord;
use super::topic::TopicBatch;
use super::wal::{EntryBuf, Wal, WalOp};
use super::{AppendOutcome, AppendRequest, AtomicWrite, DedupKey, StorageError};
use medbus_config::Durability;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
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
        request: EncodedAppend,
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
    /// Records plus cursor positions, applied in one atomic step.
    Atomic {
        write: EncodedWrite,
        reply: oneshot::Sender<Result<Written, StorageError>>,
    },
}

/// What an atomic write's caller gets back: the offsets given, and the
/// encoded records once framed, so that they are freed on the caller's
/// thread, which made them (a route's outputs are tens of KiB a message in
/// many allocations; freeing them here would make every one a cross-thread
/// free for the allocator).
pub(crate) struct Written {
    /// `(topic, offset)` of each record, in order.
    pub offsets: Vec<(String, u64)>,
    /// The records as submitted, already copied into the group.
    pub spent: Vec<(String, EncodedRecord)>,
}

/// An [`AppendRequest`] with its record encoded by the caller.
pub(crate) struct EncodedAppend {
    pub topic: String,
    pub record: EncodedRecord,
    pub dedup: Option<DedupKey>,
}

impl EncodedAppend {
    pub fn new(request: AppendRequest) -> Result<EncodedAppend, StorageError> {
        Ok(EncodedAppend {
            record: EncodedRecord::new(request.record)?,
            topic: request.topic,
            dedup: request.dedup,
        })
    }
}

/// An [`AtomicWrite`] with its records encoded by the caller.
#[derive(Debug, Default)]
pub(crate) struct EncodedWrite {
    pub records: Vec<(String, EncodedRecord)>,
    pub cursors: Vec<(Vec<u8>, u64)>,
    pub released: Vec<Vec<u8>>,
    /// (cursor key, position) the write requires the cursor to be at when
    /// it is applied; otherwise it is refused whole
    /// ([`StorageError::CursorMoved`]). A route with two batches in flight
    /// uses it so that the second can never land without the first.
    pub expect: Vec<(Vec<u8>, u64)>,
}

impl EncodedWrite {
    pub fn new(write: AtomicWrite) -> Result<EncodedWrite, StorageError> {
        let records = write
            .records
            .into_iter()
            .map(|(topic, r)| EncodedRecord::new(r).map(|e| (topic, e)))
            .collect::<Result<_, _>>()?;
        Ok(EncodedWrite {
            records,
            cursors: write.cursors,
            released: write.released,
            expect: Vec::new(),
        })
    }
}

/// A group stops taking work once its records' payloads reach this (with
/// headers and framing its journal entry stays far below 4 GiB).
const MAX_GROUP_BYTES: u64 = 512 << 20;

impl Op {
    /// Payload bytes the op would write.
    fn payload_bytes(&self) -> u64 {
        match self {
            Op::Append { request, .. } => u64::from(request.record.payload_len()),
            Op::Atomic { write, .. } => write
                .records
                .iter()
                .map(|(_, r)| u64::from(r.payload_len()))
                .sum(),
            Op::Trim { .. } | Op::Backup { .. } => 0,
        }
    }
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

/// A checkpoint is taken once the journal generation holds this much
/// (below [`super::wal::PREALLOC_BYTES`], so entries land in preallocated
/// blocks) ...
///
/// Why 16 MiB: with the default route at 5,000 msg/s the journal takes
/// about 60 MB/s (each message's Bundle and resources), and at 6 MiB that
/// was 16 checkpoints a second, each a key-value flush and a round of
/// segment syncs; `bench e2e` had higher p50 and p90 latency then. At 48
/// MiB each checkpoint's segment sync became a burst that journal syncs
/// queued behind (p99.9 up). BENCHMARKS.md has the runs.
const CHECKPOINT_BYTES: u64 = 16 << 20;
/// ... or is this old, whichever comes first.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

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

/// Called after every group commit (metrics hook).
pub type CommitObserver = Box<dyn Fn(&CommitStats) + Send>;

pub(crate) struct Committer {
    pub log: Arc<Log>,
    /// The journal generation being written.
    pub wal: Wal,
    pub checkpointer: Checkpointer,
    /// sled: the key-value trees, flushed at each checkpoint.
    pub kv: sled::Db,
    /// sled's log file, opened once for `fdatasync`.
    pub kv_file: Option<File>,
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
    /// Free disk space below which appends are refused.
    pub min_free: u64,
    /// `storage.max_topics`.
    pub max_topics: usize,
    /// Whether the last batch failed (for the idle health re-check).
    pub last_failed: bool,
    /// Segment files and directories written since the last checkpoint.
    pub touched: Touched,
    pub last_checkpoint: Instant,
    pub entry: EntryBuf,
    /// A durable journal entry could not be written to the topics (the
    /// disk filled up between the two): writes are refused until the
    /// topics are recovered from the journal again.
    pub broken: bool,
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
        oneshot::Sender<Result<Written, StorageError>>,
        Result<Written, StorageError>,
    ),
    /// Answered once the trim is applied (`None`: nothing to trim).
    Trim(
        oneshot::Sender<Result<Trimmed, StorageError>>,
        Option<PlannedTrim>,
    ),
}

/// A retention trim, measured when planned (and journaled with its bytes,
/// so that a replay after a crash takes the same bytes off).
struct PlannedTrim {
    topic: String,
    /// The new first offset.
    first: u64,
    /// Records and payload bytes removed.
    records: u64,
    bytes: u64,
    /// Whether records below the requested offset remain.
    more: bool,
}

/// One group commit being built: offsets assigned, nothing written yet.
#[derive(Default)]
struct Plan {
    /// Records per topic, in the order topics were first written.
    topics: Vec<(String, TopicBatch)>,
    cursors: Vec<(Vec<u8>, u64)>,
    released: Vec<Vec<u8>>,
    /// Retransmission keys stored by this group: key → (topic, offset,
    /// fingerprint, expiry).
    dedup: HashMap<Vec<u8>, (String, u64, u64, u64)>,
    replies: Vec<Reply>,
    /// Requests in it (for the observer).
    requests: usize,
    /// First offset per topic after the trims planned so far.
    trimmed_to: HashMap<String, u64>,
    /// Topics this group creates.
    new_topics: usize,
}

impl Plan {
    /// Refuse `topics` that do not exist yet if they would take the store
    /// past `max` topics (before anything of the request is planned).
    fn check_new_topics<'t>(
        &self,
        log: &Log,
        max: usize,
        topics: impl Iterator<Item = &'t str>,
    ) -> Result<(), StorageError> {
        let mut adding: Vec<&str> = Vec::new();
        for t in topics {
            let new = !super::is_dead_letter_topic(t)
                && log.topic(t).is_none()
                && !self.topics.iter().any(|(p, _)| p == t)
                && !adding.contains(&t);
            if new {
                if log.topic_count() + self.new_topics + adding.len() >= max {
                    return Err(StorageError::TooManyTopics {
                        topic: t.to_string(),
                        max,
                    });
                }
                adding.push(t);
            }
        }
        Ok(())
    }

    fn batch(&mut self, log: &Log, topic: &str) -> Result<&mut TopicBatch, StorageError> {
        let i = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                if !super::is_valid_topic(topic) {
                    return Err(StorageError::InvalidTopic(topic.to_string()));
                }
                let existing = log.topic(topic);
                self.new_topics +=
                    usize::from(existing.is_none() && !super::is_dead_letter_topic(topic));
                let next = existing.map_or(0, |t| t.read_state().next);
                let batch = TopicBatch {
                    start: next,
                    ..TopicBatch::default()
                };
                self.topics.push((topic.to_string(), batch));
                self.topics.len() - 1
            }
        };
        self.topics
            .get_mut(i)
            .map(|(_, b)| b)
            .ok_or(StorageError::Closed)
    }

    /// Give `record` the next offset of `topic`.
    fn push(
        &mut self,
        log: &Log,
        topic: &str,
        record: &EncodedRecord,
    ) -> Result<u64, StorageError> {
        let batch = self.batch(log, topic)?;
        let offset = batch.start + batch.count;
        batch.push_with(offset, record.payload_len(), |out| {
            record.write_to(out);
            Ok::<(), StorageError>(())
        })?;
        Ok(offset)
    }

    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
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
                    self.maybe_checkpoint();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut bytes = first.payload_bytes();
            batch.push(first);
            // Bounded by count and by bytes: one group is one journal entry,
            // whose length is a u32.
            while batch.len() < self.max_batch && bytes < MAX_GROUP_BYTES {
                match self.ops.try_recv() {
                    Ok(op) => {
                        bytes = bytes.saturating_add(op.payload_bytes());
                        batch.push(op);
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            self.commit(&mut batch);
            batch_no += 1;
            self.committed.send_replace(batch_no);
            self.maybe_checkpoint();
            if last_sweep.elapsed() >= DEDUP_SWEEP_EVERY {
                self.sweep_dedup();
                last_sweep = Instant::now();
            }
        }
        self.checkpointer.finish();
        if self.checkpointer.take_failed() {
            self.broken = true;
        }
        // A checkpoint of a half-applied state would drop the journal that
        // still holds the rest: rebuild first, or leave it to the next start.
        if self.broken && !self.repair() {
            tracing::error!("topics not rebuilt: no final checkpoint; the journal is replayed at the next start");
            return;
        }
        if let Err(e) = self.checkpoint_now() {
            tracing::error!(error = %e, "final checkpoint of the message store failed (the journal is kept and replayed at the next start)");
        }
    }

    /// While idle after a failed batch, tell the observer as soon as the
    /// disk has room again, so readiness recovers without waiting for
    /// traffic that a load balancer would not send to an unready broker.
    fn report_idle_health(&mut self) {
        if !self.last_failed || self.disk_full().is_some() {
            return;
        }
        if self.broken && !self.repair() {
            return;
        }
        if self.wal.sync().is_ok() {
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

    /// Recover the topics from the checkpoint and the journal after a
    /// failed write to them; `true` when they are sound again.
    fn repair(&mut self) -> bool {
        // The checkpoint under way must not race the reload.
        self.checkpointer.finish();
        match self.log.reload() {
            Ok((_, touched)) => {
                self.touched.add_files(touched.files);
                for d in &touched.dirs {
                    self.touched.add_dir(d);
                }
                self.broken = false;
                tracing::info!("topics recovered from the journal");
            }
            Err(e) => tracing::error!(error = %e, "topics still cannot be recovered"),
        }
        match Checkpointer::start(self.dir.clone(), self.log.wal_dir()) {
            Ok(c) => self.checkpointer = c,
            Err(e) => {
                // Without a checkpointer the journal would only grow and the
                // segments never be synced: stay refusing writes (and
                // unready) until one starts.
                tracing::error!(error = %e, "cannot restart the checkpointer; writes stay refused until it starts");
                self.broken = true;
            }
        }
        !self.broken
    }

    /// `Some(error)` when the disk is below its reserve: then nothing that
    /// writes new data is applied.
    fn disk_full(&self) -> Option<StorageError> {
        if self.durability == Durability::None {
            return None;
        }
        super::below_reserve(&self.dir, self.min_free)
            .map(|(available, reserve)| StorageError::DiskFull { available, reserve })
    }

    fn commit(&mut self, batch: &mut Vec<Op>) {
        let started = Instant::now();
        let now = now_ms();
        if self.broken {
            self.repair();
        }
        let mut refused = self.disk_full().or_else(|| self.broken.then(not_written));
        if let Some(e) = &refused {
            tracing::error!(error = %e, "refusing writes until space is freed");
        }
        let mut plan = Plan::default();
        for op in batch.drain(..) {
            plan.requests += 1;
            match op {
                Op::Backup { path, reply } => {
                    // Everything before it is written first, so the
                    // snapshot shows what was acknowledged.
                    let done = std::mem::take(&mut plan);
                    self.finish(done, started, refused.is_some());
                    let result = super::backup::write(&self.log, &self.kv, &path)
                        .map_err(|e| StorageError::Io(format!("backup failed: {e}")));
                    let _ = reply.send(result);
                    // What was just written may have failed half-way: then
                    // nothing more in this batch may be planned on top.
                    if refused.is_none() && self.broken {
                        refused = Some(not_written());
                    }
                }
                Op::Append { reply, .. } if refused.is_some() => {
                    plan.replies.push(Reply::Append(
                        reply,
                        Err(refused.clone().unwrap_or(StorageError::Closed)),
                    ));
                }
                Op::Atomic { reply, .. } if refused.is_some() => {
                    plan.replies.push(Reply::Atomic(
                        reply,
                        Err(refused.clone().unwrap_or(StorageError::Closed)),
                    ));
                }
                Op::Append { request, reply } => {
                    let result = self.plan_append(&mut plan, request, now);
                    plan.replies.push(Reply::Append(reply, result));
                }
                Op::Trim {
                    topic,
                    below,
                    reply,
                } => match self.plan_trim(&mut plan, &topic, below) {
                    Ok(target) => plan.replies.push(Reply::Trim(reply, target)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Op::Atomic { write, reply } => {
                    let result = self.plan_atomic(&mut plan, write);
                    plan.replies.push(Reply::Atomic(reply, result));
                }
            }
        }
        self.finish(plan, started, refused.is_some());
    }

    /// Journal, apply and answer one planned group.
    fn finish(&mut self, mut plan: Plan, started: Instant, refused: bool) {
        if plan.is_empty() {
            return;
        }
        let trims: Vec<(String, u64, u64)> = plan
            .replies
            .iter()
            .filter_map(|r| match r {
                Reply::Trim(_, Some(t)) => Some((t.topic.clone(), t.first, t.bytes)),
                _ => None,
            })
            .collect();
        self.entry.clear();
        for (topic, b) in &plan.topics {
            if b.count > 0 {
                self.entry.push(&WalOp::Frames {
                    topic,
                    frames: &b.frames,
                });
            }
        }
        for (key, offset) in &plan.cursors {
            self.entry.push(&WalOp::Cursor {
                key,
                offset: *offset,
            });
        }
        for key in &plan.released {
            self.entry.push(&WalOp::Release { key });
        }
        for (topic, first, bytes) in &trims {
            self.entry.push(&WalOp::Trim {
                topic,
                first: *first,
                bytes: *bytes,
            });
        }
        let durable = if self.entry.is_empty() {
            Ok(())
        } else {
            self.wal
                .append(&mut self.entry, self.durability == Durability::Fsync)
                .map_err(|e| StorageError::Durability(e.to_string()))
        };
        let applied = match &durable {
            Ok(()) => self.apply(&mut plan, &trims),
            Err(e) => Err(e.clone()),
        };
        let topics = match applied {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, requests = plan.requests, "group commit failed: answering every request of the batch with an error");
                for r in plan.replies.iter_mut() {
                    match r {
                        Reply::Append(_, res) => *res = Err(e.clone()),
                        Reply::Atomic(_, res) => *res = Err(e.clone()),
                        Reply::Trim(..) => {}
                    }
                }
                plan.dedup.clear();
                Vec::new()
            }
        };
        let failed = durable.is_err() || self.broken;
        for (key, (topic, offset, fp, expires)) in plan.dedup.drain() {
            self.remember_key(&key, &topic, offset, fp, expires);
        }
        // Health and metrics first: whoever is told of a failure must find
        // readiness already showing it.
        self.last_failed = failed || refused;
        if let Some(observer) = &self.observer {
            observer(&CommitStats {
                records: plan.requests,
                elapsed: started.elapsed(),
                ok: !failed && !refused,
                topics,
            });
        }
        // A waiter that went away (connection closed) is not an error.
        for r in plan.replies {
            match r {
                Reply::Append(tx, result) => {
                    let _ = tx.send(result);
                }
                Reply::Atomic(tx, result) => {
                    let _ = tx.send(result);
                }
                Reply::Trim(tx, target) => {
                    let result = match (&durable, target) {
                        (Err(e), _) => Err(e.clone()),
                        (Ok(()), None) => Ok(Trimmed::default()),
                        (Ok(()), Some(t)) => Ok(Trimmed {
                            records: t.records,
                            bytes: t.bytes,
                            remaining_bytes: self
                                .log
                                .topic(&t.topic)
                                .map_or(0, |t| t.read_state().bytes),
                            more: t.more,
                        }),
                    };
                    let _ = tx.send(result);
                }
            }
        }
    }

    /// Write a durable group to the topics and cursors.
    fn apply(
        &mut self,
        plan: &mut Plan,
        trims: &[(String, u64, u64)],
    ) -> Result<Vec<TopicAppend>, StorageError> {
        let mut stats = Vec::with_capacity(plan.topics.len());
        let written = (|| -> std::io::Result<()> {
            for (written, (topic, b)) in plan.topics.iter_mut().enumerate() {
                if fail_injection::take(&self.dir, written) {
                    return Err(std::io::Error::other("injected failure"));
                }
                if b.count == 0 {
                    continue;
                }
                let t = self.log.topic_or_create(topic, &mut self.touched)?;
                let appended = t.append(b, self.log.segment_bytes)?;
                self.touched.add_appended(&t, appended);
                stats.push(TopicAppend {
                    topic: topic.clone(),
                    records: b.count,
                    last_offset: b.start + b.count - 1,
                    total_bytes: t.read_state().bytes,
                });
                t.cache_tail(std::mem::take(b));
            }
            self.log.set_cursors(&plan.cursors, &plan.released);
            for (topic, first, bytes) in trims {
                if let Some(t) = self.log.topic(topic) {
                    self.log.trim(&t, *first, *bytes, &mut self.touched)?;
                }
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok(stats),
            Err(e) => {
                // Durable in the journal, not in the topics. Rebuilding them
                // from the checkpoint and the journal writes this group too:
                // if that works now, the group is stored and is answered as
                // such (an error would make senders resend what is already
                // kept). Otherwise it is recovered once the disk lets us.
                self.broken = true;
                tracing::warn!(error = %e, "a journaled group could not be written to the topics: rebuilding them from the journal");
                if self.repair() {
                    // The topics written before the failure are in `stats`;
                    // the others still hold their batch.
                    for (topic, b) in plan.topics.iter().filter(|(_, b)| b.count > 0) {
                        stats.push(TopicAppend {
                            topic: topic.clone(),
                            records: b.count,
                            last_offset: b.start + b.count - 1,
                            total_bytes: 0,
                        });
                    }
                    for s in &mut stats {
                        s.total_bytes =
                            self.log.topic(&s.topic).map_or(0, |t| t.read_state().bytes);
                    }
                    return Ok(stats);
                }
                Err(StorageError::Durability(format!(
                    "journaled but not written to the topics ({e}); they are recovered from the journal when space is freed"
                )))
            }
        }
    }

    /// Plan a retention trim of `topic` below `below`, at most
    /// [`TRIM_BATCH`] records, measuring the payload it removes.
    fn plan_trim(
        &mut self,
        plan: &mut Plan,
        topic: &str,
        below: u64,
    ) -> Result<Option<PlannedTrim>, StorageError> {
        let Some(t) = self.log.topic(topic) else {
            return Ok(None);
        };
        let (first, next) = {
            let st = t.read_state();
            (st.first, st.next)
        };
        let old_first = plan
            .trimmed_to
            .get(topic)
            .copied()
            .unwrap_or(first)
            .max(first);
        let limit = below.min(next);
        let new_first = limit.min(old_first.saturating_add(TRIM_BATCH as u64));
        if new_first <= old_first {
            return Ok(None);
        }
        let bytes = t.bytes_between(old_first, new_first)?;
        plan.trimmed_to.insert(topic.to_string(), new_first);
        Ok(Some(PlannedTrim {
            topic: topic.to_string(),
            first: new_first,
            records: new_first - old_first,
            bytes,
            more: new_first < limit,
        }))
    }

    /// Plan one append (or recognise a retransmission).
    fn plan_append(
        &mut self,
        plan: &mut Plan,
        req: EncodedAppend,
        now: u64,
    ) -> Result<AppendOutcome, StorageError> {
        if let Some(dedup) = &req.dedup {
            if let Some((topic, offset, fp, _)) = plan.dedup.get(&dedup.key) {
                if *fp == dedup.fingerprint {
                    return Ok(AppendOutcome::Duplicate {
                        topic: topic.clone(),
                        offset: *offset,
                    });
                }
            }
            match self.check_dedup(dedup, now) {
                Ok(Some(hit)) => return Ok(hit),
                Ok(None) => {}
                // Not knowing is not a reason to refuse: stored again, at
                // worst twice.
                Err(e) => tracing::warn!(error = %e, "cannot check for a retransmission: storing"),
            }
        }
        plan.check_new_topics(
            &self.log,
            self.max_topics,
            std::iter::once(req.topic.as_str()),
        )?;
        let offset = plan.push(&self.log, &req.topic, &req.record)?;
        if let Some(dedup) = &req.dedup {
            let expires = now.saturating_add(dedup.window.as_millis() as u64);
            plan.dedup.insert(
                dedup.key.clone(),
                (req.topic.clone(), offset, dedup.fingerprint, expires),
            );
        }
        Ok(AppendOutcome::Stored {
            topic: req.topic,
            offset,
        })
    }

    /// Plan records and cursor positions that go together: all of them are
    /// in one journal entry, so a crash never separates outputs from their
    /// cursor.
    fn plan_atomic(
        &mut self,
        plan: &mut Plan,
        write: EncodedWrite,
    ) -> Result<Written, StorageError> {
        if let Some((t, _)) = write
            .records
            .iter()
            .find(|(t, _)| !super::is_valid_topic(t))
        {
            return Err(StorageError::InvalidTopic(t.clone()));
        }
        plan.check_new_topics(
            &self.log,
            self.max_topics,
            write.records.iter().map(|(t, _)| t.as_str()),
        )?;
        for (key, expected) in &write.expect {
            // Set earlier in this group, or as applied (0: never set).
            let found = plan
                .cursors
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .or_else(|| self.log.cursor(key))
                .unwrap_or(0);
            if found != *expected {
                return Err(StorageError::CursorMoved {
                    key: String::from_utf8_lossy(key).into_owned(),
                    expected: *expected,
                    found,
                });
            }
        }
        let mut out = Vec::with_capacity(write.records.len());
        for (topic, record) in &write.records {
            let offset = plan.push(&self.log, topic, record)?;
            out.push((topic.clone(), offset));
        }
        plan.cursors.extend(write.cursors);
        plan.released.extend(write.released);
        Ok(Written {
            offsets: out,
            spent: write.records,
        })
    }

    /// Store a retransmission key (after its record is durable).
    fn remember_key(&mut self, key: &[u8], topic: &str, offset: u64, fp: u64, expires: u64) {
        let mut v = Vec::with_capacity(24 + topic.len());
        v.extend_from_slice(&expires.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&fp.to_be_bytes());
        v.extend_from_slice(topic.as_bytes());
        let mut by_expiry = expires.to_be_bytes().to_vec();
        by_expiry.extend_from_slice(key);
        if let Err(e) = self
            .dedup
            .insert(key, v)
            .and_then(|_| self.dedup_expiry.insert(by_expiry, &[]))
        {
            // The record is stored; losing its dedup key only means a
            // resend would be stored again.
            tracing::warn!(error = %e, "cannot record retransmission key");
        }
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
        let topic = String::from_utf8_lossy(v.get(24..).unwrap_or(&[])).into_owned();
        if fp != dedup.fingerprint {
            // The key starts with the listener's name (then sender and
            // control id, which are not logged).
            let listener = dedup.key.split(|b| *b == 0).next().unwrap_or_default();
            tracing::warn!(
                listener = %String::from_utf8_lossy(listener), earlier_topic = %topic, earlier_offset = offset,
                "control id reused with different content within the retransmission window: stored as a new message"
            );
            return Ok(None);
        }
        // The key may have reached the disk without its record (the dedup
        // database is written on its own schedule), or the record may have
        // expired since: only a record that is really there, with the same
        // content, makes a duplicate.
        let stored = self
            .log
            .topic(&topic)
            .map(|t| t.read(offset, 1))
            .transpose()?
            .and_then(|found| found.into_iter().next())
            .filter(|(o, _)| *o == offset)
            .and_then(|(_, raw)| raw.decode().ok())
            .is_some_and(|r| super::fingerprint(&r.payload) == fp);
        if !stored {
            return Ok(None);
        }
        Ok(Some(AppendOutcome::Duplicate { topic, offset }))
    }

    /// Start a checkpoint when the journal generation is big or old
    /// enough and none is under way.
    fn maybe_checkpoint(&mut self) {
        if self.checkpointer.take_failed() {
            // Rebuilt from the journal at the next commit or idle tick.
            self.broken = true;
            self.last_failed = true;
        }
        if self.checkpointer.busy() || self.broken {
            return;
        }
        let due = self.wal.len >= CHECKPOINT_BYTES
            || (self.wal.len > 0 && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if !due {
            return;
        }
        match self.checkpoint_job(self.durability == Durability::Fsync) {
            Ok(job) => self.checkpointer.submit(job),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a journal generation; checkpoint postponed")
            }
        }
    }

    /// Start a new journal generation and describe the checkpoint at its
    /// start.
    fn checkpoint_job(&mut self, sync: bool) -> std::io::Result<Job> {
        let wal = Wal::create(self.wal.dir(), self.wal.seq + 1, sync)?;
        let old = std::mem::replace(&mut self.wal, wal);
        if self.durability == Durability::Fsync {
            // Already synced entry by entry; nothing more to do.
            drop(old);
        }
        self.last_checkpoint = Instant::now();
        let touched = std::mem::take(&mut self.touched);
        let kv = self.kv.clone();
        let kv_file = self.kv_file.as_ref().and_then(|f| f.try_clone().ok());
        Ok(Job {
            checkpoint: self.log.mark(self.wal.seq),
            files: touched.files,
            dirs: touched.dirs,
            sync,
            keep_free: self.min_free,
            before_write: Some(Box::new(move || {
                kv.flush().map_err(sled_io)?;
                if sync {
                    if let Some(f) = kv_file {
                        f.sync_data()?;
                    }
                }
                Ok(())
            })),
        })
    }

    /// Take a checkpoint on this thread (at open and close), synced as the
    /// configured durability says.
    pub fn checkpoint_now(&mut self) -> std::io::Result<()> {
        let job = self.checkpoint_job(self.durability == Durability::Fsync)?;
        checkpoint::run(&self.dir, &self.log.wal_dir(), job)
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

/// The answer to writes while the topics are being rebuilt.
fn not_written() -> StorageError {
    StorageError::Durability("the topics could not be written; retrying".into())
}

/// Outside tests nothing is ever injected.
#[cfg(not(test))]
mod fail_injection {
    #[inline(always)]
    pub fn take(_dir: &std::path::Path, _written: usize) -> bool {
        false
    }
}

/// Tests make the next group of one store fail to reach its topics (the way
/// an I/O error would), after its journal entry is durable.
#[cfg(test)]
pub(crate) mod fail_injection {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static NEXT: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

    /// Fail the next write to the topics of the store in `dir` once
    /// `topics` of the group's topics are written.
    pub fn arm(dir: &Path, topics: usize) {
        NEXT.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((dir.to_path_buf(), topics));
    }

    /// Whether the store in `dir`, with `written` topics of the group
    /// written, must fail now (once per `arm`).
    pub fn take(dir: &Path, written: usize) -> bool {
        let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
        match next.iter().position(|(d, n)| d == dir && *n == written) {
            Some(i) => {
                next.swap_remove(i);
                true
            }
            None => false,
        }
    }
}
