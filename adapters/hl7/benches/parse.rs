//! Parse throughput over the shared corpus: parse each message and read a handful of fields.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use medbus_hl7::{Message, Path};

fn corpus() -> Vec<Vec<u8>> {
    medbus_tests::corpus_files()
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter(|b| Message::parse(b).is_ok())
        .collect()
}

fn bench(c: &mut Criterion) {
    let msgs = corpus();
    let total: usize = msgs.iter().map(Vec::len).sum();
    let paths: Vec<Path> = ["MSH-9", "MSH-10", "PID-3", "PID-5", "OBX-5"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut g = c.benchmark_group("corpus");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("parse+5 fields", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for m in &msgs {
                let msg = Message::parse(black_box(m)).unwrap();
                for p in &paths {
                    n += msg.get_path(p).map_or(0, |v| v.len());
                }
            }
            black_box(n)
        })
    });
    g.bench_function("parse only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for m in &msgs {
                n += Message::parse(black_box(m)).unwrap().segment_count();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
