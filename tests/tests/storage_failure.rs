//! A storage failure never yields an AA: the broker is started with a file
//! size limit (`ulimit -f`, with SIGXFSZ ignored so writes fail with EFBIG
//! the way a full disk fails them), filled past it, and must answer AE with
//! an ERR segment while staying up; after a restart without the limit every
//! message that got an AA is there, byte for byte.

use medbus_tests::*;
use std::collections::HashMap;
use std::process::Command;

/// sled's log is capped at this many KiB.
const FSIZE_KIB: u32 = 2048;

#[test]
fn a_failing_disk_gives_negative_acks_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let config = listener_config("disk", "");
    let broker = Broker::start_with(&config, &data, |cmd| {
        let mut sh = Command::new("bash");
        sh.arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {FSIZE_KIB}; exec \"$0\" \"$@\""
            ))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        sh
    });
    let mut c = MllpClient::connect(broker.mllp("disk"));
    let pad = "P".repeat(20_000);
    let mut acked: HashMap<String, Vec<u8>> = HashMap::new();
    let mut naks = Vec::new();
    for i in 0..300 {
        let id = format!("DISK{i}");
        let mut msg = adt_a01(&id, "FULL");
        msg.extend_from_slice(format!("NTE|1||{pad}\r").as_bytes());
        let ack = c.request(&msg);
        match field(&ack, "MSA", 1).as_deref() {
            Some("AA") => {
                acked.insert(id, msg);
            }
            Some("AE") => naks.push(String::from_utf8_lossy(&ack).into_owned()),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(!acked.is_empty(), "nothing fit below the limit");
    assert!(!naks.is_empty(), "the size limit was never hit");
    assert!(
        naks.iter().all(|n| n.contains("\rERR|")),
        "every AE carries ERR"
    );
    assert!(naks[0].contains("not stored"), "{}", naks[0]);
    // Still up and answering on a new connection.
    let again = MllpClient::connect(broker.mllp("disk")).request(&adt_a01("AFTERFULL", "X"));
    assert!(field(&again, "MSA", 1).is_some());
    broker.kill9();

    let broker = Broker::start(&config, &data);
    assert_eq!(broker.stop(), Some(0));
    let stored: HashMap<String, String> = dump(&data, "hl7.inbound")
        .iter()
        .map(|r| {
            (
                r["headers"]["hl7.control_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["payload"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (id, msg) in &acked {
        assert_eq!(
            stored.get(id).map(|s| s.as_bytes()),
            Some(&msg[..]),
            "{id} was acknowledged but is not stored intact"
        );
    }
}
