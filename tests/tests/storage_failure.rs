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

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root, as CI has): {status}"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_gives_negative_acks_and_ingest_resumes_when_space_is_freed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = SmallDisk::mount(&tmp.path().join("mnt"), "24m");
    let data = disk.path.join("data");
    let config = format!(
        "[storage]\nmin_free = \"8MiB\"\n\n{}",
        listener_config("disk", "")
    );
    let broker = Broker::start(&config, &data);
    let http = broker.http.expect("http");
    let mut c = MllpClient::connect(broker.mllp("disk"));
    let mut acked: HashMap<String, Vec<u8>> = HashMap::new();
    let mut send = |c: &mut MllpClient, id: &str| {
        let msg = adt_a01(id, "FULL");
        let ack = c.request(&msg);
        let code = field(&ack, "MSA", 1).unwrap_or_default();
        if code == "AA" {
            acked.insert(id.to_string(), msg);
        }
        (code, String::from_utf8_lossy(&ack).into_owned())
    };
    assert_eq!(send(&mut c, "BEFORE").0, "AA");
    // Fill the disk past the reserve.
    let filler = disk.path.join("filler");
    let free_mib = 24 - 8 + 1;
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=1M",
            &format!("count={free_mib}"),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("dd");
    assert!(status.code().is_some());
    // Not ready as soon as the disk is below the reserve, before any
    // append has been refused.
    let (status, why) = http_get(http, "/readyz").expect("readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("reserve"), "{why}");
    let (code, ack) = send(&mut c, "DURING");
    assert_eq!(code, "AE", "{ack}");
    assert!(ack.contains("\rERR|") && ack.contains("disk full"), "{ack}");
    assert_eq!(http_get(http, "/readyz").map(|r| r.0), Some(503));
    // Free the space: ingest resumes by itself, readiness too.
    std::fs::remove_file(&filler).expect("rm filler");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http_get(http, "/readyz").map(|r| r.0) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(send(&mut c, "AFTER").0, "AA");
    drop(c);
    assert_eq!(broker.stop(), Some(0));
    let stored: Vec<String> = dumped_control_ids(&data, "hl7.inbound");
    assert_eq!(
        stored,
        vec!["BEFORE", "AFTER"],
        "acked messages kept, the refused one not stored"
    );
    assert_eq!(acked.len(), 2);
}
