//! Loading trees of entries into the log: a backup being restored, or the
//! sled trees in which a data directory of an older medbus kept its topics.
//!
//! Both speak the same tree shapes: topic `T` is tree `t/T` (key: offset,
//! u64 big-endian; value: the record envelope), `cursors` (key → next
//! offset), `meta` (`next/T` → the topic's next offset), and the key-value
//! trees `kv/N`. Records the log already holds (an import interrupted and
//! run again) are skipped, so an import can always be repeated.

use super::log::{Log, Touched};
use super::topic::{TopicBatch, TopicLog};
use super::Record;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

/// Prefix of topic trees.
pub(crate) const TOPIC_TREE_PREFIX: &str = "t/";
/// The cursors' tree.
pub(crate) const CURSOR_TREE: &str = "cursors";
/// The tree of per-topic bookkeeping (`next/T`).
pub(crate) const META_TREE: &str = "meta";
/// Prefix of key-value trees.
pub(crate) const KV_TREE_PREFIX: &str = "kv/";

/// Records gathered before they are written to a topic.
const FLUSH_BYTES: usize = 4 << 20;

enum Target {
    Topic(Arc<TopicLog>),
    Cursors,
    Meta,
    Kv(sled::Tree),
    Ignored,
}

/// Feeds trees, entry by entry, into a log (and a sled database for the
/// key-value trees).
pub(crate) struct Importer<'a> {
    log: &'a Log,
    kv: Option<&'a sled::Db>,
    target: Target,
    batch: TopicBatch,
    /// Per topic: `next/T` of the meta tree.
    nexts: HashMap<String, u64>,
    pub touched: Touched,
}

impl<'a> Importer<'a> {
    /// Import into `log`; key-value trees go to `kv` (or are skipped when
    /// `None`: they are in sled already).
    pub fn new(log: &'a Log, kv: Option<&'a sled::Db>) -> Importer<'a> {
        Importer {
            log,
            kv,
            target: Target::Ignored,
            batch: TopicBatch::default(),
            nexts: HashMap::new(),
            touched: Touched::default(),
        }
    }

    /// The entries that follow belong to tree `name`.
    pub fn tree(&mut self, name: &[u8]) -> io::Result<()> {
        self.flush()?;
        let name = String::from_utf8_lossy(name);
        self.target = if let Some(topic) = name.strip_prefix(TOPIC_TREE_PREFIX) {
            if super::is_valid_topic(topic) {
                Target::Topic(self.log.topic_or_create(topic, &mut self.touched)?)
            } else {
                Target::Ignored
            }
        } else if name == CURSOR_TREE {
            Target::Cursors
        } else if name == META_TREE {
            Target::Meta
        } else if name.starts_with(KV_TREE_PREFIX) {
            match self.kv {
                Some(db) => Target::Kv(db.open_tree(name.as_bytes()).map_err(io::Error::other)?),
                None => Target::Ignored,
            }
        } else {
            Target::Ignored
        };
        Ok(())
    }

    /// One entry of the current tree.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let number = || key.try_into().ok().map(u64::from_be_bytes);
        let word = value.try_into().ok().map(u64::from_be_bytes);
        match &self.target {
            Target::Topic(t) => {
                let Some(offset) = number() else {
                    return Ok(());
                };
                let t = t.clone();
                if offset < t.read_state().next {
                    return Ok(());
                }
                let payload_len = Record::decode(value)
                    .map(|r| r.payload.len() as u32)
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}@{offset}: {e}", t.name),
                        )
                    })?;
                if self.batch.count > 0 && offset != self.batch.start + self.batch.count {
                    self.flush()?;
                }
                self.batch.push(offset, payload_len, value);
                if self.batch.frames.len() >= FLUSH_BYTES {
                    self.flush()?;
                }
            }
            Target::Cursors => {
                if let Some(next) = word {
                    self.log.set_cursors(&[(key.to_vec(), next)], &[]);
                }
            }
            Target::Meta => {
                let key = String::from_utf8_lossy(key);
                if let (Some(topic), Some(next)) = (key.strip_prefix("next/"), word) {
                    self.nexts.insert(topic.to_string(), next);
                }
            }
            Target::Kv(tree) => {
                tree.insert(key, value).map_err(io::Error::other)?;
            }
            Target::Ignored => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.count == 0 {
            return Ok(());
        }
        if let Target::Topic(t) = &self.target {
            let appended = t.append(&self.batch, self.log.segment_bytes)?;
            self.touched.add_appended(t, appended);
        }
        self.batch = TopicBatch::default();
        Ok(())
    }

    /// Write what is gathered and settle each topic's first and next
    /// offsets. Returns what was written, for the checkpoint that makes it
    /// durable.
    pub fn finish(mut self) -> io::Result<Touched> {
        self.flush()?;
        for t in self.log.topics() {
            let mut st = t.write_state();
            if let Some(&next) = self.nexts.get(&t.name) {
                st.next = st.next.max(next);
            }
            let oldest = st
                .segments
                .iter()
                .find(|s| s.count > 0)
                .map_or(st.next, |s| s.base);
            st.first = st.first.max(oldest);
        }
        Ok(self.touched)
    }
}
