//! The message store: durable topics, cursors and key-value trees.
//!
//! Everything above this module talks to storage through [`Store`]: append
//! with a durable acknowledgement, read from an offset, list topics, wait for
//! commits. Nothing else reaches into the files, so that a later medbus can
//! put a distributed log behind the same interface.
//!
//! On disk: each topic is a directory of append-only segment files
//! ([`segment`], [`topic`]) holding [`Record`] envelopes; every group commit
//! is one entry of a write-ahead journal ([`wal`]), synced once, and a
//! [`checkpoint`] every few seconds lets the journal behind it go. Cursors
//! live in the journal and the checkpoint too ([`log`]). sled keeps only the
//! key-value trees ([`kv`]). Writes go through the single [`committer`]
//! thread. A data directory written by a medbus that kept topics in sled
//! trees is moved over at its first open ([`import`]).
//!
//! Retransmission keys live in a second sled database in the subdirectory
//! [`DEDUP_DIR`]. They are keyed by control id, so they are written all over
//! their tree and each lives for the dedup window: in the topics' database
//! their pages pinned almost every log segment, and sled (which frees a
//! segment only once nothing in it is live) then never reused the space of
//! removed records — the log grew by the ingest volume, without end. Kept
//! apart, the topics' log holds only data that is written in order and
//! removed in order, and its size follows the live data.

pub mod backup;
pub(crate) mod checkpoint;
pub mod committer;
pub(crate) mod compact;
pub(crate) mod import;
pub mod kv;
pub(crate) mod log;
pub mod record;
pub(crate) mod segment;
pub(crate) mod topic;
pub(crate) mod wal;

pub(crate) use committer::EncodedWrite;
pub use committer::{now_ms, CommitObserver, CommitStats, TopicAppend, Trimmed, TRIM_BATCH};
pub(crate) use compact::{Parts as RecordParts, SharedHeaders};
pub use kv::KvOp;
pub(crate) use record::EncodedRecord;
pub use record::{RawRecord, Record, RecordError, RecordView};

use medbus_config::Durability;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Size at which a topic starts a new segment file, unless configured
/// (`storage.segment_size`): small enough that the partly expired oldest
/// segment adds little to a topic's live data, large enough to keep files
/// few.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;
/// Subdirectory of the data directory holding the retransmission keys'
/// sled database.
pub const DEDUP_DIR: &str = "dedup";
/// Page cache of the retransmission keys' database.
const DEDUP_CACHE_BYTES: u64 = 16 << 20;

/// Topics the broker itself writes dead letters to (`dlq.<listener>`,
/// `dlq.<route>`, …): one per configured component, so they are created
/// even when the store holds `storage.max_topics` (they count toward it),
/// and neither clients nor route templates may write them.
pub const DEAD_LETTER_PREFIX: &str = "dlq.";

/// Whether `topic` is a dead-letter topic (see [`DEAD_LETTER_PREFIX`]).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.starts_with(DEAD_LETTER_PREFIX)
}

/// Errors from the message store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// Another process (a running broker) holds the data directory.
    #[error("data directory {0} is in use by another medbus process")]
    Locked(String),
    /// sled reported an error.
    #[error("storage error: {0}")]
    Sled(String),
    /// The batch could not be made durable (flush or fdatasync failed, e.g.
    /// disk full): nothing in it may be acknowledged.
    #[error("could not make the batch durable: {0}")]
    Durability(String),
    /// A stored value could not be encoded or decoded.
    #[error("bad record: {0}")]
    Record(String),
    /// A record read back from disk is not what was written (its frame's
    /// checksum or header does not match): it is not delivered.
    #[error("damaged record: {topic}@{offset}: {what}")]
    Damaged {
        /// The topic.
        topic: String,
        /// The record's offset.
        offset: u64,
        /// What does not match.
        what: &'static str,
    },
    /// The committer has stopped (the broker is shutting down).
    #[error("the message store is closed")]
    Closed,
    /// The append would create a topic past `storage.max_topics`.
    #[error("topic {topic:?} not created: the store holds its maximum of {max} topics (storage.max_topics)")]
    TooManyTopics {
        /// The topic refused.
        topic: String,
        /// `storage.max_topics`.
        max: usize,
    },
    /// Less free disk space than the configured reserve.
    #[error("disk full: {available} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Bytes free.
        available: u64,
        /// `storage.min_free`.
        reserve: u64,
    },
    /// Reading or writing the topics' files failed.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The commit did not finish in time (the disk or sled is stuck).
    #[error("storage did not answer within {0:?}")]
    Timeout(Duration),
    /// A topic name outside `[A-Za-z0-9._-]{1,200}`.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// An atomic write required a cursor position that is not the stored
    /// one (a write before it failed, or has not been applied yet): nothing
    /// of it was written.
    #[error("cursor {key} is at {found}, the write expected {expected}")]
    CursorMoved {
        /// The cursor key.
        key: String,
        /// Where the write expected it.
        expected: u64,
        /// Where it is.
        found: u64,
    },
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Sled(e.to_string())
    }
}

/// A retransmission key: appends with the same key inside the window are
/// stored once.
#[derive(Debug, Clone)]
pub struct DedupKey {
    /// Opaque key bytes (listener, MSH-3, MSH-4, MSH-10).
    pub key: Vec<u8>,
    /// How long the key is remembered after the first store.
    pub window: Duration,
    /// Fingerprint of the content ([`fingerprint`]): a key seen again with
    /// different content is not a retransmission but a reused control id,
    /// and is stored (nothing is ever dropped on a key match alone).
    pub fingerprint: u64,
}

/// FNV-1a 64 of `bytes`: a stable (on-disk) content fingerprint.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One record to append to one topic.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Target topic.
    pub topic: String,
    /// What to store.
    pub record: Record,
    /// Retransmission key, when the source has one.
    pub dedup: Option<DedupKey>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored durably at `offset` of `topic`.
    Stored {
        /// The topic written.
        topic: String,
        /// The record's offset.
        offset: u64,
    },
    /// A retransmission of a record already stored at `offset`.
    Duplicate {
        /// The topic the original went to.
        topic: String,
        /// The original's offset.
        offset: u64,
    },
}

/// Records for several topics plus cursor positions, written in one atomic
/// step (a route's outputs and its cursor advance).
#[derive(Debug, Clone, Default)]
pub struct AtomicWrite {
    /// (topic, record) in the order they are to be appended.
    pub records: Vec<(String, Record)>,
    /// (cursor key, next offset) to set; see [`cursor_key`].
    pub cursors: Vec<(Vec<u8>, u64)>,
    /// Cursor keys to remove: their reader is gone, and a cursor left
    /// behind would hold retention back for ever.
    pub released: Vec<Vec<u8>>,
}

/// The key of a durable cursor: `kind/name/topic`.
pub fn cursor_key(kind: &str, name: &str, topic: &str) -> Vec<u8> {
    format!("{kind}/{name}/{topic}").into_bytes()
}

/// Summary of one topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Oldest offset still stored.
    pub first: Option<u64>,
    /// Newest offset.
    pub last: Option<u64>,
    /// Records stored.
    pub count: u64,
    /// Payload bytes stored.
    pub bytes: u64,
}

/// Opening options.
pub struct StoreOptions {
    /// Durability level.
    pub durability: Durability,
    /// Cap on records per group commit.
    pub max_batch: usize,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
    /// Free disk space below which appends are refused.
    pub min_free: u64,
    /// Most topics (an append creating one more is refused).
    pub max_topics: usize,
    /// Longest wait for a commit before an append reports failure.
    pub commit_timeout: Duration,
    /// Called after each group commit.
    pub observer: Option<CommitObserver>,
    /// Size at which a topic starts a new segment file.
    pub segment_bytes: u64,
}

/// Handle to the message store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<log::Log>,
    db: sled::Db,
    dedup: sled::Db,
    dir: PathBuf,
    ops: std::sync::Mutex<Option<mpsc::Sender<committer::Op>>>,
    committed: watch::Receiver<u64>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    commit_timeout: Duration,
    /// `storage.max_topics`.
    max_topics: usize,
    /// Free space kept in reserve (`storage.min_free`; 0 when there is none
    /// to keep: `durability = "none"` or `min_free = 0`).
    reserve: u64,
    /// Reads refused because a record on disk was damaged, since open.
    damaged_reads: std::sync::atomic::AtomicU64,
    /// How many of them [`Store::take_damaged_reads`] has handed out.
    damaged_reads_taken: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// Close the committer's queue and wait for it to finish (its final
    /// checkpoint included). Once only; never from the committer itself.
    fn stop_committer(&self) {
        if let Ok(mut g) = self.ops.lock() {
            g.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Inner {
    /// The last handle gone without [`Store::close`]: stop the committer
    /// all the same, so that nothing writes into the data directory after
    /// the store is gone (a caller may be removing it).
    fn drop(&mut self) {
        self.stop_committer();
    }
}

/// Whether `name` is a valid topic name.
pub fn is_valid_topic(name: &str) -> bool {
    medbus_config::validate::is_valid_topic(name)
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

impl Store {
    /// Open (or create) the store in `dir` and start its committer.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Sled(format!("cannot create {}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StorageError::Locked(dir.display().to_string())
                }
                other => StorageError::from(other),
            })?;
        let dedup = open_dedup(&db, dir)?;
        let segment_bytes = options
            .segment_bytes
            .clamp(64 << 10, segment::MAX_SEGMENT_BYTES);
        let (log, seq, mut touched) = log::Log::open(dir, segment_bytes)?;
        let log = Arc::new(log);
        let migrated = migrate_sled_topics(&db, &log)?;
        if let Some(t) = &migrated {
            touched.add_files(t.files.clone());
            for d in &t.dirs {
                touched.add_dir(d);
            }
        }
        let kv_file = std::fs::OpenOptions::new()
            .read(true)
            .open(dir.join("db"))
            .ok();
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed_rx) = watch::channel(0);
        let wal_dir = log.wal_dir();
        let mut committer = committer::Committer {
            log: log.clone(),
            wal: wal::Wal::create(&wal_dir, seq, true)?,
            checkpointer: checkpoint::Checkpointer::start(dir.to_path_buf(), wal_dir)?,
            kv: db.clone(),
            kv_file,
            dedup: dedup.open_tree(committer::DEDUP_TREE)?,
            dedup_expiry: dedup.open_tree(committer::DEDUP_EXPIRY_TREE)?,
            dir: dir.to_path_buf(),
            durability: options.durability,
            max_batch: options.max_batch.max(1),
            ops: rx,
            committed: committed_tx,
            observer: options.observer,
            min_free: options.min_free,
            max_topics: options.max_topics,
            last_failed: false,
            touched,
            last_checkpoint: std::time::Instant::now(),
            entry: Default::default(),
            broken: false,
        };
        // What recovery replayed (or the migration wrote) is made durable
        // before anything new is accepted.
        committer.checkpoint_now()?;
        if migrated.is_some() {
            drop_sled_topics(&db)?;
        }
        let thread = std::thread::Builder::new()
            .name("medbus-committer".into())
            .spawn(move || committer.run())
            .map_err(|e| StorageError::Io(format!("cannot start committer: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                log,
                db,
                dedup,
                dir: dir.to_path_buf(),
                ops: std::sync::Mutex::new(Some(tx)),
                committed: committed_rx,
                thread: std::sync::Mutex::new(Some(thread)),
                commit_timeout: options.commit_timeout,
                max_topics: options.max_topics,
                reserve: if options.durability == Durability::None {
                    0
                } else {
                    options.min_free
                },
                damaged_reads: Default::default(),
                damaged_reads_taken: Default::default(),
            }),
        })
    }

    /// Whether `topic` exists, or is one the topic cap does not apply to
    /// (a dead-letter topic).
    pub fn topic_exists(&self, topic: &str) -> bool {
        is_dead_letter_topic(topic) || self.inner.log.topic(topic).is_some()
    }

    /// How many topics there are.
    pub fn topic_count(&self) -> usize {
        self.inner.log.topic_count()
    }

    /// `storage.max_topics`.
    pub fn max_topics(&self) -> usize {
        self.inner.max_topics
    }

    /// `Some((available, reserve))` when the data directory's disk has
    /// less free space than the reserve (appends are refused then).
    pub fn below_reserve(&self) -> Option<(u64, u64)> {
        below_reserve(&self.inner.dir, self.inner.reserve)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Hand an op (built around its reply channel) to the committer and
    /// wait for the answer, at most `timeout` when given. An `Err` (a
    /// request refused before it reaches the committer) is the answer.
    fn call<T: Send + 'static>(
        &self,
        op: Result<
            impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> committer::Op,
            StorageError,
        >,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<T, StorageError>> + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = match op {
            Ok(op) => self.submit(op(reply)),
            Err(e) => reply.send(Err(e)).is_ok(),
        };
        async move {
            if !sent {
                return Err(StorageError::Closed);
            }
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, rx)
                    .await
                    .map_err(|_| StorageError::Timeout(t))?,
                None => rx.await,
            };
            answer.unwrap_or(Err(StorageError::Closed))
        }
    }

    /// Queue an append; the returned future resolves once the record is
    /// durable (per the configured durability), or the append failed, or
    /// `storage.commit_timeout` passed.
    pub fn append(
        &self,
        request: AppendRequest,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, StorageError>> + 'static {
        let timeout = Some(self.inner.commit_timeout);
        // Encoded here, on the caller's thread: the committer is serial.
        let op = committer::EncodedAppend::new(request)
            .map(|request| |reply| committer::Op::Append { request, reply });
        self.call(op, timeout)
    }

    /// Tests: append an envelope as given, bypassing the encoder (to store
    /// a value that does not decode).
    #[cfg(test)]
    pub(crate) fn append_envelope(
        &self,
        topic: &str,
        envelope: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, StorageError>> + 'static {
        let request = committer::EncodedAppend {
            topic: topic.to_string(),
            record: record::EncodedRecord::verbatim(envelope),
            dedup: None,
        };
        self.call(Ok(|reply| committer::Op::Append { request, reply }), None)
    }

    /// Write records and cursor positions atomically; resolves once durable
    /// with the (topic, offset) of each record, in order.
    pub fn write_atomic(
        &self,
        write: AtomicWrite,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, StorageError>> + 'static {
        self.write_encoded(committer::EncodedWrite::new(write))
    }

    /// [`Store::write_atomic`] for records the caller has already encoded
    /// (a route encodes each output as it makes it, so the batch holds
    /// envelopes only).
    pub(crate) fn write_encoded(
        &self,
        write: Result<EncodedWrite, StorageError>,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, StorageError>> + 'static {
        let timeout = Some(self.inner.commit_timeout);
        let op = write.map(|write| |reply| committer::Op::Atomic { write, reply });
        let written = self.call(op, timeout);
        // The spent records are dropped here, on the caller's thread.
        async move {
            written.await.map(|w| {
                drop(w.spent);
                w.offsets
            })
        }
    }

    /// Write a consistent snapshot of the store to `path` (which must not
    /// exist). Appends wait while it is written; no timeout (a large store
    /// takes as long as the disk needs).
    pub fn backup(
        &self,
        path: &Path,
    ) -> impl std::future::Future<Output = Result<backup::BackupSummary, StorageError>> + 'static
    {
        let path = path.to_path_buf();
        self.call(Ok(|reply| committer::Op::Backup { path, reply }), None)
    }

    /// Remove records of `topic` below `below`, at most [`TRIM_BATCH`] per
    /// call (check [`Trimmed::more`]); durable like an append.
    pub fn trim(
        &self,
        topic: &str,
        below: u64,
    ) -> impl std::future::Future<Output = Result<Trimmed, StorageError>> + 'static {
        let topic = topic.to_string();
        let timeout = Some(self.inner.commit_timeout);
        self.call(
            Ok(move |reply| committer::Op::Trim {
                topic,
                below,
                reply,
            }),
            timeout,
        )
    }

    /// Hand an op to the committer; `false` when the store is closed.
    fn submit(&self, op: committer::Op) -> bool {
        match self.inner.ops.lock() {
            Ok(guard) => guard.as_ref().is_some_and(|tx| tx.send(op).is_ok()),
            Err(_) => false,
        }
    }

    /// Every durable cursor: (key `kind/name/topic`, next offset).
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, StorageError> {
        Ok(self
            .inner
            .log
            .cursors()
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// A durable cursor's next offset (0 when never set).
    pub fn cursor(&self, key: &[u8]) -> Result<u64, StorageError> {
        Ok(self.inner.log.cursor(key).unwrap_or(0))
    }

    /// The oldest offset of `topic`, if it has records.
    pub fn first_offset(&self, topic: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.info(topic)?.and_then(|i| i.first))
    }

    /// The newest offset of `topic`, if it has records.
    pub fn last_offset(&self, topic: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.info(topic)?.and_then(|i| i.last))
    }

    fn info(&self, topic: &str) -> Result<Option<TopicInfo>, StorageError> {
        if !is_valid_topic(topic) {
            return Err(StorageError::InvalidTopic(topic.to_string()));
        }
        Ok(self.inner.log.topic(topic).map(|t| topic_info(&t)))
    }

    /// Like [`Store::read`], but passing over records damaged on disk
    /// (each logged and counted by the read that met it): for readers that
    /// cannot use such a record and have no dead-letter topic to put it in
    /// (the FHIR view, subscription notifications). Also returns the offset
    /// to read from next, which is past a damaged record even when no sound
    /// one follows it.
    pub fn read_sound(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<(Vec<(u64, Record)>, u64), StorageError> {
        let (batch, after) = self.read_sound_raw(topic, from, max)?;
        Ok((decode_all(topic, batch)?, after))
    }

    /// [`Store::read_sound`], the records as stored (read them in place
    /// with [`RawRecord::view`]).
    pub fn read_sound_raw(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<(Vec<(u64, RawRecord)>, u64), StorageError> {
        let mut at = from;
        loop {
            match self.read_raw(topic, at, max) {
                Ok(batch) => {
                    let after = batch.last().map_or(at, |(last, _)| last + 1);
                    return Ok((batch, after));
                }
                Err(StorageError::Damaged { offset, .. }) if offset >= at => at = offset + 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Up to `max` records of `topic` from offset `from` on.
    pub fn read(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError> {
        decode_all(topic, self.read_raw(topic, from, max)?)
    }

    /// Up to `max` records of `topic` from offset `from` on, as stored
    /// (not decoded: for sending on as they are). Fewer than `max` may come
    /// back while more exist (a read stops after a few MiB): read until
    /// empty.
    pub fn read_raw(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, RawRecord)>, StorageError> {
        if !is_valid_topic(topic) {
            return Err(StorageError::InvalidTopic(topic.to_string()));
        }
        let read = match self.inner.log.topic(topic) {
            Some(t) if max > 0 => t.read(from, max),
            _ => Ok(Vec::new()),
        };
        if let Err(StorageError::Damaged {
            topic,
            offset,
            what,
        }) = &read
        {
            self.inner
                .damaged_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(%topic, offset, what, "a stored record is damaged on disk and cannot be read");
        }
        read
    }

    /// Reads refused since open because a record on disk was damaged
    /// ([`StorageError::Damaged`]).
    pub fn damaged_reads(&self) -> u64 {
        self.inner
            .damaged_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The damaged reads since the last call (for a metrics counter:
    /// concurrent callers each get a distinct share of the increase).
    pub fn take_damaged_reads(&self) -> u64 {
        let now = self.damaged_reads();
        let before = self
            .inner
            .damaged_reads_taken
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        now.saturating_sub(before)
    }

    /// Why a record that [`StorageError::Damaged`] refused is dead-lettered
    /// (the text of its `medbus.error` header).
    pub fn damaged_reason(what: &str) -> String {
        format!("the stored record is damaged on disk: {what}")
    }

    /// The stored bytes of the record at `offset` as they are on disk,
    /// without the checksum check (for dead-lettering a record that
    /// [`StorageError::Damaged`] refused); empty when its frame header
    /// itself is unreadable.
    pub fn read_damaged(&self, topic: &str, offset: u64) -> Result<Vec<u8>, StorageError> {
        match self.inner.log.topic(topic) {
            Some(t) => t.read_unchecked(offset),
            None => Ok(Vec::new()),
        }
    }

    /// Every topic with its offsets.
    pub fn topics(&self) -> Result<Vec<TopicInfo>, StorageError> {
        Ok(self
            .inner
            .log
            .topics()
            .iter()
            .map(|t| topic_info(t))
            .collect())
    }

    /// A receiver that changes after every group commit (wake-on-commit for
    /// readers that follow a topic).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Bytes the store uses on disk: topics, journal and both sled
    /// databases.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.inner.log.disk_bytes()
            + self.inner.db.size_on_disk()?
            + self.inner.dedup.size_on_disk()?)
    }

    /// Stop accepting appends, let the committer finish what is queued and
    /// make it durable. Later appends fail with [`StorageError::Closed`].
    pub fn close(&self) {
        self.inner.stop_committer();
        if let Err(e) = self.inner.dedup.flush() {
            tracing::warn!(error = %e, "cannot flush the retransmission keys");
        }
    }
}

/// A topic's summary.
fn topic_info(t: &topic::TopicLog) -> TopicInfo {
    let st = t.read_state();
    let mut count = 0u64;
    let mut first = None;
    for s in &st.segments {
        let lo = s.base.max(st.first);
        if s.end() > lo {
            first.get_or_insert(lo);
            count += s.end() - lo;
        }
    }
    TopicInfo {
        name: t.name.clone(),
        first,
        last: first.map(|_| st.next - 1),
        count,
        bytes: st.bytes,
    }
}

/// Move the topics of a data directory written by an older medbus (sled
/// trees `t/T`, with `cursors` and `meta`) into the log. `None` when there
/// were none.
fn migrate_sled_topics(
    db: &sled::Db,
    log: &log::Log,
) -> Result<Option<log::Touched>, StorageError> {
    let names: Vec<sled::IVec> = db
        .tree_names()
        .into_iter()
        .filter(|n| {
            n.starts_with(import::TOPIC_TREE_PREFIX.as_bytes())
                || n.as_ref() == import::CURSOR_TREE.as_bytes()
                || n.as_ref() == import::META_TREE.as_bytes()
        })
        .collect();
    if !names
        .iter()
        .any(|n| n.starts_with(import::TOPIC_TREE_PREFIX.as_bytes()))
    {
        return Ok(None);
    }
    tracing::info!(dir = %log.dir().display(), "moving topics from sled trees into segment files");
    let mut import = import::Importer::new(log, None);
    for name in &names {
        import.tree(name)?;
        for item in db.open_tree(name)?.iter() {
            let (k, v) = item?;
            import.entry(&k, &v)?;
        }
    }
    Ok(Some(import.finish()?))
}

/// Drop the sled trees [`migrate_sled_topics`] moved (once the log holding
/// them is durable).
/// Decode records read from `topic`; the first that does not decode fails
/// the read.
fn decode_all(
    topic: &str,
    batch: Vec<(u64, RawRecord)>,
) -> Result<Vec<(u64, Record)>, StorageError> {
    batch
        .into_iter()
        .map(|(offset, raw)| {
            raw.decode()
                .map(|r| (offset, r))
                .map_err(|e| StorageError::Record(format!("{topic}@{offset}: {e}")))
        })
        .collect()
}

fn drop_sled_topics(db: &sled::Db) -> Result<(), StorageError> {
    for name in db.tree_names() {
        if name.starts_with(import::TOPIC_TREE_PREFIX.as_bytes())
            || name.as_ref() == import::CURSOR_TREE.as_bytes()
            || name.as_ref() == import::META_TREE.as_bytes()
        {
            db.drop_tree(&name)?;
        }
    }
    db.flush()?;
    Ok(())
}

/// Open the retransmission keys' database in `dir/dedup`, moving the keys
/// of a data directory written by an older medbus (a `dedup` tree in the
/// topics' database) over first. Losing them would only mean that a resend
/// inside the window is stored again; they are moved anyway.
fn open_dedup(db: &sled::Db, dir: &Path) -> Result<sled::Db, StorageError> {
    let dedup = sled::Config::new()
        .path(dir.join(DEDUP_DIR))
        .cache_capacity(DEDUP_CACHE_BYTES)
        .open()?;
    let old_name = committer::DEDUP_TREE.as_bytes();
    if db.tree_names().iter().any(|n| n.as_ref() == old_name) {
        let old = db.open_tree(committer::DEDUP_TREE)?;
        let tree = dedup.open_tree(committer::DEDUP_TREE)?;
        for item in old.iter() {
            let (k, v) = item?;
            tree.insert(k, v)?;
        }
        dedup.flush()?;
        db.drop_tree(committer::DEDUP_TREE)?;
        db.flush()?;
    }
    // Keys without their expiry index (moved just now, or written before
    // the index existed): index them, so the sweep finds them.
    let tree = dedup.open_tree(committer::DEDUP_TREE)?;
    let by_expiry = dedup.open_tree(committer::DEDUP_EXPIRY_TREE)?;
    if by_expiry.is_empty() && !tree.is_empty() {
        for item in tree.iter() {
            let (k, v) = item?;
            let mut ek = v.get(0..8).unwrap_or(&[0; 8]).to_vec();
            ek.extend_from_slice(&k);
            by_expiry.insert(ek, &[])?;
        }
        dedup.flush()?;
    }
    Ok(dedup)
}

#[cfg(test)]
pub(crate) mod tests;

/// `Some((available, reserve))` when the disk of `dir` has less than
/// `reserve` bytes free (never with a reserve of 0; a disk whose free space
/// cannot be read counts as not below).
pub(crate) fn below_reserve(dir: &Path, reserve: u64) -> Option<(u64, u64)> {
    if reserve == 0 {
        return None;
    }
    match fs2::available_space(dir) {
        Ok(available) if available < reserve => Some((available, reserve)),
        _ => None,
    }
}
