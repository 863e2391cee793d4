//! Unit tests for [`Message`] parsing rules and navigation.

use super::*;

const ADT: &str = "MSH|^~\\&|SENDAPP^X|SENDFAC|RECVAPP|RECVFAC|20240102030405||ADT^A01^ADT_A01|CTRL1|P^T|2.5.1|||AL|NE||\r\
EVN|A01|20240102\r\
PID|1||123^^^HOSP^MR~456^^^OTHER||DOE^JOHN^Q||19800101|M\r\
OBX|1|ST|X^Y||first\r\
OBX|2|FT|X^Y||sec\\F\\ond&sub1&sub2^c2\r";

fn parse(s: &str) -> Message<'_> {
    Message::parse(s.as_bytes()).unwrap()
}

fn err(b: &[u8]) -> ParseError {
    Message::parse(b).unwrap_err()
}

#[test]
fn header_fields() {
    let m = parse(ADT);
    let h = m.header();
    assert_eq!(h.sending_application.as_deref(), Some("SENDAPP"));
    assert_eq!(h.sending_facility.as_deref(), Some("SENDFAC"));
    assert_eq!(h.receiving_application.as_deref(), Some("RECVAPP"));
    assert_eq!(h.receiving_facility.as_deref(), Some("RECVFAC"));
    assert_eq!(h.timestamp.as_deref(), Some("20240102030405"));
    assert_eq!(h.message_code.as_deref(), Some("ADT"));
    assert_eq!(h.trigger_event.as_deref(), Some("A01"));
    assert_eq!(h.message_structure.as_deref(), Some("ADT_A01"));
    assert_eq!(h.control_id.as_deref(), Some("CTRL1"));
    assert_eq!(h.processing_id.as_deref(), Some("P"));
    assert_eq!(h.version.as_deref(), Some("2.5.1"));
    assert_eq!(h.accept_ack_type.as_deref(), Some("AL"));
    assert_eq!(h.application_ack_type.as_deref(), Some("NE"));
    assert_eq!(h.charset, None);
    assert_eq!(h.message_type(), "ADT^A01");
    let h2 = Header {
        trigger_event: None,
        ..h
    };
    assert_eq!(h2.message_type(), "ADT");
}

#[test]
fn msh_numbering() {
    let m = parse(ADT);
    let msh = m.msh().unwrap();
    assert_eq!(msh.id(), "MSH");
    assert_eq!(msh.field(1).unwrap().raw(), b"|");
    assert_eq!(msh.field(2).unwrap().raw(), b"^~\\&");
    // MSH-2 is never split or unescaped
    assert_eq!(msh.field(2).unwrap().decoded(), "^~\\&");
    assert!(msh.field(2).unwrap().component(2).is_none());
    assert_eq!(m.get("MSH-2").unwrap().as_deref(), Some("^~\\&"));
    assert_eq!(m.get("MSH-2.1").unwrap().as_deref(), Some("^~\\&"));
    assert_eq!(m.get("MSH-1").unwrap().as_deref(), Some("|"));
    assert_eq!(m.get("MSH-3").unwrap().as_deref(), Some("SENDAPP^X"));
    assert_eq!(m.get("MSH-3.2").unwrap().as_deref(), Some("X"));
    assert_eq!(m.get("MSH-9.3").unwrap().as_deref(), Some("ADT_A01"));
    assert_eq!(msh.field(0).map(|f| f.raw()), None);
    assert_eq!(msh.field_count(), 18);
}

#[test]
fn paths_navigate() {
    let m = parse(ADT);
    assert_eq!(m.get("PID-1").unwrap().as_deref(), Some("1"));
    assert_eq!(m.get("PID-3").unwrap().as_deref(), Some("123^^^HOSP^MR"));
    assert_eq!(m.get("PID-3[2]").unwrap().as_deref(), Some("456^^^OTHER"));
    assert_eq!(m.get("PID-3[2].1").unwrap().as_deref(), Some("456"));
    assert_eq!(m.get("PID-3[2].4").unwrap().as_deref(), Some("OTHER"));
    assert_eq!(m.get("PID-3[3]").unwrap(), None);
    assert_eq!(m.get("PID-3.2").unwrap(), None); // empty component
    assert_eq!(m.get("PID-2").unwrap(), None); // empty field
    assert_eq!(m.get("PID-99").unwrap(), None); // absent field
    assert_eq!(m.get("OBX-5").unwrap().as_deref(), Some("first"));
    assert_eq!(
        m.get("OBX(2)-5").unwrap().as_deref(),
        Some("sec|ond&sub1&sub2^c2")
    );
    assert_eq!(
        m.get("OBX(2)-5.1").unwrap().as_deref(),
        Some("sec|ond&sub1&sub2")
    );
    assert_eq!(m.get("OBX(2)-5.1.1").unwrap().as_deref(), Some("sec|ond"));
    assert_eq!(m.get("OBX(2)-5.1.3").unwrap().as_deref(), Some("sub2"));
    assert_eq!(m.get("OBX(2)-5.2").unwrap().as_deref(), Some("c2"));
    assert_eq!(m.get("OBX(3)-5").unwrap(), None);
    assert_eq!(m.get("ZZZ-1").unwrap(), None);
    assert!(m.get("bad").is_err());
    let p: Path = "OBX(2)-5.1.1".parse().unwrap();
    assert_eq!(m.raw(&p), Some(&b"sec\\F\\ond"[..]));
    assert_eq!(m.raw(&"PID-2".parse().unwrap()), Some(&b""[..]));
    assert_eq!(m.raw(&"PID-50".parse().unwrap()), None);
}

#[test]
fn typed_navigation() {
    let m = parse(ADT);
    let pid = m.segment("PID", 1).unwrap();
    assert_eq!(pid.id(), "PID");
    assert!(pid.raw().starts_with(b"PID|1||123"));
    let f = pid.field(3).unwrap();
    assert_eq!(f.repetitions().count(), 2);
    let r = f.repetition(2).unwrap();
    assert_eq!(r.raw(), b"456^^^OTHER");
    assert_eq!(r.component(4).unwrap().decoded(), "OTHER");
    assert_eq!(r.components().count(), 4);
    assert!(f.repetition(0).is_none());
    assert!(f.repetition(3).is_none());
    let obx2 = m.segment("OBX", 2).unwrap();
    let c = obx2.field(5).unwrap().component(1).unwrap();
    assert_eq!(c.subcomponent(2).unwrap().raw(), b"sub1");
    assert_eq!(c.subcomponents().count(), 3);
    assert!(m.segment("OBX", 0).is_none());
    assert!(m.segment("OBX", 3).is_none());
    assert_eq!(m.segments().count(), 5);
    assert_eq!(
        m.segments().map(|s| s.id()).collect::<Vec<_>>(),
        ["MSH", "EVN", "PID", "OBX", "OBX"]
    );
    assert_eq!(pid.fields().count(), pid.field_count());
}

#[test]
fn fields_match_field() {
    let m = parse(ADT);
    let extra = [
        Segment::new(b"MSH", m.delimiters(), m.charset()),
        Segment::new(b"MSH|", m.delimiters(), m.charset()),
        Segment::new(b"ZZZ", m.delimiters(), m.charset()),
        Segment::new(b"ZZZ|", m.delimiters(), m.charset()),
    ];
    for seg in m.segments().chain(extra) {
        let all: Vec<Field<'_>> = seg.fields().collect();
        let one_by_one: Vec<Field<'_>> = (1..=seg.field_count())
            .filter_map(|n| seg.field(n))
            .collect();
        assert_eq!(all.len(), one_by_one.len(), "{}", seg.id());
        for (f, g) in all.iter().zip(&one_by_one) {
            assert_eq!(f.raw(), g.raw());
            assert_eq!(f.decoded(), g.decoded());
            assert_eq!(f.repetitions().count(), g.repetitions().count());
        }
        assert!(seg.field(all.len() + 1).is_none());
    }
}

#[test]
fn separators() {
    for sep in ["\r", "\n", "\r\n"] {
        let text = ADT.replace('\r', sep);
        let m = parse(&text);
        assert_eq!(m.segment_count(), 5, "{sep:?}");
        assert_eq!(m.get("OBX(2)-1").unwrap().as_deref(), Some("2"));
        assert_eq!(m.encode(), text.as_bytes());
    }
    // mixed, with blank lines and no trailing separator
    let mixed = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\r\nEVN|A01\nPID|1\r\r\n  \n\tOBX|1\rNTE|x";
    let err = Message::parse(mixed.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::SegmentSequenceError);
    let mixed = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\r\nEVN|A01\nPID|1\r\r\n  \n\rOBX|1\rNTE|x";
    let m = parse(mixed);
    assert_eq!(
        m.segments().map(|s| s.id()).collect::<Vec<_>>(),
        ["MSH", "EVN", "PID", "OBX", "NTE"]
    );
    assert_eq!(m.get("NTE-1").unwrap().as_deref(), Some("x"));
    assert_eq!(m.encode(), mixed.as_bytes());
    assert_eq!(m.to_buf().encode(), mixed.as_bytes());
}

#[test]
fn bom_and_blank_lines() {
    let text = format!("\u{feff}\r\n\n{ADT}\n\n  \r\n");
    let m = parse(&text);
    assert!(m.has_bom());
    assert_eq!(m.segment_count(), 5);
    assert_eq!(m.header().control_id.as_deref(), Some("CTRL1"));
    assert_eq!(m.encode(), text.as_bytes());
    assert_eq!(m.to_buf().encode(), text.as_bytes());
}

#[test]
fn segment_with_only_id() {
    let m = parse("MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rZZZ\rPID|1");
    assert_eq!(m.segment("ZZZ", 1).unwrap().field_count(), 0);
    assert!(m.segment("ZZZ", 1).unwrap().field(1).is_none());
}

#[test]
fn bad_segment_ids() {
    for (bad, idx) in [
        ("pid|1", 2),
        ("PI|1", 2),
        ("PIDX|1", 2),
        ("1ID|1", 2),
        ("PID^1", 2),
        ("P", 2),
    ] {
        let text = format!("MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rEVN|x\r{bad}\r");
        let e = err(text.as_bytes());
        assert_eq!(e.code, ErrorCode::SegmentSequenceError, "{bad}");
        assert_eq!(e.code.code(), 100);
        let loc = e.location.unwrap();
        assert_eq!(loc.sequence, idx + 1, "{bad}");
    }
    let e = err(b"PID|1\rMSH|^~\\&|A||||||ADT^A01|1|P|2.5");
    assert_eq!(e.code, ErrorCode::SegmentSequenceError);
    assert_eq!(e.location.unwrap().segment, "PID");
    // Bytes that are not HL7: the location is where the MSH should be.
    let e = err(b"hello world");
    assert_eq!(e.location.unwrap().segment, "MSH");
    assert_eq!(err(b"").code, ErrorCode::SegmentSequenceError);
    assert_eq!(err(b"\r\n \n").code, ErrorCode::SegmentSequenceError);
    assert_eq!(err(b"\xEF\xBB\xBF").code, ErrorCode::SegmentSequenceError);
}

#[test]
fn required_msh_fields() {
    // MSH-10 is required by the standard but accepted when empty.
    assert!(Message::parse(b"MSH|^~\\&|A||||||ADT^A01||P|2.5").is_ok());
    let cases: [(&str, u32); 4] = [
        ("MSH|^~\\&|A||||||^A01|1|P|2.5", 9),
        ("MSH|^~\\&|A|||||||1|P|2.5", 9),
        ("MSH|^~\\&|A||||||ADT^A01|1|P", 12),
        ("MSH|^~\\&|A||||||ADT^A01|1|P|", 12),
    ];
    for (text, field) in cases {
        let e = err(text.as_bytes());
        assert_eq!(e.code, ErrorCode::RequiredFieldMissing, "{text}");
        assert_eq!(e.location, Some(Location::field("MSH", 1, field)), "{text}");
    }
    assert_eq!(
        err(b"MSH|^~\\&").location,
        Some(Location::field("MSH", 1, 9))
    );
}

#[test]
fn delimiters_from_msh2() {
    let m = parse("MSH|^~\\&#|A||||||ADT^A01|1|P|2.7\rPID|1||a#b^c");
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.get("PID-3.1").unwrap().as_deref(), Some("a#b"));
    let m = parse("MSH*:+!%*A******ADT:A01*1*P*2.5\rPID*1**a:b%c+d!F!e!S!f");
    let d = m.delimiters();
    assert_eq!((d.field, d.component, d.repetition), (b'*', b':', b'+'));
    assert_eq!((d.escape, d.subcomponent), (Some(b'!'), b'%'));
    assert_eq!(m.header().message_type(), "ADT^A01");
    assert_eq!(m.get("PID-3.2.2").unwrap().as_deref(), Some("c"));
    assert_eq!(m.get("PID-3[2]").unwrap().as_deref(), Some("d*e:f"));
    let e = err(b"MSH|^^\\&|A||||||ADT^A01|1|P|2.5");
    assert_eq!(e.code, ErrorCode::DataTypeError);
    assert_eq!(e.location, Some(Location::field("MSH", 1, 2)));
}

#[test]
fn charsets() {
    let latin = b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5||||||8859/1\rPID|1||||Ren\xe9";
    let m = Message::parse(latin).unwrap();
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.get("PID-5").unwrap().as_deref(), Some("René"));
    assert_eq!(m.header().charset.as_deref(), Some("8859/1"));

    let bad_utf8 = b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||||Ren\xe9";
    let e = err(bad_utf8);
    assert_eq!(e.code, ErrorCode::DataTypeError);
    assert_eq!(e.location, Some(Location::segment("PID", 2)));

    let utf8 = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||||René";
    let m = parse(utf8);
    assert_eq!(m.charset(), Charset::Utf8);
    assert!(matches!(
        m.get("PID-5").unwrap(),
        Some(Cow::Borrowed("René"))
    ));

    // empty MSH-18: lenient — UTF-8 when valid, else Latin-1
    let m = parse("MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rPID|1||||René");
    assert_eq!(m.charset(), Charset::Ascii);
    assert_eq!(m.get("PID-5").unwrap().as_deref(), Some("René"));
    let m =
        Message::parse(b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5||||||ASCII\rPID|1||||Ren\xe9").unwrap();
    assert_eq!(m.get("PID-5").unwrap().as_deref(), Some("René"));

    let e = err(b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5||||||ISO IR87\r");
    assert_eq!(e.code, ErrorCode::DataTypeError);
    assert_eq!(e.location, Some(Location::field("MSH", 1, 18)));
    assert!(
        e.message.contains("unsupported character set"),
        "{}",
        e.message
    );
}

#[test]
fn escapes_in_fields() {
    let m = parse(
        "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rNTE|1||a\\T\\b\\R\\c\\E\\d\\.br\\e\\X41\\\\H\\x\\N\\",
    );
    assert_eq!(
        m.get("NTE-3").unwrap().as_deref(),
        Some("a&b~c\\d\\.br\\eA\\H\\x\\N\\")
    );
    assert!(matches!(m.get("NTE-1").unwrap(), Some(Cow::Borrowed("1"))));
}

#[test]
fn too_many_segments() {
    let mut text = b"MSH|^~\\&|A||||||ADT^A01|1|P|2.5\r".to_vec();
    for _ in 0..crate::MAX_SEGMENTS {
        text.extend_from_slice(b"NTE\r");
    }
    let e = err(&text);
    assert_eq!(e.code, ErrorCode::SegmentSequenceError);
    assert!(e.message.contains("more than"));
}

#[test]
fn located_fields_match_scanned_fields() {
    let samples: [&[u8]; 4] = [
        b"MSH|^~\\&|app|fac|||20240101||ADT^A01|1|P|2.5\rPID|||123^^^H||Doe^J\rZZZ\rOBX|\r",
        b"MSH|^~\\&\rPID||||||||||||||||||||\r",
        b"MSH|^~\\&|a\rNTE|1||a|b|c\r",
        b"MSH|^~\\&\rPID\r",
    ];
    for bytes in samples {
        let m = Message::parse_with(bytes, false).unwrap();
        for seg in m.segments() {
            let mut seps = vec![7, 7];
            seg.locate_fields(&mut seps);
            let seps = &seps[2..];
            for n in 0..30 {
                let a = seg.field(n).map(|f| (f.raw(), f.decoded()));
                let b = seg.located_field(seps, n).map(|f| (f.raw(), f.decoded()));
                assert_eq!(a, b, "{} field {n}", seg.id());
            }
        }
    }
}
