//! `medbus bench fhir --spawn`: both phases run end to end against a broker
//! of their own and report in the shared `--json` shape. No timing is
//! asserted (CI machines are noisy): only that requests and notifications
//! happened and none failed.

use medbus_tests::*;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench", "fhir"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--spawn", "--durability", "none", "--json"]);
    let (code, out, err) = medbus(&all);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn read_phase_reads_patients_without_errors() {
    let r = bench(&["read", "-d", "1s", "-c", "4", "--patients", "5"]);
    assert_eq!(r["mode"], "fhir-read");
    assert!(r["messages"].as_u64().expect("messages") > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["connections"], 4);
    assert!(
        r["message_bytes"].as_u64().expect("message_bytes") > 0,
        "{r}"
    );
}

#[test]
fn hook_phase_receives_a_notification_per_message() {
    let r = bench(&["hook", "-d", "1s", "--rate", "20", "-c", "2"]);
    assert_eq!(r["mode"], "fhir-hook");
    assert!(r["messages"].as_u64().expect("messages") > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["messages"], r["ingested"], "{r}");
}

#[test]
fn a_target_needs_its_mllp_listener() {
    let (code, _, err) = medbus(&[
        "bench",
        "fhir",
        "read",
        "--target",
        "http://127.0.0.1:1/fhir",
    ]);
    assert_eq!(code, 2, "{err}");
}
