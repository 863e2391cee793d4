//! Durable MLLP ingest over real sockets, a real data directory and
//! third-party peers: python-hl7's `mllp_send` sends the corpus, hl7apy
//! builds messages and validates our ACKs strictly.

use medbus_tests::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// MSH-10 of a raw message, read naively (delimiter from MSH-1).
fn control_id(raw: &[u8]) -> String {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let sep = raw.get(3).copied().unwrap_or(b'|') as char;
    let text = String::from_utf8_lossy(raw);
    let msh = text.split(['\r', '\n']).next().unwrap_or("");
    msh.split(sep).nth(9).unwrap_or("").to_string()
}

/// Validate ACKs with hl7apy; returns name → error for the ones that fail.
/// Each item: (name, ACK, the message it answers).
fn hl7apy_failures(acks: &[(String, String, String)]) -> HashMap<String, String> {
    let items: Vec<serde_json::Value> = acks
        .iter()
        .map(|(n, a, o)| serde_json::json!({"name": n, "ack": a, "original": o}))
        .collect();
    let mut child = Command::new(peer("hl7", "python"))
        .arg(peer_script("validate_acks.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hl7apy validator");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&items).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("validator output");
    assert!(out.status.success(), "validator crashed");
    let result: HashMap<String, Option<String>> =
        serde_json::from_slice(&out.stdout).expect("validator JSON");
    assert_eq!(result.len(), acks.len(), "validator skipped ACKs");
    result
        .into_iter()
        .filter_map(|(k, v)| v.map(|e| (k, e)))
        .collect()
}

/// Run `mllp_send` on an MLLP-framed file; returns the ACK frames it printed.
fn mllp_send(port: u16, framed_file: &std::path::Path) -> Vec<Vec<u8>> {
    let out = Command::new("timeout")
        .arg("60")
        .arg(peer("hl7", "mllp_send"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-f")
        .arg(framed_file)
        .arg("127.0.0.1")
        .output()
        .expect("run mllp_send");
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut acks = Vec::new();
    let mut rest = &out.stdout[..];
    while let Some(start) = rest.iter().position(|&b| b == 0x0b) {
        let Some(end) = rest[start..].windows(2).position(|w| w == [0x1c, 0x0d]) else {
            break;
        };
        acks.push(rest[start + 1..start + end].to_vec());
        rest = &rest[start + end + 2..];
    }
    acks
}

#[test]
fn every_corpus_message_sent_by_mllp_send_is_acked_stored_and_valid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    // 10 corpus messages set MSH-15 to NE or ER, which by default (and by
    // the standard) means no ACK on success; mllp_send waits for one, so
    // this listener answers in original mode whatever MSH-15 says. The
    // enhanced-mode behaviour has its own test (destinations.rs).
    let broker = Broker::start(
        &listener_config("corpus", "acknowledgments = \"original\""),
        &data,
    );
    let port = broker.mllp("corpus").port();
    let files = corpus_files();

    // Each file as it is (LF separators, BOMs and all), MLLP-framed, so that
    // mllp_send sends the corpus bytes untouched.
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();
    let mut acks: Vec<(String, String, String)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let raw = std::fs::read(file).expect("read corpus file");
        // mllp_send strips CR and start blocks from both ends of a frame.
        let body: Vec<u8> = {
            let mut b = &raw[..];
            while let [rest @ .., b'\r'] = b {
                b = rest;
            }
            b.to_vec()
        };
        let framed = tmp.path().join(format!("{i}.mllp"));
        let mut f = vec![0x0b];
        f.extend_from_slice(&body);
        f.extend_from_slice(&[0x1c, 0x0d]);
        std::fs::write(&framed, f).expect("write framed");
        let got = mllp_send(port, &framed);
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            got.len(),
            1,
            "{name}: expected exactly one ACK, got {}",
            got.len()
        );
        let ack = &got[0];
        assert_eq!(
            field(ack, "MSA", 1).as_deref(),
            Some("AA"),
            "{name}: not accepted: {}",
            String::from_utf8_lossy(ack)
        );
        assert_eq!(
            field(ack, "MSA", 2).unwrap_or_default(),
            control_id(&body),
            "{name}: MSA-2 does not name the message sent"
        );
        acks.push((
            name.clone(),
            String::from_utf8_lossy(ack).into_owned(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        sent.push((name, body));
    }

    // Every ACK passes hl7apy's strict validation.
    let failures = hl7apy_failures(&acks);
    assert!(failures.is_empty(), "hl7apy rejects ACKs: {failures:#?}");

    assert_eq!(broker.stop(), Some(0));
    // Every message is in the topic, byte for byte (the corpus reuses some
    // control ids with different content: those are stored, not deduped).
    let stored: Vec<Vec<u8>> = dump(&data, "hl7.inbound")
        .iter()
        .map(|r| r["payload"].as_str().expect("payload").as_bytes().to_vec())
        .collect();
    let mut missing = Vec::new();
    for (name, body) in &sent {
        let text = String::from_utf8_lossy(body).as_bytes().to_vec();
        if !stored.contains(&text) {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
}

#[test]
fn hl7apy_message_gets_a_strictly_valid_v25_ack() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&listener_config("py", ""), &tmp.path().join("data"));
    let out = Command::new(peer("hl7", "python"))
        .arg(peer_script("make_adt.py"))
        .arg("PYCTRL42")
        .output()
        .expect("hl7apy builds a message");
    assert!(out.status.success());
    let msg = out.stdout;
    assert!(msg.starts_with(b"MSH|^~\\&|HL7APY"));

    let mut c = MllpClient::connect(broker.mllp("py"));
    let ack = c.request(&msg);
    assert_eq!(field(&ack, "MSH", 9).as_deref(), Some("ACK^A01^ACK"));
    assert_eq!(field(&ack, "MSH", 12).as_deref(), Some("2.5"));
    assert_eq!(field(&ack, "MSH", 3).as_deref(), Some("MEDBUS"));
    assert_eq!(field(&ack, "MSH", 5).as_deref(), Some("HL7APY"));
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(field(&ack, "MSA", 2).as_deref(), Some("PYCTRL42"));

    // A rejected v2.5 message: the NAK with its ERR segment is valid too.
    let bad = b"MSH|^~\\&|HL7APY|PYHOSP|MEDBUS|HUB|20261124101500||ADT^A01^ADT_A01|PYBAD1|P|2.5\rPID|1\rbad segment\r";
    let nak = c.request(bad);
    assert_eq!(field(&nak, "MSA", 1).as_deref(), Some("AR"));
    assert_eq!(field(&nak, "MSA", 2).as_deref(), Some("PYBAD1"));
    assert!(
        field(&nak, "ERR", 3).is_some_and(|e| e.ends_with("HL70357")),
        "{}",
        String::from_utf8_lossy(&nak)
    );

    let failures = hl7apy_failures(&[
        (
            "aa".into(),
            String::from_utf8_lossy(&ack).into_owned(),
            String::from_utf8_lossy(&msg).into_owned(),
        ),
        (
            "ar".into(),
            String::from_utf8_lossy(&nak).into_owned(),
            String::from_utf8_lossy(bad).into_owned(),
        ),
    ]);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn malformed_input_is_answered_dead_lettered_and_the_connection_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("lab", ""), &data);
    let mut c = MllpClient::connect(broker.mllp("lab"));

    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("not HL7", b"hello, world".to_vec(), None),
        (
            "no MSH-9",
            b"MSH|^~\\&|A|B|C|D|20260101|||C1|P|2.5\r".to_vec(),
            Some("C1"),
        ),
        (
            "bad segment id",
            b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C2|P|2.5\rpid|1\r".to_vec(),
            Some("C2"),
        ),
        (
            "unknown charset",
            b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C3|P|2.5||||||KLINGON\r".to_vec(),
            None,
        ),
        (
            "bad UTF-8",
            b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C4|P|2.5||||||UNICODE UTF-8\rPID|1||\xff\xfe\r"
                .to_vec(),
            None,
        ),
        ("duplicate delimiters", b"MSH|^^\\&|A|B\r".to_vec(), None),
    ];
    for (what, bytes, ctrl) in &cases {
        let nak = c.request(bytes);
        let code = field(&nak, "MSA", 1);
        assert!(
            matches!(code.as_deref(), Some("AR") | Some("AE")),
            "{what}: expected AR/AE, got {}",
            String::from_utf8_lossy(&nak)
        );
        assert!(
            String::from_utf8_lossy(&nak).contains("\rERR|"),
            "{what}: NAK without ERR: {}",
            String::from_utf8_lossy(&nak)
        );
        if let Some(ctrl) = ctrl {
            assert_eq!(field(&nak, "MSA", 2).as_deref(), Some(*ctrl), "{what}");
        }
    }
    // A frame cut short by a new start block is answered too.
    c.send_raw(b"\x0bMSH|^~\\&|A|B|C|D|1||ADT^A01|CUT|P|2.5\rPID|1")
        .expect("send");
    let ok = adt_a01("AFTER1", "DOE");
    c.send(&ok).expect("send");
    let nak = c.read_frame().expect("answer to the truncated frame");
    assert_eq!(field(&nak, "MSA", 1).as_deref(), Some("AR"));
    // The same connection still works.
    let ack = c.read_frame().expect("ACK");
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(field(&ack, "MSA", 2).as_deref(), Some("AFTER1"));
    drop(c);

    assert_eq!(broker.stop(), Some(0));
    let dlq = dump(&data, "dlq.lab");
    assert_eq!(
        dlq.len(),
        cases.len() + 1,
        "every rejected frame is dead-lettered"
    );
    for ((what, bytes, _), rec) in cases.iter().zip(&dlq) {
        assert_eq!(
            rec["payload"].as_str().map(|s| s.as_bytes().to_vec()),
            Some(String::from_utf8_lossy(bytes).as_bytes().to_vec()),
            "{what}: raw bytes kept"
        );
        let reason = rec["headers"]["medbus.error"].as_str().unwrap_or("");
        assert!(!reason.is_empty(), "{what}: dead letter without a reason");
        assert_eq!(rec["headers"]["medbus.listener"], "lab");
    }
    let inbound = dump(&data, "hl7.inbound");
    assert_eq!(inbound.len(), 1, "only the valid message is stored");
}

#[test]
fn oversized_frame_gets_ar_then_close() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("small", "max_frame = \"4KiB\""), &data);
    let mut c = MllpClient::connect(broker.mllp("small"));
    let mut big = adt_a01("BIG1", "DOE");
    big.extend(std::iter::repeat_n(b'X', 8192));
    c.send(&big).expect("send");
    let nak = c.read_frame().expect("AR before close");
    assert_eq!(field(&nak, "MSA", 1).as_deref(), Some("AR"));
    assert_eq!(field(&nak, "MSA", 2).as_deref(), Some("BIG1"));
    assert!(String::from_utf8_lossy(&nak).contains("max_frame"));
    assert!(c.read_frame().is_none(), "connection closed after the AR");
    // The listener still serves new connections.
    let mut c2 = MllpClient::connect(broker.mllp("small"));
    let ack = c2.request(&adt_a01("SMALL1", "DOE"));
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    drop(c2);
    assert_eq!(broker.stop(), Some(0));
    assert_eq!(dump(&data, "dlq.small").len(), 1);
}

#[test]
fn retransmission_is_acknowledged_again_and_stored_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("adt", ""), &data);
    let msg = adt_a01("RETX1", "DOE");
    let a1 = MllpClient::connect(broker.mllp("adt")).request(&msg);
    // The resend comes on a new connection, as after a sender timeout.
    let a2 = MllpClient::connect(broker.mllp("adt")).request(&msg);
    for a in [&a1, &a2] {
        assert_eq!(field(a, "MSA", 1).as_deref(), Some("AA"));
        assert_eq!(field(a, "MSA", 2).as_deref(), Some("RETX1"));
    }
    assert_ne!(
        field(&a1, "MSH", 10),
        field(&a2, "MSH", 10),
        "each ACK has a fresh control id"
    );
    // Same control id, different content: a reused id, not a resend.
    let other = adt_a01("RETX1", "ROE");
    let a3 = MllpClient::connect(broker.mllp("adt")).request(&other);
    assert_eq!(field(&a3, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(broker.stop(), Some(0));
    let stored = dump(&data, "hl7.inbound");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["headers"]["hl7.control_id"], "RETX1");
    assert_eq!(stored[0]["headers"]["hl7.message_type"], "ADT^A01");
    assert_eq!(stored[0]["headers"]["hl7.sending_application"], "HIS");
    assert_eq!(stored[0]["headers"]["hl7.sending_facility"], "GENHOSP");
    assert_eq!(stored[0]["headers"]["medbus.listener"], "adt");
    assert_eq!(stored[0]["content_type"], "application/hl7-v2+er7");
}

#[test]
fn pipelined_frames_are_each_answered_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&listener_config("pipe", ""), &tmp.path().join("data"));
    let mut c = MllpClient::connect(broker.mllp("pipe"));
    let mut wire = Vec::new();
    for i in 0..50 {
        wire.push(0x0b);
        wire.extend(adt_a01(&format!("P{i}"), "DOE"));
        wire.extend([0x1c, 0x0d]);
    }
    c.send_raw(&wire).expect("send");
    for i in 0..50 {
        let ack = c.read_frame().expect("ACK");
        assert_eq!(field(&ack, "MSA", 2), Some(format!("P{i}")));
        assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    }
}

/// The idle timeout counts bytes as they arrive: a message trickling in
/// over a slow link for longer than the timeout is not cut off half-way.
#[test]
fn a_slow_message_is_not_cut_off_by_the_idle_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(
        &listener_config("slow", "idle_timeout = \"1s\""),
        &tmp.path().join("data"),
    );
    let mut c = MllpClient::connect(broker.mllp("slow"));
    let msg = adt_a01("SLOW1", "DOE");
    let mut framed = vec![0x0b];
    framed.extend_from_slice(&msg);
    framed.extend_from_slice(&[0x1c, 0x0d]);
    // About 3 s for the whole frame, three times the idle timeout.
    let chunks: Vec<&[u8]> = framed.chunks(framed.len() / 12 + 1).collect();
    for chunk in &chunks {
        c.send_raw(chunk).expect("the connection stays open");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let ack = c.read_frame().expect("an ACK, not a closed connection");
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(field(&ack, "MSA", 2).as_deref(), Some("SLOW1"));
}

/// A sender that stops in the middle of a frame for the whole idle timeout
/// is told so (AR with ERR) before the connection closes: not dropped
/// without a reply.
#[test]
fn idle_in_the_middle_of_a_frame_gets_an_ar_before_the_close() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(
        &listener_config("stall", "idle_timeout = \"1s\""),
        &tmp.path().join("data"),
    );
    let mut c = MllpClient::connect(broker.mllp("stall"));
    let msg = adt_a01("STALL1", "DOE");
    let mut partial = vec![0x0b];
    partial.extend_from_slice(&msg[..msg.len() / 2]);
    c.send_raw(&partial).expect("send");
    let ack = c.read_frame().expect("an AR before the close");
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AR"));
    assert!(
        String::from_utf8_lossy(&ack).contains("idle"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    assert!(c.read_frame().is_none(), "then the connection closes");
    assert_eq!(topic_records(&broker, "hl7.inbound"), 0);
}
