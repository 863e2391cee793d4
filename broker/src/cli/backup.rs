//! `medbus backup`, `medbus restore` and `medbus compact`.
//!
//! A backup of a stopped broker's data directory is taken directly. A
//! running broker holds the directory, so the command asks it over its HTTP
//! endpoint (found in `medbus.broker.json`, which `serve` writes into the
//! data directory) to stream a consistent snapshot.

use crate::storage::backup::{restore as restore_dir, BackupError, BackupSummary};
use crate::storage::StorageError;
use std::io::{Read, Write};
use std::path::Path;

/// Name of the file a running broker writes into its data directory.
pub const BROKER_FILE: &str = "medbus.broker.json";

/// Why a backup could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupCliError {
    /// Storage failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The running broker could not be asked.
    #[error("the data directory is in use, and its broker could not be asked for a backup: {0}")]
    Remote(String),
    /// Restore failed.
    #[error("{0}")]
    Restore(#[from] BackupError),
}

/// Back `data_dir` up into `out` (which must not exist).
pub fn backup(data_dir: &Path, out: &Path) -> Result<BackupSummary, BackupCliError> {
    if out.exists() {
        return Err(BackupCliError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", out.display()),
        )));
    }
    match super::dump::open_offline(data_dir) {
        Ok(store) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(store.backup(out));
            store.close();
            Ok(result?)
        }
        Err(StorageError::Locked(_)) => remote(data_dir, out),
        Err(e) => Err(e.into()),
    }
}

/// Ask the running broker for a snapshot and write it to `out`.
fn remote(data_dir: &Path, out: &Path) -> Result<BackupSummary, BackupCliError> {
    let info = std::fs::read_to_string(data_dir.join(BROKER_FILE))
        .map_err(|e| BackupCliError::Remote(format!("no {BROKER_FILE}: {e}")))?;
    let info: serde_json::Value =
        serde_json::from_str(&info).map_err(|e| BackupCliError::Remote(e.to_string()))?;
    let http = info["http"]
        .as_str()
        .ok_or_else(|| BackupCliError::Remote(format!("{BROKER_FILE} names no HTTP endpoint")))?;
    let mut s = std::net::TcpStream::connect(http)
        .map_err(|e| BackupCliError::Remote(format!("{http}: {e}")))?;
    write!(s, "GET /api/backup HTTP/1.0\r\nHost: {http}\r\n\r\n")?;
    let mut reader = std::io::BufReader::new(s);
    // Status line and headers.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if reader.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
            return Err(BackupCliError::Remote("bad HTTP answer".into()));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let mut body = String::new();
        let _ = reader.take(4096).read_to_string(&mut body);
        return Err(BackupCliError::Remote(format!(
            "{} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        )));
    }
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let bytes = std::io::copy(&mut reader, &mut file)?;
    file.sync_all()?;
    if header("content-length").is_some_and(|n| n != bytes) {
        let _ = std::fs::remove_file(out);
        return Err(BackupCliError::Remote("the stream ended early".into()));
    }
    Ok(BackupSummary {
        trees: 0,
        entries: header("x-medbus-backup-entries").unwrap_or(0),
        bytes,
    })
}

/// Restore `file` into the new data directory `data_dir`.
pub fn restore(file: &Path, data_dir: &Path) -> Result<BackupSummary, BackupCliError> {
    Ok(restore_dir(file, data_dir)?)
}

/// What compaction did.
#[derive(Debug, Clone, Copy)]
pub struct Compacted {
    /// Bytes on disk before.
    pub before: u64,
    /// Bytes on disk after.
    pub after: u64,
    /// Entries copied.
    pub entries: u64,
}

fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Rewrite a stopped broker's data directory compactly: export every tree
/// (a backup), restore it into a fresh directory, then swap the two; the
/// old directory is kept as `<dir>.before-compact` until the swap is done
/// and removed afterwards. sled keeps up to 5x the live data on disk before
/// it reclaims space by itself; this takes it back to about 1x.
pub fn compact(data_dir: &Path) -> Result<Compacted, BackupCliError> {
    let store = super::dump::open_offline(data_dir)?;
    store.close();
    drop(store);
    let before = dir_bytes(data_dir)?;
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let parent = data_dir.parent().unwrap_or(Path::new("."));
    let snapshot = parent.join(format!(".{name}.compact-backup"));
    let fresh = parent.join(format!(".{name}.compact-new"));
    let old = parent.join(format!("{name}.before-compact"));
    for leftover in [&snapshot, &fresh] {
        if leftover.exists() {
            return Err(BackupCliError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists: an earlier compaction did not finish; remove it first",
                    leftover.display()
                ),
            )));
        }
    }
    let summary = backup(data_dir, &snapshot)?;
    let restored = restore(&snapshot, &fresh);
    let _ = std::fs::remove_file(&snapshot);
    restored?;
    std::fs::rename(data_dir, &old)?;
    if let Err(e) = std::fs::rename(&fresh, data_dir) {
        // Put the original back: never leave the broker without its data.
        let _ = std::fs::rename(&old, data_dir);
        return Err(e.into());
    }
    std::fs::remove_dir_all(&old)?;
    Ok(Compacted {
        before,
        after: dir_bytes(data_dir)?,
        entries: summary.entries,
    })
}
