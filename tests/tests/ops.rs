//! Operations: `/metrics` checked by promtool and prometheus_client (both
//! third-party), exact counters after known traffic, `/healthz`, `/readyz`
//! through start-up and shutdown, `/api/status`, and no patient data in logs.

use medbus_tests::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value of one sample line `name{labels} value` in a metrics body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn promtool() -> std::path::PathBuf {
    let root = std::env::var_os("MEDBUS_PEERS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers"));
    let p = root.join("promtool/usr/bin/promtool");
    assert!(p.exists(), "{} not found: run scripts/test", p.display());
    p
}

fn pipe(program: &std::path::Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_count_exactly_and_pass_promtool_and_prometheus_client() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&listener_config("ops", ""), &tmp.path().join("data"));
    let http = broker.http.expect("http endpoint");
    let (n, m) = (7, 3);
    let mut c = MllpClient::connect(broker.mllp("ops"));
    for i in 0..n {
        let ack = c.request(&adt_a01(&format!("OPS{i}"), "DOE"));
        assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    }
    for i in 0..m {
        let nak = c.request(format!("garbage {i}").as_bytes());
        assert_eq!(field(&nak, "MSA", 1).as_deref(), Some("AR"));
    }
    // Bytes outside frames are counted when the next frame arrives.
    c.send_raw(b"\r\nnoise").expect("send");
    c.request(&adt_a01("OPSLAST", "DOE"));
    drop(c);

    let (status, body) = http_get(http, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let l = "listener=\"ops\"";
    assert_eq!(
        sample(
            &body,
            &format!("medbus_mllp_messages_total{{{l},outcome=\"stored\"}}")
        ),
        Some((n + 1) as f64)
    );
    assert_eq!(
        sample(
            &body,
            &format!("medbus_mllp_messages_total{{{l},outcome=\"rejected\"}}")
        ),
        Some(m as f64)
    );
    assert_eq!(
        sample(
            &body,
            &format!("medbus_mllp_messages_total{{{l},outcome=\"failed\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, &format!("medbus_mllp_acks_total{{code=\"AA\",{l}}}")),
        Some((n + 1) as f64)
    );
    assert_eq!(
        sample(&body, &format!("medbus_mllp_acks_total{{code=\"AR\",{l}}}")),
        Some(m as f64)
    );
    assert_eq!(
        sample(&body, "medbus_dead_letters_total{source=\"listener/ops\"}"),
        Some(m as f64)
    );
    assert_eq!(
        sample(&body, &format!("medbus_mllp_discarded_bytes_total{{{l}}}")),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!("medbus_mllp_ack_latency_seconds_count{{{l}}}")
        ),
        Some((n + m + 1) as f64)
    );
    assert_eq!(
        sample(&body, "medbus_topic_records_total{topic=\"hl7.inbound\"}"),
        Some((n + 1) as f64)
    );
    assert_eq!(
        sample(&body, "medbus_topic_last_offset{topic=\"hl7.inbound\"}"),
        Some(n as f64)
    );
    assert_eq!(
        sample(&body, "medbus_topic_records_total{topic=\"dlq.ops\"}"),
        Some(m as f64)
    );
    assert!(sample(&body, "medbus_topic_bytes{topic=\"hl7.inbound\"}").is_some_and(|b| b > 0.0));
    assert!(sample(&body, "medbus_storage_commit_seconds_count").is_some_and(|c| c >= 1.0));
    assert!(sample(&body, "medbus_storage_disk_bytes").is_some_and(|b| b > 0.0));
    // Bounded labels: no control id ever becomes a label value.
    assert!(!body.contains("OPS1"), "a control id leaked into a label");

    // The shipped Grafana dashboard only queries metrics that exist.
    let dash = std::fs::read_to_string(workspace_root().join("ops/grafana/medbus.json"))
        .expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard JSON");
    let mut queried = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("medbus_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    body.contains(&format!("# TYPE {family} ")),
                    "dashboard queries unknown metric {name}"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);

    let (code, out, err) = pipe(&promtool(), &["check", "metrics"], &body);
    assert_eq!(code, 0, "promtool: {out}{err}\n{body}");

    let script =
        "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
names = [f.name for f in text_string_to_metric_families(sys.stdin.read())]\n\
assert len(names) == len(set(names)), 'duplicate families'\nprint(len(names))\n";
    let (code, out, err) = pipe(&peer("hl7", "python"), &["-c", script], &body);
    assert_eq!(code, 0, "prometheus_client: {err}");
    assert!(out.trim().parse::<usize>().is_ok_and(|n| n >= 10), "{out}");
}

#[test]
fn health_readiness_and_status() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let config =
        listener_config("st", "").replace("shutdown_grace = \"0s\"", "shutdown_grace = \"3s\"");
    let first = Broker::start(&config, &data);
    let http = first.http.expect("http");
    assert_eq!(http_get(http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(http, "/readyz").map(|r| r.0), Some(200));

    let _c = MllpClient::connect(first.mllp("st"));
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = http_get(http, "/api/status").expect("status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(v["ready"], true);
    assert_eq!(v["listeners"][0]["name"], "st");
    assert_eq!(v["listeners"][0]["connections"], 1);
    assert_eq!(v["listeners"][0]["max_connections"], 256);
    assert_eq!(v["listeners"][0]["topic"], "hl7.inbound");
    assert_eq!(v["storage"]["durability"], "fsync");
    assert!(v["topics"].is_array());

    // Start-up: a second broker on the same data directory waits for the
    // lock; meanwhile it is alive but not ready.
    let second_cfg = tmp.path().join("second.toml");
    std::fs::write(&second_cfg, &config).expect("write");
    let mut second = Command::new(medbus_bin())
        .args([
            "serve",
            "--config",
            &second_cfg.to_string_lossy(),
            "--data-dir",
            &data.to_string_lossy(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn second");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        second.stdout.take().expect("stdout"),
    ));
    let second_http: std::net::SocketAddr = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| {
            l.strip_prefix("http endpoint on ")
                .and_then(|a| a.parse().ok())
        })
        .expect("second broker's endpoint");
    assert_eq!(http_get(second_http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(second_http, "/readyz").map(|r| r.0), Some(503));

    // Shutdown: the first turns not-ready during its grace period.
    let pid = first.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_503 = false;
    while Instant::now() < deadline {
        match http_get(http, "/readyz") {
            Some((503, _)) => {
                saw_503 = true;
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    assert!(saw_503, "/readyz never answered 503 during shutdown");
    drop(first);

    // The second takes over and becomes ready.
    let mut ready = false;
    while Instant::now() < deadline {
        if http_get(second_http, "/readyz").map(|r| r.0) == Some(200) {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = second.kill();
    let _ = second.wait();
    assert!(ready, "the waiting broker never became ready");
}

#[test]
fn patient_data_stays_out_of_logs() {
    const NAME: &str = "ZYXWVUTSPATIENTNAME";
    for level in ["info", "debug"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let broker = Broker::start_with(
            &listener_config("phi", ""),
            &tmp.path().join("data"),
            |mut c| {
                c.env("RUST_LOG", level);
                c
            },
        );
        let mut c = MllpClient::connect(broker.mllp("phi"));
        c.request(&adt_a01("PHI1", NAME));
        // A malformed message carrying the name, and a bad segment id.
        c.request(format!("MSH|^~\\&|A|B|C|D|1||ADT^A01|PHI2|P|2.5\r{NAME}|1\r").as_bytes());
        c.request(format!("{NAME} is not HL7").as_bytes());
        drop(c);
        let log = broker.log();
        let _ = broker.stop();
        let log_after = std::fs::read_to_string(tmp.path().join("data.log")).unwrap_or(log);
        assert!(
            log_after.contains("PHI1") || level == "info",
            "debug logs should name the control id"
        );
        assert!(
            !log_after.contains(NAME),
            "patient name in the {level} log:\n{log_after}"
        );
    }
    // The explicit opt-in does log content.
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = format!("log_payloads = true\n{}", listener_config("phi", ""));
    let broker = Broker::start_with(&cfg, &tmp.path().join("data"), |mut c| {
        c.env("RUST_LOG", "debug");
        c
    });
    MllpClient::connect(broker.mllp("phi")).request(&adt_a01("PHI3", NAME));
    let _ = broker.stop();
    let log = std::fs::read_to_string(tmp.path().join("data.log")).unwrap_or_default();
    assert!(log.contains(NAME), "log_payloads = true must log content");
}

#[test]
fn http_counts_by_listener_are_independent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = format!(
        "{}\n[[listeners]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\ntopic = \"hl7.b\"\n",
        listener_config("a", "")
    );
    let broker = Broker::start(&cfg, &tmp.path().join("data"));
    MllpClient::connect(broker.mllp("b")).request(&adt_a01("B1", "DOE"));
    let (_, body) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    let counts: HashMap<&str, Option<f64>> = [
        (
            "a",
            sample(
                &body,
                "medbus_mllp_messages_total{listener=\"a\",outcome=\"stored\"}",
            ),
        ),
        (
            "b",
            sample(
                &body,
                "medbus_mllp_messages_total{listener=\"b\",outcome=\"stored\"}",
            ),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts["a"], Some(0.0));
    assert_eq!(counts["b"], Some(1.0));
    assert_eq!(
        sample(&body, "medbus_topic_last_offset{topic=\"hl7.b\"}"),
        Some(0.0)
    );
}

/// SIGTERM under load: every message the broker stored was answered (no
/// connection is closed with a message in hand), the rest were never
/// stored, and each sender sees its connection closed, not reset.
#[test]
fn sigterm_under_load_answers_every_stored_message() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&listener_config("gs", ""), &data);
    let addr = broker.mllp("gs");
    let senders: Vec<_> = (0..4)
        .map(|s| {
            std::thread::spawn(move || {
                let mut c = MllpClient::connect(addr);
                let mut answered = Vec::new();
                for i in 0.. {
                    let id = format!("GS{s}-{i}");
                    match c.try_request(&adt_a01(&id, "DOE")) {
                        Some(ack) => {
                            assert_eq!(field(&ack, "MSA", 2).as_deref(), Some(id.as_str()));
                            answered.push((id, field(&ack, "MSA", 1).unwrap_or_default()));
                        }
                        None => break,
                    }
                }
                answered
            })
        })
        .collect();
    // Let the load run, then stop the broker under it.
    wait_for("load", || topic_records(&broker, "hl7.inbound") > 200);
    assert_eq!(broker.stop(), Some(0));
    let mut answered = std::collections::BTreeMap::new();
    for s in senders {
        answered.extend(s.join().expect("sender"));
    }
    let stored: Vec<String> = dumped_control_ids(&data, "hl7.inbound");
    assert!(stored.len() > 200);
    for id in &stored {
        assert_eq!(
            answered.get(id).map(String::as_str),
            Some("AA"),
            "{id} was stored but its sender got no AA"
        );
    }
    assert!(answered.values().all(|code| code == "AA"));
    assert_eq!(answered.len(), stored.len());
}
