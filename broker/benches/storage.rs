//! Append throughput through `medbus::storage::Store`: 1 KiB records, with
//! durability `none` (the committer's own cost: encode, insert, answer) and
//! `fsync` (one journal fdatasync per group commit), 1 and 32
//! concurrent appenders (32 waiting appends let the group commit batch).
//! One iteration = `appenders` appends issued together and all awaited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use medbus::storage::{AppendRequest, Record, Store, StoreOptions};
use medbus_config::Durability;

fn request(payload: &[u8]) -> AppendRequest {
    AppendRequest {
        topic: "hl7.bench".into(),
        record: Record {
            timestamp_ms: 1_700_000_000_000,
            headers: vec![
                ("medbus.listener".into(), "bench".into()),
                ("medbus.message_type".into(), "ADT^A01".into()),
            ],
            content_type: "application/hl7-v2".into(),
            payload: payload.to_vec(),
        },
        dedup: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = vec![b'x'; 1024];
    let mut g = c.benchmark_group("storage_append_1KiB");
    for (name, durability) in [("none", Durability::None), ("fsync", Durability::Fsync)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durability,
                max_batch: 4096,
                cache_bytes: 16 << 20,
                min_free: 0,
                max_topics: usize::MAX,
                commit_timeout: std::time::Duration::from_secs(30),
                observer: None,
                segment_bytes: medbus::storage::DEFAULT_SEGMENT_BYTES,
            },
        )
        .expect("store");
        for appenders in [1usize, 32] {
            g.throughput(Throughput::Elements(appenders as u64));
            g.bench_with_input(BenchmarkId::new(name, appenders), &appenders, |b, &n| {
                b.iter(|| {
                    let results =
                        rt.block_on(join_all((0..n).map(|_| store.append(request(&payload)))));
                    assert!(results.iter().all(Result::is_ok));
                });
            });
        }
        store.close();
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
