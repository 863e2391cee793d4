//! Same message, same bytes: converting twice (or with the message re-sent) yields identical
//! JSON and ids; another site namespace yields other ids; and random mutations of corpus
//! messages never panic the converter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use medbus_fhir::{convert_bytes, ConvertOptions};
use proptest::prelude::*;

#[test]
fn converting_twice_gives_identical_bytes() {
    let opts = ConvertOptions::default();
    for f in common::hl7_files(&common::corpus()) {
        let bytes = std::fs::read(&f).unwrap();
        let a = convert_bytes(&bytes, &opts);
        let b = convert_bytes(&bytes, &opts);
        assert_eq!(a, b, "{}", f.display());
        if let Ok(c) = a {
            // Resources are exactly the Bundle's entries.
            let v: serde_json::Value = serde_json::from_slice(&c.bundle_json).unwrap();
            let entries = v["entry"].as_array().unwrap();
            assert_eq!(entries.len(), c.resources.len());
            for (e, (t, id, json)) in entries.iter().zip(&c.resources) {
                assert_eq!(&e["resource"]["resourceType"], t.as_str());
                assert_eq!(&e["resource"]["id"], id.as_str());
                let r: serde_json::Value = serde_json::from_slice(json).unwrap();
                assert_eq!(e["resource"], r);
            }
        }
    }
}

/// A sender that reuses a control id (a counter restarted, or one id for
/// several events) still sends different messages: their Bundle,
/// MessageHeader, Provenance and message-scoped resources (an Encounter
/// without PV1-19) must not overwrite each other's. The same message re-sent
/// keeps its ids.
#[test]
fn a_reused_control_id_does_not_merge_different_messages() {
    let msg = |time: &str, event: &str, visit_class: &str| {
        format!(
            "MSH|^~\\&|ADM|HOSP|EHR|HOSP|{time}||ADT^{event}|MSG00001|P|2.5\r\
             PID|1||MRN-REUSE^^^HOSP^MR||Doe^Jane||19800101|F\r\
             PV1|1|{visit_class}\r"
        )
        .into_bytes()
    };
    let ids = |bytes: &[u8]| {
        convert_bytes(bytes, &ConvertOptions::default())
            .unwrap()
            .resources
            .into_iter()
            .map(|(t, id, _)| (t, id))
            .collect::<Vec<_>>()
    };
    let id_of = |all: &[(String, String)], t: &str| {
        all.iter()
            .find(|(rt, _)| rt == t)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no {t} in {all:?}"))
    };
    let a01 = ids(&msg("20240101120000", "A01", "I"));
    let a08 = ids(&msg("20240101120000", "A08", "O"));
    let next_day = ids(&msg("20240102120000", "A01", "E"));
    assert_eq!(
        a01,
        ids(&msg("20240101120000", "A01", "I")),
        "a resend keeps its ids"
    );
    for t in ["MessageHeader", "Encounter"] {
        assert_ne!(
            id_of(&a01, t),
            id_of(&a08, t),
            "{t}: A01 and A08 under one control id"
        );
        assert_ne!(
            id_of(&a01, t),
            id_of(&next_day, t),
            "{t}: a control id reused the next day"
        );
    }
    // The Patient is keyed by its identifier, not by the message.
    assert_eq!(id_of(&a01, "Patient"), id_of(&a08, "Patient"));
}

#[test]
fn ids_follow_the_site_namespace() {
    let bytes = common::ms_input("ADT-A01-01.hl7");
    let a = convert_bytes(&bytes, &ConvertOptions::default()).unwrap();
    let b = convert_bytes(
        &bytes,
        &ConvertOptions {
            id_namespace: "site-b".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let ids = |c: &medbus_fhir::Conversion| {
        c.resources
            .iter()
            .map(|r| r.1.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(ids(&a).is_disjoint(&ids(&b)));
}

#[test]
fn line_endings_do_not_change_the_output() {
    let lf = common::ms_input("ADT-A01-02.hl7");
    let cr: Vec<u8> = lf
        .iter()
        .map(|&b| if b == b'\n' { b'\r' } else { b })
        .collect();
    let opts = ConvertOptions::default();
    let (a, b) = (
        convert_bytes(&lf, &opts).unwrap(),
        convert_bytes(&cr, &opts).unwrap(),
    );
    assert_eq!(a.bundle_json, b.bundle_json);
}

fn seeds() -> Vec<Vec<u8>> {
    common::hl7_files(&common::corpus())
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        b"|".to_vec(),
        b"^".to_vec(),
        b"~".to_vec(),
        b"&".to_vec(),
        b"\\".to_vec(),
        b"\r".to_vec(),
        b"\"\"".to_vec(),
        b"99999999999999999999".to_vec(),
        b"20241332".to_vec(),
        b"-0.".to_vec(),
        b"\rOBX|1|NM|x||1.0.0\r".to_vec(),
        b"\rOBR|||\r".to_vec(),
        b"\rPID|||\r".to_vec(),
        b"\xff\xfe".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), special).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for mu in muts {
        if m.is_empty() {
            break;
        }
        match mu {
            Mutation::Flip(i, b) => {
                let i = i % m.len();
                m[i] = *b;
            }
            Mutation::Delete(i, n) => {
                let i = i % m.len();
                let end = (i + n).min(m.len());
                m.drain(i..end);
            }
            Mutation::Insert(i, s) => {
                let i = i % (m.len() + 1);
                m.splice(i..i, s.iter().copied());
            }
            Mutation::Duplicate(i, n) => {
                let i = i % m.len();
                let end = (i + n).min(m.len());
                let chunk = m[i..end].to_vec();
                m.splice(end..end, chunk);
            }
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_messages_never_panic(
        seed in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..8),
        tz in prop::option::of(prop::sample::select(vec!["+0100", "-0530", "Z"])),
    ) {
        let all = seeds();
        let msg = apply(seed.get(&all).clone(), &muts);
        let opts = ConvertOptions { time_zone: tz.map(str::to_string), ..Default::default() };
        if let Ok(c) = convert_bytes(&msg, &opts) {
            // Whatever converts is well-formed JSON.
            let v: serde_json::Value = serde_json::from_slice(&c.bundle_json).unwrap();
            prop_assert_eq!(&v["type"], "transaction");
        }
    }
}
