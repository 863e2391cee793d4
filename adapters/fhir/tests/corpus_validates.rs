//! The gate: every corpus message converts, and every Bundle validates as FHIR R4 with
//! fhir.resources 6.4.0 plus our own code-value checks (`tests/peers/validate_fhir.py`), run
//! as a real child process with the peers venv scripts/test creates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Messages the converter must refuse (they go to `dlq.fhir`), with the start of the reason.
const EXPECTED_ERRORS: &[(&str, &str)] = &[(
    // PID carries no identifier at all (only PID-9): no stable Patient id can be made.
    "LFH-ORU_R01-test_nte_split_print_structure_on_dash.hl7",
    "PID-3 is required",
)];

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn python() -> PathBuf {
    let peers = std::env::var_os("MEDBUS_PEERS")
        .map_or_else(|| workspace().join("target/peers"), PathBuf::from);
    let py = peers.join("fhir/bin/python");
    assert!(
        py.exists(),
        "the FHIR validator venv is missing at {}: run scripts/test (it installs \
         fhir.resources==6.4.0 into target/peers/fhir)",
        py.display()
    );
    py
}

/// Validate bundles (JSON lines) with the peer script; returns index → error.
pub fn validate(lines: &[Vec<u8>]) -> Vec<(usize, String)> {
    let mut child = Command::new(python())
        .arg(workspace().join("tests/peers/validate_fhir.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the validator");
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            stdin.write_all(l).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "validator failed: {:?}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("validator output");
    let map = v.as_object().expect("an object");
    assert_eq!(map.len(), lines.len(), "one verdict per bundle");
    map.iter()
        .filter(|(_, e)| !e.is_null())
        .map(|(i, e)| (i.parse().unwrap(), e.to_string()))
        .collect()
}

#[test]
fn every_corpus_message_yields_a_valid_fhir_r4_bundle() {
    python();
    let files = common::hl7_files(&common::corpus());
    assert!(files.len() >= 139, "corpus not found (set MEDBUS_CORPUS)");
    let opts = medbus_fhir::ConvertOptions::default();
    let mut bundles = Vec::new();
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(f).unwrap();
        let expected = EXPECTED_ERRORS.iter().find(|(n, _)| *n == name);
        match (medbus_fhir::convert_bytes(&bytes, &opts), expected) {
            (Ok(c), None) => {
                bundles.push(c.bundle_json);
                names.push(name);
            }
            (Err(e), Some((_, reason))) if e.to_string().starts_with(reason) => {}
            (Ok(_), Some(_)) => problems.push(format!("{name}: expected an error, converted")),
            (Err(e), _) => problems.push(format!("{name}: {e}")),
        }
    }
    for (i, err) in validate(&bundles) {
        problems.push(format!("{}: {err}", names[i]));
    }
    assert!(
        problems.is_empty(),
        "{} of {} messages failed:\n{}",
        problems.len(),
        files.len(),
        problems.join("\n")
    );
    eprintln!("{} bundles valid ({} files)", bundles.len(), files.len());
}

#[test]
fn bundles_with_a_site_time_zone_validate_too() {
    // With an offset configured, times written without one become full instants/dateTimes.
    let opts = medbus_fhir::ConvertOptions {
        time_zone: Some("+0100".into()),
        id_namespace: "site-a".into(),
        ..Default::default()
    };
    let files = common::hl7_files(&common::corpus().join("microsoft-fhir-converter/input"));
    let bundles: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            medbus_fhir::convert_bytes(&std::fs::read(f).unwrap(), &opts)
                .unwrap()
                .bundle_json
        })
        .collect();
    let errors = validate(&bundles);
    assert!(errors.is_empty(), "{errors:?}");
}
