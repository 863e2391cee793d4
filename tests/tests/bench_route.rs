//! `medbus bench route`: it fills a topic, times each route on a broker of
//! its own and prints a row per route (or one JSON object). No timing is
//! asserted (CI machines are noisy): only that every record was routed and
//! the report has its rows.

use medbus_tests::*;
use serde_json::Value;

#[test]
fn both_routes_print_a_row_each() {
    let (code, out, err) = medbus(&["bench", "route", "--count", "300"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("records/s") && out.contains("vs converter"),
        "{out}"
    );
    for (transform, target) in [("none", "bench.routed"), ("fhir", "fhir.bundles")] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{transform} ")))
            .unwrap_or_else(|| panic!("no {transform} row in:\n{out}"));
        assert!(row.contains(target), "{row}");
    }
    assert!(
        out.contains("converter: medbus_fhir::convert_bytes"),
        "{out}"
    );
}

#[test]
fn json_names_every_record_routed() {
    let (code, out, err) = medbus(&[
        "bench",
        "route",
        "--transform",
        "fhir",
        "--count",
        "200",
        "--durability",
        "none",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["mode"], "route");
    assert_eq!(r["errors"], 0, "{r}");
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{r}");
    assert_eq!(runs[0]["transform"], "fhir");
    assert_eq!(runs[0]["records"], 200, "{r}");
    assert!(
        r["converter_per_sec"].as_f64().expect("converter") > 0.0,
        "{r}"
    );
    assert!(runs[0]["ratio_to_converter"].as_f64().is_some(), "{r}");
}

#[test]
fn a_zero_count_is_a_usage_error() {
    let (code, _, err) = medbus(&["bench", "route", "--count", "0"]);
    assert_eq!(code, 2, "{err}");
}
