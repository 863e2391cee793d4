//! Convert HL7 v2 files to FHIR Bundles, one JSON line per message (a development aid until
//! `medbus convert` exists): `cargo run -p medbus-fhir --example convert -- FILE…`.
#![allow(clippy::unwrap_used)]

use std::io::Write;

fn main() {
    let opts = medbus_fhir::ConvertOptions::default();
    let mut out = std::io::stdout().lock();
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap();
        match medbus_fhir::convert_bytes(&bytes, &opts) {
            Ok(c) => {
                out.write_all(&c.bundle_json).unwrap();
                out.write_all(b"\n").unwrap();
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
