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
    Store::open(
        dir,
        StoreOptions {
            durability: Durability::Fsync,
            max_batch: 64,
            cache_bytes: 16 << 20,
            min_free: 0,
            commit_timeout: std::time::Duration::from_secs(30),
            observer: None,
        },
    )
    .expect("open")
}

fn block<F: std::future::Future>(f: F) -> F::Output {
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
            commit_timeout: std::time::Duration::from_secs(30),
            observer: None,
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
