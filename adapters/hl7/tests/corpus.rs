//! Every `*.hl7` file of the shared corpus parses, round-trips byte-identically and has a control
//! id and message type. Corpus dir: `medbus_tests::corpus_dir` (`$MEDBUS_CORPUS` overrides).
#![allow(clippy::unwrap_used)]

use medbus_hl7::{build_ack, split_messages, AckCode, Message};
use medbus_tests::{corpus_dir, corpus_files};

/// Corpus files whose MSH-10 (message control id) is empty: LinuxForHealth unit-test messages.
const KNOWN_EMPTY_MSH10: [&str; 2] = [
    "LFH-ADT_A34-validateHappyPathADT_A34WithMRG.hl7",
    "LFH-OML_O21-testOMLO21WithPatientAndOrderWithPriorOrder.hl7",
];

#[test]
fn corpus_parses_and_round_trips() {
    let files = corpus_files();
    let mut messages = 0;
    let mut rejected = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let parts = split_messages(&bytes);
        assert_eq!(
            parts.len(),
            1,
            "{} holds {} messages",
            f.display(),
            parts.len()
        );
        for part in parts {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let m = Message::parse(part).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(m.encode(), part, "{}", f.display());
            assert_eq!(m.to_buf().encode(), part, "{}", f.display());
            let h = m.header();
            // These violate "MSH-10 is required" and are accepted anyway.
            let empty_control_id = h.control_id.as_deref().is_none_or(str::is_empty);
            assert_eq!(
                empty_control_id,
                KNOWN_EMPTY_MSH10.contains(&name),
                "{name}"
            );
            if empty_control_id {
                rejected += 1;
            }
            assert!(!h.message_type().is_empty());
            assert!(h.message_code.is_some());
            // every segment and field is reachable without panics
            for seg in m.segments() {
                for field in seg.fields() {
                    for rep in field.repetitions() {
                        for comp in rep.components() {
                            let _ = comp.decoded();
                        }
                    }
                }
            }
            let ack = build_ack(&m, AckCode::AA, None, "X", "20240101");
            let a = Message::parse(&ack).unwrap();
            assert_eq!(a.get("MSA-2").unwrap(), h.control_id);
            messages += 1;
        }
    }
    assert!(messages >= 160, "only {messages} corpus messages");
    assert_eq!(rejected, KNOWN_EMPTY_MSH10.len());
}

#[test]
fn corpus_edge_cases() {
    let dir = corpus_dir();
    let read = |p: &str| std::fs::read(dir.join(p)).ok();
    if let Some(b) = read("hl7-v2-to-fhir-ig/IG-test-ORU_R01.hl7") {
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.delimiters().truncation, Some(b'#'));
    }
    if let Some(b) = read("linuxforhealth/LFH-resource-sample_unix.hl7") {
        // MSH-2 `^~\\&` (doubled escape) is tolerated
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.delimiters(), medbus_hl7::Delimiters::default());
    }
}
