//! MLLP destinations against a real downstream receiver (python-hl7's
//! asyncio MLLP server in `tests/peers/mllp_peer.py`, told by each
//! message's control id to accept, NAK, answer late, answer the wrong
//! message or drop the connection), plus the listener side of the issue:
//! enhanced-mode commit ACKs and the source-address allowlist.

use medbus_tests::*;
use std::process::{Child, Command, Stdio};

/// The downstream receiver process; killed when dropped.
struct Peer {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Peer {
    fn start(dir: &std::path::Path, port: u16, extra: &[&str]) -> Peer {
        let log = dir.join("peer.jsonl");
        let mut child = Command::new(peer("hl7", "python"))
            .arg(peer_script("mllp_peer.py"))
            .args(["--port", &port.to_string(), "--log", &log.to_string_lossy()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the downstream peer");
        let port = peer_port(&mut child);
        Peer { child, port, log }
    }

    /// (control id, attempt) of every message received, in order.
    fn received(&self) -> Vec<(String, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["control_id"].as_str().unwrap_or("").to_string(),
                    v["attempt"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Control ids in order of first receipt.
    fn firsts(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|(_, a)| *a == 1)
            .map(|(c, _)| c)
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn config(port: u16, extra: &str) -> String {
    format!(
        "{}\n[[destinations]]\nname = \"down\"\nfrom = \"hl7.in\"\nconnect = \"127.0.0.1:{port}\"\n\
         ack_timeout = \"1s\"\nconnect_timeout = \"1s\"\nretry = {{ initial = \"50ms\", max = \"400ms\", max_attempts = 5 }}\n{extra}\n",
        listener_config("in", "topic = \"hl7.in\"")
    )
}

fn metric(broker: &Broker, series: &str) -> Option<f64> {
    let (_, body) = http_get(broker.http.expect("http"), "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn send_all(broker: &Broker, ids: &[&str]) {
    let mut c = MllpClient::connect(broker.mllp("in"));
    for id in ids {
        let ack = c.request(&adt_a01(id, "DEST"));
        assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"), "{id}");
    }
}

#[test]
fn a_corpus_stream_is_delivered_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let peer = Peer::start(tmp.path(), 0, &[]);
    let broker = Broker::start(&config(peer.port, ""), &data);
    let files: Vec<_> = corpus_files()
        .into_iter()
        .filter(|f| {
            f.to_string_lossy()
                .contains("microsoft-fhir-converter/input")
        })
        .take(40)
        .collect();
    let mut args = vec![
        "send".to_string(),
        "--to".into(),
        broker.mllp("in").to_string(),
    ];
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, _) = medbus(&args);
    assert_eq!(code, 0, "{out}");
    wait_for("the stream to be delivered", || {
        metric(
            &broker,
            "medbus_destination_lag_records{destination=\"down\"}",
        ) == Some(0.0)
            && peer.received().len() >= 30
    });
    assert_eq!(broker.stop(), Some(0));
    let stored: Vec<String> = dumped_control_ids(&data, "hl7.in");
    let got: Vec<String> = peer.received().into_iter().map(|(c, _)| c).collect();
    assert_eq!(got, stored, "delivered once each, in topic order");
}

#[test]
fn delivery_resumes_when_the_receiver_comes_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let broker = Broker::start(&config(port, ""), &tmp.path().join("data"));
    send_all(&broker, &["B1", "B2", "B3"]);
    wait_for("failed connection attempts", || {
        metric(
            &broker,
            "medbus_destination_retries_total{destination=\"down\",reason=\"unreachable\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert_eq!(
        metric(
            &broker,
            "medbus_destination_connected{destination=\"down\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &broker,
            "medbus_destination_lag_records{destination=\"down\"}"
        ),
        Some(3.0)
    );
    let peer = Peer::start(tmp.path(), port, &[]);
    wait_for("delivery after the outage", || peer.firsts().len() == 3);
    assert_eq!(peer.firsts(), vec!["B1", "B2", "B3"]);
    wait_for("the connected gauge", || {
        metric(
            &broker,
            "medbus_destination_connected{destination=\"down\"}",
        ) == Some(1.0)
    });
    // Unreachable time did not spend the messages' retry budget.
    assert_eq!(dump_running_dlq(&broker), 0);
}

/// Records in dlq.down, from the status API of a running broker.
fn dump_running_dlq(broker: &Broker) -> u64 {
    let (_, body) = http_get(broker.http.expect("http"), "/api/status").expect("status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["name"] == "dlq.down")
        .and_then(|t| t["records"].as_u64())
        .unwrap_or(0)
}

#[test]
fn naks_wrong_acks_late_acks_and_drops_are_retried_and_ar_is_dead_lettered() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let peer = Peer::start(tmp.path(), 0, &["--late", "2.5"]);
    let broker = Broker::start(&config(peer.port, ""), &data);
    let ids = [
        "N1", "AE1", "WRONG1", "ARX1", "NAKALL1", "LATE1", "DROP1", "N2",
    ];
    send_all(&broker, &ids);
    wait_for("the last message", || {
        peer.firsts().last().map(String::as_str) == Some("N2")
    });
    wait_for("the cursor to pass N2", || {
        metric(
            &broker,
            "medbus_destination_lag_records{destination=\"down\"}",
        ) == Some(0.0)
    });
    // Everything arrived, in order (first receipts).
    assert_eq!(peer.firsts(), ids.to_vec());
    let attempts = |id: &str| peer.received().iter().filter(|(c, _)| c == id).count();
    assert_eq!(attempts("N1"), 1);
    assert_eq!(attempts("AE1"), 2, "AE is retried");
    assert_eq!(
        attempts("WRONG1"),
        2,
        "an ACK for another message is not success"
    );
    assert_eq!(attempts("ARX1"), 1, "AR is not retried");
    assert_eq!(
        attempts("NAKALL1"),
        5,
        "AE every time: max_attempts, then dead-lettered"
    );
    assert_eq!(attempts("LATE1"), 2, "a late ACK is not waited for");
    assert_eq!(attempts("DROP1"), 2, "a dropped connection is retried");
    assert_eq!(
        attempts("N2"),
        1,
        "the late ACK of LATE1 was not taken for N2's"
    );
    assert!(metric(
        &broker,
        "medbus_destination_acks_total{code=\"wrong\",destination=\"down\"}"
    )
    .is_some_and(|n| n >= 1.0));
    // The receiver's error texts quote the patient ("cannot file DEST"):
    // they are in the dead letters, never in the log.
    let log = broker.log();
    assert!(log.contains("negative ACK AE"), "{log}");
    assert!(!log.contains("cannot file"), "{log}");
    assert_eq!(
        metric(
            &broker,
            "medbus_destination_messages_total{destination=\"down\",outcome=\"delivered\"}"
        ),
        Some(6.0)
    );
    assert_eq!(
        metric(
            &broker,
            "medbus_destination_messages_total{destination=\"down\",outcome=\"dead_lettered\"}"
        ),
        Some(2.0)
    );
    // Retries: AE1's one and NAKALL1's four (its fifth attempt is not
    // retried but dead-lettered).
    assert_eq!(
        metric(
            &broker,
            "medbus_destination_retries_total{destination=\"down\",reason=\"nak\"}"
        ),
        Some(5.0)
    );
    assert!(metric(
        &broker,
        "medbus_destination_retries_total{destination=\"down\",reason=\"timeout\"}"
    )
    .is_some_and(|n| n >= 2.0));
    assert_eq!(broker.stop(), Some(0));
    let dlq = dump(&data, "dlq.down");
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0]["headers"]["hl7.control_id"], "ARX1");
    assert_eq!(dlq[1]["headers"]["hl7.control_id"], "NAKALL1");
    assert!(dlq[0]["headers"]["medbus.error"]
        .as_str()
        .is_some_and(|e| e.contains("rejected") && e.contains("cannot file DEST")));
}

#[test]
fn block_holds_later_messages_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let peer = Peer::start(tmp.path(), 0, &[]);
    let broker = Broker::start(
        &config(peer.port, "on_failure = \"block\""),
        &tmp.path().join("data"),
    );
    send_all(&broker, &["ARB1", "AFTER1"]);
    wait_for("repeated attempts", || peer.received().len() >= 3);
    assert!(
        peer.received().iter().all(|(c, _)| c == "ARB1"),
        "nothing overtakes the blocked message"
    );
    assert_eq!(
        metric(&broker, "medbus_destination_blocked{destination=\"down\"}"),
        Some(1.0)
    );
}

/// A stored message damaged on disk while the broker was down: the
/// destination delivers the ones around it and dead-letters it, with the
/// bytes as they are on disk, instead of stalling on it for ever.
#[test]
fn a_message_damaged_on_disk_is_dead_lettered_and_delivery_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    // Nobody listens yet: the messages wait in the topic.
    let port = free_port();
    let broker = Broker::start(&config(port, ""), &data);
    send_all(&broker, &["DMG1", "DMG2", "DMG3"]);
    assert_eq!(broker.stop(), Some(0));
    let seg = data.join("topics/hl7.in").join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = bytes
        .windows(4)
        .rposition(|w| w == b"DMG2")
        .expect("the second message in the segment");
    bytes[at + 3] = b'9';
    std::fs::write(&seg, &bytes).expect("damage the segment");

    let peer = Peer::start(tmp.path(), port, &[]);
    let broker = Broker::start(&config(peer.port, ""), &data);
    wait_for("the sound messages", || peer.firsts().len() == 2);
    assert_eq!(peer.firsts(), vec!["DMG1", "DMG3"]);
    wait_for("the dead letter", || dump_running_dlq(&broker) == 1);
    assert_eq!(
        metric(&broker, "medbus_storage_damaged_reads_total"),
        Some(1.0)
    );
    assert_eq!(broker.stop(), Some(0));
    let dead = dump(&data, "dlq.down");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["headers"]["medbus.error"]
            .as_str()
            .is_some_and(|e| e.contains("damaged on disk: frame checksum does not match")),
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["headers"]["medbus.source_offset"], "1");
}

#[test]
fn a_broker_killed_mid_delivery_resumes_without_losing_anything() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let peer = Peer::start(tmp.path(), 0, &["--delay", "0.05"]);
    let cfg = config(peer.port, "");
    let broker = Broker::start(&cfg, &data);
    let ids: Vec<String> = (0..30).map(|i| format!("K{i}")).collect();
    send_all(&broker, &ids.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("some deliveries", || peer.received().len() >= 5);
    broker.kill9();
    let before = peer.received().len();
    assert!(
        before < ids.len(),
        "the kill came too late to test anything"
    );
    let broker = Broker::start(&cfg, &data);
    wait_for("the rest", || peer.firsts().len() == ids.len());
    wait_for("the cursor", || {
        metric(
            &broker,
            "medbus_destination_lag_records{destination=\"down\"}",
        ) == Some(0.0)
    });
    assert_eq!(peer.firsts(), ids, "every message, in order");
    let resent = peer.received().len() - ids.len();
    assert!(
        resent <= 1,
        "only the message in flight may be sent again; {resent} were"
    );
}

#[test]
fn enhanced_mode_commit_acks_follow_msh15() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&listener_config("enh", ""), &tmp.path().join("data"));
    let mut c = MllpClient::connect(broker.mllp("enh"));
    let msg = |id: &str, msh15: &str| {
        format!(
            "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|{id}|P|2.5|||{msh15}|NE\rPID|1||X^^^H\r"
        )
        .into_bytes()
    };
    let ca = c.request(&msg("E1", "AL"));
    assert_eq!(field(&ca, "MSA", 1).as_deref(), Some("CA"));
    assert_eq!(field(&ca, "MSA", 2).as_deref(), Some("E1"));
    // NE: no ACK; ER: no ACK on success. The next frame read answers E4.
    c.send(&msg("E2", "NE")).expect("send");
    c.send(&msg("E3", "ER")).expect("send");
    let next = c.request(&msg("E4", "SU"));
    assert_eq!(field(&next, "MSA", 1).as_deref(), Some("CA"));
    assert_eq!(field(&next, "MSA", 2).as_deref(), Some("E4"));
    // A reject in enhanced mode is CR (ER asks for errors only).
    let cr = c.request(b"MSH|^~\\&|A|B|C|D|20260101|||E5|P|2.5|||ER\r");
    assert_eq!(field(&cr, "MSA", 1).as_deref(), Some("CR"));
    // Without MSH-15: original mode.
    let aa = c.request(&adt_a01("E6", "DOE"));
    assert_eq!(field(&aa, "MSA", 1).as_deref(), Some("AA"));
    let (_, body) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    assert!(
        body.contains("medbus_mllp_messages_total{listener=\"enh\",outcome=\"stored\"} 5"),
        "{body}"
    );
}

#[test]
fn connections_from_outside_the_allowlist_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(
        &listener_config("guarded", "allow = [\"10.0.0.0/8\"]"),
        &tmp.path().join("data"),
    );
    let mut c = MllpClient::connect(broker.mllp("guarded"));
    assert!(
        c.try_request(&adt_a01("NOPE", "DOE")).is_none(),
        "closed without an answer"
    );
    wait_for("the refusal counter", || {
        metric(
            &broker,
            "medbus_mllp_connections_refused_total{listener=\"guarded\",reason=\"not_allowed\"}",
        ) == Some(1.0)
    });
    assert!(broker.log().contains("not in the listener's allow list"));
    // Loopback allowed: accepted.
    let tmp2 = tempfile::tempdir().expect("tmp");
    let ok = Broker::start(
        &listener_config("open", "allow = [\"127.0.0.0/8\", \"::1\"]"),
        &tmp2.path().join("data"),
    );
    let ack = MllpClient::connect(ok.mllp("open")).request(&adt_a01("YES", "DOE"));
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
}

#[test]
fn field_rewrites_and_filters_apply_on_the_way() {
    let tmp = tempfile::tempdir().expect("tmp");
    let peer = Peer::start(tmp.path(), 0, &[]);
    let extra = "set = { \"MSH-5\" = \"BILLING\", \"MSH-6\" = \"HQ\" }\nwhen = { field = \"PID-8\", eq = \"M\" }";
    let broker = Broker::start(&config(peer.port, extra), &tmp.path().join("data"));
    let mut c = MllpClient::connect(broker.mllp("in"));
    c.request(&adt_a01("SET1", "DOE")); // PID-8 = M: sent, rewritten
    let female = String::from_utf8(adt_a01("SET2", "ROE"))
        .expect("utf8")
        .replace("|M\r", "|F\r");
    c.request(female.as_bytes()); // filtered out
    c.request(&adt_a01("SET3", "DOE"));
    wait_for("delivery", || peer.received().len() == 2);
    wait_for("the filter count", || {
        metric(
            &broker,
            "medbus_destination_messages_total{destination=\"down\",outcome=\"filtered\"}",
        ) == Some(1.0)
    });
    assert_eq!(peer.firsts(), vec!["SET1", "SET3"]);
    let log = std::fs::read_to_string(&peer.log).expect("peer log");
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().expect("line")).expect("JSON");
    let msh = first["message"]
        .as_str()
        .expect("message")
        .split('\r')
        .next()
        .expect("MSH")
        .to_string();
    let fields: Vec<&str> = msh.split('|').collect();
    assert_eq!(fields.get(4).copied(), Some("BILLING"), "{msh}");
    assert_eq!(fields.get(5).copied(), Some("HQ"), "{msh}");
    assert_eq!(
        fields.get(2).copied(),
        Some("HIS"),
        "sender untouched: {msh}"
    );
}

/// A destination added by `SIGHUP` holds retention from the moment it is
/// added: what the source topic held then, and everything after, reaches
/// the receiver, however long it was down (retention used to know only the
/// destinations configured at start, and trimmed past this one's backlog).
#[test]
fn a_destination_added_by_sighup_holds_retention_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let base = format!(
        "{}\n[retention]\nmax_records = 10\ninterval = \"200ms\"\n",
        listener_config("in", "topic = \"hl7.in\"")
    );
    let broker = Broker::start(&base, &data);
    let a: Vec<String> = (0..30).map(|i| format!("A{i:03}")).collect();
    send_all(&broker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("retention down to 10 records", || {
        status_topic(&broker, "hl7.in").is_some_and(|t| t["first_offset"] == 20)
    });

    let port = free_port();
    let with_destination = format!(
        "{base}\n[[destinations]]\nname = \"late\"\nfrom = \"hl7.in\"\nconnect = \"127.0.0.1:{port}\"\n\
         connect_timeout = \"1s\"\nretry = {{ initial = \"50ms\", max = \"200ms\" }}\n"
    );
    std::fs::write(data.with_extension("toml"), with_destination).expect("write");
    Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    wait_for("the reload", || broker.log().contains("routes reloaded"));
    let b: Vec<String> = (0..30).map(|i| format!("B{i:03}")).collect();
    send_all(&broker, &b.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("retention held back by the new destination", || {
        broker
            .log()
            .lines()
            .any(|l| l.contains("retention held back") && l.contains("destination/late"))
    });
    assert_eq!(
        status_topic(&broker, "hl7.in").map(|t| t["first_offset"].clone()),
        Some(serde_json::json!(20))
    );

    let peer = Peer::start(tmp.path(), port, &[]);
    let want: Vec<String> = a[20..].iter().chain(&b).cloned().collect();
    wait_for("the whole backlog delivered", || {
        peer.firsts().len() >= want.len()
    });
    assert_eq!(peer.firsts(), want);
    assert_eq!(broker.stop(), Some(0));
}
