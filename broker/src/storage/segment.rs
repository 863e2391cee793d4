//! A topic's records on disk: append-only segment files.
//!
//! sled copied a tree node on every insert and, under steady ingest plus
//! retention, never gave back the space of removed records fast enough to
//! keep the disk near the live data (BENCHMARKS.md). A topic is therefore a
//! directory of segments, written strictly at the end, and retention deletes
//! whole files: disk use is the live data plus at most one partly expired
//! segment.
//!
//! Layout, in `<data>/topics/<topic>/`: `<base>.seg` (base = the first
//! offset, 20 digits) holds frames `[u32 value length][u32 crc32][u64
//! offset][u32 payload length][value]` (big-endian; the CRC covers offset,
//! payload length and value; the value is the record envelope, see
//! [`super::record`]); `<base>.idx` holds per record `[u32 position][u32
//! payload length]`, so a read finds any offset with one small `pread`.
//! Offsets in a segment are contiguous from its base. Segments are written
//! without syncing: the write-ahead journal ([`super::wal`]) is what makes a
//! record durable, and a checkpoint syncs the segments before the journal
//! behind it is dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes before a frame's value.
pub(crate) const FRAME_HEADER: usize = 20;
/// Bytes of one index entry.
pub(crate) const INDEX_ENTRY: usize = 8;
/// A segment's data file never grows past this (index positions are u32).
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// The CRC of a frame: over its offset, payload length and value.
pub(crate) fn frame_crc(offset: u64, payload_len: u32, value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_be_bytes());
    h.update(&payload_len.to_be_bytes());
    h.update(value);
    h.finalize()
}

/// Append one frame at `offset` to `out`, its value written by `write`.
pub(crate) fn put_frame_with<E>(
    out: &mut Vec<u8>,
    offset: u64,
    payload_len: u32,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    write(out)?;
    let value_len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = frame_crc(
        offset,
        payload_len,
        out.get(start + FRAME_HEADER..).unwrap_or_default(),
    );
    if let Some(h) = out.get_mut(start..start + FRAME_HEADER) {
        h[0..4].copy_from_slice(&value_len.to_be_bytes());
        h[4..8].copy_from_slice(&crc.to_be_bytes());
        h[8..16].copy_from_slice(&offset.to_be_bytes());
        h[16..20].copy_from_slice(&payload_len.to_be_bytes());
    }
    Ok(())
}

/// One frame's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub value_len: u32,
    pub crc: u32,
    pub offset: u64,
    pub payload_len: u32,
}

impl FrameHead {
    /// Parse the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<FrameHead> {
        let word = |at: usize| -> Option<u32> {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
        };
        Some(FrameHead {
            value_len: word(0)?,
            crc: word(4)?,
            offset: bytes
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)?,
            payload_len: word(16)?,
        })
    }

    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER + self.value_len as usize
    }
}

/// Walk the frames in `bytes` (which start at a frame boundary), checking
/// each CRC; stops at the first incomplete or damaged frame. Yields (header,
/// position in `bytes`, value).
pub(crate) fn frames(bytes: &[u8]) -> impl Iterator<Item = (FrameHead, usize, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = bytes.get(at..)?;
        let head = FrameHead::parse(rest)?;
        let value = rest.get(FRAME_HEADER..head.frame_len())?;
        if frame_crc(head.offset, head.payload_len, value) != head.crc {
            return None;
        }
        let pos = at;
        at += head.frame_len();
        Some((head, pos, value))
    })
}

/// Whether `rest` (what follows a segment's last sound frame) holds a sound
/// frame of a record at or after `offset`. Checksums are computed only for
/// headers with a plausible offset, within a fixed byte budget, so damaged
/// or hostile bytes cannot make this slow.
fn holds_later_frame(rest: &[u8], offset: u64) -> bool {
    let mut budget: usize = 64 << 20;
    for pos in 0..rest.len() {
        let Some(head) = rest.get(pos..).and_then(FrameHead::parse) else {
            return false;
        };
        if head.offset < offset || head.offset - offset > MAX_SEGMENT_BYTES {
            continue;
        }
        let Some(value) = rest.get(pos + FRAME_HEADER..pos + head.frame_len()) else {
            continue;
        };
        if value.len() > budget {
            return false;
        }
        budget -= value.len();
        if frame_crc(head.offset, head.payload_len, value) == head.crc {
            return true;
        }
    }
    false
}

/// File name of the segment starting at `base`.
pub(crate) fn data_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn index_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// The base offset of a segment file name, if it is one.
pub(crate) fn parse_data_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Written bytes a segment lets pile up before it starts their writeback.
const WRITEBACK_BYTES: u64 = 512 << 10;

/// One segment: a data file and its index.
pub(crate) struct Segment {
    /// Offset of its first record.
    pub base: u64,
    /// Records in it.
    pub count: u64,
    /// Bytes of its data file that hold those records.
    pub len: u64,
    /// Bytes whose writeback has been started.
    written_back: u64,
    dir: PathBuf,
    /// Open files while it is the topic's newest segment (appended to);
    /// older segments are opened when read.
    files: Option<Arc<Files>>,
}

/// A segment's two files.
pub(crate) struct Files {
    pub data: File,
    pub index: File,
}

impl Files {
    fn open(dir: &Path, base: u64, create: bool) -> io::Result<Files> {
        let open = |name: String, create: bool| {
            let path = dir.join(name);
            if create {
                // A new file, never a truncated one: ext4 flushes a file
                // truncated to zero when it is closed (`auto_da_alloc`),
                // which would stall the committer at every new segment.
                super::topic::remove_file(&path)?;
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(create)
                .open(path)
        };
        let data = open(data_name(base), create)?;
        // An index lost with its directory entry (a crash right after the
        // data file was created) is made again: `verify` rebuilds it.
        let index = match open(index_name(base), create) {
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => {
                open(index_name(base), true)?
            }
            other => other?,
        };
        Ok(Files { data, index })
    }

    /// fdatasync the data file. The index is never synced: it is checked
    /// against the data when the segment is opened and rebuilt from it
    /// when the two disagree ([`Segment::verify`]).
    pub fn sync(&self) -> io::Result<()> {
        self.data.sync_data()
    }

    /// The index entries `from..from + n` (relative to the segment's base).
    pub fn entries(&self, from: u64, n: u64) -> io::Result<Vec<(u32, u32)>> {
        let mut buf = vec![0u8; n as usize * INDEX_ENTRY];
        self.index
            .read_exact_at(&mut buf, from * INDEX_ENTRY as u64)?;
        Ok(buf
            .chunks_exact(INDEX_ENTRY)
            .map(|e| {
                let word = |r: std::ops::Range<usize>| {
                    e.get(r)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_be_bytes)
                        .unwrap_or(0)
                };
                (word(0..4), word(4..8))
            })
            .collect())
    }
}

impl Segment {
    /// A new, empty segment at `base` in `dir`.
    pub fn create(dir: &Path, base: u64) -> io::Result<Segment> {
        let files = Files::open(dir, base, true)?;
        Ok(Segment {
            base,
            count: 0,
            len: 0,
            written_back: 0,
            dir: dir.to_path_buf(),
            files: Some(Arc::new(files)),
        })
    }

    /// An existing segment, as far as its index goes; see [`Self::repair`].
    pub fn open(dir: &Path, base: u64) -> io::Result<Segment> {
        let files = Files::open(dir, base, false)?;
        let count = files.index.metadata()?.len() / INDEX_ENTRY as u64;
        let len = files.data.metadata()?.len();
        Ok(Segment {
            base,
            count,
            len,
            written_back: len,
            dir: dir.to_path_buf(),
            files: Some(Arc::new(files)),
        })
    }

    /// The offset after its last record.
    pub fn end(&self) -> u64 {
        self.base + self.count
    }

    /// Its files (opened again when it is not the newest segment).
    pub fn files(&self) -> io::Result<Arc<Files>> {
        match &self.files {
            Some(f) => Ok(f.clone()),
            None => Files::open(&self.dir, self.base, false).map(Arc::new),
        }
    }

    /// The segment is no longer appended to: drop its open files.
    pub fn close(&mut self) {
        self.files = None;
    }

    /// The segment is appended to again (it became the newest at
    /// recovery): keep its files open.
    pub fn reopen(&mut self) -> io::Result<()> {
        if self.files.is_none() {
            self.files = Some(Arc::new(Files::open(&self.dir, self.base, false)?));
        }
        Ok(())
    }

    /// Paths of its files (for deletion).
    pub fn paths(&self) -> [PathBuf; 2] {
        [
            self.dir.join(data_name(self.base)),
            self.dir.join(index_name(self.base)),
        ]
    }

    /// Write `frames` (holding the records `self.end()..`) and their index
    /// entries at the end; the caller publishes the new count and length.
    pub fn write(&self, frames: &[u8], index: &[u8]) -> io::Result<()> {
        let files = self.files()?;
        files.data.write_all_at(frames, self.len)?;
        files
            .index
            .write_all_at(index, self.count * INDEX_ENTRY as u64)
    }

    /// Start the writeback of what was written since the last call, once
    /// that is [`WRITEBACK_BYTES`] or more: the disk then takes segment data
    /// a little at a time, instead of in one burst at the checkpoint that
    /// a journal `fdatasync` would queue behind. (`POSIX_FADV_DONTNEED`
    /// starts writeback of the range without waiting for it; pages still
    /// dirty then stay cached.)
    pub fn start_writeback(&mut self) {
        if self.len - self.written_back < WRITEBACK_BYTES {
            return;
        }
        if let Some(files) = &self.files {
            let _ = nix::fcntl::posix_fadvise(
                &files.data,
                self.written_back as i64,
                (self.len - self.written_back) as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        self.written_back = self.len;
    }

    /// Keep only the first `keep` records: the files are cut to them (what
    /// follows was never made durable by the journal, or is written again
    /// from it). Rebuilds the index from the data when the two disagree.
    pub fn truncate(&mut self, keep: u64) -> io::Result<()> {
        let files = self.files()?;
        let indexed = files.index.metadata()?.len() / INDEX_ENTRY as u64;
        if indexed < keep || self.indexed_end(&files, keep)?.is_none() {
            self.rebuild(&files)?;
        }
        let keep = keep.min(self.count);
        // Where record `keep` starts (the segment's end when all are kept):
        // from the index, not from a frame header, whose length field may be
        // the damaged part of a frame the rebuild kept.
        let len = if keep == self.count {
            self.len
        } else {
            files
                .entries(keep, 1)?
                .first()
                .map_or(self.len, |&(pos, _)| u64::from(pos))
        };
        files.data.set_len(len)?;
        files.index.set_len(keep * INDEX_ENTRY as u64)?;
        self.count = keep;
        self.len = len;
        self.written_back = self.written_back.min(len);
        Ok(())
    }

    /// Where the frame of record `keep - 1` ends, when the index points at
    /// a sound frame holding that offset (`Some(0)` for `keep == 0`).
    fn indexed_end(&self, files: &Files, keep: u64) -> io::Result<Option<u64>> {
        if keep == 0 {
            return Ok(Some(0));
        }
        let Some((pos, _)) = files.entries(keep - 1, 1)?.first().copied() else {
            return Ok(None);
        };
        let data_len = files.data.metadata()?.len();
        let mut head = [0u8; FRAME_HEADER];
        if u64::from(pos) + FRAME_HEADER as u64 > data_len {
            return Ok(None);
        }
        files.data.read_exact_at(&mut head, u64::from(pos))?;
        let Some(head) = FrameHead::parse(&head) else {
            return Ok(None);
        };
        let end = u64::from(pos) + head.frame_len() as u64;
        if head.offset != self.base + keep - 1 || end > data_len {
            return Ok(None);
        }
        let mut value = vec![0u8; head.value_len as usize];
        files
            .data
            .read_exact_at(&mut value, u64::from(pos) + FRAME_HEADER as u64)?;
        Ok((frame_crc(head.offset, head.payload_len, &value) == head.crc).then_some(end))
    }

    /// At open: the index must end exactly where the data does (both were
    /// written together, only the data is synced); otherwise it is rebuilt.
    pub fn verify(&mut self) -> io::Result<()> {
        let files = self.files()?;
        if self.indexed_end(&files, self.count)? != Some(self.len) {
            self.rebuild(&files)?;
        }
        Ok(())
    }

    /// Rewrite the index from the data file's sound frames (after a crash
    /// that left the two apart).
    fn rebuild(&mut self, files: &Files) -> io::Result<()> {
        let len = files.data.metadata()?.len();
        let mut data = vec![0u8; len as usize];
        files.data.read_exact_at(&mut data, 0)?;
        let mut index = Vec::new();
        let mut count = 0u64;
        let mut end = 0usize;
        // Frames are walked by their headers. One whose header holds the
        // next offset and fits in the file but whose checksum fails is kept
        // (refused when read; its payload length, which may be what was
        // damaged, counts as 0): cutting the segment there would drop every
        // record after it. The walk stops at a header that does not hold
        // the next offset or does not fit: normally a write a crash cut
        // short (the journal has it, or it was never acknowledged).
        let mut damaged = Vec::new();
        while let Some(head) = data.get(end..).and_then(FrameHead::parse) {
            let Some(value) = data.get(end + FRAME_HEADER..end + head.frame_len()) else {
                break;
            };
            if head.offset != self.base + count {
                break;
            }
            let sound = frame_crc(head.offset, head.payload_len, value) == head.crc;
            if !sound {
                damaged.push(head.offset);
            }
            index.extend_from_slice(&(end as u32).to_be_bytes());
            index.extend_from_slice(&(if sound { head.payload_len } else { 0 }).to_be_bytes());
            count += 1;
            end += head.frame_len();
        }
        let segment = self.dir.join(data_name(self.base));
        tracing::warn!(segment = %segment.display(), records = count, "segment index rebuilt from its data");
        if !damaged.is_empty() {
            tracing::error!(
                segment = %segment.display(),
                offsets = ?damaged,
                "records in this segment fail their checksum: reading them is refused"
            );
        }
        // What the walk leaves is cut off. If it holds a sound frame of a
        // later record, this is damage, not a torn write: the bytes are kept
        // beside the segment for an operator, never destroyed.
        let rest = data.get(end..).unwrap_or_default();
        if holds_later_frame(rest, self.base + count) {
            let aside = self
                .dir
                .join(format!("{}.cut-at-{end}", data_name(self.base)));
            std::fs::write(&aside, rest)?;
            tracing::error!(
                segment = %segment.display(),
                at = end,
                kept_in = %aside.display(),
                "a damaged frame ends this segment early; records after it that the journal does not have are no longer served (restore the topic from a backup)"
            );
        }
        files.data.set_len(end as u64)?;
        files.index.set_len(0)?;
        files.index.write_all_at(&index, 0)?;
        self.count = count;
        self.len = end as u64;
        self.written_back = self.written_back.min(self.len);
        Ok(())
    }
}
