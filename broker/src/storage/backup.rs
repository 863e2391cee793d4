//! Backups: a consistent snapshot of the whole message store in one file,
//! and its restore into a new data directory. Retransmission keys (their
//! own database, see [`super::DEDUP_DIR`]) are not in it: after a restore,
//! a resend inside the dedup window is stored again.
//!
//! The snapshot is written by the committer thread itself — the only writer
//! — so no append, route output or cursor move can land half-way through:
//! the file is one point in time. Ingest waits while it is written (at disk
//! speed). Format: the magic line `MEDBUS-BACKUP 1\n`, then per tree `T`
//! u32-BE name length, name; per entry `K` u32 key length, key, u32 value
//! length, value; finally `E` and the u64-BE number of entries. The trees
//! are those of [`super::import`] (the format has not changed since topics
//! lived in sled trees, so older backups restore too). Restore checks every
//! length against caps before allocating and refuses a file that does not
//! end with a matching count.

use super::checkpoint;
use super::import::{Importer, CURSOR_TREE, KV_TREE_PREFIX, META_TREE, TOPIC_TREE_PREFIX};
use super::log::Log;
use super::record::MAX_RECORD_BYTES;
use super::{StorageError, DEFAULT_SEGMENT_BYTES};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// First bytes of a backup file.
pub const MAGIC: &[u8] = b"MEDBUS-BACKUP 1\n";
/// Longest tree name or key accepted on restore.
const MAX_KEY: usize = 64 * 1024;

/// What a backup or restore covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    /// Trees (topics, cursors, bookkeeping).
    pub trees: u64,
    /// Entries (records, cursors, keys).
    pub entries: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Records left out because they are damaged on disk (each logged with
    /// its topic and offset): a backup must not carry altered bytes under a
    /// fresh checksum.
    pub damaged: u64,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// File or database I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// sled failed.
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// The file is not a medbus backup, or is damaged.
    #[error("not a valid medbus backup: {0}")]
    Format(String),
    /// The target directory already holds data.
    #[error("{0} is not empty: restore needs a new data directory")]
    NotEmpty(String),
}

fn put(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("entry too large for a backup"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)
}

/// Write every topic, cursor and key-value tree to `path` and fsync it
/// (on the committer's thread: nothing changes meanwhile).
pub(crate) fn write(log: &Log, kv: &sled::Db, path: &Path) -> Result<BackupSummary, BackupError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC)?;
    let mut s = BackupSummary::default();
    let tree = |w: &mut BufWriter<std::fs::File>, name: &[u8], s: &mut BackupSummary| {
        s.trees += 1;
        w.write_all(b"T").and_then(|_| put(w, name))
    };
    let entry = |w: &mut BufWriter<std::fs::File>, k: &[u8], v: &[u8], s: &mut BackupSummary| {
        s.entries += 1;
        w.write_all(b"K")?;
        put(w, k)?;
        put(w, v)
    };
    let topics = log.topics();
    for t in &topics {
        tree(
            &mut w,
            format!("{TOPIC_TREE_PREFIX}{}", t.name).as_bytes(),
            &mut s,
        )?;
        let mut next = 0u64;
        loop {
            let page = match t.read(next, 1024) {
                Ok(page) => page,
                Err(StorageError::Damaged {
                    topic,
                    offset,
                    what,
                }) if offset >= next => {
                    tracing::error!(%topic, offset, what, "record damaged on disk left out of the backup");
                    s.damaged += 1;
                    next = offset + 1;
                    continue;
                }
                Err(e) => return Err(BackupError::Format(e.to_string())),
            };
            let Some((last, _)) = page.last() else { break };
            next = last + 1;
            for (offset, record) in &page {
                entry(&mut w, &offset.to_be_bytes(), record.stored(), &mut s)?;
            }
        }
    }
    tree(&mut w, CURSOR_TREE.as_bytes(), &mut s)?;
    for (k, v) in log.cursors() {
        entry(&mut w, &k, &v.to_be_bytes(), &mut s)?;
    }
    tree(&mut w, META_TREE.as_bytes(), &mut s)?;
    for t in &topics {
        let next = t.read_state().next;
        entry(
            &mut w,
            format!("next/{}", t.name).as_bytes(),
            &next.to_be_bytes(),
            &mut s,
        )?;
    }
    for name in kv.tree_names() {
        if !name.starts_with(KV_TREE_PREFIX.as_bytes()) {
            continue;
        }
        tree(&mut w, &name, &mut s)?;
        for item in kv.open_tree(&name)?.iter() {
            let (k, v) = item?;
            entry(&mut w, &k, &v, &mut s)?;
        }
    }
    w.write_all(b"E")?;
    w.write_all(&s.entries.to_be_bytes())?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    s.bytes = file.metadata()?.len();
    Ok(s)
}

fn take(r: &mut impl Read, cap: usize, what: &str) -> Result<Vec<u8>, BackupError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|_| BackupError::Format(format!("cut short in a {what}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > cap {
        return Err(BackupError::Format(format!(
            "{what} of {len} bytes exceeds the {cap}-byte cap"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .map_err(|_| BackupError::Format(format!("cut short in a {what}")))?;
    Ok(buf)
}

/// Restore `file` into the new data directory `dir`; on any error the
/// half-written directory is removed again.
pub fn restore(file: &Path, dir: &Path) -> Result<BackupSummary, BackupError> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(BackupError::NotEmpty(dir.display().to_string()));
    }
    let result = restore_into(file, dir);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn restore_into(file: &Path, dir: &Path) -> Result<BackupSummary, BackupError> {
    let mut r = BufReader::new(std::fs::File::open(file)?);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic)
        .map_err(|_| BackupError::Format("too short".into()))?;
    if magic != MAGIC {
        return Err(BackupError::Format("wrong magic".into()));
    }
    std::fs::create_dir_all(dir)?;
    let db = sled::Config::new().path(dir).open()?;
    let (log, seq, _) = Log::open(dir, DEFAULT_SEGMENT_BYTES)?;
    let mut import = Importer::new(&log, Some(&db));
    let mut s = BackupSummary::default();
    let mut in_tree = false;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)
            .map_err(|_| BackupError::Format("no end marker".into()))?;
        match tag[0] {
            b'T' => {
                let name = take(&mut r, MAX_KEY, "tree name")?;
                import.tree(&name)?;
                in_tree = true;
                s.trees += 1;
            }
            b'K' => {
                let k = take(&mut r, MAX_KEY, "key")?;
                let v = take(&mut r, MAX_RECORD_BYTES, "value")?;
                if !in_tree {
                    return Err(BackupError::Format("entry before any tree".into()));
                }
                import.entry(&k, &v)?;
                s.entries += 1;
            }
            b'E' => {
                let mut n = [0u8; 8];
                r.read_exact(&mut n)
                    .map_err(|_| BackupError::Format("cut short in the end marker".into()))?;
                if u64::from_be_bytes(n) != s.entries {
                    return Err(BackupError::Format(format!(
                        "the file says {} entries, {} were read",
                        u64::from_be_bytes(n),
                        s.entries
                    )));
                }
                break;
            }
            other => return Err(BackupError::Format(format!("unknown tag {other:#04x}"))),
        }
    }
    let touched = import.finish()?;
    // Make the restored files durable before reporting success.
    let kv = db.clone();
    checkpoint::run(
        dir,
        &log.wal_dir(),
        checkpoint::Job {
            checkpoint: log.mark(seq),
            files: touched.files,
            dirs: touched.dirs,
            sync: true,
            keep_free: 0,
            before_write: Some(Box::new(move || {
                kv.flush().map(|_| ()).map_err(std::io::Error::other)
            })),
        },
    )?;
    drop(db);
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_file() {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    s.bytes = std::fs::metadata(file)?.len();
    Ok(s)
}
