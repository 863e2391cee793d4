//! Replay on a running broker: a route run again over a range writes marked
//! outputs without moving its cursor; a destination sends a range again to
//! its (real, python-hl7) receiver; bad requests are refused clearly.

use medbus_tests::*;
use std::process::{Command, Stdio};

#[test]
fn a_route_is_replayed_over_a_range() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg = format!(
        "{}\n[[routes]]\nname = \"copy\"\nfrom = \"hl7.in\"\nto = [\"copy.a\"]\n",
        listener_config("in", "topic = \"hl7.in\"")
    );
    let broker = Broker::start(&cfg, &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in 0..3 {
        c.request(&adt_a01(&format!("R{i}"), "DOE"));
    }
    wait_for("routing", || topic_records(&broker, "copy.a") == 3);
    let d = data.to_string_lossy().into_owned();
    let (code, out, err) = medbus(&[
        "replay",
        "--route",
        "copy",
        "--from",
        "1",
        "--to",
        "2",
        "--data-dir",
        &d,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("summary JSON");
    assert_eq!(summary["read"], 2);
    assert_eq!(summary["written"], 2);
    assert_eq!(topic_records(&broker, "copy.a"), 5);
    // The live cursor did not move back: a new message is routed once.
    c.request(&adt_a01("R3", "DOE"));
    wait_for("routing of R3", || topic_records(&broker, "copy.a") == 6);

    let (code, _, err) = medbus(&["replay", "--route", "nope", "--from", "0", "--data-dir", &d]);
    assert_eq!(code, 2);
    assert!(err.contains("no route named \"nope\""), "{err}");
    let (code, _, err) = medbus(&[
        "replay",
        "--route",
        "copy",
        "--from",
        "99",
        "--data-dir",
        &d,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("empty range"), "{err}");
    let (_, metrics) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    assert!(
        metrics.contains("medbus_replayed_records_total{kind=\"route\"} 2"),
        "{metrics}"
    );
    drop(c);
    assert_eq!(broker.stop(), Some(0));

    let out = dump(&data, "copy.a");
    let replayed: Vec<(String, String)> = out
        .iter()
        .filter(|r| r["headers"]["medbus.replayed"] == "true")
        .map(|r| {
            (
                r["headers"]["medbus.source_offset"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["headers"]["hl7.control_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        replayed,
        vec![("1".into(), "R1".into()), ("2".into(), "R2".into())]
    );
    let (code, _, err) = medbus(&["replay", "--route", "copy", "--from", "0", "--data-dir", &d]);
    assert_eq!(code, 1, "no broker running: {err}");
    assert!(err.contains("no running broker"), "{err}");
}

#[test]
fn a_destination_sends_a_range_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("peer.jsonl");
    let mut peer_proc = Command::new(peer("hl7", "python"))
        .arg(peer_script("mllp_peer.py"))
        .args(["--log", &log.to_string_lossy()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer");
    let port = peer_port(&mut peer_proc);
    let data = tmp.path().join("data");
    let cfg = format!(
        "{}\n[[destinations]]\nname = \"down\"\nfrom = \"hl7.in\"\nconnect = \"127.0.0.1:{port}\"\n",
        listener_config("in", "topic = \"hl7.in\"")
    );
    let broker = Broker::start(&cfg, &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in 0..3 {
        c.request(&adt_a01(&format!("D{i}"), "DOE"));
    }
    let received = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for("delivery", || received() == 3);
    let (code, out, err) = medbus(&[
        "replay",
        "--destination",
        "down",
        "--from",
        "0",
        "--to",
        "1",
        "--data-dir",
        &data.to_string_lossy(),
    ]);
    let _ = peer_proc.kill();
    let _ = peer_proc.wait();
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("summary JSON");
    assert_eq!(summary["written"], 2);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["control_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, vec!["D0", "D1", "D2", "D0", "D1"]);
}

/// SHA-256 of "admin-token" and of "reader-token".
const ADMIN_SHA: &str = "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a";
const READER_SHA: &str = "ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45";

#[test]
fn replay_through_the_binary_protocol_needs_an_admin_client() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg = format!(
        "{}\n{}\n[[clients]]\nname = \"ops\"\ntoken_sha256 = \"{ADMIN_SHA}\"\nadmin = true\n\n\
         [[clients]]\nname = \"reader\"\ntoken_sha256 = \"{READER_SHA}\"\nsubscribe = [\"*\"]\n\n\
         [[routes]]\nname = \"copy\"\nfrom = \"hl7.in\"\nto = [\"copy.a\"]\n",
        listener_config("in", "topic = \"hl7.in\""),
        protocol_config("")
    );
    let broker = Broker::start(&cfg, &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in 0..3 {
        c.request(&adt_a01(&format!("P{i}"), "DOE"));
    }
    wait_for("routing", || topic_records(&broker, "copy.a") == 3);
    let server = broker.protocol();
    let (code, out, err) = medbus(&[
        "replay",
        "--route",
        "copy",
        "--from",
        "0",
        "--server",
        &server,
        "--token",
        "admin-token",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("summary JSON");
    assert_eq!(summary["read"], 3);
    assert_eq!(summary["written"], 3);
    wait_for("replayed outputs", || topic_records(&broker, "copy.a") == 6);
    // A client without admin rights is refused.
    let (code, _, err) = medbus(&[
        "replay",
        "--route",
        "copy",
        "--from",
        "0",
        "--server",
        &server,
        "--token",
        "reader-token",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("admin"), "{err}");
    // A bad request is a usage error.
    let (code, _, err) = medbus(&[
        "replay",
        "--route",
        "nope",
        "--from",
        "0",
        "--server",
        &server,
        "--token",
        "admin-token",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no route named"), "{err}");
    assert_eq!(topic_records(&broker, "copy.a"), 6);
}
