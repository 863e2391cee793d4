//! Shared helpers for the integration tests: corpus location and file walking.
#![allow(dead_code, clippy::unwrap_used)]

// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use medbus_tests::{corpus_dir as corpus, hl7_files};

/// A corpus file by name under `microsoft-fhir-converter/input`.
pub fn ms_input(name: &str) -> Vec<u8> {
    std::fs::read(corpus().join("microsoft-fhir-converter/input").join(name)).unwrap()
}
