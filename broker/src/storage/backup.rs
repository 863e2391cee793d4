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
//! length, value; finally `E` and the u64-BE number of entries. Restore
//! checks every length against caps before allocating and refuses a file
//! that does not end with a matching count.

use super::record::MAX_RECORD_BYTES;
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

/// Write every tree of `db` to `path` and fsync it.
pub(crate) fn write(db: &sled::Db, path: &Path) -> Result<BackupSummary, BackupError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC)?;
    let mut s = BackupSummary::default();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        w.write_all(b"T")?;
        put(&mut w, &name)?;
        s.trees += 1;
        for item in tree.iter() {
            let (k, v) = item?;
            w.write_all(b"K")?;
            put(&mut w, &k)?;
            put(&mut w, &v)?;
            s.entries += 1;
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
    let db = sled::Config::new().path(dir).open()?;
    let mut s = BackupSummary::default();
    let mut tree: Option<sled::Tree> = None;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)
            .map_err(|_| BackupError::Format("no end marker".into()))?;
        match tag[0] {
            b'T' => {
                let name = take(&mut r, MAX_KEY, "tree name")?;
                tree = Some(db.open_tree(name)?);
                s.trees += 1;
            }
            b'K' => {
                let k = take(&mut r, MAX_KEY, "key")?;
                let v = take(&mut r, MAX_RECORD_BYTES, "value")?;
                let t = tree
                    .as_ref()
                    .ok_or_else(|| BackupError::Format("entry before any tree".into()))?;
                t.insert(k, v)?;
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
    db.flush()?;
    drop(db);
    // Make the restored files durable before reporting success.
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_file() {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    s.bytes = std::fs::metadata(file)?.len();
    Ok(s)
}
