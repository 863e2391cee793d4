//! Checkpoints: the point up to which the topics' files are known to be on
//! disk, so that the journal before it can be deleted.
//!
//! A checkpoint is taken between two group commits: the committer notes
//! where every topic stands and every cursor, starts a new journal
//! generation, and hands the rest to the checkpointer thread, which syncs
//! the segment files written since the last checkpoint, writes this file
//! (to a temporary name, synced, then renamed over the old one) and only
//! then recycles the journal generations before the new one (one becomes
//! the next generation's file, see [`super::wal`]; the others are
//! deleted). The committer is never held up by those syncs.
//!
//! File `<data>/checkpoint`: the magic line `MEDBUS-CHECKPOINT 1\n`, a u32
//! big-endian CRC-32 of the rest, then bincode 2 (`legacy()`, size-limited)
//! of [`Checkpoint`].

use super::segment::Files;
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

const MAGIC: &[u8] = b"MEDBUS-CHECKPOINT 1\n";
/// File name in the data directory.
pub(crate) const FILE: &str = "checkpoint";
/// Largest checkpoint file read back.
const MAX_BYTES: usize = 256 << 20;

/// Where everything stood at a journal generation's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Checkpoint {
    /// Replay the journal from this generation on.
    pub wal_seq: u64,
    /// Every topic.
    pub topics: Vec<TopicMark>,
    /// Every durable cursor: key, next offset.
    pub cursors: Vec<(Vec<u8>, u64)>,
}

/// One topic in a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub(crate) struct TopicMark {
    pub name: String,
    /// Oldest readable offset.
    pub first: u64,
    /// Next offset to assign.
    pub next: u64,
    /// Payload bytes of `first..next`.
    pub bytes: u64,
}

fn config() -> impl bincode::config::Config {
    bincode::config::legacy().with_limit::<MAX_BYTES>()
}

/// Read the checkpoint in `dir` (`None` for a directory that has none yet).
pub(crate) fn read(dir: &Path) -> io::Result<Option<Checkpoint>> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("checkpoint: {why}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a medbus checkpoint"))?;
    let (crc, body) = rest.split_at_checked(4).ok_or_else(|| bad("cut short"))?;
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(bad("damaged (CRC mismatch)"));
    }
    let (cp, _) = bincode::decode_from_slice(body, config()).map_err(|e| bad(&e.to_string()))?;
    Ok(Some(cp))
}

/// Write `cp` as the checkpoint of `dir`, atomically and (when `sync`)
/// durably.
pub(crate) fn write(dir: &Path, cp: &Checkpoint, sync: bool) -> io::Result<()> {
    let body = bincode::encode_to_vec(cp, config()).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&crc32fast::hash(&body).to_be_bytes())?;
        f.write_all(&body)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, dir.join(FILE))?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Work for the checkpointer thread.
pub(crate) struct Job {
    pub checkpoint: Checkpoint,
    /// Segment files written since the last checkpoint.
    pub files: Vec<Arc<Files>>,
    /// Directories whose entries changed (segments created or deleted).
    pub dirs: Vec<PathBuf>,
    /// Whether to sync at all (`durability = "none"` does not).
    pub sync: bool,
    /// Disk space a new journal file's preallocation leaves free
    /// (`storage.min_free`).
    pub keep_free: u64,
    /// Called after the files are synced and before the checkpoint is
    /// written (flushes the key-value trees).
    pub before_write: Option<Box<dyn FnOnce() -> io::Result<()> + Send>>,
}

/// The checkpointer thread's handle.
pub(crate) struct Checkpointer {
    tx: Option<mpsc::Sender<Job>>,
    busy: Arc<AtomicBool>,
    /// Set when a checkpoint failed (taken by [`Self::take_failed`]).
    failed: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread for the data directory `dir` (journal in `wal_dir`).
    pub fn start(dir: PathBuf, wal_dir: PathBuf) -> io::Result<Checkpointer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let flag = busy.clone();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("medbus-checkpoint".into())
            .spawn(move || {
                for job in rx {
                    if let Err(e) = run(&dir, &wal_dir, job) {
                        // Not retried with the same files: after a failed
                        // fsync the kernel may have dropped the dirty pages
                        // and a second fsync would report success. The
                        // committer rebuilds the topics from the journal
                        // (which this checkpoint did not delete) instead.
                        tracing::error!(error = %e, "checkpoint failed; the topics are rebuilt from the journal");
                        failed_flag.store(true, Ordering::Release);
                    }
                    flag.store(false, Ordering::Release);
                }
            })?;
        Ok(Checkpointer {
            tx: Some(tx),
            busy,
            failed,
            thread: Some(thread),
        })
    }

    /// Whether a checkpoint is being taken.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Whether a checkpoint failed since the last call.
    pub fn take_failed(&self) -> bool {
        self.failed.swap(false, Ordering::AcqRel)
    }

    /// Hand a checkpoint over (the caller checked [`Self::busy`]).
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            self.busy.store(true, Ordering::Release);
            if tx.send(job).is_err() {
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    /// Wait for the checkpoint under way, then stop the thread.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Take one checkpoint (also used synchronously at open and close).
pub(crate) fn run(dir: &Path, wal_dir: &Path, job: Job) -> io::Result<()> {
    if job.sync {
        for f in &job.files {
            f.sync()?;
        }
        for d in &job.dirs {
            match File::open(d) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(f) = job.before_write {
        f()?;
    }
    write(dir, &job.checkpoint, job.sync)?;
    // The generations before the checkpoint's are obsolete: one becomes
    // the next generation's file (recycled: its blocks exist), the rest go.
    let current = job.checkpoint.wal_seq;
    let mut obsolete: Vec<u64> = super::wal::generations(wal_dir)?
        .into_iter()
        .filter(|&seq| seq < current)
        .collect();
    let next = super::wal::path(wal_dir, current + 1);
    if job.sync && !next.exists() {
        let spare = obsolete.pop().map(|seq| super::wal::path(wal_dir, seq));
        super::wal::prepare(wal_dir, current + 1, spare.as_deref(), job.keep_free)?;
    }
    for seq in obsolete {
        super::topic::remove_file(&super::wal::path(wal_dir, seq))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(read(dir.path()).expect("none"), None);
        let cp = Checkpoint {
            wal_seq: 3,
            topics: vec![TopicMark {
                name: "a".into(),
                first: 1,
                next: 5,
                bytes: 40,
            }],
            cursors: vec![(b"route/r/a".to_vec(), 4)],
        };
        write(dir.path(), &cp, true).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(cp));
        let p = dir.path().join(FILE);
        let mut b = std::fs::read(&p).expect("bytes");
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).expect("damage");
        assert!(read(dir.path()).is_err());
    }
}
