//! The topics' log: every topic's segments, the durable cursors, and their
//! recovery from the last checkpoint plus the journal after it.
//!
//! Layout of a data directory (besides sled's files, which now hold only
//! the key-value trees, and the retransmission keys in `dedup/`):
//! `topics/<topic>/` segments ([`super::segment`]), `wal/` the journal
//! ([`super::wal`]), `checkpoint` ([`super::checkpoint`]).

use super::checkpoint::{self, Checkpoint, TopicMark};
use super::segment::{self, Files};
use super::topic::{TopicBatch, TopicLog};
use super::wal::{self, WalOp};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Subdirectory of the topics' segments.
pub(crate) const TOPICS_DIR: &str = "topics";
/// Subdirectory of the journal.
pub(crate) const WAL_DIR: &str = "wal";

/// Whether any topic directory under `topics_dir` holds a segment file.
fn has_segments(topics_dir: &Path) -> io::Result<bool> {
    let rd = match std::fs::read_dir(topics_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for topic in rd.flatten() {
        if let Ok(files) = std::fs::read_dir(topic.path()) {
            if files
                .flatten()
                .any(|f| segment::parse_data_name(&f.file_name().to_string_lossy()).is_some())
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Every topic and cursor of a data directory.
pub(crate) struct Log {
    dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<TopicLog>>>,
    cursors: RwLock<BTreeMap<Vec<u8>, u64>>,
    /// Size at which a topic starts a new segment.
    pub segment_bytes: u64,
}

/// What applying journal operations touched (for the next checkpoint).
#[derive(Default)]
pub(crate) struct Touched {
    pub files: Vec<Arc<Files>>,
    pub dirs: Vec<PathBuf>,
}

impl Touched {
    pub fn add_files(&mut self, files: Vec<Arc<Files>>) {
        for f in files {
            if !self.files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                self.files.push(f);
            }
        }
    }

    /// What [`TopicLog::append`] wrote to `topic`.
    pub fn add_appended(&mut self, topic: &TopicLog, (files, created): (Vec<Arc<Files>>, bool)) {
        self.add_files(files);
        if created {
            self.add_dir(&topic.dir);
        }
    }

    pub fn add_dir(&mut self, dir: &Path) {
        if !self.dirs.iter().any(|d| d == dir) {
            self.dirs.push(dir.to_path_buf());
        }
    }
}

impl Log {
    /// Open the log of data directory `dir`: read the checkpoint, cut every
    /// topic back to it, replay the journal after it. Returns the log, the
    /// journal generation to write next and what the replay touched (to be
    /// synced by the checkpoint the caller takes at once).
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Log, u64, Touched)> {
        let log = Log {
            dir: dir.to_path_buf(),
            topics: RwLock::new(BTreeMap::new()),
            cursors: RwLock::new(BTreeMap::new()),
            segment_bytes,
        };
        let (next, touched) = log.reload()?;
        Ok((log, next, touched))
    }

    /// (Re)build everything from the checkpoint and the journal after it:
    /// at open, and after a write to the topics failed.
    pub fn reload(&self) -> io::Result<(u64, Touched)> {
        let topics_dir = self.dir.join(TOPICS_DIR);
        let cp = match checkpoint::read(&self.dir)? {
            Some(cp) => cp,
            // Without its checkpoint, the segments' offsets and cursors
            // cannot be trusted: refuse rather than start from nothing.
            None if has_segments(&topics_dir)? => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} holds topic segments but no {} file: not opened (restore it, or restore a backup into a new directory)",
                        self.dir.display(),
                        checkpoint::FILE
                    ),
                ))
            }
            None => Checkpoint::default(),
        };
        *self.cursors.write().unwrap_or_else(|p| p.into_inner()) =
            cp.cursors.iter().cloned().collect();
        std::fs::create_dir_all(&topics_dir)?;
        let marks: BTreeMap<&str, &TopicMark> =
            cp.topics.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !super::is_valid_topic(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            let topic = TopicLog::open(&name, &entry.path())?;
            match marks.get(name.as_str()) {
                Some(m) => topic.reset_to(m.first, m.next, m.bytes)?,
                // Created after the checkpoint: the journal has it all.
                None => topic.reset_to(0, 0, 0)?,
            }
            found.insert(name, Arc::new(topic));
        }
        // Topics the checkpoint knows whose directory is gone: they keep
        // their offsets.
        for m in &cp.topics {
            if !found.contains_key(&m.name) {
                let topic = TopicLog::open(&m.name, &topics_dir.join(&m.name))?;
                topic.reset_to(m.first, m.next, m.bytes)?;
                found.insert(m.name.clone(), Arc::new(topic));
            }
        }
        *self.topics_mut() = found;
        let wal_dir = self.wal_dir();
        // A journal file being prepared when the process stopped.
        if let Ok(rd) = std::fs::read_dir(&wal_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".wal.tmp") {
                    super::topic::remove_file(&e.path())?;
                }
            }
        }
        let mut touched = Touched::default();
        let mut last = cp.wal_seq;
        for seq in wal::generations(&wal_dir)? {
            if seq < cp.wal_seq {
                continue;
            }
            last = last.max(seq);
            wal::read(&wal::path(&wal_dir, seq), seq, |body| {
                let ops = wal::parse(body).map_err(io::Error::other)?;
                self.replay(&ops, &mut touched)
            })?;
        }
        Ok((last + 1, touched))
    }

    fn topics_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<TopicLog>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<TopicLog>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn cursors_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, u64>> {
        self.cursors.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal's directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    /// A topic, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<TopicLog>> {
        self.topics_read().get(name).cloned()
    }

    /// A topic, created when new (the committer's and recovery's way in).
    pub fn topic_or_create(&self, name: &str, touched: &mut Touched) -> io::Result<Arc<TopicLog>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let topics_dir = self.dir.join(TOPICS_DIR);
        let t = Arc::new(TopicLog::open(name, &topics_dir.join(name))?);
        touched.add_dir(&topics_dir);
        self.topics_mut().insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// How many topics there are.
    pub fn topic_count(&self) -> usize {
        self.topics_read().len()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<TopicLog>> {
        self.topics_read().values().cloned().collect()
    }

    /// A cursor's next offset.
    pub fn cursor(&self, key: &[u8]) -> Option<u64> {
        self.cursors_read().get(key).copied()
    }

    /// Every cursor.
    pub fn cursors(&self) -> Vec<(Vec<u8>, u64)> {
        self.cursors_read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Set or remove cursors (after the journal made the change durable).
    pub fn set_cursors(&self, set: &[(Vec<u8>, u64)], released: &[Vec<u8>]) {
        if set.is_empty() && released.is_empty() {
            return;
        }
        let mut c = self.cursors.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in set {
            c.insert(k.clone(), *v);
        }
        for k in released {
            c.remove(k);
        }
    }

    /// Retention on `topic` (see [`TopicLog::trim_to`]): returns the records
    /// removed; deletes the segments that expired wholly.
    pub fn trim(
        &self,
        topic: &TopicLog,
        first: u64,
        bytes: u64,
        touched: &mut Touched,
    ) -> io::Result<u64> {
        let (records, gone) = topic.trim_to(first, bytes);
        if !gone.is_empty() {
            touched.add_dir(&topic.dir);
        }
        for p in &gone {
            super::topic::remove_file(p)?;
        }
        Ok(records)
    }

    /// Apply one journal entry again (recovery): records the topics have
    /// already are skipped.
    fn replay(&self, ops: &[WalOp<'_>], touched: &mut Touched) -> io::Result<()> {
        for op in ops {
            match op {
                WalOp::Frames { topic, frames } => {
                    if !super::is_valid_topic(topic) {
                        continue;
                    }
                    let t = self.topic_or_create(topic, touched)?;
                    let next = t.read_state().next;
                    let mut batch = TopicBatch::default();
                    for (head, _, value) in segment::frames(frames) {
                        if head.offset < next {
                            continue;
                        }
                        if batch.count > 0 && head.offset != batch.start + batch.count {
                            touched.add_appended(&t, t.append(&batch, self.segment_bytes)?);
                            batch = TopicBatch::default();
                        }
                        batch.push(head.offset, head.payload_len, value);
                    }
                    if batch.count > 0 {
                        touched.add_appended(&t, t.append(&batch, self.segment_bytes)?);
                    }
                }
                WalOp::Cursor { key, offset } => self.set_cursors(&[(key.to_vec(), *offset)], &[]),
                WalOp::Release { key } => self.set_cursors(&[], &[key.to_vec()]),
                WalOp::Trim {
                    topic,
                    first,
                    bytes,
                } => {
                    if let Some(t) = self.topic(topic) {
                        self.trim(&t, *first, *bytes, touched)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Where everything stands now, as the checkpoint of generation `seq`.
    pub fn mark(&self, seq: u64) -> Checkpoint {
        Checkpoint {
            wal_seq: seq,
            topics: self
                .topics()
                .iter()
                .map(|t| {
                    let st = t.read_state();
                    TopicMark {
                        name: t.name.clone(),
                        first: st.first,
                        next: st.next,
                        bytes: st.bytes,
                    }
                })
                .collect(),
            cursors: self.cursors(),
        }
    }

    /// Bytes of the topics' files and the journal.
    pub fn disk_bytes(&self) -> u64 {
        let topics: u64 = self.topics().iter().map(|t| t.disk_bytes()).sum();
        let wal: u64 = std::fs::read_dir(self.wal_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        topics + wal
    }
}
