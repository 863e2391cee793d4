//! Parse + convert + serialise throughput for ADT^A01 and ORU^R01 corpus messages
//! (target: ≥ 50,000 messages/s on one core).
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use medbus_fhir::{convert_bytes, ConvertOptions};

fn input(name: &str) -> Vec<u8> {
    std::fs::read(
        medbus_tests::corpus_dir()
            .join("microsoft-fhir-converter/input")
            .join(name),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let opts = ConvertOptions::default();
    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(1));
    for name in [
        "ADT01-28.hl7",
        "ADT-A01-02.hl7",
        "ADT-A01-01.hl7",
        "LAB-ORU-1.hl7",
        "ORU-R01-RMGEAD.hl7",
        "ORU-R01-01.hl7",
    ] {
        let bytes = input(name);
        convert_bytes(&bytes, &opts).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| convert_bytes(black_box(&bytes), &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
