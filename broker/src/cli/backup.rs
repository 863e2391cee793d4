//! `medbus backup` and `medbus restore`.
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
        damaged: header("x-medbus-backup-damaged").unwrap_or(0),
    })
}

/// Restore `file` into the new data directory `data_dir`.
pub fn restore(file: &Path, data_dir: &Path) -> Result<BackupSummary, BackupCliError> {
    Ok(restore_dir(file, data_dir)?)
}
