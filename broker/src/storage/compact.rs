//! Online compaction: sled 0.34 does not reuse the log space of removed
//! records under steady ingest plus retention (measured: its log grows
//! linearly, see BENCHMARKS.md), so medbus rewrites the store itself.
//!
//! The committer (the only writer) makes everything durable, exports every
//! tree into a fresh directory beside the data directory, marks it complete,
//! closes every handle of the old database, swaps the directories by rename
//! and reopens. A crash at any point leaves either the old or the complete
//! new directory in place; [`recover`] finishes or undoes the swap at the
//! next open.

use std::path::{Path, PathBuf};

/// Marker written into the new directory once its export is complete.
const COMPLETE: &str = "COMPACTION-COMPLETE";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    dir.with_file_name(format!(".{name}.{suffix}"))
}

/// The directory a compaction exports into.
pub fn new_dir(dir: &Path) -> PathBuf {
    sibling(dir, "compacting")
}

/// Where the old directory waits during the swap.
pub fn old_dir(dir: &Path) -> PathBuf {
    sibling(dir, "before-compaction")
}

/// Open a sled database the way the store does.
pub fn open_db(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .open()
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Copy every tree of `db` into a fresh database beside `dir`, make it
/// durable, close it and mark it complete.
pub fn export(
    db: &sled::Db,
    dir: &Path,
    cache_bytes: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let target = new_dir(dir);
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    {
        let fresh = open_db(&target, cache_bytes)?;
        for name in db.tree_names() {
            let from = db.open_tree(&name)?;
            let to = fresh.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in from.iter() {
                let (k, v) = item?;
                batch.insert(k, v);
                n += 1;
                if n == 4096 {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    n = 0;
                }
            }
            to.apply_batch(batch)?;
        }
        fresh.flush()?;
    }
    for entry in std::fs::read_dir(&target)? {
        let p = entry?.path();
        if p.is_file() {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::write(target.join(COMPLETE), b"")?;
    std::fs::File::open(target.join(COMPLETE))?.sync_all()?;
    sync_dir(&target)?;
    Ok(())
}

/// Swap the complete export into place (every handle of the old database
/// must be closed) and open it.
pub fn swap(
    dir: &Path,
    cache_bytes: u64,
) -> Result<sled::Db, Box<dyn std::error::Error + Send + Sync>> {
    let new = new_dir(dir);
    let old = old_dir(dir);
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    std::fs::rename(dir, &old)?;
    if let Err(e) = std::fs::rename(&new, dir) {
        std::fs::rename(&old, dir)?;
        return Err(e.into());
    }
    if let Some(parent) = dir.parent() {
        let _ = sync_dir(parent);
    }
    let _ = std::fs::remove_file(dir.join(COMPLETE));
    let db = open_db(dir, cache_bytes)?;
    std::fs::remove_dir_all(&old)?;
    Ok(db)
}

/// At open: finish or undo a compaction a crash interrupted.
pub fn recover(dir: &Path) -> std::io::Result<()> {
    let new = new_dir(dir);
    let old = old_dir(dir);
    if !dir.exists() && old.exists() {
        if new.join(COMPLETE).exists() {
            std::fs::rename(&new, dir)?;
            let _ = std::fs::remove_file(dir.join(COMPLETE));
        } else {
            std::fs::rename(&old, dir)?;
        }
    }
    if new.exists() {
        std::fs::remove_dir_all(&new)?;
    }
    if old.exists() && dir.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, file: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(file), file).expect("write");
    }

    #[test]
    fn recover_finishes_or_undoes_an_interrupted_swap() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        // Crashed after the old directory moved away, export complete.
        touch(&old_dir(&dir), "old");
        touch(&new_dir(&dir), "new");
        touch(&new_dir(&dir), COMPLETE);
        recover(&dir).expect("recover");
        assert!(dir.join("new").exists() && !old_dir(&dir).exists() && !new_dir(&dir).exists());
        // Crashed after the old directory moved away, export incomplete.
        std::fs::remove_dir_all(&dir).expect("rm");
        touch(&old_dir(&dir), "old");
        touch(&new_dir(&dir), "partial");
        recover(&dir).expect("recover");
        assert!(dir.join("old").exists() && !new_dir(&dir).exists());
        // Crashed during the export: the partial copy is dropped.
        touch(&new_dir(&dir), "partial");
        recover(&dir).expect("recover");
        assert!(dir.join("old").exists() && !new_dir(&dir).exists());
    }
}
