//! Backup and restore: a consistent snapshot taken from a running broker
//! (and from a stopped one), restored into a new data directory that a
//! broker then serves with its topics, cursors and offsets intact.

use medbus_tests::*;
use std::time::{Duration, Instant};

fn config() -> String {
    format!(
        "{}\n[[routes]]\nname = \"copy\"\nfrom = \"hl7.in\"\nto = [\"copy.a\"]\n",
        listener_config("in", "topic = \"hl7.in\"")
    )
}

fn wait_records(broker: &Broker, topic: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while topic_records(broker, topic) != n {
        assert!(Instant::now() < deadline, "{topic} never reached {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn backup_of_a_running_broker_restores_with_topics_cursors_and_offsets() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let file = tmp.path().join("medbus.backup");
    let broker = Broker::start(&config(), &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in 0..5 {
        c.request(&adt_a01(&format!("B{i}"), "DOE"));
    }
    wait_records(&broker, "copy.a", 5);
    let (code, out, err) = medbus(&[
        "backup",
        "--data-dir",
        &data.to_string_lossy(),
        "--out",
        &file.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Written after the snapshot: not in it.
    c.request(&adt_a01("LATER", "DOE"));
    drop(c);
    assert_eq!(broker.stop(), Some(0));

    let restored = tmp.path().join("restored");
    let (code, out, err) = medbus(&[
        "restore",
        "--in",
        &file.to_string_lossy(),
        "--data-dir",
        &restored.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Never over existing data.
    let (code, _, err) = medbus(&[
        "restore",
        "--in",
        &file.to_string_lossy(),
        "--data-dir",
        &restored.to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(err.matches("not empty").count(), 1, "said once: {err}");

    let broker = Broker::start(&config(), &restored);
    // The route's cursor came along: nothing is routed twice.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(topic_records(&broker, "copy.a"), 5);
    MllpClient::connect(broker.mllp("in")).request(&adt_a01("AFTER", "DOE"));
    wait_records(&broker, "copy.a", 6);
    assert_eq!(broker.stop(), Some(0));
    let ids: Vec<String> = dump(&restored, "hl7.in")
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["offset"],
                r["headers"]["hl7.control_id"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(ids, vec!["0:B0", "1:B1", "2:B2", "3:B3", "4:B4", "5:AFTER"]);
}

#[test]
fn backup_of_a_stopped_broker_and_damaged_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&config(), &data);
    MllpClient::connect(broker.mllp("in")).request(&adt_a01("S1", "DOE"));
    assert_eq!(broker.stop(), Some(0));
    let file = tmp.path().join("b");
    let (code, out, err) = medbus(&[
        "backup",
        "--data-dir",
        &data.to_string_lossy(),
        "--out",
        &file.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let restored = tmp.path().join("r");
    let (code, _, err) = medbus(&[
        "restore",
        "--in",
        &file.to_string_lossy(),
        "--data-dir",
        &restored.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dump(&restored, "hl7.in"), dump(&data, "hl7.in"));

    // A truncated file is refused, not half-restored silently.
    let bytes = std::fs::read(&file).expect("read");
    let cut = tmp.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).expect("write");
    let (code, _, err) = medbus(&[
        "restore",
        "--in",
        &cut.to_string_lossy(),
        "--data-dir",
        &tmp.path().join("r2").to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid medbus backup"), "{err}");
    assert!(
        !tmp.path().join("r2").exists(),
        "a failed restore leaves nothing behind"
    );
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"hello").expect("write");
    let (code, _, err) = medbus(&[
        "restore",
        "--in",
        &junk.to_string_lossy(),
        "--data-dir",
        &tmp.path().join("r3").to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid medbus backup"), "{err}");
}
