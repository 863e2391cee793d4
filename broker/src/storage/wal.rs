//! The write-ahead journal: what makes a group commit durable.
//!
//! A group commit writes one journal entry holding everything it changes —
//! the records of every topic it appends to, cursor moves, retention trims
//! — and syncs that one file once, however many topics the group touched.
//! Only then are the records written to their topics' segments and shown
//! to readers. After a crash the journal since the last checkpoint is
//! replayed, so an entry is applied whole or, when it never became durable,
//! not at all: a route's outputs and its cursor move stay together.
//!
//! Files: `<data>/wal/<generation, 20 digits>.wal`; a checkpoint starts a
//! new generation. The files are recycled: the checkpointer renames an
//! obsolete generation to the next one's name ahead of time (or fills a new
//! one with zeros), so that the committer overwrites blocks that already
//! exist — an `fdatasync` then writes the data alone, not the file's size
//! and block maps too. Entry: `[u32 body length][u32 crc32][u64
//! generation][body]`, big-endian, the CRC covering generation and body; an
//! entry of another generation (what a recycled file held before) ends the
//! generation like a torn one. A body is a list of operations, each a tag
//! byte then its fields (`u32` lengths for names and keys):
//! `1` topic, name, `u32` length, segment frames (see [`super::segment`]);
//! `2` cursor key, `u64` next offset; `3` cursor key removed; `4` topic,
//! `u64` new first offset, `u64` payload bytes removed (retention).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const TAG_FRAMES: u8 = 1;
const TAG_CURSOR: u8 = 2;
const TAG_RELEASE: u8 = 3;
const TAG_TRIM: u8 = 4;
const ENTRY_HEADER: usize = 16;
/// Size a journal file is filled to before use.
pub(crate) const PREALLOC_BYTES: u64 = 24 << 20;

/// One change recorded in a journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalOp<'a> {
    /// Segment frames to append to a topic.
    Frames { topic: &'a str, frames: &'a [u8] },
    /// A durable cursor set to a next offset.
    Cursor { key: &'a [u8], offset: u64 },
    /// A durable cursor removed.
    Release { key: &'a [u8] },
    /// A topic's records below `first` removed, `bytes` of payload.
    Trim {
        topic: &'a str,
        first: u64,
        bytes: u64,
    },
}

/// A journal entry being built: reuse one across group commits.
#[derive(Default)]
pub(crate) struct EntryBuf {
    buf: Vec<u8>,
}

impl EntryBuf {
    /// Start a new entry.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; ENTRY_HEADER]);
    }

    /// Whether no operation was added since [`Self::clear`].
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= ENTRY_HEADER
    }

    fn name(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(s);
    }

    /// Add one operation.
    pub fn push(&mut self, op: &WalOp<'_>) {
        match op {
            WalOp::Frames { topic, frames } => {
                self.buf.push(TAG_FRAMES);
                self.name(topic.as_bytes());
                self.buf
                    .extend_from_slice(&(frames.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(frames);
            }
            WalOp::Cursor { key, offset } => {
                self.buf.push(TAG_CURSOR);
                self.name(key);
                self.buf.extend_from_slice(&offset.to_be_bytes());
            }
            WalOp::Release { key } => {
                self.buf.push(TAG_RELEASE);
                self.name(key);
            }
            WalOp::Trim {
                topic,
                first,
                bytes,
            } => {
                self.buf.push(TAG_TRIM);
                self.name(topic.as_bytes());
                self.buf.extend_from_slice(&first.to_be_bytes());
                self.buf.extend_from_slice(&bytes.to_be_bytes());
            }
        }
    }

    /// The finished entry of generation `seq` (header filled in).
    fn finish(&mut self, seq: u64) -> &[u8] {
        let body_len = (self.buf.len() - ENTRY_HEADER) as u32;
        let crc = entry_crc(seq, self.buf.get(ENTRY_HEADER..).unwrap_or_default());
        if let Some(h) = self.buf.get_mut(..ENTRY_HEADER) {
            h[..4].copy_from_slice(&body_len.to_be_bytes());
            h[4..8].copy_from_slice(&crc.to_be_bytes());
            h[8..].copy_from_slice(&seq.to_be_bytes());
        }
        &self.buf
    }
}

fn entry_crc(seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_be_bytes());
    h.update(body);
    h.finalize()
}

/// Read the operations of an entry body.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<WalOp<'_>>, String> {
    let mut ops = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = body
            .get(*at..*at + n)
            .ok_or_else(|| "journal entry cut short".to_string())?;
        *at += n;
        Ok(s)
    };
    let len_at = |at: &mut usize| -> Result<usize, String> {
        let b = take(at, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |at: &mut usize| -> Result<u64, String> {
        let b = take(at, 8)?;
        Ok(u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    };
    fn text(b: &[u8]) -> Result<&str, String> {
        std::str::from_utf8(b).map_err(|_| "topic name not UTF-8".to_string())
    }
    while at < body.len() {
        let tag = take(&mut at, 1)?[0];
        match tag {
            TAG_FRAMES => {
                let n = len_at(&mut at)?;
                let topic = text(take(&mut at, n)?)?;
                let len = take(&mut at, 4)?;
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let frames = take(&mut at, len)?;
                ops.push(WalOp::Frames { topic, frames });
            }
            TAG_CURSOR => {
                let n = len_at(&mut at)?;
                let key = take(&mut at, n)?;
                let offset = u64_at(&mut at)?;
                ops.push(WalOp::Cursor { key, offset });
            }
            TAG_RELEASE => {
                let n = len_at(&mut at)?;
                let key = take(&mut at, n)?;
                ops.push(WalOp::Release { key });
            }
            TAG_TRIM => {
                let n = len_at(&mut at)?;
                let topic = text(take(&mut at, n)?)?;
                let first = u64_at(&mut at)?;
                let bytes = u64_at(&mut at)?;
                ops.push(WalOp::Trim {
                    topic,
                    first,
                    bytes,
                });
            }
            other => return Err(format!("unknown journal operation {other}")),
        }
    }
    Ok(ops)
}

/// Path of generation `seq` in `dir`.
pub(crate) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// The journal generations present in `dir`, oldest first.
pub(crate) fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let digits = name.to_str()?.strip_suffix(".wal")?.to_string();
                (digits.len() == 20).then(|| digits.parse().ok()).flatten()
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    out.sort_unstable();
    Ok(out)
}

/// Call `apply` with the body of every sound entry of generation `seq` in
/// the file at `path`, in order; stops at the first torn or damaged entry
/// (a crash while it was written: it was never acknowledged) or at one of
/// another generation (the file's earlier life). Returns the length of the
/// sound part.
pub(crate) fn read(
    path: &Path,
    seq: u64,
    mut apply: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let data = std::fs::read(path)?;
    let mut at = 0usize;
    let mut torn = false;
    while let Some(head) = data.get(at..at + ENTRY_HEADER) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let gen = u64::from_be_bytes(head[8..16].try_into().unwrap_or([0; 8]));
        if gen != seq {
            break;
        }
        let Some(body) = data.get(at + ENTRY_HEADER..at + ENTRY_HEADER + len) else {
            torn = true;
            break;
        };
        if len == 0 || entry_crc(seq, body) != crc {
            torn = true;
            break;
        }
        apply(body)?;
        at += ENTRY_HEADER + len;
    }
    if torn {
        tracing::warn!(
            journal = %path.display(),
            "journal ends with an entry that was never completed (a crash while writing it); it is dropped"
        );
    }
    Ok(at as u64)
}

/// Make `path(dir, seq)` a journal file ready to be overwritten: the
/// obsolete generation `spare` renamed, or else a new file filled with
/// zeros; its content and name synced. The filling takes at most half of
/// the disk space above `keep_free` (the store's reserve: on a small disk,
/// the journal's own preallocation must not be what refuses appends).
pub(crate) fn prepare(
    dir: &Path,
    seq: u64,
    spare: Option<&Path>,
    keep_free: u64,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let target = path(dir, seq);
    let tmp = dir.join(format!("{seq:020}.wal.tmp"));
    match spare {
        Some(old) => std::fs::rename(old, &tmp)?,
        None => drop(File::create(&tmp)?),
    }
    // Filled to its full size with written blocks (zeros where nothing was
    // written before), so that overwriting it changes no metadata. Only an
    // optimisation: on a disk without room for it, the file stays shorter.
    let f = OpenOptions::new().write(true).open(&tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut len = f.metadata()?.len();
    let room = fs2::available_space(dir)
        .unwrap_or(0)
        .saturating_sub(keep_free)
        / 2;
    let fill_to = PREALLOC_BYTES.min(len + room);
    while len < fill_to {
        let n = (fill_to - len).min(zeros.len() as u64) as usize;
        if let Err(e) = f.write_all_at(zeros.get(..n).unwrap_or_default(), len) {
            tracing::debug!(error = %e, "journal file not preallocated");
            f.set_len(len)?;
            break;
        }
        len += n as u64;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    File::open(dir)?.sync_all()
}

/// The journal generation being written.
pub(crate) struct Wal {
    dir: PathBuf,
    pub seq: u64,
    file: File,
    /// Bytes written to this generation.
    pub len: u64,
}

impl Wal {
    /// Start generation `seq`: in the file [`prepare`] made for it, or
    /// else a new empty one whose name is synced when `sync`.
    pub fn create(dir: &Path, seq: u64, sync: bool) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let p = path(dir, seq);
        let prepared = p.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)?;
        if sync && !prepared {
            File::open(dir)?.sync_all()?;
        }
        Ok(Wal {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: 0,
        })
    }

    /// Write the entry in `entry` and, when `sync`, fdatasync it. On any
    /// error the file is cut back to before the entry, so that a later entry
    /// never follows a torn one.
    pub fn append(&mut self, entry: &mut EntryBuf, sync: bool) -> io::Result<()> {
        let bytes = entry.finish(self.seq);
        let result = self.file.write_all_at(bytes, self.len).and_then(|_| {
            if sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Spoil the entry's header so that nothing after it is
                // read as part of this generation.
                let _ = self.file.write_all_at(&[0u8; ENTRY_HEADER], self.len);
                Err(e)
            }
        }
    }

    /// Make what was written durable (for `durability = "flush"`, at a
    /// checkpoint).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The directory of the journal.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::create(dir.path(), 7, true).expect("create");
        let mut e = EntryBuf::default();
        e.clear();
        e.push(&WalOp::Frames {
            topic: "a",
            frames: b"xyz",
        });
        e.push(&WalOp::Cursor {
            key: b"route/r/a",
            offset: 9,
        });
        e.push(&WalOp::Release { key: b"k" });
        e.push(&WalOp::Trim {
            topic: "a",
            first: 3,
            bytes: 30,
        });
        wal.append(&mut e, true).expect("append");
        let sound = wal.len;
        // A torn second entry.
        e.clear();
        e.push(&WalOp::Trim {
            topic: "b",
            first: 1,
            bytes: 10,
        });
        let bytes = e.finish(7).to_vec();
        wal.file
            .write_all_at(&bytes[..bytes.len() - 2], wal.len)
            .expect("write");
        let mut seen = Vec::new();
        let len = read(&path(dir.path(), 7), 7, |body| {
            seen.push(format!("{:?}", parse(body).expect("parse")));
            Ok(())
        })
        .expect("read");
        assert_eq!(len, sound);
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains("Trim { topic: \"a\", first: 3, bytes: 30 }"));
        assert_eq!(generations(dir.path()).expect("list"), vec![7]);
        // Recycled as generation 8: the old entries are not read as its own.
        prepare(dir.path(), 8, Some(&path(dir.path(), 7)), 0).expect("recycle");
        let mut wal = Wal::create(dir.path(), 8, true).expect("reuse");
        e.clear();
        e.push(&WalOp::Release { key: b"new" });
        wal.append(&mut e, true).expect("append");
        let mut n = 0;
        read(&path(dir.path(), 8), 8, |_| {
            n += 1;
            Ok(())
        })
        .expect("read");
        assert_eq!(n, 1);
        assert!(parse(&[9]).is_err());
        assert!(parse(&[1, 0, 0, 0, 5, b'a']).is_err());
        assert_eq!(
            std::fs::metadata(path(dir.path(), 8)).expect("stat").len(),
            PREALLOC_BYTES
        );
    }

    /// A new journal file is filled only as far as the disk's reserve
    /// allows, and is a sound, empty generation either way.
    #[test]
    fn preallocation_leaves_the_reserve() {
        let dir = tempfile::tempdir().expect("tmp");
        let available = fs2::available_space(dir.path()).expect("statvfs");
        // Room for half a MiB above the reserve: about a quarter MiB is
        // taken (other tests free and fill space meanwhile: far below the
        // full size is what counts).
        prepare(dir.path(), 1, None, available - (1 << 19)).expect("prepare");
        let len = std::fs::metadata(path(dir.path(), 1)).expect("stat").len();
        assert!(len < PREALLOC_BYTES / 2, "{len}");
        // No room at all: an empty file.
        prepare(dir.path(), 2, None, u64::MAX).expect("prepare");
        assert_eq!(
            std::fs::metadata(path(dir.path(), 2)).expect("stat").len(),
            0
        );
        let mut wal = Wal::create(dir.path(), 2, true).expect("create");
        let mut e = EntryBuf::default();
        e.clear();
        e.push(&WalOp::Release { key: b"k" });
        wal.append(&mut e, true).expect("append");
        let mut n = 0;
        read(&path(dir.path(), 2), 2, |_| {
            n += 1;
            Ok(())
        })
        .expect("read");
        assert_eq!(n, 1);
    }
}
