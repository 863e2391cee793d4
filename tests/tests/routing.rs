//! Routing end to end: fan-out to several routes, FHIR normalisation on the
//! way, dead letters without head-of-line blocking, exactly-once outputs
//! across repeated kill -9, and SIGHUP reloads that refuse a bad config.

use medbus_tests::*;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Records per topic, from the running broker's status API.
fn topic_counts(broker: &Broker) -> HashMap<String, u64> {
    let (status, body) = http_get(broker.http.expect("http"), "/api/status").expect("status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("").to_string(),
                t["records"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn config(routes: &str) -> String {
    format!("{}\n{routes}", listener_config("in", "topic = \"hl7.in\""))
}

const FANOUT: &str = r#"
[[routes]]
name = "all"
from = "hl7.in"
to = ["copy.all"]

[[routes]]
name = "adt"
from = "hl7.in"
when = { message_type = "ADT^A0*" }
to = ["copy.adt", "hl7.{sendingFacility}"]

[[routes]]
name = "men"
from = "hl7.in"
when = { field = "PID-8", in = ["M"] }
to = ["copy.men"]

[[routes]]
name = "lab"
from = "hl7.in"
when = { message_type = "ORU^R01" }
to = ["copy.lab"]

[[routes]]
name = "fhir"
from = "hl7.in"
transform = "fhir"
to = ["fhir.bundles", "fhir.{resourceType}"]
"#;

#[test]
fn one_message_fans_out_once_to_every_matching_route() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&config(FANOUT), &data);
    let msg = adt_a01("FAN1", "DOE");
    let ack = MllpClient::connect(broker.mllp("in")).request(&msg);
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    wait_for("all routes", || {
        let c = topic_counts(&broker);
        [
            "copy.all",
            "copy.adt",
            "copy.men",
            "hl7.GENHOSP",
            "fhir.bundles",
        ]
        .iter()
        .all(|t| c.get(*t) == Some(&1))
    });
    // Counters move once each route has seen its write complete.
    wait_for("route counters", || {
        let (_, m) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
        m.contains("medbus_route_records_total{outcome=\"matched\",route=\"adt\"} 1")
            && m.contains("medbus_route_records_total{outcome=\"filtered\",route=\"lab\"} 1")
    });
    let (_, metrics) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    assert!(metrics.contains("medbus_route_records_total{outcome=\"filtered\",route=\"lab\"} 1"));
    assert!(metrics.contains("medbus_route_lag_records{route=\"adt\"} 0"));
    let (_, body) = http_get(broker.http.expect("http"), "/api/status").expect("status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let routes = v["routes"].as_array().expect("routes");
    let adt = routes.iter().find(|r| r["name"] == "adt").expect("adt");
    assert_eq!(adt["records"]["matched"], 1);
    assert_eq!(adt["lag_records"], 0);
    assert_eq!(adt["from"][0], "hl7.in");
    assert_eq!(broker.stop(), Some(0));

    let text = String::from_utf8(msg).expect("utf8");
    for (topic, route) in [
        ("copy.all", "all"),
        ("copy.adt", "adt"),
        ("copy.men", "men"),
        ("hl7.GENHOSP", "adt"),
    ] {
        let recs = dump(&data, topic);
        assert_eq!(recs.len(), 1, "{topic}");
        assert_eq!(
            recs[0]["payload"].as_str(),
            Some(text.as_str()),
            "{topic}: bytes unchanged"
        );
        assert_eq!(recs[0]["headers"]["medbus.route"], route);
        assert_eq!(recs[0]["headers"]["medbus.source_topic"], "hl7.in");
        assert_eq!(recs[0]["headers"]["medbus.source_offset"], "0");
        assert_eq!(recs[0]["headers"]["hl7.control_id"], "FAN1");
    }
    assert!(dump(&data, "copy.lab").is_empty());

    // The FHIR route: a transaction Bundle, and each resource on its own topic.
    let bundles = dump(&data, "fhir.bundles");
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0]["content_type"], "application/fhir+json");
    let bundle = &bundles[0]["payload"];
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "transaction");
    assert_eq!(
        bundle["entry"][0]["resource"]["resourceType"],
        "MessageHeader"
    );
    let patients = dump(&data, "fhir.Patient");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0]["headers"]["fhir.resource_type"], "Patient");
    assert_eq!(patients[0]["payload"]["name"][0]["family"], "DOE");
    let id = patients[0]["headers"]["fhir.id"].as_str().expect("id");
    assert_eq!(patients[0]["payload"]["id"], id);
    let in_bundle = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .any(|e| e["resource"]["id"] == id && e["request"]["url"] == format!("Patient/{id}"));
    assert!(in_bundle, "the Patient record is the Bundle's Patient");
}

#[test]
fn a_record_that_cannot_be_transformed_is_dead_lettered_and_the_route_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let routes = "[[routes]]\nname = \"norm\"\nfrom = \"hl7.in\"\ntransform = \"fhir\"\nto = [\"fhir.bundles\"]\n";
    let broker = Broker::start(&config(routes), &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    // A Patient with no identifier cannot get a stable id.
    let bad = b"MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01^ADT_A01|NOPID|P|2.5\rEVN|A01|20261124101500\rPID|1||||DOE^JOHN\r";
    assert_eq!(field(&c.request(bad), "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(
        field(&c.request(&adt_a01("GOOD1", "DOE")), "MSA", 1).as_deref(),
        Some("AA")
    );
    wait_for("the route to pass the bad record", || {
        let counts = topic_counts(&broker);
        counts.get("fhir.bundles") == Some(&1) && counts.get("dlq.norm") == Some(&1)
    });
    // The counter moves once the route has seen its write complete.
    wait_for("the dead-letter counter", || {
        let (_, metrics) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
        metrics.contains("medbus_dead_letters_total{source=\"route/norm\"} 1")
    });
    assert_eq!(broker.stop(), Some(0));
    let dlq = dump(&data, "dlq.norm");
    assert_eq!(dlq[0]["headers"]["hl7.control_id"], "NOPID");
    assert!(dlq[0]["headers"]["medbus.error"]
        .as_str()
        .is_some_and(|e| e.contains("PID-3")));
    assert_eq!(
        dlq[0]["payload"].as_str().map(str::as_bytes),
        Some(&bad[..])
    );
    assert_eq!(
        dump(&data, "fhir.bundles")[0]["headers"]["hl7.control_id"],
        "GOOD1"
    );
}

#[test]
fn outputs_are_exactly_once_and_in_order_across_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let routes = r#"
[[routes]]
name = "copy"
from = "hl7.in"
to = ["copy.a", "copy.b"]

[[routes]]
name = "norm"
from = "hl7.in"
transform = "fhir"
to = ["fhir.bundles"]
"#;
    let cfg = config(routes);
    let mut sent = 0usize;
    for round in 0..4 {
        let broker = Broker::start(&cfg, &data);
        let addr = broker.mllp("in");
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut c = MllpClient::connect(addr);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("K{round}T{t}N{n}");
                        if c.try_request(&adt_a01(&id, "KILL")).is_none() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Vary the moment of the crash from round to round.
        std::thread::sleep(Duration::from_millis(300 + 250 * round as u64));
        broker.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            sent += w.join().expect("worker");
        }
    }
    assert!(sent > 50, "too little traffic: {sent}");

    // Restart and let the routes catch up from their durable cursors.
    let broker = Broker::start(&cfg, &data);
    wait_for("routes to catch up", || {
        let c = topic_counts(&broker);
        let source = c.get("hl7.in").copied().unwrap_or(0);
        source > 0
            && ["copy.a", "copy.b", "fhir.bundles"]
                .iter()
                .all(|t| c.get(*t) == Some(&source))
    });
    assert_eq!(broker.stop(), Some(0));

    let source = dump(&data, "hl7.in");
    for target in ["copy.a", "copy.b"] {
        let out = dump(&data, target);
        assert_eq!(
            out.len(),
            source.len(),
            "{target}: one output per source record"
        );
        for (i, (s, o)) in source.iter().zip(&out).enumerate() {
            assert_eq!(
                o["headers"]["medbus.source_offset"],
                i.to_string(),
                "{target}: in order"
            );
            assert_eq!(o["payload"], s["payload"], "{target}@{i}");
        }
    }
    let bundles = dump(&data, "fhir.bundles");
    let offsets: Vec<String> = bundles
        .iter()
        .map(|b| {
            b["headers"]["medbus.source_offset"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let want: Vec<String> = (0..source.len()).map(|i| i.to_string()).collect();
    assert_eq!(
        offsets, want,
        "fhir.bundles: each source record once, in order"
    );
}

#[test]
fn sighup_reloads_routes_and_keeps_them_on_a_bad_config() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let first = config("[[routes]]\nname = \"one\"\nfrom = \"hl7.in\"\nto = [\"out.one\"]\n");
    let broker = Broker::start(&first, &data);
    let config_path = data.with_extension("toml");
    let hup = |b: &Broker| {
        Command::new("kill")
            .args(["-HUP", &b.child.id().to_string()])
            .status()
            .expect("kill -HUP");
    };
    let mut c = MllpClient::connect(broker.mllp("in"));
    c.request(&adt_a01("H1", "DOE"));
    wait_for("route one", || {
        topic_counts(&broker).get("out.one") == Some(&1)
    });

    // A valid new config: route "two" appears (and reads hl7.in from the
    // start), and the conversion threads follow `[mapping] threads`.
    let second = config(
        "[[routes]]\nname = \"one\"\nfrom = \"hl7.in\"\nto = [\"out.one\"]\n\
         [[routes]]\nname = \"two\"\nfrom = \"hl7.in\"\nto = [\"out.two\"]\n\
         [mapping]\nthreads = 5\n",
    );
    let conversion_threads = |b: &Broker| {
        std::fs::read_dir(format!("/proc/{}/task", b.child.id()))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.starts_with("medbus-convert-"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert_ne!(conversion_threads(&broker), 5);
    std::fs::write(&config_path, &second).expect("write");
    hup(&broker);
    wait_for("route two", || {
        topic_counts(&broker).get("out.two") == Some(&1)
    });
    wait_for("five conversion threads", || {
        conversion_threads(&broker) == 5
    });

    // A broken config is refused; the running routes stay.
    std::fs::write(
        &config_path,
        format!("{second}\n[[routes]]\nname = \"two\"\n"),
    )
    .expect("write");
    hup(&broker);
    wait_for("the refusal in the log", || {
        broker.log().contains("config reload refused")
    });
    c.request(&adt_a01("H2", "DOE"));
    wait_for("both routes still running", || {
        let counts = topic_counts(&broker);
        counts.get("out.one") == Some(&2) && counts.get("out.two") == Some(&2)
    });
    assert!(
        broker.log().contains("duplicate route name") || broker.log().contains("missing field")
    );
    // A change a reload does not apply is named, not silently ignored.
    std::fs::write(
        &config_path,
        format!("{second}\n[retention]\nmax_records = 1000\n"),
    )
    .expect("write");
    hup(&broker);
    wait_for("the restart warning", || {
        broker
            .log()
            .lines()
            .any(|l| l.contains("take effect at the next restart") && l.contains("retention"))
    });
    drop(c);
    assert_eq!(broker.stop(), Some(0));
}

/// A template target filled from message fields cannot create topics
/// without end: past `storage.max_topics` the record is dead-lettered with
/// the reason, and the route goes on (and MLLP keeps answering AA).
#[test]
fn template_targets_stop_at_the_topic_cap() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let routes =
        "[[routes]]\nname = \"fac\"\nfrom = \"hl7.in\"\nto = [\"fac.{sendingFacility}\"]\n";
    let text = format!("[storage]\nmax_topics = 4\n\n{}", config(routes));
    let broker = Broker::start(&text, &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for i in 0..6 {
        let ack = c.request(&adt_a01_from(&format!("F{i}"), "DOE", &format!("FAC{i}")));
        assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    }
    // hl7.in plus three facility topics make four; the other three
    // messages are dead-lettered, and the route is not stalled.
    wait_for("the route through all six", || {
        status_topic(&broker, "dlq.fac").and_then(|t| t["records"].as_u64()) == Some(3)
    });
    let counts = topic_counts(&broker);
    let fac: Vec<&String> = counts.keys().filter(|t| t.starts_with("fac.")).collect();
    assert_eq!(fac.len(), 3, "{counts:?}");
    drop(c);
    assert_eq!(broker.stop(), Some(0));
    let dead = dump(&data, "dlq.fac");
    assert!(dead[0]["headers"]["medbus.error"]
        .as_str()
        .is_some_and(|e| e.contains("storage.max_topics")));
}

/// A template filled from the message cannot name a dead-letter topic
/// (MSH-4 = `dlq` in `{sendingFacility}.x`): the record is dead-lettered
/// with the reason, and the dead-letter topics stay the broker's own.
#[test]
fn template_targets_cannot_write_dead_letter_topics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let routes =
        "[[routes]]\nname = \"byfac\"\nfrom = \"hl7.in\"\nto = [\"{sendingFacility}.x\"]\n";
    let broker = Broker::start(&config(routes), &data);
    let mut c = MllpClient::connect(broker.mllp("in"));
    for (id, facility) in [("D1", "dlq"), ("D2", "WARD")] {
        let ack = c.request(&adt_a01_from(id, "DOE", facility));
        assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    }
    wait_for("both routed", || {
        topic_records(&broker, "dlq.byfac") == 1 && topic_records(&broker, "WARD.x") == 1
    });
    assert_eq!(topic_records(&broker, "dlq.x"), 0);
    drop(c);
    assert_eq!(broker.stop(), Some(0));
    let dead = dump(&data, "dlq.byfac");
    assert!(dead[0]["headers"]["medbus.error"]
        .as_str()
        .is_some_and(|e| e.contains("dead-letter topic")));
}
