//! One topic: its segments, the offsets readers may see, its byte count.
//!
//! The committer is the only writer; any number of readers read at the
//! same time. A reader sees a record once the committer has published it,
//! which it does only after the journal made it durable: nothing a reader
//! acts on (a route, a subscriber) can be lost by a crash afterwards.

use super::record::MAX_RECORD_BYTES;
use super::segment::{self, Files, Segment, FRAME_HEADER, INDEX_ENTRY};
use super::{RawRecord, StorageError};
use bytes::Bytes;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Most bytes one read returns (at least one record, whatever its size).
const READ_BYTES: u64 = 4 << 20;
/// The newest records of a topic kept in memory as written, so that the
/// readers that follow a topic live (routes, subscribers, fan-out) get
/// them without a system call or a copy.
const TAIL_BYTES: usize = 2 << 20;

/// Where a topic stands.
pub(crate) struct TopicState {
    /// Oldest offset still readable (retention moved it; records below it
    /// may remain in a partly expired segment until that is deleted).
    pub first: u64,
    /// The next offset to assign.
    pub next: u64,
    /// Payload bytes of the records `first..next`.
    pub bytes: u64,
    /// Oldest first; the last one is appended to.
    pub segments: Vec<Segment>,
    /// The newest batches as written (see [`TAIL_BYTES`]), oldest first.
    tail: std::collections::VecDeque<TailChunk>,
    tail_bytes: usize,
}

impl TopicState {
    /// Take out the segments wholly below `first` (never the newest, which
    /// is appended to) and return their files' paths, for deletion.
    fn drain_expired(&mut self, first: u64) -> Vec<PathBuf> {
        let keep_from = self
            .segments
            .iter()
            .position(|s| s.end() > first)
            .unwrap_or(self.segments.len())
            .min(self.segments.len().saturating_sub(1));
        self.segments
            .drain(..keep_from)
            .flat_map(|s| s.paths())
            .collect()
    }
}

/// One batch of frames kept in memory.
struct TailChunk {
    /// Offset of its first record.
    start: u64,
    data: Bytes,
    /// Per record: frame position in `data`, payload length.
    entries: Vec<(u32, u32)>,
}

/// A topic's log.
pub(crate) struct TopicLog {
    pub name: String,
    pub dir: PathBuf,
    state: RwLock<TopicState>,
}

/// Records to add to a topic: frames and index entries as the segment
/// stores them, for the offsets `start..start + count`.
#[derive(Default)]
pub(crate) struct TopicBatch {
    pub start: u64,
    pub count: u64,
    pub payload_bytes: u64,
    pub frames: Vec<u8>,
    /// Per record: its frame's position in `frames` and payload length.
    pub entries: Vec<(u32, u32)>,
}

impl TopicBatch {
    /// Add one record (its offset must be `start + count`).
    pub fn push(&mut self, offset: u64, payload_len: u32, value: &[u8]) {
        self.push_with(offset, payload_len, |out| {
            out.extend_from_slice(value);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_default();
    }

    /// Add one record whose value `write` appends (no copy of the value);
    /// nothing is added when `write` fails.
    pub fn push_with<E>(
        &mut self,
        offset: u64,
        payload_len: u32,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.frames.len();
        if let Err(e) = segment::put_frame_with(&mut self.frames, offset, payload_len, write) {
            self.frames.truncate(start);
            return Err(e);
        }
        if self.count == 0 {
            self.start = offset;
        }
        self.entries.push((start as u32, payload_len));
        self.count += 1;
        self.payload_bytes += u64::from(payload_len);
        Ok(())
    }
}

impl TopicLog {
    /// Open the topic in `dir` (creating the directory), reading the
    /// segment files there.
    pub fn open(name: &str, dir: &Path) -> io::Result<TopicLog> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(segment::parse_data_name))
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        for base in bases {
            let mut s = Segment::open(dir, base)?;
            s.verify()?;
            segments.push(s);
        }
        let n = segments.len();
        for s in segments.iter_mut().take(n.saturating_sub(1)) {
            s.close();
        }
        let next = segments.last().map_or(0, |s| s.end());
        let first = segments.first().map_or(0, |s| s.base);
        Ok(TopicLog {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            state: RwLock::new(TopicState {
                first,
                next,
                bytes: 0,
                segments,
                tail: Default::default(),
                tail_bytes: 0,
            }),
        })
    }

    pub fn read_state(&self) -> RwLockReadGuard<'_, TopicState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write_state(&self) -> RwLockWriteGuard<'_, TopicState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Recovery: make the topic hold exactly `first..next` as a checkpoint
    /// recorded it (cutting what a crash left past it), with `bytes`.
    pub fn reset_to(&self, first: u64, next: u64, bytes: u64) -> io::Result<()> {
        let mut st = self.write_state();
        let mut gone = Vec::new();
        // Segments past the checkpoint: written after it, and written
        // again from the journal.
        while st.segments.last().is_some_and(|s| s.base > next) {
            if let Some(s) = st.segments.pop() {
                gone.extend(s.paths());
            }
        }
        // Always cut the newest segment to its last sound record: a crash
        // may have left part of a frame after it. It is appended to next,
        // so its files stay open.
        if let Some(last) = st.segments.last_mut() {
            last.reopen()?;
            let keep = next.saturating_sub(last.base).min(last.count);
            last.truncate(keep)?;
        }
        // Segments retention had already expired when the crash came.
        gone.extend(st.drain_expired(first));
        st.first = first;
        st.next = next.max(st.segments.last().map_or(0, |s| s.end()));
        st.bytes = bytes;
        st.tail.clear();
        st.tail_bytes = 0;
        drop(st);
        for p in &gone {
            remove_file(p)?;
        }
        Ok(())
    }

    /// Append `batch` (written to the files first, then published to
    /// readers). Opens a new segment when the current one would pass
    /// `segment_bytes`, or when the batch does not follow on (offsets
    /// skipped by a restore). Returns the files written, for the next
    /// checkpoint's sync, and whether a segment was created (the topic's
    /// directory then needs a sync too).
    pub fn append(
        &self,
        batch: &TopicBatch,
        segment_bytes: u64,
    ) -> io::Result<(Vec<Arc<Files>>, bool)> {
        let mut touched: Vec<Arc<Files>> = Vec::new();
        let mut created = false;
        let mut done = 0usize;
        let n = batch.entries.len();
        while done < n {
            let offset = batch.start + done as u64;
            // Which segment takes the next records, and how many fit.
            let (needs_new, room_len) = {
                let st = self.read_state();
                match st.segments.last() {
                    Some(s) if s.end() == offset && (s.len < segment_bytes || s.count == 0) => {
                        (false, s.len)
                    }
                    _ => (true, 0),
                }
            };
            if needs_new {
                created = true;
                let seg = Segment::create(&self.dir, offset)?;
                let mut st = self.write_state();
                if let Some(prev) = st.segments.last_mut() {
                    prev.close();
                }
                st.segments.push(seg);
                continue;
            }
            // Take records while the segment stays under its size (always
            // at least one).
            let start_pos = batch.entries.get(done).map_or(0, |e| e.0 as usize);
            let mut end = done;
            let limit = segment_bytes.min(segment::MAX_SEGMENT_BYTES);
            while end < n {
                let e_end = batch
                    .entries
                    .get(end + 1)
                    .map_or(batch.frames.len(), |e| e.0 as usize);
                let add = (e_end - start_pos) as u64;
                if end > done && room_len + add > limit {
                    break;
                }
                end += 1;
            }
            let stop_pos = batch
                .entries
                .get(end)
                .map_or(batch.frames.len(), |e| e.0 as usize);
            let frames = batch.frames.get(start_pos..stop_pos).unwrap_or_default();
            let mut index = Vec::with_capacity((end - done) * INDEX_ENTRY);
            let mut payload = 0u64;
            for &(pos, payload_len) in batch.entries.get(done..end).unwrap_or_default() {
                let at = room_len + (pos as usize - start_pos) as u64;
                index.extend_from_slice(&(at as u32).to_be_bytes());
                index.extend_from_slice(&payload_len.to_be_bytes());
                payload += u64::from(payload_len);
            }
            let files = {
                let st = self.read_state();
                let seg = st
                    .segments
                    .last()
                    .ok_or_else(|| io::Error::other("no segment"))?;
                seg.write(frames, &index)?;
                seg.files()?
            };
            {
                let mut st = self.write_state();
                if let Some(seg) = st.segments.last_mut() {
                    seg.count += (end - done) as u64;
                    seg.len += frames.len() as u64;
                    seg.start_writeback();
                }
                st.next = offset + (end - done) as u64;
                st.bytes += payload;
            }
            if !touched.iter().any(|f| Arc::ptr_eq(f, &files)) {
                touched.push(files);
            }
            done = end;
        }
        Ok((touched, created))
    }

    /// Keep `batch` (already appended) in memory for live readers, dropping
    /// the oldest batches kept beyond [`TAIL_BYTES`].
    pub fn cache_tail(&self, batch: TopicBatch) {
        if batch.count == 0 {
            return;
        }
        let chunk = TailChunk {
            start: batch.start,
            data: Bytes::from(batch.frames),
            entries: batch.entries,
        };
        let mut st = self.write_state();
        // Only a batch that follows on is kept (never a gap in the tail).
        if st
            .tail
            .back()
            .is_some_and(|c| c.start + c.entries.len() as u64 != chunk.start)
        {
            st.tail.clear();
            st.tail_bytes = 0;
        }
        st.tail_bytes += chunk.data.len();
        st.tail.push_back(chunk);
        while st.tail.len() > 1 && st.tail_bytes > TAIL_BYTES {
            if let Some(old) = st.tail.pop_front() {
                st.tail_bytes -= old.data.len();
            }
        }
    }

    /// Payload bytes of the records `from..to` that are still in segments
    /// (from the index).
    pub fn bytes_between(&self, from: u64, to: u64) -> io::Result<u64> {
        let ranges: Vec<(Arc<Files>, u64, u64)> = {
            let st = self.read_state();
            let mut v = Vec::new();
            for s in &st.segments {
                let lo = from.max(s.base);
                let hi = to.min(s.end());
                if lo < hi {
                    v.push((s.files()?, lo - s.base, hi - lo));
                }
            }
            v
        };
        let mut bytes = 0u64;
        for (files, at, n) in ranges {
            bytes += files
                .entries(at, n)?
                .iter()
                .map(|e| u64::from(e.1))
                .sum::<u64>();
        }
        Ok(bytes)
    }

    /// Retention: make `first` the oldest readable offset (never back,
    /// never past `next`), taking `bytes` (the payload of the records
    /// removed, as measured when the trim was journaled) off the topic's
    /// count. Returns the records removed and the files of segments now
    /// wholly expired, which the caller deletes. The newest segment always
    /// stays.
    pub fn trim_to(&self, first: u64, bytes: u64) -> (u64, Vec<PathBuf>) {
        let mut st = self.write_state();
        let new_first = first.min(st.next);
        if new_first <= st.first {
            return (0, Vec::new());
        }
        let removed = new_first - st.first;
        st.first = new_first;
        st.bytes = st.bytes.saturating_sub(bytes);
        let gone = st.drain_expired(new_first);
        (removed, gone)
    }

    /// Up to `max` records from offset `from` on (at least one, at most
    /// about [`READ_BYTES`]), as stored.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, RawRecord)>, StorageError> {
        let mut out: Vec<(u64, RawRecord)> = Vec::new();
        let mut from = from;
        let mut budget = READ_BYTES;
        while out.len() < max && budget > 0 {
            // Under the lock only find the segment and its files; a
            // segment deleted meanwhile stays readable through them.
            let found = {
                let st = self.read_state();
                let from_here = from.max(st.first);
                if let Some(after) = self.read_tail(&st, from_here, max, &mut budget, &mut out)? {
                    from = after;
                    continue;
                }
                st.segments
                    .iter()
                    .find(|s| s.end() > from_here)
                    .map(|s| {
                        let at = from_here.max(s.base);
                        let n = (s.end() - at).min((max - out.len()) as u64);
                        let tail = if at + n == s.end() { Some(s.len) } else { None };
                        s.files().map(|f| (f, s.base, at, n, tail, s.len))
                    })
                    .transpose()
                    .map_err(io_error)?
            };
            let Some((files, base, at, n, tail, seg_len)) = found else {
                break;
            };
            // One extra entry gives the end of the last frame read.
            let want = if tail.is_some() { n } else { n + 1 };
            let entries = files.entries(at - base, want).map_err(io_error)?;
            let Some(&(start, _)) = entries.first() else {
                break;
            };
            let ends: Vec<u64> = entries
                .iter()
                .skip(1)
                .map(|e| u64::from(e.0))
                .chain(tail)
                .collect();
            // The index is not trusted blindly: positions must grow and stay
            // inside the segment (a damaged one is an error, not a panic or
            // a huge allocation).
            let damaged = || StorageError::Record(format!("{}@{at}: damaged index", self.name));
            let mut prev = u64::from(start);
            for &end in &ends {
                if end < prev || end > seg_len {
                    return Err(damaged());
                }
                prev = end;
            }
            // Records while within the byte budget (at least one).
            let mut take = 0usize;
            for (i, &end) in ends.iter().enumerate().take(n as usize) {
                if i > 0 && end - u64::from(start) > budget {
                    break;
                }
                take = i + 1;
            }
            let Some(&stop) = ends.get(take.saturating_sub(1)) else {
                break;
            };
            let mut buf = vec![0u8; (stop - u64::from(start)) as usize];
            files
                .data
                .read_exact_at(&mut buf, u64::from(start))
                .map_err(io_error)?;
            let buf = Bytes::from(buf);
            let mut pos = 0usize;
            for k in 0..take as u64 {
                let offset = at + k;
                let (record, len) = match self.frame_at(&buf, pos, offset, true) {
                    Ok(found) => found,
                    // The sound records before a damaged one are delivered;
                    // the next read, from the damaged one, gets the error.
                    Err(_) if !out.is_empty() => return Ok(out),
                    Err(e) => return Err(e),
                };
                out.push((offset, record));
                pos += len;
            }
            budget = budget.saturating_sub(buf.len() as u64);
            from = at + take as u64;
        }
        Ok(out)
    }

    /// The stored value (envelope) of the record at `offset` as it is in
    /// its segment, without the checksum check: the bytes after its frame
    /// header up to where the index puts the next record (at most
    /// [`MAX_RECORD_BYTES`], whatever a damaged length field says); empty
    /// when the index or the frame header does not lead to it. For
    /// dead-lettering a [`StorageError::Damaged`] record.
    pub fn read_unchecked(&self, offset: u64) -> Result<Vec<u8>, StorageError> {
        let found = {
            let st = self.read_state();
            st.segments
                .iter()
                .find(|s| s.base <= offset && offset < s.end())
                .map(|s| s.files().map(|f| (f, s.base, s.end(), s.len)))
                .transpose()
                .map_err(io_error)?
        };
        let Some((files, base, seg_end, seg_len)) = found else {
            return Ok(Vec::new());
        };
        // Its own index entry, and the next record's when there is one.
        let want = if offset + 1 < seg_end { 2 } else { 1 };
        let entries = files.entries(offset - base, want).map_err(io_error)?;
        let Some(&(pos, _)) = entries.first() else {
            return Ok(Vec::new());
        };
        let end = entries.get(1).map_or(seg_len, |e| u64::from(e.0));
        let mut head = [0u8; FRAME_HEADER];
        if files.data.read_exact_at(&mut head, u64::from(pos)).is_err()
            || segment::FrameHead::parse(&head).is_none_or(|h| h.offset != offset)
        {
            return Ok(Vec::new());
        }
        let start = u64::from(pos) + FRAME_HEADER as u64;
        let len = end.saturating_sub(start).min(MAX_RECORD_BYTES as u64);
        let mut value = vec![0u8; len as usize];
        files
            .data
            .read_exact_at(&mut value, start)
            .map_err(io_error)?;
        Ok(value)
    }

    /// Records from `from` on out of the in-memory tail, when it holds
    /// `from`; returns the offset after the last one taken.
    fn read_tail(
        &self,
        st: &TopicState,
        from: u64,
        max: usize,
        budget: &mut u64,
        out: &mut Vec<(u64, RawRecord)>,
    ) -> Result<Option<u64>, StorageError> {
        let Some(chunk) = st
            .tail
            .iter()
            .find(|c| c.start <= from && from < c.start + c.entries.len() as u64)
        else {
            return Ok(None);
        };
        let mut offset = from;
        for &(pos, _) in chunk.entries.iter().skip((from - chunk.start) as usize) {
            if out.len() >= max || *budget == 0 {
                break;
            }
            let (record, len) = self.frame_at(&chunk.data, pos as usize, offset, false)?;
            out.push((offset, record));
            *budget = budget.saturating_sub(len as u64);
            offset += 1;
        }
        Ok(Some(offset))
    }

    /// The record of the frame at `pos` in `data`, which must hold `offset`
    /// and end inside `data`, and the frame's length. `from_disk`: the
    /// frame's checksum is checked too (bytes read back from a segment may
    /// have been damaged since they were written; the in-memory tail holds
    /// the frames as they were made).
    ///
    /// Only a frame found where the index says and holding the right
    /// offset, whose length or checksum is wrong, is
    /// [`StorageError::Damaged`] (a damaged record, which readers may
    /// dead-letter and pass). A header holding another offset may as well
    /// mean a wrong index entry, so it is a plain error that stops the
    /// reader rather than let it pass a sound record.
    fn frame_at(
        &self,
        data: &Bytes,
        pos: usize,
        offset: u64,
        from_disk: bool,
    ) -> Result<(RawRecord, usize), StorageError> {
        let damaged = |what| StorageError::Damaged {
            topic: self.name.clone(),
            offset,
            what,
        };
        let head = data
            .get(pos..)
            .and_then(segment::FrameHead::parse)
            .filter(|h| h.offset == offset)
            .ok_or_else(|| {
                StorageError::Record(format!(
                    "{}@{offset}: the frame the index points at does not hold this record",
                    self.name
                ))
            })?;
        if pos + head.frame_len() > data.len() {
            return Err(damaged("frame length does not match"));
        }
        let value = data.slice(pos + FRAME_HEADER..pos + head.frame_len());
        if from_disk && segment::frame_crc(head.offset, head.payload_len, &value) != head.crc {
            return Err(damaged("frame checksum does not match"));
        }
        Ok((RawRecord::new(value), head.frame_len()))
    }

    /// Bytes its files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        let st = self.read_state();
        st.segments
            .iter()
            .map(|s| s.len + s.count * INDEX_ENTRY as u64)
            .sum()
    }
}

/// Remove a file; one already gone is fine.
pub(crate) fn remove_file(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn io_error(e: io::Error) -> StorageError {
    StorageError::Io(e.to_string())
}
