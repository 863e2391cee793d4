//! Key-value trees beside the topics: derived state (such as the FHIR
//! gateway's current-state view) that is rebuilt from topics by replay and
//! therefore needs no group commit of its own.
//!
//! A tree `N` is the sled tree `kv/N`. A batch applied with
//! [`Store::kv_apply`] is atomic (all of it or none of it survives a crash)
//! and becomes durable within sled's flush interval (half a second), at the
//! next checkpoint, or at once with [`Store::kv_flush`]. Readers that keep their own position inside the tree
//! (a cursor key written in the same batch as the state it produced) stay
//! consistent across crashes: after a crash they replay from that position.

use super::import::KV_TREE_PREFIX as KV_PREFIX;
use super::{StorageError, Store};

/// Key-value pairs, in key order.
pub type KvEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// One change in a key-value batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (no error when absent).
    Delete(Vec<u8>),
}

impl Store {
    fn kv_tree(&self, tree: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.inner.db.open_tree(format!("{KV_PREFIX}{tree}"))?)
    }

    /// The value of `key` in key-value tree `tree`.
    pub fn kv_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.kv_tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    /// Up to `max` entries of `tree` whose key starts with `prefix`, in key
    /// order, starting after `after` (a full key) when given.
    pub fn kv_scan(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<KvEntries, StorageError> {
        let t = self.kv_tree(tree)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(a) if a.starts_with(prefix) => {
                let mut start = a.to_vec();
                start.push(0);
                t.range(start..)
            }
            _ => t.range(prefix.to_vec()..),
        };
        for item in iter {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Apply `ops` to `tree` atomically; durable with the next group commit
    /// (or [`Store::kv_flush`]).
    pub fn kv_apply(&self, tree: &str, ops: Vec<KvOp>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                KvOp::Put(k, v) => batch.insert(k, v),
                KvOp::Delete(k) => batch.remove(k),
            }
        }
        Ok(self.kv_tree(tree)?.apply_batch(batch)?)
    }

    /// Make every key-value change so far durable now (a sled flush; the
    /// checkpointer's `fdatasync` follows at the next checkpoint).
    pub fn kv_flush(&self) -> Result<(), StorageError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Names of the topics starting with `prefix` (cheaper than
    /// [`Store::topics`]: no offsets or sizes).
    pub fn topic_names(&self, prefix: &str) -> Vec<String> {
        self.inner
            .log
            .topics()
            .iter()
            .filter(|t| t.name.starts_with(prefix))
            .map(|t| t.name.clone())
            .collect()
    }

    /// A durable cursor's next offset, or `None` when it was never set
    /// (unlike [`Store::cursor`], which reads an unset cursor as 0).
    pub fn cursor_if_set(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self.inner.log.cursor(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            StoreOptions {
                durability: medbus_config::Durability::None,
                max_batch: 16,
                cache_bytes: 1 << 20,
                min_free: 0,
                max_topics: usize::MAX,
                commit_timeout: std::time::Duration::from_secs(10),
                observer: None,
                segment_bytes: crate::storage::DEFAULT_SEGMENT_BYTES,
            },
        )
        .expect("open")
    }

    #[test]
    fn put_scan_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.kv_apply(
            "v",
            vec![
                KvOp::Put(b"a/1".to_vec(), b"x".to_vec()),
                KvOp::Put(b"a/2".to_vec(), b"y".to_vec()),
                KvOp::Put(b"b/1".to_vec(), b"z".to_vec()),
            ],
        )
        .expect("apply");
        assert_eq!(s.kv_get("v", b"a/2").expect("get"), Some(b"y".to_vec()));
        let all = s.kv_scan("v", b"a/", None, 10).expect("scan");
        assert_eq!(all.len(), 2);
        let rest = s.kv_scan("v", b"a/", Some(b"a/1"), 10).expect("scan");
        assert_eq!(rest, vec![(b"a/2".to_vec(), b"y".to_vec())]);
        s.kv_apply("v", vec![KvOp::Delete(b"a/1".to_vec())])
            .expect("delete");
        assert_eq!(s.kv_scan("v", b"a/", None, 10).expect("scan").len(), 1);
        assert_eq!(s.cursor_if_set(b"x/y/z").expect("cursor"), None);
        s.close();
    }
}
