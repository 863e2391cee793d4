//! Store tests over a real sled data directory.

use super::*;

fn rec(payload: &[u8]) -> Record {
    Record {
        timestamp_ms: 1,
        headers: vec![],
        content_type: "text/plain".into(),
        payload: payload.to_vec(),
    }
}

fn open(dir: &Path) -> Store {
    open_with_segments(dir, crate::storage::DEFAULT_SEGMENT_BYTES)
}

/// Run a future to completion (tests of other modules use it too).
pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(f)
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    for i in 0..3u8 {
        let out = block(store.append(AppendRequest {
            topic: "a.b".into(),
            record: rec(&[i]),
            dedup: None,
        }))
        .expect("append");
        assert_eq!(
            out,
            AppendOutcome::Stored {
                topic: "a.b".into(),
                offset: u64::from(i)
            }
        );
    }
    store.close();
    drop(store);
    let store = open(dir.path());
    let got = store.read("a.b", 1, 10).expect("read");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, 1);
    assert_eq!(got[1].1.payload, vec![2]);
    // Offsets continue after a reopen.
    let out = block(store.append(AppendRequest {
        topic: "a.b".into(),
        record: rec(b"x"),
        dedup: None,
    }))
    .expect("append");
    assert_eq!(
        out,
        AppendOutcome::Stored {
            topic: "a.b".into(),
            offset: 3
        }
    );
    let topics = store.topics().expect("topics");
    assert_eq!(
        topics,
        vec![TopicInfo {
            name: "a.b".into(),
            first: Some(0),
            last: Some(3),
            count: 4,
            bytes: 4
        }]
    );
}

#[test]
fn retransmissions_are_stored_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    let dedup = Some(DedupKey {
        key: b"k1".to_vec(),
        window: Duration::from_secs(60),
        fingerprint: fingerprint(b"1"),
    });
    let a = block(store.append(AppendRequest {
        topic: "t".into(),
        record: rec(b"1"),
        dedup: dedup.clone(),
    }))
    .expect("a");
    let b = block(store.append(AppendRequest {
        topic: "t".into(),
        record: rec(b"1"),
        dedup: dedup.clone(),
    }))
    .expect("b");
    assert_eq!(
        a,
        AppendOutcome::Stored {
            topic: "t".into(),
            offset: 0
        }
    );
    assert_eq!(
        b,
        AppendOutcome::Duplicate {
            topic: "t".into(),
            offset: 0
        }
    );
    // The same key with other content is a reused control id: stored.
    let other = Some(DedupKey {
        key: b"k1".to_vec(),
        window: Duration::from_secs(60),
        fingerprint: fingerprint(b"other"),
    });
    let c = block(store.append(AppendRequest {
        topic: "t".into(),
        record: rec(b"other"),
        dedup: other,
    }))
    .expect("c");
    assert_eq!(
        c,
        AppendOutcome::Stored {
            topic: "t".into(),
            offset: 1
        }
    );
    // An expired key does not count.
    let zero = Some(DedupKey {
        key: b"k2".to_vec(),
        window: Duration::ZERO,
        fingerprint: fingerprint(b"2"),
    });
    block(store.append(AppendRequest {
        topic: "t".into(),
        record: rec(b"2"),
        dedup: zero.clone(),
    }))
    .expect("c");
    std::thread::sleep(Duration::from_millis(5));
    let d = block(store.append(AppendRequest {
        topic: "t".into(),
        record: rec(b"2"),
        dedup: zero,
    }))
    .expect("d");
    assert_eq!(
        d,
        AppendOutcome::Stored {
            topic: "t".into(),
            offset: 3
        }
    );
}

#[test]
fn second_open_of_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let _store = open(dir.path());
    match Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::Fsync,
            max_batch: 1,
            cache_bytes: 16 << 20,
            min_free: 0,
            max_topics: usize::MAX,
            commit_timeout: std::time::Duration::from_secs(30),
            observer: None,
            segment_bytes: crate::storage::DEFAULT_SEGMENT_BYTES,
        },
    ) {
        Err(StorageError::Locked(_)) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second store"),
    }
}

#[test]
fn invalid_topic_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    let r = block(store.append(AppendRequest {
        topic: "bad topic".into(),
        record: rec(b"1"),
        dedup: None,
    }));
    assert!(matches!(r, Err(StorageError::InvalidTopic(_))));
    let after_close = {
        store.close();
        block(store.append(AppendRequest {
            topic: "t".into(),
            record: rec(b"1"),
            dedup: None,
        }))
    };
    assert!(matches!(after_close, Err(StorageError::Closed)));
}

fn with_key(key: &[u8], payload: &[u8]) -> AppendRequest {
    AppendRequest {
        topic: "t".into(),
        record: rec(payload),
        dedup: Some(DedupKey {
            key: key.to_vec(),
            window: Duration::from_secs(60),
            fingerprint: fingerprint(payload),
        }),
    }
}

#[test]
fn a_key_without_its_record_is_no_duplicate() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    let first = block(store.append(with_key(b"k", b"x"))).expect("first");
    assert_eq!(
        first,
        AppendOutcome::Stored {
            topic: "t".into(),
            offset: 0
        }
    );
    // The record is gone (here: trimmed; after a crash: never written)
    // while its key is still in the window: a resend is stored again, not
    // answered as a duplicate of nothing.
    block(store.trim("t", 1)).expect("trim");
    let again = block(store.append(with_key(b"k", b"x"))).expect("again");
    assert_eq!(
        again,
        AppendOutcome::Stored {
            topic: "t".into(),
            offset: 1
        }
    );
}

#[test]
fn keys_of_an_older_data_directory_are_moved_to_their_own_database() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let store = open(dir.path());
        block(store.append(with_key(b"old", b"payload"))).expect("stored");
        store.close();
    }
    // Put the key back where an older medbus kept it: a `dedup` tree in
    // the topics' database.
    let moved: Vec<(sled::IVec, sled::IVec)> = {
        let d = sled::open(dir.path().join(DEDUP_DIR)).expect("dedup db");
        let t = d.open_tree(committer::DEDUP_TREE).expect("tree");
        let all = t.iter().map(|i| i.expect("entry")).collect();
        t.clear().expect("clear");
        d.open_tree(committer::DEDUP_EXPIRY_TREE)
            .expect("expiry tree")
            .clear()
            .expect("clear");
        d.flush().expect("flush");
        all
    };
    assert_eq!(moved.len(), 1);
    {
        let db = sled::open(dir.path()).expect("topics db");
        let t = db.open_tree(committer::DEDUP_TREE).expect("tree");
        for (k, v) in moved {
            t.insert(k, v).expect("insert");
        }
        db.flush().expect("flush");
    }
    let store = open(dir.path());
    let resend = block(store.append(with_key(b"old", b"payload"))).expect("resend");
    assert_eq!(
        resend,
        AppendOutcome::Duplicate {
            topic: "t".into(),
            offset: 0
        }
    );
    let by_expiry = store
        .inner
        .dedup
        .open_tree(committer::DEDUP_EXPIRY_TREE)
        .expect("expiry index");
    assert_eq!(by_expiry.len(), 1, "moved keys are indexed by expiry");
    let db_trees = store.inner.db.tree_names();
    assert!(!db_trees
        .iter()
        .any(|n| n.as_ref() == committer::DEDUP_TREE.as_bytes()));
}

fn options(segment_bytes: u64) -> StoreOptions {
    StoreOptions {
        durability: Durability::Fsync,
        max_batch: 64,
        cache_bytes: 16 << 20,
        min_free: 0,
        max_topics: usize::MAX,
        commit_timeout: std::time::Duration::from_secs(30),
        observer: None,
        segment_bytes,
    }
}

/// Open the store in `dir`. A sled database dropped just before (by the
/// test itself, or by the store it closed) gives up its file lock only when
/// sled's flusher thread has stopped, a moment later: `Locked` is retried
/// for a while, anything else is a failure.
fn try_open(dir: &Path, segment_bytes: u64) -> Result<Store, StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, options(segment_bytes)) {
            Err(StorageError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub(crate) fn open_with_segments(dir: &Path, segment_bytes: u64) -> Store {
    try_open(dir, segment_bytes).expect("open")
}

fn segment_files(dir: &Path, topic: &str) -> usize {
    std::fs::read_dir(dir.join(log::TOPICS_DIR).join(topic))
        .expect("topic dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

fn append_n(store: &Store, topic: &str, n: usize, size: usize) {
    for i in 0..n {
        block(store.append(AppendRequest {
            topic: topic.into(),
            record: rec(&vec![b'a' + (i % 26) as u8; size]),
            dedup: None,
        }))
        .expect("append");
    }
}

#[test]
fn segments_roll_and_retention_deletes_whole_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open_with_segments(dir.path(), 64 << 10);
    append_n(&store, "t", 300, 1000);
    let before = segment_files(dir.path(), "t");
    assert!(before >= 4, "300 KB in 64 KiB segments: {before} files");
    let trimmed = block(store.trim("t", 200)).expect("trim");
    assert_eq!(trimmed.records, 200);
    assert_eq!(trimmed.bytes, 200_000);
    assert_eq!(trimmed.remaining_bytes, 100_000);
    let after = segment_files(dir.path(), "t");
    assert!(
        after < before,
        "whole expired segments deleted: {before} -> {after}"
    );
    let got = store.read("t", 0, 1000).expect("read");
    assert_eq!(got.first().map(|(o, _)| *o), Some(200));
    assert_eq!(got.len(), 100);
    assert_eq!(got[0].1.payload, vec![b'a' + (200 % 26) as u8; 1000]);
    store.close();
    drop(store);
    let store = open_with_segments(dir.path(), 64 << 10);
    let info = store.topics().expect("topics");
    assert_eq!(info[0].first, Some(200));
    assert_eq!(info[0].last, Some(299));
    assert_eq!(info[0].count, 100);
    assert_eq!(info[0].bytes, 100_000);
    // Trimming everything keeps the offsets going.
    block(store.trim("t", 300)).expect("trim all");
    append_n(&store, "t", 1, 10);
    assert_eq!(store.first_offset("t").expect("first"), Some(300));
}

/// A crash after a group's journal entry became durable but before it
/// reached the segments (and with a torn entry after it): the reopened store
/// has the durable group, cursor included, and nothing of the torn one.
#[test]
fn the_journal_is_replayed_after_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let store = open(dir.path());
        append_n(&store, "t", 3, 10);
        store.close();
    }
    let cp = checkpoint::read(dir.path())
        .expect("read")
        .expect("checkpoint");
    let wal_dir = dir.path().join(log::WAL_DIR);
    let mut wal = wal::Wal::create(&wal_dir, cp.wal_seq + 1, true).expect("wal");
    let mut batch = topic::TopicBatch::default();
    for (i, payload) in [b"x", b"y"].iter().enumerate() {
        let r = rec(*payload);
        batch
            .push_with(3 + i as u64, 1, |out| r.encode_into(out))
            .expect("frame");
    }
    let mut entry = wal::EntryBuf::default();
    entry.clear();
    entry.push(&wal::WalOp::Frames {
        topic: "t",
        frames: &batch.frames,
    });
    entry.push(&wal::WalOp::Cursor {
        key: b"route/r/t",
        offset: 5,
    });
    wal.append(&mut entry, true).expect("entry");
    // Half a frame past the segment's end, as a crash mid-write leaves it.
    let seg = dir
        .path()
        .join(log::TOPICS_DIR)
        .join("t")
        .join(segment::data_name(0));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("segment");
    std::io::Write::write_all(&mut f, &batch.frames[..7]).expect("torn");
    // A torn journal entry after the sound one.
    let mut torn = wal::EntryBuf::default();
    torn.clear();
    torn.push(&wal::WalOp::Cursor {
        key: b"route/r/t",
        offset: 99,
    });
    let mut bytes = Vec::new();
    {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut w = wal::Wal::create(tmp.path(), 1, false).expect("wal");
        w.append(&mut torn, false).expect("entry");
        bytes.extend(std::fs::read(wal::path(tmp.path(), 1)).expect("bytes"));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(wal::path(&wal_dir, cp.wal_seq + 1))
        .expect("wal file");
    std::io::Write::write_all(&mut f, &bytes[..bytes.len() - 1]).expect("torn entry");
    drop(wal);

    let store = open(dir.path());
    let got = store.read("t", 0, 10).expect("read");
    let payloads: Vec<Vec<u8>> = got.iter().map(|(_, r)| r.payload.clone()).collect();
    assert_eq!(got.len(), 5);
    assert_eq!(payloads[3], b"x".to_vec());
    assert_eq!(payloads[4], b"y".to_vec());
    assert_eq!(store.cursor(b"route/r/t").expect("cursor"), 5);
    // Offsets go on after the replayed ones.
    assert_stored_at(&store, "t", 5);
}

/// Append one record to `topic` and check that it got `offset`.
fn assert_stored_at(store: &Store, topic: &str, offset: u64) {
    let out = block(store.append(AppendRequest {
        topic: topic.into(),
        record: rec(b"n"),
        dedup: None,
    }))
    .expect("append");
    assert_eq!(
        out,
        AppendOutcome::Stored {
            topic: topic.into(),
            offset
        }
    );
}

/// A data directory of a medbus that kept topics in sled trees is moved
/// into segment files at its first open.
#[test]
fn topics_kept_in_sled_trees_are_moved_over() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let db = sled::open(dir.path()).expect("sled");
        let t = db.open_tree("t/old").expect("tree");
        for i in 5..8u64 {
            t.insert(i.to_be_bytes(), rec(&[i as u8]).encode().expect("encode"))
                .expect("insert");
        }
        db.open_tree("cursors")
            .expect("cursors")
            .insert("route/r/old", &7u64.to_be_bytes())
            .expect("cursor");
        db.open_tree("meta")
            .expect("meta")
            .insert("next/gone", &42u64.to_be_bytes())
            .expect("meta");
        db.open_tree("t/gone").expect("empty topic");
        db.flush().expect("flush");
    }
    let store = open(dir.path());
    let got = store.read("old", 0, 10).expect("read");
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(got[2].1.payload, vec![7]);
    assert_eq!(store.cursor(b"route/r/old").expect("cursor"), 7);
    assert_stored_at(&store, "gone", 42);
    assert!(!store
        .inner
        .db
        .tree_names()
        .iter()
        .any(|n| n.starts_with(b"t/")));
    store.close();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.read("old", 0, 10).expect("read").len(), 3);
}

/// Damage a closed store's data on disk: the first byte of the first
/// occurrence of `needle` in `topic`'s first segment gets its case flipped.
pub(crate) fn damage_on_disk(dir: &Path, topic: &str, needle: &[u8]) {
    let seg = dir
        .join(log::TOPICS_DIR)
        .join(topic)
        .join(segment::data_name(0));
    let mut data = std::fs::read(&seg).expect("segment");
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the bytes to damage");
    data[at] ^= 0x20;
    std::fs::write(&seg, &data).expect("damage");
}

/// A closed store holding five 100-byte records in topic `t`, and the path
/// of its one segment file.
fn five_records_stored() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    append_n(&store, "t", 5, 100);
    store.close();
    drop(store);
    let seg = dir
        .path()
        .join(log::TOPICS_DIR)
        .join("t")
        .join(segment::data_name(0));
    (dir, seg)
}

/// A damaged length field in the middle of a segment. With the index, the
/// record is refused as damaged and the ones after it still read. When the
/// index is lost too, the rebuild cannot walk past it: the segment ends
/// there, and the bytes cut off (sound records among them) are kept beside
/// it rather than destroyed.
#[test]
fn a_damaged_frame_length_is_refused_and_what_a_rebuild_cuts_is_kept() {
    for lose_index in [false, true] {
        let (dir, seg) = five_records_stored();
        let mut data = std::fs::read(&seg).expect("read segment");
        let frame = data.len() / 5;
        // The third frame's value length, one larger.
        data[2 * frame + 3] = data[2 * frame + 3].wrapping_add(1);
        std::fs::write(&seg, &data).expect("write segment");
        if lose_index {
            std::fs::remove_file(seg.with_extension("idx")).expect("rm idx");
        }
        let store = open(dir.path());
        let sound = |from| {
            let (batch, after) = store.read_sound("t", from, 10).expect("read_sound");
            (batch.iter().map(|(o, _)| *o).collect::<Vec<_>>(), after)
        };
        assert_eq!(sound(0), (vec![0, 1], 2), "lose_index {lose_index}");
        match store.read("t", 2, 10) {
            Err(StorageError::Damaged { offset: 2, .. }) => {}
            other => panic!("lose_index {lose_index}: {other:?}"),
        }
        let aside: Vec<_> = std::fs::read_dir(seg.parent().expect("dir"))
            .expect("topic dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".seg.cut-at-"))
            .collect();
        if lose_index {
            assert_eq!(sound(2), (vec![], 3));
            assert_eq!(aside.len(), 1);
            let kept = std::fs::read(aside[0].path()).expect("kept bytes");
            assert_eq!(
                kept.len(),
                2 * frame - 1,
                "frames 3 and 4, less the byte the damaged length took"
            );
        } else {
            assert_eq!(sound(2), (vec![3, 4], 5));
            assert!(aside.is_empty());
            // Its bytes for a dead letter: up to where the next record starts.
            assert_eq!(
                store.read_damaged("t", 2).expect("raw").len(),
                frame - segment::FRAME_HEADER
            );
        }
        // The last record's bytes too (no next index entry to end them).
        let last = if lose_index { 2 } else { 4 };
        assert!(store
            .read_damaged("t", last)
            .is_ok_and(|b| b.len() >= frame - segment::FRAME_HEADER));
        store.close();
    }
}

/// A segment whose index file is gone (a crash right after the data file
/// was created) is rebuilt from the data; a data directory whose checkpoint
/// is gone is refused, not read as empty.
#[test]
fn a_lost_index_is_rebuilt_and_a_lost_checkpoint_refused() {
    let (dir, seg) = five_records_stored();
    let idx = seg.with_extension("idx");
    std::fs::remove_file(&idx).expect("rm idx");
    {
        let store = open(dir.path());
        assert_eq!(store.read("t", 0, 10).expect("read").len(), 5);
        assert_stored_at(&store, "t", 5);
        store.close();
    }
    std::fs::remove_file(dir.path().join(checkpoint::FILE)).expect("rm checkpoint");
    let refused = try_open(dir.path(), crate::storage::DEFAULT_SEGMENT_BYTES);
    match refused {
        Err(e) => assert!(e.to_string().contains("no checkpoint file"), "{e}"),
        Ok(_) => panic!("a data directory without its checkpoint was opened"),
    }
}

/// A crash after a retention trim deleted segments but before the next
/// checkpoint: the replayed trim takes the journaled bytes off, so the
/// topic's byte count (which byte-based retention acts on) stays right.
#[test]
fn a_replayed_trim_keeps_the_byte_count() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let store = open_with_segments(dir.path(), 64 << 10);
        append_n(&store, "t", 300, 1000);
        store.close();
    }
    let cp = checkpoint::read(dir.path())
        .expect("read")
        .expect("checkpoint");
    let topic_dir = dir.path().join(log::TOPICS_DIR).join("t");
    // What the committer does for `trim("t", 200)`: journal, then delete the
    // segments that expired wholly.
    let mut wal =
        wal::Wal::create(&dir.path().join(log::WAL_DIR), cp.wal_seq + 1, true).expect("wal");
    let mut entry = wal::EntryBuf::default();
    entry.clear();
    entry.push(&wal::WalOp::Trim {
        topic: "t",
        first: 200,
        bytes: 200_000,
    });
    wal.append(&mut entry, true).expect("entry");
    drop(wal);
    let mut bases: Vec<u64> = std::fs::read_dir(&topic_dir)
        .expect("dir")
        .filter_map(|e| segment::parse_data_name(&e.ok()?.file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    for pair in bases.windows(2) {
        if pair[1] <= 200 {
            std::fs::remove_file(topic_dir.join(segment::data_name(pair[0]))).expect("rm");
        }
    }
    let store = open_with_segments(dir.path(), 64 << 10);
    let info = store.topics().expect("topics");
    assert_eq!(info[0].first, Some(200));
    assert_eq!(info[0].bytes, 100_000);
    assert_eq!(store.read("t", 0, 1000).expect("read").len(), 100);
}

#[test]
fn a_journaled_group_that_fails_to_reach_its_topic_is_rebuilt_and_answered_stored() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    append_n(&store, "a.b", 2, 10);
    super::committer::fail_injection::arm(dir.path(), 0);
    // Durable in the journal, then the write to the topic fails: the topics
    // are rebuilt from the journal, which holds this record, so the sender
    // is told it is stored (an error would make it resend a duplicate).
    let out = block(store.append(AppendRequest {
        topic: "a.b".into(),
        record: rec(b"third"),
        dedup: None,
    }))
    .expect("stored after the rebuild");
    assert_eq!(
        out,
        AppendOutcome::Stored {
            topic: "a.b".into(),
            offset: 2
        }
    );
    append_n(&store, "a.b", 1, 10);
    let got = store.read("a.b", 0, 10).expect("read");
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(got[2].1.payload, b"third");
    store.close();
    drop(store);
    // Once, not twice, after a restart too.
    let store = open(dir.path());
    let got = store.read("a.b", 0, 10).expect("read");
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(got[2].1.payload, b"third");
}

#[test]
fn a_group_that_fails_after_some_topics_are_written_is_stored_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    append_n(&store, "a.one", 1, 10);
    // Fails once the first of the group's two topics is written.
    super::committer::fail_injection::arm(dir.path(), 1);
    let write = AtomicWrite {
        records: vec![("a.one".into(), rec(b"one")), ("a.two".into(), rec(b"two"))],
        cursors: vec![(cursor_key("route", "r", "src"), 7)],
        released: Vec::new(),
    };
    let out = block(store.write_atomic(write)).expect("stored after the rebuild");
    assert_eq!(out, [("a.one".to_string(), 1), ("a.two".to_string(), 0)]);
    let check = |store: &Store| {
        let one = store.read("a.one", 0, 10).expect("read");
        assert_eq!(one.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(one[1].1.payload, b"one");
        let two = store.read("a.two", 0, 10).expect("read");
        assert_eq!(two.len(), 1);
        assert_eq!(two[0].1.payload, b"two");
        assert_eq!(
            store
                .cursor(&cursor_key("route", "r", "src"))
                .expect("cursor"),
            7
        );
    };
    check(&store);
    store.close();
    drop(store);
    check(&open(dir.path()));
}

#[test]
fn records_an_earlier_medbus_wrote_are_read_and_delivered_as_before() {
    use medbus_protocol::WireRecord;
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    let mut old = rec(b"MSH|^~\\&|old\r");
    old.headers
        .push((crate::headers::CONTROL_ID.into(), "1".into()));
    let wire = bincode::encode_to_vec(&old, bincode::config::legacy()).expect("wire");
    let v1 = [&[record::LEGACY_VERSION][..], &wire].concat();
    block(store.append_envelope("t", v1)).expect("append v1");
    let mut new = rec(b"MSH|^~\\&|new\r");
    new.headers
        .push((crate::headers::CONTROL_ID.into(), "2".into()));
    block(store.append(AppendRequest {
        topic: "t".into(),
        record: new.clone(),
        dedup: None,
    }))
    .expect("append v2");
    store.close();
    drop(store);
    let store = open(dir.path());
    let got = store.read("t", 0, 10).expect("read");
    assert_eq!(got, vec![(0, old.clone()), (1, new.clone())]);
    for ((_, raw), want) in store
        .read_raw("t", 0, 10)
        .expect("raw")
        .iter()
        .zip([old, new])
    {
        raw.check().expect("readable");
        let mut out = compact::Kept::default();
        raw.write_wire(&mut out).expect("wire");
        let want = bincode::encode_to_vec(&want, bincode::config::legacy()).expect("wire");
        assert_eq!(out.0, want);
    }
}

#[test]
fn a_write_expecting_another_cursor_position_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(dir.path());
    let key = b"route/r/in".to_vec();
    let batch = |expect: u64, to: u64| {
        Ok(EncodedWrite {
            records: vec![(
                "out".to_string(),
                EncodedRecord::new(rec(b"x")).expect("encode"),
            )],
            cursors: vec![(key.clone(), to)],
            released: Vec::new(),
            expect: vec![(key.clone(), expect)],
        })
    };
    block(store.write_encoded(batch(0, 5))).expect("first batch");
    // A batch behind one that never landed: refused, and nothing of it written.
    match block(store.write_encoded(batch(3, 9))) {
        Err(StorageError::CursorMoved {
            expected: 3,
            found: 5,
            ..
        }) => {}
        other => panic!("expected CursorMoved, got {other:?}"),
    }
    assert_eq!(store.cursor(&key).expect("cursor"), 5);
    assert_eq!(store.read("out", 0, 10).expect("read").len(), 1);
    // Two batches in flight at once: the second expects where the first
    // leaves the cursor, in the same group or the next.
    let a = store.write_encoded(batch(5, 7));
    let b = store.write_encoded(batch(7, 9));
    block(async {
        a.await.expect("a");
        b.await.expect("b");
    });
    assert_eq!(store.cursor(&key).expect("cursor"), 9);
    assert_eq!(store.read("out", 0, 10).expect("read").len(), 3);
    store.close();
}

/// A byte of a stored record damaged on disk (bit rot, a bad block) is
/// reported when the record is read back, never delivered as if sound; a
/// read across it returns the records before it, the next one the error,
/// and the records after it still read.
#[test]
fn a_record_damaged_on_disk_is_refused_when_read() {
    let (dir, seg) = five_records_stored();
    let mut data = std::fs::read(&seg).expect("read segment");
    // The middle of the third and of the last record's value (five frames
    // of equal size). The last one fails the check at open, which rebuilds
    // the index: the damaged record must stay in it, not be cut off.
    let frame = data.len() / 5;
    data[2 * frame + frame / 2] ^= 0x20;
    data[4 * frame + frame / 2] ^= 0x20;
    std::fs::write(&seg, &data).expect("write segment");
    let store = open(dir.path());
    let before = store.read("t", 0, 10).expect("records before the damage");
    assert_eq!(before.len(), 2);
    assert_eq!(before[1].1.payload, vec![b'b'; 100]);
    match store.read("t", 2, 10) {
        Err(e) => assert_eq!(
            e.to_string(),
            "damaged record: t@2: frame checksum does not match"
        ),
        Ok(records) => panic!("a damaged record was read: {} records", records.len()),
    }
    assert_eq!(store.read("t", 3, 10).expect("sound record").len(), 1);
    assert!(store.read("t", 4, 10).is_err());
    assert_eq!(store.damaged_reads(), 2);
    assert_eq!(store.take_damaged_reads(), 2);
    assert_eq!(store.take_damaged_reads(), 0);
    // Readers without a dead-letter topic pass over them.
    let offsets = |(batch, after): (Vec<(u64, Record)>, u64)| {
        (batch.iter().map(|(o, _)| *o).collect::<Vec<_>>(), after)
    };
    let sound = |from| offsets(store.read_sound("t", from, 10).expect("read_sound"));
    assert_eq!(sound(0), (vec![0, 1], 2));
    assert_eq!(sound(2), (vec![3], 4));
    assert_eq!(sound(4), (vec![], 5));
    assert_eq!(store.damaged_reads(), 4);
    assert_eq!(store.topics().expect("topics")[0].last, Some(4));
    append_n(&store, "t", 1, 10);
    assert_eq!(store.read("t", 5, 10).expect("appended").len(), 1);
    store.close();
}

/// `storage.max_topics`: an append or atomic write that would create one
/// topic too many is refused whole; existing topics take records as before.
#[test]
fn topics_past_the_cap_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            max_topics: 3,
            ..options(crate::storage::DEFAULT_SEGMENT_BYTES)
        },
    )
    .expect("open");
    let append = |topic: &str| {
        block(store.append(AppendRequest {
            topic: topic.into(),
            record: rec(b"x"),
            dedup: None,
        }))
    };
    for t in ["a", "b", "c"] {
        append(t).expect("under the cap");
    }
    assert!(matches!(
        append("d"),
        Err(StorageError::TooManyTopics { ref topic, max: 3 }) if topic == "d"
    ));
    append("a").expect("an existing topic");
    let write = AtomicWrite {
        records: vec![("b".into(), rec(b"y")), ("e".into(), rec(b"z"))],
        cursors: vec![(b"route/r/b".to_vec(), 1)],
        released: Vec::new(),
    };
    assert!(matches!(
        block(store.write_atomic(write)),
        Err(StorageError::TooManyTopics { .. })
    ));
    // Nothing of the refused write landed.
    assert_eq!(store.read("b", 0, 10).expect("read").len(), 1);
    assert_eq!(store.cursor(b"route/r/b").expect("cursor"), 0);
    assert_eq!(store.topic_count(), 3);
    // Dead-letter topics are the broker's own: always created.
    append("dlq.r").expect("a dead-letter topic");
    store.close();
}
