//! `medbus bench e2e`: HL7 over MLLP into a spawned broker, Bundles out to a
//! protocol subscriber. No timing is asserted (CI machines are noisy): only
//! that every message sent in the measured window came back as a Bundle, and
//! that the warm-up's messages are reported apart, not in the figures.

use medbus_tests::*;
use serde_json::Value;

#[test]
fn warm_up_messages_are_reported_apart_from_the_measured_ones() {
    let (code, out, err) = medbus(&[
        "bench",
        "e2e",
        "--spawn",
        "--rate",
        "200",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "1s",
        "--durability",
        "none",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["mode"], "e2e");
    assert_eq!(r["errors"], 0, "{r}");
    let measured = r["messages"].as_u64().expect("messages");
    let warm = r["warmup"]["messages"].as_u64().expect("warm-up messages");
    // 200/s for 1 s each; the schedule's edges may move one message per
    // connection either way.
    for (what, n) in [("measured", measured), ("warm-up", warm)] {
        assert!((190..=210).contains(&n), "{what}: {n} in {r}");
    }
    // Every measured message was acknowledged and came back as a Bundle.
    assert_eq!(r["ingested"].as_u64(), Some(measured), "{r}");
    assert_eq!(r["warmup"]["errors"], 0, "{r}");
    assert!(r["warmup"]["latency"]["p50_ms"].as_f64().expect("p50") > 0.0);
}

#[test]
fn no_warm_up_counts_every_message() {
    let (code, out, err) = medbus(&[
        "bench",
        "e2e",
        "--spawn",
        "--rate",
        "100",
        "--connections",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--durability",
        "none",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(r.get("warmup").is_none(), "{r}");
    let n = r["messages"].as_u64().expect("messages");
    assert!((95..=105).contains(&n), "{n} in {r}");
}
