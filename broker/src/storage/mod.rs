//! The message store: durable topics on one sled `Db`.
//!
//! Everything above this module talks to storage through [`Store`]: append
//! with a durable acknowledgement, read from an offset, list topics, wait for
//! commits. Nothing else reaches into sled, so that a later medbus can put a
//! distributed log behind the same interface.
//!
//! On disk: topic `T` is the sled tree `t/T`; a key is the record's offset as
//! a big-endian u64 (so trees iterate in offset order); a value is a
//! [`Record`] envelope. Writes go through the single [`committer`] thread.
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
pub mod committer;
pub mod kv;
pub mod record;

pub use committer::{now_ms, CommitObserver, CommitStats, TopicAppend, Trimmed, TRIM_BATCH};
pub use kv::KvOp;
pub use record::{RawRecord, Record, RecordError};

use medbus_config::Durability;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Prefix of topic trees.
const TOPIC_PREFIX: &str = "t/";
/// Subdirectory of the data directory holding the retransmission keys'
/// sled database.
pub const DEDUP_DIR: &str = "dedup";
/// Page cache of the retransmission keys' database.
const DEDUP_CACHE_BYTES: u64 = 16 << 20;

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
    /// The committer has stopped (the broker is shutting down).
    #[error("the message store is closed")]
    Closed,
    /// Less free disk space than the configured reserve.
    #[error("disk full: {available} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Bytes free.
        available: u64,
        /// `storage.min_free`.
        reserve: u64,
    },
    /// The commit did not finish in time (the disk or sled is stuck).
    #[error("storage did not answer within {0:?}")]
    Timeout(Duration),
    /// A topic name outside `[A-Za-z0-9._-]{1,200}`.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
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
    /// Longest wait for a commit before an append reports failure.
    pub commit_timeout: Duration,
    /// Called after each group commit.
    pub observer: Option<CommitObserver>,
}

/// Handle to the message store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dedup: sled::Db,
    dir: PathBuf,
    ops: std::sync::Mutex<Option<mpsc::Sender<committer::Op>>>,
    committed: watch::Receiver<u64>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    commit_timeout: Duration,
}

/// Whether `name` is a valid topic name.
pub fn is_valid_topic(name: &str) -> bool {
    medbus_config::validate::is_valid_topic(name)
}

pub(crate) fn open_topic_tree(db: &sled::Db, name: &str) -> Result<sled::Tree, StorageError> {
    if !is_valid_topic(name) {
        return Err(StorageError::InvalidTopic(name.to_string()));
    }
    Ok(db.open_tree(format!("{TOPIC_PREFIX}{name}"))?)
}

pub(crate) fn last_offset(tree: &sled::Tree) -> Result<Option<u64>, StorageError> {
    Ok(tree.last()?.and_then(|(k, _)| key_offset(&k)))
}

fn key_offset(k: &[u8]) -> Option<u64> {
    k.try_into().ok().map(u64::from_be_bytes)
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
        // Make the directory entries of sled's files durable once.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let log_file = std::fs::OpenOptions::new()
            .read(true)
            .open(dir.join("db"))
            .ok();
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed_rx) = watch::channel(0);
        let committer = committer::Committer {
            db: db.clone(),
            dedup: dedup.open_tree(committer::DEDUP_TREE)?,
            dedup_expiry: dedup.open_tree(committer::DEDUP_EXPIRY_TREE)?,
            dir: dir.to_path_buf(),
            durability: options.durability,
            max_batch: options.max_batch.max(1),
            ops: rx,
            committed: committed_tx,
            observer: options.observer,
            batch_topics: Default::default(),
            next: Default::default(),
            log_file,
            synced_blob: 0,
            min_free: options.min_free,
            last_failed: false,
            blobs_seen: None,
        };
        let thread = std::thread::Builder::new()
            .name("medbus-committer".into())
            .spawn(move || committer.run())
            .map_err(|e| StorageError::Sled(format!("cannot start committer: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                dedup,
                dir: dir.to_path_buf(),
                ops: std::sync::Mutex::new(Some(tx)),
                committed: committed_rx,
                thread: std::sync::Mutex::new(Some(thread)),
                commit_timeout: options.commit_timeout,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Hand an op (built around its reply channel) to the committer and
    /// wait for the answer, at most `timeout` when given.
    fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> committer::Op,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<T, StorageError>> + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(op(reply));
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
        self.call(|reply| committer::Op::Append { request, reply }, timeout)
    }

    /// Write records and cursor positions atomically; resolves once durable
    /// with the (topic, offset) of each record, in order.
    pub fn write_atomic(
        &self,
        write: AtomicWrite,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, StorageError>> + 'static {
        let timeout = Some(self.inner.commit_timeout);
        self.call(|reply| committer::Op::Atomic { write, reply }, timeout)
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
        self.call(|reply| committer::Op::Backup { path, reply }, None)
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
            move |reply| committer::Op::Trim {
                topic,
                below,
                reply,
            },
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
        let mut out = Vec::new();
        for item in self.inner.db.open_tree(committer::CURSOR_TREE)?.iter() {
            let (k, v) = item?;
            let offset = v
                .as_ref()
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push((String::from_utf8_lossy(&k).into_owned(), offset));
        }
        Ok(out)
    }

    /// A durable cursor's next offset (0 when never set).
    pub fn cursor(&self, key: &[u8]) -> Result<u64, StorageError> {
        Ok(self
            .inner
            .db
            .open_tree(committer::CURSOR_TREE)?
            .get(key)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// The oldest offset of `topic`, if it has records.
    pub fn first_offset(&self, topic: &str) -> Result<Option<u64>, StorageError> {
        Ok(open_topic_tree(&self.inner.db, topic)?
            .first()?
            .and_then(|(k, _)| key_offset(&k)))
    }

    /// The newest offset of `topic`, if it has records.
    pub fn last_offset(&self, topic: &str) -> Result<Option<u64>, StorageError> {
        last_offset(&open_topic_tree(&self.inner.db, topic)?)
    }

    /// Up to `max` records of `topic` from offset `from` on.
    pub fn read(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError> {
        self.read_raw(topic, from, max)?
            .into_iter()
            .map(|(offset, raw)| {
                raw.decode()
                    .map(|r| (offset, r))
                    .map_err(|e| StorageError::Record(format!("{topic}@{offset}: {e}")))
            })
            .collect()
    }

    /// Up to `max` records of `topic` from offset `from` on, as stored
    /// (not decoded: for sending on as they are).
    pub fn read_raw(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, RawRecord)>, StorageError> {
        let tree = open_topic_tree(&self.inner.db, topic)?;
        let mut out = Vec::new();
        for item in tree.range(from.to_be_bytes()..).take(max) {
            let (k, v) = item?;
            let Some(offset) = key_offset(&k) else {
                continue;
            };
            let record = RawRecord::new(v)
                .map_err(|e| StorageError::Record(format!("{topic}@{offset}: {e}")))?;
            out.push((offset, record));
        }
        Ok(out)
    }

    /// Every topic with its offsets.
    pub fn topics(&self) -> Result<Vec<TopicInfo>, StorageError> {
        let mut out = Vec::new();
        for name in self.inner.db.tree_names() {
            let Some(topic) = name.strip_prefix(TOPIC_PREFIX.as_bytes()) else {
                continue;
            };
            let topic = String::from_utf8_lossy(topic).into_owned();
            let tree = self.inner.db.open_tree(&name)?;
            let first = tree.first()?.and_then(|(k, _)| key_offset(&k));
            let last = last_offset(&tree)?;
            let count = match (first, last) {
                (Some(f), Some(l)) => l - f + 1,
                _ => 0,
            };
            let bytes = self
                .inner
                .db
                .open_tree(committer::META_TREE)?
                .get(committer::bytes_key(&topic))?
                .and_then(|v| v.as_ref().try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push(TopicInfo {
                name: topic,
                first,
                last,
                count,
                bytes,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A receiver that changes after every group commit (wake-on-commit for
    /// readers that follow a topic).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Bytes sled uses on disk (both databases).
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.inner.db.size_on_disk()? + self.inner.dedup.size_on_disk()?)
    }

    /// Stop accepting appends, let the committer finish what is queued and
    /// make it durable. Later appends fail with [`StorageError::Closed`].
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.ops.lock() {
            g.take();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        if let Err(e) = self.inner.dedup.flush() {
            tracing::warn!(error = %e, "cannot flush the retransmission keys");
        }
    }
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
mod tests;
