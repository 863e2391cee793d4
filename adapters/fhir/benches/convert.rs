//! Parse + convert + serialise throughput for ADT^A01 and ORU^R01 corpus messages
//! (target: ≥ 50,000 messages/s on one core).
//!
//! `convert/<file>` times single samples, from the smallest (`ADT01-28`, 0.5 KiB) to the
//! largest (`ADT-A01-01`, 8.4 KiB, 29 resources). `corpus-mix` converts every ADT^A01 and
//! ORU^R01 message of the corpus that maps to a Bundle, in turn (17 messages, 0.5–10 KiB), and
//! reports messages/s over the whole set.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use medbus_fhir::{convert_bytes, ConvertOptions};

/// The allocator `medbus` runs with (broker/src/main.rs), so the figures are the converter's
/// as the broker runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Every corpus message whose MSH-9 is ADT^A01 or ORU^R01 and that maps to a Bundle, sorted
/// by path.
fn corpus_mix() -> Vec<(String, Vec<u8>)> {
    let root = medbus_tests::corpus_dir();
    let mut out = Vec::new();
    for dir in [
        "microsoft-fhir-converter/input",
        "linuxforhealth",
        "hl7-v2-to-fhir-ig",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("hl7") {
                continue;
            }
            let bytes = read(&path);
            let Ok(msg) = medbus_hl7::Message::parse(&bytes) else {
                continue;
            };
            let code = msg.get("MSH-9.1").ok().flatten().unwrap_or_default();
            let trigger = msg.get("MSH-9.2").ok().flatten().unwrap_or_default();
            let wanted = matches!(
                (code.as_ref(), trigger.as_ref()),
                ("ADT", "A01") | ("ORU", "R01")
            );
            // One LinuxForHealth sample has no PID-3: it goes to `dlq.fhir`, not into a Bundle.
            if wanted && convert_bytes(&bytes, &ConvertOptions::default()).is_ok() {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let opts = ConvertOptions::default();
    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(1));
    let dir = medbus_tests::corpus_dir().join("microsoft-fhir-converter/input");
    for name in [
        "ADT01-28.hl7",
        "ADT-A01-02.hl7",
        "ADT-A01-01.hl7",
        "LAB-ORU-1.hl7",
        "ORU-R01-RMGEAD.hl7",
        "ORU-R01-01.hl7",
    ] {
        let bytes = read(&dir.join(name));
        convert_bytes(&bytes, &opts).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| convert_bytes(black_box(&bytes), &opts).unwrap())
        });
    }
    g.finish();

    let mix = corpus_mix();
    assert!(
        mix.len() >= 10,
        "corpus mix has only {} messages",
        mix.len()
    );
    let mut g = c.benchmark_group("corpus-mix");
    g.throughput(Throughput::Elements(mix.len() as u64));
    g.bench_function("ADT^A01+ORU^R01", |b| {
        b.iter(|| {
            for (_, bytes) in &mix {
                black_box(convert_bytes(black_box(bytes), &opts).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
