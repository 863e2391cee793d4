//! `medbus bench` through the real binary: each mode runs for a second and
//! returns a well-formed result. These check that the tool works, never
//! how fast the machine is.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn medbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medbus"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run medbus {args:?}: {e}"))
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The table a successful run printed, with its rate column (`unit`) and
/// percentiles.
fn table(out: &Output, unit: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(unit) && text.contains("p99.9 ms"), "{text}");
    text
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

#[test]
fn mllp_against_a_spawned_broker() {
    let out = medbus(&[
        "bench",
        "mllp",
        "--spawn",
        "--duration",
        "1s",
        "--connections",
        "4",
        "--json",
    ]);
    let v = json(&out);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["mode"], "mllp");
    assert_eq!(num(&v, "connections"), 4.0);
    assert!(num(&v, "messages") > 0.0, "{v}");
    assert_eq!(num(&v, "errors"), 0.0, "{v}");
    assert!(num(&v, "msgs_per_sec") > 0.0, "{v}");
    for k in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    assert!(num(&v, "peak_rss_bytes") > 0.0, "{v}");
    assert_eq!(v["durability"], "fsync");
}

#[test]
fn mllp_table_by_count() {
    let out = medbus(&[
        "bench",
        "mllp",
        "--spawn",
        "--count",
        "200",
        "--connections",
        "2",
        "--durability",
        "none",
    ]);
    let text = table(&out, "msgs/s");
    let row = text
        .lines()
        .find(|l| l.starts_with("mllp "))
        .unwrap_or_else(|| panic!("no result row in {text}"));
    assert_eq!(row.split_whitespace().nth(2), Some("200"), "{text}");
}

#[test]
fn limits_measures_this_machine() {
    let out = medbus(&["bench", "limits", "--duration", "1s", "--json"]);
    let v = json(&out);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["mode"], "limits");
    for k in ["ops_per_sec", "p50_ms", "p99_ms"] {
        assert!(num(&v["fdatasync"], k) > 0.0, "fdatasync {k} in {v}");
        assert!(num(&v["loopback_rtt"], k) > 0.0, "loopback_rtt {k} in {v}");
    }
    assert!(num(&v["loopback_throughput"], "mb_per_sec") > 0.0, "{v}");
    assert!(num(&v["machine"], "cores") >= 1.0, "{v}");
}

#[test]
fn unreachable_broker_fails_fast() {
    let started = Instant::now();
    let out = medbus(&["bench", "mllp", "--to", "127.0.0.1:1", "--duration", "1s"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
}

/// A load mode's JSON: ran cleanly, with throughput and latency.
fn check_load(v: &serde_json::Value, out: &Output, mode: &str) {
    assert!(out.status.success(), "{v}");
    assert_eq!(v["mode"], mode);
    assert!(num(v, "messages") > 0.0, "{v}");
    assert!(num(v, "msgs_per_sec") > 0.0, "{v}");
    assert_eq!(num(v, "errors"), 0.0, "{v}");
    for k in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(num(v, k) > 0.0, "{k} in {v}");
    }
    assert!(num(v, "peak_rss_bytes") > 0.0, "{v}");
    assert!(v["latency_of"].is_string(), "{v}");
}

#[test]
fn publish_against_a_spawned_broker() {
    let out = medbus(&[
        "bench",
        "publish",
        "--spawn",
        "--duration",
        "1s",
        "--publishers",
        "2",
        "--batch",
        "10",
        "--json",
    ]);
    let v = json(&out);
    check_load(&v, &out, "publish");
    assert_eq!(num(&v, "publishers"), 2.0);
    assert_eq!(num(&v, "batch"), 10.0);
    assert_eq!(num(&v, "message_bytes"), 1024.0);
}

#[test]
fn fanout_against_a_spawned_broker() {
    let out = medbus(&[
        "bench",
        "fanout",
        "--spawn",
        "--duration",
        "1s",
        "--subscribers",
        "4",
        "--batch",
        "10",
        "--json",
    ]);
    let v = json(&out);
    check_load(&v, &out, "fanout");
    assert_eq!(num(&v, "subscribers"), 4.0);
    assert!(num(&v, "ingested") > 0.0, "{v}");
}

#[test]
fn e2e_against_a_spawned_broker() {
    let out = medbus(&[
        "bench",
        "e2e",
        "--spawn",
        "--duration",
        "1s",
        "--rate",
        "200",
        "--connections",
        "4",
        "--json",
    ]);
    let v = json(&out);
    check_load(&v, &out, "e2e");
    assert_eq!(num(&v, "rate"), 200.0);
    assert!(num(&v, "ingested") > 0.0, "{v}");
    assert!(num(&v["ack_latency"], "p99_ms") > 0.0, "{v}");
}

#[test]
fn destination_against_a_spawned_broker() {
    let out = medbus(&[
        "bench",
        "destination",
        "--duration",
        "1s",
        "--connections",
        "2",
        "--json",
    ]);
    let v = json(&out);
    check_load(&v, &out, "destination");
    assert!(num(&v, "bare_msgs_per_sec") > 0.0, "{v}");
    assert!(num(&v, "ratio_to_bare") > 0.0, "{v}");
    assert!(num(&v, "ingested") > 0.0, "{v}");
}

#[test]
fn protocol_modes_table() {
    let out = medbus(&[
        "bench",
        "publish",
        "--spawn",
        "--duration",
        "1s",
        "--publishers",
        "1",
        "--batch",
        "5",
    ]);
    let text = table(&out, "records/s");
    assert!(text.lines().any(|l| l.starts_with("publish ")), "{text}");
}

#[test]
fn protocol_modes_fail_fast_when_unreachable() {
    for args in [
        &[
            "bench",
            "publish",
            "--server",
            "127.0.0.1:1",
            "--duration",
            "1s",
        ][..],
        &[
            "bench",
            "fanout",
            "--server",
            "127.0.0.1:1",
            "--duration",
            "1s",
        ][..],
        &[
            "bench",
            "e2e",
            "--server",
            "127.0.0.1:1",
            "--mllp",
            "127.0.0.1:1",
            "--duration",
            "1s",
        ][..],
    ] {
        let started = Instant::now();
        let out = medbus(args);
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?}");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot connect to 127.0.0.1:1"),
            "{args:?}: {err}"
        );
    }
}
