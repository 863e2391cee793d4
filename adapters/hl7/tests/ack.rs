//! ACK layout, byte for byte.
#![allow(clippy::unwrap_used)]

use medbus_hl7::{
    build_ack, build_ack_for_unparsed, AckCode, AckError, ErrorCode, Location, Message,
};

fn s(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

const V25: &[u8] = b"MSH|^~\\&|SAPP^x|SFAC|RAPP|RFAC|20240101120000||ADT^A01^ADT_A01|MSG001|P|2.5\rEVN|A01\rPID|1||123\r";

/// MSH-12 is required: an ACK to a message without one says 2.5, the
/// version it is then laid out in.
#[test]
fn a_message_without_a_version_gets_an_ack_with_one() {
    let m = Message::parse_header_only(
        b"MSH|^~\\&|S|F|R|F|20240101120000||ADT^A01|NOVER|P\rPID|1||1\r",
    )
    .unwrap();
    let ack = build_ack(&m, AckCode::AR, None, "ACK002", "20240101120001");
    assert_eq!(
        s(ack),
        "MSH|^~\\&|R|F|S|F|20240101120001||ACK^A01^ACK|ACK002|P|2.5\rMSA|AR|NOVER\r"
    );
}

#[test]
fn aa_v25() {
    let m = Message::parse(V25).unwrap();
    let ack = build_ack(&m, AckCode::AA, None, "ACK001", "20240101120001");
    assert_eq!(
        s(ack),
        "MSH|^~\\&|RAPP|RFAC|SAPP^x|SFAC|20240101120001||ACK^A01^ACK|ACK001|P|2.5\rMSA|AA|MSG001\r"
    );
}

#[test]
fn ae_v25_with_location() {
    let m = Message::parse(V25).unwrap();
    let err = AckError {
        code: ErrorCode::RequiredFieldMissing,
        location: Some(Location::field("PID", 1, 5)),
        text: "PID-5 missing | bad".into(),
    };
    let ack = build_ack(&m, AckCode::AE, Some(&err), "ACK002", "20240101120001");
    assert_eq!(
        s(ack),
        "MSH|^~\\&|RAPP|RFAC|SAPP^x|SFAC|20240101120001||ACK^A01^ACK|ACK002|P|2.5\r\
         MSA|AE|MSG001|PID-5 missing \\F\\ bad\r\
         ERR||PID^1^5|101^Required field missing^HL70357|E||||PID-5 missing \\F\\ bad\r"
    );
    // no location: ERR-2 empty
    let err = AckError::new(ErrorCode::ApplicationInternalError, "boom");
    let ack = build_ack(&m, AckCode::AR, Some(&err), "A3", "T");
    assert!(s(ack)
        .ends_with("MSA|AR|MSG001|boom\rERR|||207^Application internal error^HL70357|E||||boom\r"));
    // AA with an error: MSA-3 but no ERR
    let ack = build_ack(&m, AckCode::AA, Some(&err), "A4", "T");
    assert!(s(ack).ends_with("MSA|AA|MSG001|boom\r"));
}

#[test]
fn ae_v23() {
    let src =
        b"MSH|^~\\&|SAPP|SFAC|RAPP|RFAC|20240101||ORU^R01|X9|T|2.3.1||||||UNICODE UTF-8\rPID|1\r";
    let m = Message::parse(src).unwrap();
    let err = AckError {
        code: ErrorCode::DataTypeError,
        location: Some(Location::field("OBX", 2, 5)),
        text: "bad value".into(),
    };
    let ack = build_ack(&m, AckCode::CE, Some(&err), "C1", "20240102");
    assert_eq!(
        s(ack),
        "MSH|^~\\&|RAPP|RFAC|SAPP|SFAC|20240102||ACK^R01^ACK|C1|T|2.3.1||||||UNICODE UTF-8\r\
         MSA|CE|X9|bad value\r\
         ERR|OBX^2^5^102&Data type error&HL70357\r"
    );
}

#[test]
fn no_trigger_and_custom_delimiters() {
    let src = b"MSH*:+!%*S*F*R*G*2024**ACK*ID7*P*2.4\r";
    let m = Message::parse(src).unwrap();
    let ack = build_ack(&m, AckCode::CA, None, "Z", "2025");
    assert_eq!(s(ack), "MSH*:+!%*R*G*S*F*2025**ACK*Z*P*2.4\rMSA*CA*ID7\r");
}

#[test]
fn from_parse_error_and_unparsed() {
    let e = Message::parse(b"MSH|^~\\&|A||||||ADT^A01|1|P|").unwrap_err();
    let ae = AckError::from(&e);
    assert_eq!(ae.code, ErrorCode::RequiredFieldMissing);
    assert_eq!(ae.location, Some(Location::field("MSH", 1, 12)));
    let ack = build_ack_for_unparsed(AckCode::AR, &ae, "N1", "20240101");
    assert_eq!(
        s(ack),
        format!(
            "MSH|^~\\&|||||20240101||ACK|N1|P|2.5\rMSA|AR||{t}\rERR||MSH^1^12|101^Required field missing^HL70357|E||||{t}\r",
            t = ae.text
        )
    );
    let ack = build_ack_for_unparsed(
        AckCode::AR,
        &AckError::new(ErrorCode::SegmentSequenceError, "x"),
        "N2",
        "T",
    );
    assert!(s(ack).ends_with("ERR|||100^Segment sequence error^HL70357|E||||x\r"));
}

#[test]
fn ack_parses_back() {
    let m = Message::parse(V25).unwrap();
    let err = AckError {
        code: ErrorCode::DataTypeError,
        location: Some(Location {
            repetition: Some(2),
            component: Some(1),
            ..Location::field("PID", 1, 3)
        }),
        text: "t".into(),
    };
    let ack = build_ack(&m, AckCode::AE, Some(&err), "A", "T");
    let a = Message::parse(&ack).unwrap();
    assert_eq!(a.header().message_type(), "ACK^A01");
    assert_eq!(a.get("MSA-2").unwrap().as_deref(), Some("MSG001"));
    assert_eq!(a.get("ERR-2").unwrap().as_deref(), Some("PID^1^3^2^1"));
    assert_eq!(a.get("ERR-3.1").unwrap().as_deref(), Some("102"));
}
