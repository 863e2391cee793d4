//! Property tests: generated messages round-trip; arbitrary and mutated input never panics.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use medbus_hl7::{build_ack, escape, AckCode, AckError, Delimiters, ErrorCode, Message, Path};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "Z", "9", " ", "|", "^", "~", "\\", "&", "#", "é", "\u{fffd}", "\r", "\n", ".br",
            "X0D",
        ]),
        0..6,
    )
    .prop_map(|v| v.concat())
}

fn seg_id() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9]{2}".prop_filter("not MSH", |s| s != "MSH")
}

type Fields = Vec<Vec<Vec<String>>>; // field -> repetition -> component

fn segment() -> impl Strategy<Value = (String, Fields)> {
    (
        seg_id(),
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(text(), 1..4), 1..3),
            0..6,
        ),
    )
}

fn encode(id: &str, fields: &Fields, d: &Delimiters) -> String {
    let mut s = id.to_string();
    for f in fields {
        s.push('|');
        let reps: Vec<String> = f
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| escape(c, d).into_owned())
                    .collect::<Vec<_>>()
                    .join("^")
            })
            .collect();
        s.push_str(&reps.join("~"));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_messages_round_trip(
        segs in prop::collection::vec(segment(), 0..6),
        sep in prop::sample::select(vec!["\r", "\n", "\r\n"]),
        trailing in any::<bool>(),
        bom in any::<bool>(),
        charset in prop::sample::select(vec!["", "UNICODE UTF-8", "ASCII"]),
    ) {
        let d = Delimiters::default();
        let mut lines = vec![format!("MSH|^~\\&|APP|FAC|||20240101||ADT^A01|CTRL|P|2.5||||||{charset}")];
        for (id, fields) in &segs {
            lines.push(encode(id, fields, &d));
        }
        let mut text = lines.join(sep);
        if trailing {
            text.push_str(sep);
        }
        if bom {
            text.insert(0, '\u{feff}');
        }
        let m = Message::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(m.encode(), text.as_bytes());
        prop_assert_eq!(m.to_buf().encode(), text.as_bytes());
        prop_assert_eq!(m.segment_count(), segs.len() + 1);
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        for (id, fields) in &segs {
            let occ = seen.entry(id.as_str()).or_insert(0);
            *occ += 1;
            for (fi, f) in fields.iter().enumerate() {
                for (ri, r) in f.iter().enumerate() {
                    if r.len() == 1 && f.len() == 1 {
                        let p = format!("{id}({occ})-{}", fi + 1);
                        let got = m.get(&p).unwrap();
                        prop_assert_eq!(got.as_deref().unwrap_or(""), r[0].as_str(), "{}", p);
                    }
                    for (ci, c) in r.iter().enumerate() {
                        let p = format!("{id}({occ})-{}[{}].{}", fi + 1, ri + 1, ci + 1);
                        let got = m.get(&p).unwrap();
                        prop_assert_eq!(got.as_deref().unwrap_or(""), c.as_str(), "{}", p);
                    }
                }
            }
        }
    }

    #[test]
    fn buf_set_then_get(value in text(), field in 1usize..8, rep in 1usize..3, comp in 1usize..4) {
        let src = b"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|CTRL|P|2.5\rPID|1||a^b~c\r";
        let mut b = medbus_hl7::MessageBuf::parse(src).unwrap();
        let p: Path = format!("PID-{field}[{rep}].{comp}").parse().unwrap();
        b.set(&p, &value);
        let expect = if value.is_empty() { None } else { Some(value.clone()) };
        prop_assert_eq!(b.get(&p), expect.clone());
        let enc = b.encode();
        let m = Message::parse(&enc).unwrap();
        prop_assert_eq!(m.get_path(&p).map(|c| c.into_owned()), expect);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    #[test]
    fn msh_prefixed_bytes_never_panic(tail in prop::collection::vec(
        prop::sample::select(b"|^~\\&#\r\nMSHPIDOBX0123 \xe9\xc3".to_vec()), 0..300)) {
        let mut bytes = b"MSH|^~\\&|".to_vec();
        bytes.extend(tail);
        exercise(&bytes);
    }

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let files = corpus();
        let mut bytes = std::fs::read(pick.get(files)).unwrap();
        for (at, b, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = b,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, b),
            }
        }
        exercise(&bytes);
    }
}

fn exercise(bytes: &[u8]) {
    let paths = [
        "MSH-1",
        "MSH-2",
        "MSH-2.2",
        "MSH-9.2",
        "MSH-10",
        "MSH-18",
        "PID-3",
        "PID-3[2].1",
        "PID-5.1.1",
        "OBX(2)-5",
        "OBX-5.1.2",
        "ZZZ-999",
    ];
    let err = AckError::new(ErrorCode::ApplicationInternalError, "x|y");
    match Message::parse(bytes) {
        Ok(m) => {
            for p in paths {
                let _ = m.get(p).unwrap();
            }
            let _ = m.header().message_type();
            let _ = build_ack(&m, AckCode::AE, Some(&err), "C", "T");
            assert_eq!(m.encode(), bytes);
            assert_eq!(m.to_buf().encode(), bytes);
            for s in m.segments() {
                for f in s.fields() {
                    for r in f.repetitions() {
                        for c in r.components() {
                            for sc in c.subcomponents() {
                                let _ = sc.decoded();
                            }
                        }
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = medbus_hl7::build_ack_for_unparsed(AckCode::AR, &AckError::from(&e), "C", "T");
        }
    }
    let _ = medbus_hl7::split_messages(bytes);
}

/// The corpus files, listed once for all cases.
fn corpus() -> &'static [PathBuf] {
    static FILES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    FILES.get_or_init(medbus_tests::corpus_files)
}
