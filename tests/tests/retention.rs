//! Retention: by record count, age and bytes; offsets never reused after a
//! topic empties and the broker restarts; a reader that has not caught up
//! holds retention back unless `force = true`.

use medbus_tests::*;

fn send(broker: &Broker, ids: std::ops::Range<usize>, pad: usize) {
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in ids {
        let mut m = adt_a01(&format!("RET{i}"), "DOE");
        m.extend_from_slice(format!("NTE|1||{}\r", "x".repeat(pad)).as_bytes());
        assert_eq!(field(&c.request(&m), "MSA", 1).as_deref(), Some("AA"));
    }
}

fn config(retention: &str, extra: &str) -> String {
    format!(
        "[retention]\ninterval = \"100ms\"\n{retention}\n\n{}\n{extra}",
        listener_config("in", "topic = \"hl7.in\"")
    )
}

#[test]
fn retention_by_count_keeps_the_newest_and_never_reuses_offsets() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg = config("max_records = 5", "");
    let broker = Broker::start(&cfg, &data);
    send(&broker, 0..12, 10);
    wait_for("retention", || {
        status_topic(&broker, "hl7.in").is_some_and(|t| t["first_offset"] == 7)
    });
    let t = status_topic(&broker, "hl7.in").expect("topic");
    assert_eq!(t["records"], 5);
    let (_, metrics) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    assert!(
        metrics.contains("medbus_retention_deleted_records_total{topic=\"hl7.in\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("medbus_topic_first_offset{topic=\"hl7.in\"} 7"));
    assert_eq!(broker.stop(), Some(0));
    let offsets: Vec<u64> = dump(&data, "hl7.in")
        .iter()
        .filter_map(|r| r["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![7, 8, 9, 10, 11]);
}

#[test]
fn retention_by_age_empties_a_topic_and_offsets_continue_after_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg = config("max_age = \"1s\"", "");
    let broker = Broker::start(&cfg, &data);
    send(&broker, 0..3, 10);
    wait_for("the topic to empty", || {
        status_topic(&broker, "hl7.in").is_some_and(|t| t["records"] == 0)
    });
    assert_eq!(broker.stop(), Some(0));
    let broker = Broker::start(&cfg, &data);
    send(&broker, 3..4, 10);
    assert_eq!(broker.stop(), Some(0));
    let recs = dump(&data, "hl7.in");
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0]["offset"], 3,
        "offsets of removed records are not reused"
    );
}

#[test]
fn retention_by_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&config("max_bytes = \"4KiB\"", ""), &data);
    send(&broker, 0..10, 1000);
    wait_for("the byte limit", || {
        status_topic(&broker, "hl7.in")
            .is_some_and(|t| t["bytes"].as_u64().is_some_and(|b| b <= 4096))
    });
    let t = status_topic(&broker, "hl7.in").expect("topic");
    assert!(
        t["records"].as_u64().is_some_and(|n| (2..=4).contains(&n)),
        "{t}"
    );
    assert_eq!(t["last_offset"], 9, "the newest records are kept");
}

#[test]
fn a_reader_that_has_not_caught_up_holds_retention_back_unless_forced() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    // A destination whose receiver never answers: its cursor stays at 0.
    let stuck = format!(
        "[[destinations]]\nname = \"stuck\"\nfrom = \"hl7.in\"\nconnect = \"127.0.0.1:{port}\"\nconnect_timeout = \"100ms\"\n"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&config("max_records = 2", &stuck), &tmp.path().join("a"));
    send(&broker, 0..6, 10);
    wait_for("the held-back log line", || {
        broker.log().contains("retention held back")
    });
    let t = status_topic(&broker, "hl7.in").expect("topic");
    assert_eq!(
        t["first_offset"], 0,
        "nothing the destination still needs was removed"
    );
    assert_eq!(t["records"], 6);
    // The size gauge shows what the topic holds, held back or not.
    let (_, metrics) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("medbus_topic_bytes{topic=\"hl7.in\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(gauge, t["bytes"].as_u64(), "{metrics}");
    assert!(gauge.is_some_and(|b| b > 0));
    drop(broker);

    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(
        &config("max_records = 2\nforce = true", &stuck),
        &tmp.path().join("b"),
    );
    send(&broker, 0..6, 10);
    wait_for("forced retention", || {
        status_topic(&broker, "hl7.in").is_some_and(|t| t["records"] == 2)
    });
}
