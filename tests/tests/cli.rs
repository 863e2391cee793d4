//! The command-line contract: exit codes and outputs of `send`,
//! `check-config`, `topics` and `dump`, and `serve`'s refusal of a bad config.

use medbus_tests::*;

#[test]
fn send_summarises_acks_and_sets_the_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("cli", ""), &data);
    let to = broker.mllp("cli").to_string();

    // One file, two messages, LF separators, no trailing separator.
    let good = tmp.path().join("good.hl7");
    let mut body = adt_a01("CLI1", "DOE");
    body.extend(adt_a01("CLI2", "ROE"));
    let body: Vec<u8> = body
        .iter()
        .map(|&b| if b == b'\r' { b'\n' } else { b })
        .collect();
    std::fs::write(&good, &body[..body.len() - 1]).expect("write");
    let (code, out, err) = medbus(&["send", "--to", &to, &good.to_string_lossy()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sent 2 messages") && out.contains("2 AA"),
        "{out}"
    );

    // A file with a malformed message: exit 1 and the AR is reported.
    let bad = tmp.path().join("bad.hl7");
    std::fs::write(&bad, b"MSH|^~\\&|A|B|C|D|1||ADT^A01|CLIBAD|P|2.5\rxx\r").expect("write");
    let (code, out, _) = medbus(&[
        "send",
        "--to",
        &to,
        &good.to_string_lossy(),
        &bad.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 AR"), "{out}");
    assert!(out.contains("CLIBAD: AR"), "{out}");

    assert_eq!(broker.stop(), Some(0));

    // Nothing listening: exit 1, every message "no ACK".
    let (code, out, _) = medbus(&[
        "send",
        "--to",
        &to,
        "--timeout",
        "2",
        &good.to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("2 no ACK"), "{out}");

    // Offline tools on the stopped broker's data.
    let (code, out, err) = medbus(&["topics", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("hl7.inbound") && l.ends_with(" 2")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("dlq.cli")), "{out}");
    let recs = dump(&data, "hl7.inbound");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["offset"], 1);
    assert_eq!(recs[1]["topic"], "hl7.inbound");
    assert!(recs[1]["timestamp_ms"].as_u64().is_some());
    assert!(recs[1]["payload"]
        .as_str()
        .is_some_and(|p| p.starts_with("MSH|") && p.contains("\rPID|")));
    let (code, out, _) = medbus(&[
        "dump",
        "hl7.inbound",
        "--data-dir",
        &data.to_string_lossy(),
        "--from",
        "1",
        "--count",
        "1",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("CLI2"));

    // A byte of the second message damaged on disk: `dump` prints the first,
    // then names the damaged record and fails, rather than print altered data.
    let seg = data
        .join("topics/hl7.inbound")
        .join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = bytes
        .windows(4)
        .rposition(|w| w == b"CLI2")
        .expect("second message in the segment");
    bytes[at] = b'X';
    std::fs::write(&seg, &bytes).expect("damage the segment");
    let (code, out, err) = medbus(&["dump", "hl7.inbound", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("CLI1"), "{out}");
    assert!(
        err.contains("damaged record: hl7.inbound@1: frame checksum does not match"),
        "{err}"
    );

    // A backup leaves the damaged record out (it must not come back under a
    // fresh checksum), says so, and exits 1; the restore has the rest.
    let bak = tmp.path().join("damaged.bak");
    let (code, out, err) = medbus(&[
        "backup",
        "--data-dir",
        &data.to_string_lossy(),
        "--out",
        &bak.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 records damaged on disk were left out"),
        "{err}"
    );
    let restored = tmp.path().join("restored");
    let (code, _, err) = medbus(&[
        "restore",
        "--in",
        &bak.to_string_lossy(),
        "--data-dir",
        &restored.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    let recs = dump(&restored, "hl7.inbound");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["headers"]["hl7.control_id"], "CLI1");
}

#[test]
fn bad_configs_are_refused_with_file_line_col_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[listeners]]\nname = \"a\"\nlisten = \"nowhere\"\nmax_frame = \"huge\"\n",
    )
    .expect("write");
    let path = cfg.to_string_lossy().into_owned();
    let (code, _, err) = medbus(&["check-config", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{path}:4:13: listeners.max_frame: invalid size")),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "[[listeners]]\nname = \"a\"\nlisten = \"nowhere\"\ntopic = \"dlq.x\"\n",
    )
    .expect("write");
    let (code, _, err) = medbus(&["check-config", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{path}:3:10: listeners[0].listen")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:4:9: listeners[0].topic")),
        "{err}"
    );

    let (code, _, err) = medbus(&[
        "serve",
        "--config",
        &path,
        "--data-dir",
        &tmp.path().join("d").to_string_lossy(),
    ]);
    assert_eq!(code, 2, "serve refuses a bad config");
    assert!(err.contains(":3:10:"), "{err}");

    let good = tmp.path().join("good.toml");
    std::fs::write(&good, listener_config("ok", "")).expect("write");
    let (code, out, _) = medbus(&["check-config", &good.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_data_dir_in_use_is_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let _broker = Broker::start(&listener_config("one", ""), &data);
    let (code, _, err) = medbus(&["topics", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by another medbus process"), "{err}");
}

/// `convert` prints each Bundle as the converter wrote it; `--pretty` only
/// indents it: decimals keep their written precision (`72.50`) and members
/// their order (`resourceType` first), as in the compact form.
#[test]
fn convert_pretty_keeps_decimals_and_member_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("oru.hl7");
    std::fs::write(
        &file,
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|CLI-DEC|P|2.5\r\
         PID|1||CLI-PAT^^^HOSP^MR||Doe^Jane||19800101|F\r\
         OBR|1||CLI-FIL|2345-7^Glucose^LN\r\
         OBX|1|NM|2345-7^Glucose^LN||72.50|mg/dL|||||F\r",
    )
    .expect("write");
    let path = file.to_string_lossy();
    let (code, compact, err) = medbus(&["convert", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(compact.contains(r#""value":72.50"#), "{compact}");
    let (code, pretty, err) = medbus(&["convert", "--pretty", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(pretty.contains(r#""value": 72.50"#), "{pretty}");
    assert!(
        pretty.starts_with("{\n  \"resourceType\": \"Bundle\""),
        "{pretty}"
    );
    let squeezed: String = pretty
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("")
        .replace("\": ", "\":");
    assert_eq!(
        squeezed,
        compact.trim_end(),
        "--pretty changed more than the layout"
    );
}

/// A message with MSH-15 `NE` asks for no ACK (enhanced mode), one with
/// `ER` for one only if it is refused: `send` does not wait its whole
/// timeout for one, counts it as sent, and the next message on the file
/// still gets its own ACK.
#[test]
fn send_does_not_wait_for_an_ack_that_was_not_asked_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&listener_config("cli", ""), &tmp.path().join("data"));
    let to = broker.mllp("cli").to_string();
    let file = tmp.path().join("ne.hl7");
    let mut body =
        b"MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01|CLI-NE|P|2.5|||NE|NE\r\
                     PID|1||MRN-NE^^^GENHOSP^MR||DOE^JANE\r"
            .to_vec();
    body.extend(adt_a01("CLI-AL", "ROE"));
    body.extend_from_slice(
        b"MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01|CLI-ER|P|2.5|||ER|NE\r\
          PID|1||MRN-ER^^^GENHOSP^MR||DOE^JOHN\r",
    );
    std::fs::write(&file, &body).expect("write");
    let (code, out, err) = medbus(&[
        "send",
        "--to",
        &to,
        "--timeout",
        "60",
        "--verbose",
        &file.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("CLI-NE: sent without ACK"), "{out}");
    assert!(out.contains("CLI-AL: AA"), "{out}");
    assert!(out.contains("CLI-ER: sent without ACK"), "{out}");
    assert!(out.contains("1 AA, 2 sent without ACK"), "{out}");
    wait_for("all three stored", || {
        topic_records(&broker, "hl7.inbound") == 3
    });
}

/// `dump` shows a payload that is not UTF-8 (an ISO 8859-1 message) with
/// its bytes as stored, in `payload_base64`, beside the readable text.
#[test]
fn dump_keeps_bytes_that_are_not_utf8() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("cli", ""), &data);
    let mut msg =
        b"MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01|CLI-8859|P|2.5||||||8859/1\r\
                    PID|1||MRN-8859^^^GENHOSP^MR||J"
            .to_vec();
    msg.push(0xD6);
    msg.extend_from_slice(b"HN^JANE\r");
    let ack = MllpClient::connect(broker.mllp("cli")).request(&msg);
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(broker.stop(), Some(0));
    let recs = dump(&data, "hl7.inbound");
    assert_eq!(recs.len(), 1);
    let stored = base64::engine::general_purpose::STANDARD
        .decode(recs[0]["payload_base64"].as_str().expect("payload_base64"))
        .expect("base64");
    assert_eq!(stored, msg);
    assert!(recs[0]["payload"]
        .as_str()
        .is_some_and(|p| p.contains("J\u{fffd}HN")));
}
