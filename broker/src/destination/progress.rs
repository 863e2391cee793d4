//! A destination's progress between durable cursor commits.
//!
//! Waiting for a durable commit after every acknowledged message would cap
//! a destination at one message per group commit. Instead, after each
//! message the next offset is written (without fsync) to a small file in the
//! data directory — a `pwrite` of 16 bytes, which survives a crash of the
//! process because it is in the kernel's page cache — and the durable cursor
//! in the store is committed every [`DURABLE_EVERY`]. After `kill -9` at
//! most the message in flight is sent again; after a power loss, at most
//! the messages of the last [`DURABLE_EVERY`] (at-least-once either way).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the durable cursor is committed while messages flow.
pub const DURABLE_EVERY: Duration = Duration::from_millis(200);

/// Mixed into the check word, so that a zeroed or foreign file is ignored.
const CHECK: u64 = 0x6d65_6462_7573_5047; // "medbusPG"

/// The progress file of one destination.
pub struct Progress {
    file: Option<File>,
    path: PathBuf,
}

impl Progress {
    /// Open (or create) `<data dir>/progress/destination-<name>-<topic>.pos`
    /// (the topic is in the name so that pointing a destination at another
    /// topic never reuses an offset); a failure only costs speed: progress
    /// is then kept by durable commits alone.
    pub fn open(data_dir: &Path, name: &str, topic: &str) -> Progress {
        let dir = data_dir.join("progress");
        let path = dir.join(format!("destination-{name}-{topic}.pos"));
        let file = std::fs::create_dir_all(&dir).and_then(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        });
        if let Err(e) = &file {
            tracing::warn!(path = %path.display(), error = %e, "no progress file: every message will wait for a durable commit");
        }
        Progress {
            file: file.ok(),
            path,
        }
    }

    /// Whether progress can be recorded without a durable commit.
    pub fn available(&self) -> bool {
        self.file.is_some()
    }

    /// The offset recorded, if the file holds a valid one.
    pub fn read(&self) -> Option<u64> {
        let f = self.file.as_ref()?;
        let mut buf = [0u8; 16];
        f.read_exact_at(&mut buf, 0).ok()?;
        let (a, b) = buf.split_at(8);
        let offset = u64::from_be_bytes(a.try_into().ok()?);
        let check = u64::from_be_bytes(b.try_into().ok()?);
        (check == offset ^ CHECK).then_some(offset)
    }

    /// Record `next` (no fsync).
    pub fn write(&mut self, next: u64) {
        let Some(f) = &self.file else { return };
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&next.to_be_bytes());
        buf[8..].copy_from_slice(&(next ^ CHECK).to_be_bytes());
        if let Err(e) = f.write_all_at(&buf, 0) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record progress; falling back to durable commits");
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut p = Progress::open(dir.path(), "d", "t");
        assert_eq!(p.read(), None);
        p.write(42);
        assert_eq!(Progress::open(dir.path(), "d", "t").read(), Some(42));
        assert_eq!(Progress::open(dir.path(), "d", "other").read(), None);
        std::fs::write(dir.path().join("progress/destination-d-t.pos"), [7u8; 16]).expect("write");
        assert_eq!(Progress::open(dir.path(), "d", "t").read(), None);
    }
}
