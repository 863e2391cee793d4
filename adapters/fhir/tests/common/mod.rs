//! Shared helpers for the integration tests: corpus location and file walking.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// `$MEDBUS_CORPUS`, else `../shared/corpus` beside the workspace.
pub fn corpus() -> PathBuf {
    std::env::var_os("MEDBUS_CORPUS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/corpus"
            ))
        },
        PathBuf::from,
    )
}

/// Every `.hl7` file under `dir`, sorted.
pub fn hl7_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "hl7") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// A corpus file by name under `microsoft-fhir-converter/input`.
pub fn ms_input(name: &str) -> Vec<u8> {
    std::fs::read(corpus().join("microsoft-fhir-converter/input").join(name)).unwrap()
}
