//! The FHIR API gateway, end to end, with independent clients: fhirpy and
//! requests (PyPI) read and write over real sockets, PyJWT mints SMART
//! tokens from a key pair the test makes, a Python `http.server` is the
//! rest-hook endpoint, and every FHIR answer is validated as R4 with
//! fhir.resources 6.4.0 (`tests/peers/validate_fhir_resources.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medbus_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a notification or an indexed record.
const WAIT: Duration = Duration::from_secs(30);

fn py(venv: &str) -> PathBuf {
    peer(venv, "python")
}

/// Run `fhir_peer.py` with `args`; its JSON output.
fn client(args: &[&str]) -> Value {
    let out = Command::new(py("fhirclient"))
        .arg(peer_script("fhir_peer.py"))
        .args(args)
        .output()
        .expect("run fhir_peer.py");
    assert!(
        out.status.success(),
        "fhir_peer.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from fhir_peer.py")
}

/// A plain HTTP request through python requests: (status, headers, body).
fn request(method: &str, url: &str, token: &str, body: Option<&Value>, dir: &Path) -> Value {
    let mut args = vec!["request", method, url, token];
    let path = dir.join(format!("body-{}.json", std::process::id()));
    let p = path.to_string_lossy().to_string();
    if let Some(b) = body {
        std::fs::write(&path, b.to_string()).unwrap();
        args.push(&p);
    }
    client(&args)
}

/// Validate resources with fhir.resources 6.4.0; panics with every error.
fn validate(resources: &[Value]) {
    let mut child = Command::new(py("fhir"))
        .arg(peer_script("validate_fhir_resources.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the validator");
    {
        let mut stdin = child.stdin.take().unwrap();
        for r in resources {
            writeln!(stdin, "{r}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<_> = v
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, e)| !e.is_null())
        .collect();
    assert!(bad.is_empty(), "invalid FHIR: {bad:?}");
    assert_eq!(v.as_object().unwrap().len(), resources.len());
}

fn config(extra_fhir: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"normalise\"\nfrom = \"hl7.inbound\"\ntransform = \"fhir\"\nto = [\"fhir.bundles\", \"fhir.{{resourceType}}\"]\n\n[fhir]\nlisten = \"127.0.0.1:0\"\n{extra_fhir}\n",
        listener_config("default", "")
    )
}

fn base(b: &Broker) -> String {
    format!("http://{}/fhir", b.fhir.expect("fhir gateway address"))
}

fn corpus_message(name: &str) -> Vec<u8> {
    let p = corpus_dir().join("hl7-v2-to-fhir-ig").join(name);
    std::fs::read_to_string(&p)
        .unwrap()
        .replace("\r\n", "\r")
        .replace('\n', "\r")
        .into_bytes()
}

/// The ids medbus gives the resources of an HL7 message (`medbus convert`).
fn converted(path: &Path) -> Vec<(String, String)> {
    let (code, out, err) = medbus(&["convert", &path.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["resourceType"].as_str().unwrap().to_string(),
                e["resource"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn send(b: &Broker, msg: &[u8]) {
    let mut c = MllpClient::connect(b.mllp("default"));
    let ack = c.request(msg);
    let code = field(&ack, "MSA", 1).unwrap_or_default();
    assert!(code == "AA" || code == "CA", "ACK {code}");
}

/// Poll until `f` gives a value.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(v: &Value) -> u64 {
    v["status"].as_u64().unwrap()
}

#[test]
fn fhirpy_reads_what_hl7_feeds_built_and_everything_validates() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(&config("page_size = 2"), &dir.path().join("d"));
    let base = base(&b);
    let adt_path = corpus_dir().join("hl7-v2-to-fhir-ig/IG-test-ADT_A01.hl7");
    let oru_path = corpus_dir().join("hl7-v2-to-fhir-ig/IG-test-ORU_R01.hl7");
    send(&b, &corpus_message("IG-test-ADT_A01.hl7"));
    send(&b, &corpus_message("IG-test-ORU_R01.hl7"));
    let oru = converted(&oru_path);
    let adt = converted(&adt_path);
    let patient = oru.iter().find(|(t, _)| t == "Patient").unwrap().1.clone();
    let observations: Vec<&String> = oru
        .iter()
        .filter(|(t, _)| t == "Observation")
        .map(|(_, id)| id)
        .collect();
    assert!(observations.len() >= 2, "the ORU has several OBX");
    let adt_patient = adt.iter().find(|(t, _)| t == "Patient").unwrap().1.clone();

    // fhirpy reads the current Patient (once the view has it).
    let url = format!("{base}/Patient/{patient}");
    eventually("the Patient in the view", || {
        (status(&request("GET", &url, "-", None, dir.path())) == 200).then_some(())
    });
    let p = client(&["read", &base, "Patient", &patient]);
    assert_eq!(p["id"], json!(patient));
    assert_eq!(p["meta"]["versionId"], json!("1"));
    assert!(p["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    let got = request("GET", &url, "-", None, dir.path());
    assert_eq!(got["headers"]["etag"], json!("W/\"1\""));
    let a = client(&["read", &base, "Patient", &adt_patient]);

    // Search by patient, with paging (page_size 2, fhirpy follows `next`).
    eventually("every Observation", || {
        let all = client(&[
            "search",
            &base,
            "Observation",
            "-",
            &format!("patient=Patient/{patient}"),
        ]);
        (all.as_array().unwrap().len() == observations.len()).then_some(())
    });
    let page = request(
        "GET",
        &format!("{base}/Observation?patient={patient}&_count=1"),
        "-",
        None,
        dir.path(),
    );
    assert_eq!(status(&page), 200);
    let links = page["body"]["link"].as_array().unwrap();
    assert!(links.iter().any(|l| l["relation"] == "next"), "{links:?}");

    // Search by identifier (system|value from the stored Patient).
    let ident = &p["identifier"][0];
    let q = format!(
        "identifier={}|{}",
        ident["system"].as_str().unwrap_or(""),
        ident["value"].as_str().unwrap()
    );
    let found = client(&["search", &base, "Patient", "-", &q]);
    assert!(found
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == json!(patient)));

    // Unknown id: 404 with an OperationOutcome.
    let missing = request(
        "GET",
        &format!("{base}/Patient/nope"),
        "-",
        None,
        dir.path(),
    );
    assert_eq!(status(&missing), 404);
    assert_eq!(missing["body"]["resourceType"], "OperationOutcome");
    // An unsupported search parameter is refused, not ignored.
    let unsupported = request(
        "GET",
        &format!("{base}/Patient?name=x"),
        "-",
        None,
        dir.path(),
    );
    assert_eq!(status(&unsupported), 400);

    let metadata = request("GET", &format!("{base}/metadata"), "-", None, dir.path());
    assert_eq!(status(&metadata), 200);
    assert_eq!(metadata["body"]["fhirVersion"], "4.0.1");
    validate(&[
        p,
        a,
        page["body"].clone(),
        missing["body"].clone(),
        unsupported["body"].clone(),
        metadata["body"].clone(),
    ]);

    // Metrics: requests by interaction and status.
    let (code, body) = http_get(b.http.unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("medbus_fhir_requests_total{interaction=\"read\",status=\"200\"}"));
    assert!(body.contains("medbus_fhir_requests_total{interaction=\"read\",status=\"404\"}"));
    assert!(body.contains("medbus_fhir_request_seconds_bucket{interaction=\"search-type\""));
}

#[test]
fn writes_are_stored_before_the_answer_and_bad_input_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let b = Broker::start(&config("max_body = \"8KiB\""), &data);
    let base = base(&b);
    let d = dir.path();

    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
         "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": "T-1"}],
                      "name": [{"family": "Test"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "id": "obs-t1", "status": "final",
                      "code": {"text": "heart rate"},
                      "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
         "request": {"method": "PUT", "url": "Observation/obs-t1"}}
    ]});
    let r = request("POST", &base, "-", Some(&tx), d);
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(r["body"]["type"], "transaction-response");
    let entries = r["body"]["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("201"));
    let loc = entries[0]["response"]["location"].as_str().unwrap();
    assert!(
        loc.starts_with("Patient/") && loc.ends_with("/_history/1"),
        "{loc}"
    );
    let pid = loc.split('/').nth(1).unwrap().to_string();
    // The reference to the temporary id now names the new Patient.
    let obs = client(&["read", &base, "Observation", "obs-t1"]);
    assert_eq!(obs["subject"]["reference"], json!(format!("Patient/{pid}")));

    // Update: 200 and version 2; create with PUT: 201; POST: 201 + Location.
    let mut updated = obs.clone();
    updated["status"] = json!("amended");
    let u = request(
        "PUT",
        &format!("{base}/Observation/obs-t1"),
        "-",
        Some(&updated),
        d,
    );
    assert_eq!(status(&u), 200);
    assert_eq!(u["body"]["meta"]["versionId"], "2");
    let c = request(
        "POST",
        &format!("{base}/Observation"),
        "-",
        Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}})),
        d,
    );
    assert_eq!(status(&c), 201);
    assert!(c["headers"]["location"]
        .as_str()
        .unwrap()
        .contains("/fhir/Observation/"));
    validate(&[r["body"].clone(), u["body"].clone(), c["body"].clone()]);

    // Bad input: 400 + OperationOutcome, nothing stored.
    let bad_tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "ok-1"}, "request": {"method": "PUT", "url": "Patient/ok-1"}},
        {"resource": {"resourceType": "Patient", "id": "bad id!"}, "request": {"method": "PUT", "url": "Patient/bad id!"}}
    ]});
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", base.clone(), Some(bad_tx)),
        (
            "POST",
            format!("{base}/Patient"),
            Some(json!("not an object")),
        ),
        (
            "POST",
            format!("{base}/Frobnicator"),
            Some(json!({"resourceType": "Frobnicator"})),
        ),
        (
            "PUT",
            format!("{base}/Patient/a_b"),
            Some(json!({"resourceType": "Patient", "id": "a_b"})),
        ),
        (
            "PUT",
            format!("{base}/Patient/x1"),
            Some(json!({"resourceType": "Patient", "id": "x2"})),
        ),
        (
            "POST",
            format!("{base}/Patient"),
            Some(
                json!({"resourceType": "Patient", "text": {"status": "generated", "div": "x".repeat(9000)}}),
            ),
        ),
    ];
    let mut outcomes = Vec::new();
    for (m, url, body) in &cases {
        let r = request(m, url, "-", body.as_ref(), d);
        assert_eq!(status(&r), 400, "{m} {url}: {r}");
        assert_eq!(r["body"]["resourceType"], "OperationOutcome");
        outcomes.push(r["body"].clone());
    }
    // Malformed JSON, sent raw.
    let path = d.join("raw.json");
    std::fs::write(&path, "{\"resourceType\": \"Patient\",").unwrap();
    let raw = client(&[
        "request",
        "POST",
        &format!("{base}/Patient"),
        "-",
        &path.to_string_lossy(),
    ]);
    assert_eq!(status(&raw), 400);
    outcomes.push(raw["body"].clone());
    validate(&outcomes);
    let gone = request("GET", &format!("{base}/Patient/ok-1"), "-", None, d);
    assert_eq!(status(&gone), 404, "half a transaction was stored");

    assert_eq!(b.stop(), Some(0));
    let inbound = dump(&data, "fhir.inbound");
    assert_eq!(
        inbound.len(),
        4,
        "2 from the transaction, 1 update, 1 create"
    );
    for r in &inbound {
        assert_eq!(r["content_type"], "application/fhir+json");
        assert!(r["headers"]["fhir.resource_type"].is_string());
        assert!(r["headers"]["fhir.id"].is_string());
    }
}

/// A rest-hook endpoint (Python http.server); killed when dropped.
struct Hook {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Hook {
    fn start(dir: &Path, port: u16) -> Hook {
        let log = dir.join("hook.jsonl");
        let mut child = Command::new(py("fhirclient"))
            .arg(peer_script("fhir_peer.py"))
            .args(["hook", &port.to_string(), &log.to_string_lossy()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the hook");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).expect("hook started");
        Hook {
            child,
            port: v["listening"].as_u64().unwrap() as u16,
            log,
        }
    }
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// FHIR decimals keep the precision they were written with (`72.50` stays
/// `72.50`, as issue 3 asks of the converter) through the view that answers
/// reads and searches, whether the resource came from HL7 or a client; and
/// members keep FHIR's order: `resourceType`, `id`, `meta`, then the rest.
/// Checked on the bytes the gateway sends, not on a parse of them.
#[test]
fn decimals_keep_their_precision_and_members_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(&config(""), &dir.path().join("d"));
    let fhir = b.fhir.expect("fhir gateway address");
    let msg = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|DEC-1|P|2.5\r\
               PID|1||DEC-PAT-1^^^HOSP^MR||Doe^Jane||19800101|F\r\
               OBR|1||FIL-DEC-1|2345-7^Glucose^LN\r\
               OBX|1|NM|2345-7^Glucose^LN||72.50|mg/dL|||||F\r";
    let file = dir.path().join("dec.hl7");
    std::fs::write(&file, msg).unwrap();
    let ids = converted(&file);
    let id_of = |t: &str| {
        ids.iter()
            .find(|(rt, _)| rt == t)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no {t} in {ids:?}"))
    };
    let (obs, patient) = (id_of("Observation"), id_of("Patient"));
    send(&b, msg.as_bytes());

    let read = eventually("the Observation indexed", || {
        http_get(fhir, &format!("/fhir/Observation/{obs}")).filter(|(s, _)| *s == 200)
    })
    .1;
    assert!(read.contains(r#""value":72.50"#), "{read}");
    let head = format!(r#"{{"resourceType":"Observation","id":"{obs}","meta":{{"#);
    assert!(read.starts_with(&head), "{read}");
    let (status, found) = http_get(fhir, &format!("/fhir/Observation?patient={patient}")).unwrap();
    assert_eq!(status, 200, "{found}");
    assert!(found.contains(r#""value":72.50"#), "{found}");

    // Written by a client, read back: the same bytes for the value.
    let body = br#"{"status":"final","resourceType":"Observation","id":"dec-2","code":{"text":"t"},"valueQuantity":{"value":1.50,"unit":"mg"},"meta":{"source":"urn:test"}}"#;
    let (status, answer) = http_request(
        fhir,
        "PUT",
        "/fhir/Observation/dec-2",
        Some(("application/fhir+json", body)),
    )
    .unwrap();
    assert!(status == 200 || status == 201, "{status} {answer}");
    let (status, read) = http_get(fhir, "/fhir/Observation/dec-2").unwrap();
    assert_eq!(status, 200, "{read}");
    assert!(read.contains(r#""value":1.50"#), "{read}");
    assert!(
        read.starts_with(r#"{"resourceType":"Observation","id":"dec-2","meta":{"source":"urn:test","versionId":"1""#),
        "{read}"
    );
}

/// Versions as a FHIR client relies on them: the `Location` a write
/// answers with can be read (`_history/{vid}` of the current version);
/// `If-Match` with a stale version is refused with 412 and changes nothing;
/// a deleted resource answers 410 Gone and a new write goes on from its
/// version; `_count=0` answers the total without entries.
#[test]
fn versioned_updates_vread_deletes_and_count_only_searches() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(&config(""), &dir.path().join("d"));
    let fhir = b.fhir.expect("fhir gateway address");
    let json = "application/fhir+json";
    let put = |if_match: &[(&str, &str)], gender: &str| {
        let body = format!(r#"{{"resourceType":"Patient","id":"v1","gender":"{gender}"}}"#);
        http_exchange(
            fhir,
            "PUT",
            "/fhir/Patient/v1",
            if_match,
            Some((json, body.as_bytes())),
        )
        .unwrap()
    };
    let get = |path: &str| http_exchange(fhir, "GET", path, &[], None).unwrap();

    let created = put(&[], "female");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some(r#"W/"1""#));
    let location = created.header("location").unwrap().to_string();
    assert!(
        location.ends_with("/fhir/Patient/v1/_history/1"),
        "{location}"
    );
    let path = &location[location.find("/fhir/").unwrap()..];
    let vread = get(path);
    assert_eq!(vread.status, 200, "{}", vread.body);
    assert!(vread.body.contains(r#""gender":"female""#));

    let updated = put(&[("If-Match", r#"W/"1""#)], "male");
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.header("etag"), Some(r#"W/"2""#));
    let stale = put(&[("If-Match", r#"W/"1""#)], "other");
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert!(stale.body.contains("OperationOutcome"), "{}", stale.body);
    let now = get("/fhir/Patient/v1");
    assert!(now.body.contains(r#""gender":"male""#), "{}", now.body);
    assert_eq!(put(&[("If-Match", "garbage")], "other").status, 400);
    assert_eq!(get("/fhir/Patient/v1/_history/1").status, 404);
    assert_eq!(get("/fhir/Patient/v1/_history/2").status, 200);

    let del = |if_match: &[(&str, &str)]| {
        http_exchange(fhir, "DELETE", "/fhir/Patient/v1", if_match, None)
            .unwrap()
            .status
    };
    assert_eq!(del(&[("If-Match", r#"W/"1""#)]), 412);
    assert_eq!(get("/fhir/Patient/v1").status, 200);
    assert_eq!(del(&[("If-Match", r#"W/"2""#)]), 204);
    let gone = eventually("the delete in the view", || {
        Some(get("/fhir/Patient/v1")).filter(|a| a.status != 200)
    });
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert!(gone.body.contains("OperationOutcome"), "{}", gone.body);
    let again = put(&[], "unknown");
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("etag"), Some(r#"W/"4""#), "{}", again.body);

    for id in ["c1", "c2", "c3"] {
        let body = format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#);
        let path = format!("/fhir/Patient/{id}");
        let a = http_exchange(fhir, "PUT", &path, &[], Some((json, body.as_bytes()))).unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
    }
    // Several values (FHIR's "any of") are refused, not matched as one.
    assert_eq!(get("/fhir/Patient?identifier=a,b").status, 400);
    let counted = get("/fhir/Patient?_count=0");
    assert_eq!(counted.status, 200, "{}", counted.body);
    let v: Value = serde_json::from_str(&counted.body).unwrap();
    assert_eq!(v["total"], json!(4), "{v}");
    assert!(v.get("entry").is_none(), "{v}");

    // In Bundles: DELETE entries (no resource), and request.ifMatch.
    let post = |bundle: Value| {
        http_exchange(
            fhir,
            "POST",
            "/fhir",
            &[],
            Some((json, bundle.to_string().as_bytes())),
        )
        .unwrap()
    };
    let stale = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/c1"}},
            {"resource": {"resourceType": "Patient", "id": "c2", "gender": "male"},
             "request": {"method": "PUT", "url": "Patient/c2", "ifMatch": "W/\"9\""}}
        ]}),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(
        get("/fhir/Patient/c1").status,
        200,
        "nothing of the transaction is stored"
    );
    let done = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/c1"}},
            {"request": {"method": "DELETE", "url": "Patient/never-there"}},
            {"resource": {"resourceType": "Patient", "id": "c2", "gender": "male"},
             "request": {"method": "PUT", "url": "Patient/c2", "ifMatch": "W/\"1\""}}
        ]}),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let v: Value = serde_json::from_str(&done.body).unwrap();
    let statuses: Vec<&str> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["204 No Content", "204 No Content", "200 OK"],
        "{v}"
    );
    assert_eq!(get("/fhir/Patient/c1").status, 410);
    // One resource changed twice in one Bundle, or a non-string ifMatch: 400.
    let twice = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "c3"}, "request": {"method": "PUT", "url": "Patient/c3"}},
            {"request": {"method": "DELETE", "url": "Patient/c3"}}
        ]}),
    );
    assert_eq!(twice.status, 400, "{}", twice.body);
    assert!(twice.body.contains("earlier entry"), "{}", twice.body);
    let number = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "c3"},
             "request": {"method": "PUT", "url": "Patient/c3", "ifMatch": 1}}
        ]}),
    );
    assert_eq!(number.status, 400, "{}", number.body);
    let c2 = get("/fhir/Patient/c2");
    assert_eq!(c2.header("etag"), Some(r#"W/"2""#), "{}", c2.body);
    // HEAD: the read's status and headers, no body.
    let head = http_exchange(fhir, "HEAD", "/fhir/Patient/c2", &[], None).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(r#"W/"2""#));
    assert!(head.body.is_empty(), "{}", head.body);
    let head = http_exchange(fhir, "HEAD", "/fhir/Patient/c1", &[], None).unwrap();
    assert_eq!(head.status, 410);
    // XML only is refused (406), not answered in JSON.
    let accept = |value: &str| {
        http_exchange(fhir, "GET", "/fhir/Patient/c2", &[("Accept", value)], None)
            .unwrap()
            .status
    };
    assert_eq!(accept("application/fhir+xml"), 406);
    assert_eq!(
        accept("application/fhir+xml, application/fhir+json;q=0.9"),
        200
    );
    assert_eq!(accept("*/*"), 200);
    assert_eq!(get("/fhir/Patient/c2?_format=xml").status, 406);
    assert_eq!(get("/fhir/Patient/c2?_format=json").status, 200);
}

/// A copy of an HL7 message with another control id (a new event).
fn with_control_id(msg: &[u8], id: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg).to_string();
    let mut segs: Vec<String> = text.split('\r').map(str::to_string).collect();
    let mut fields: Vec<String> = segs[0].split('|').map(str::to_string).collect();
    fields[9] = id.to_string();
    segs[0] = fields.join("|");
    segs.join("\r").into_bytes()
}

#[test]
fn subscriptions_notify_rest_hooks_across_outages_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let settings = "[fhir.subscriptions]\nretry = { initial = \"100ms\", max = \"300ms\", max_attempts = 3 }\ntimeout = \"2s\"\n";
    let cfg = config(settings);
    let b = Broker::start(&cfg, &data);
    let base_url = base(&b);
    let hook = Hook::start(dir.path(), 0);
    let oru_path = corpus_dir().join("hl7-v2-to-fhir-ig/IG-test-ORU_R01.hl7");
    let patient = converted(&oru_path)
        .into_iter()
        .find(|(t, _)| t == "Patient")
        .unwrap()
        .1;
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "test",
        "criteria": format!("Observation?patient=Patient/{patient}"),
        "channel": {"type": "rest-hook", "endpoint": format!("http://127.0.0.1:{}/hook", hook.port),
                    "payload": "application/fhir+json", "header": ["X-Token: secret-1"]}});
    let created = request(
        "POST",
        &format!("{base_url}/Subscription"),
        "-",
        Some(&sub),
        dir.path(),
    );
    assert_eq!(status(&created), 201, "{created}");
    assert_eq!(created["body"]["status"], "active");
    let sid = created["body"]["id"].as_str().unwrap().to_string();
    validate(&[created["body"].clone()]);
    // A channel this server does not deliver is refused.
    let mut email = sub.clone();
    email["channel"] = json!({"type": "email", "endpoint": "mailto:a@example.org"});
    assert_eq!(
        status(&request(
            "POST",
            &format!("{base_url}/Subscription"),
            "-",
            Some(&email),
            dir.path()
        )),
        400
    );

    let oru = corpus_message("IG-test-ORU_R01.hl7");
    send(&b, &with_control_id(&oru, "SUB-1"));
    let first = eventually("a notification", || {
        let r = hook.received();
        (!r.is_empty()).then_some(r)
    });
    let n = &first[0];
    assert_eq!(n["token"], "secret-1");
    assert_eq!(n["body"]["type"], "history");
    assert_eq!(
        n["body"]["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"],
        json!(format!("Subscription/{sid}"))
    );
    assert_eq!(
        n["body"]["entry"][1]["resource"]["resourceType"],
        "Observation"
    );
    validate(&[n["body"].clone()]);
    // Every matching Observation of the message notifies; wait until quiet.
    let mut per_message = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let k = hook.received().len();
        if k == per_message {
            break;
        }
        per_message = k;
    }

    // The endpoint goes down; an event arrives; the endpoint comes back on
    // the same port and receives it.
    let port = hook.port;
    drop(hook);
    send(&b, &with_control_id(&oru, "SUB-2"));
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_file(dir.path().join("hook.jsonl")).ok();
    let hook = Hook::start(dir.path(), port);
    eventually("the notification held while the endpoint was down", || {
        (hook.received().len() >= per_message).then_some(())
    });

    // Restart: the Subscription, its cursor and the view survive.
    assert_eq!(b.stop(), Some(0));
    let b = Broker::start(&cfg, &data);
    let base_url = base(&b);
    let s = request(
        "GET",
        &format!("{base_url}/Subscription/{sid}"),
        "-",
        None,
        dir.path(),
    );
    assert_eq!(status(&s), 200);
    let p = request(
        "GET",
        &format!("{base_url}/Patient/{patient}"),
        "-",
        None,
        dir.path(),
    );
    assert_eq!(status(&p), 200);
    std::thread::sleep(Duration::from_millis(500));
    let before = hook.received().len();
    assert_eq!(
        before, per_message,
        "nothing delivered twice after a clean restart"
    );
    send(&b, &with_control_id(&oru, "SUB-3"));
    eventually("a notification after the restart", || {
        (hook.received().len() >= before + per_message).then_some(())
    });
    let (_, metrics) = http_get(b.http.unwrap(), "/metrics").unwrap();
    assert!(
        metrics.contains("medbus_fhir_subscriptions_active 1"),
        "{metrics}"
    );
    assert!(metrics.contains("medbus_fhir_subscription_deliveries_total{outcome=\"delivered\"}"));
}

/// A websocket client (Python websocket-client): sends frames, streams
/// what it receives; killed when dropped.
struct Ws {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Ws {
    fn connect(url: &str, frames: &[&str]) -> Ws {
        let mut child = Command::new(py("fhirclient"))
            .arg(peer_script("fhir_peer.py"))
            .arg("ws")
            .arg(url)
            .args(frames)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the websocket client");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Ws {
            child,
            stdin,
            lines,
        }
    }

    /// The next message: `{"text"}` or `{"closed", "reason"}`.
    fn next(&self) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .expect("a websocket message in time")
    }

    /// The next text frame as JSON.
    fn next_json(&self) -> Value {
        let m = self.next();
        serde_json::from_str(m["text"].as_str().unwrap_or_else(|| panic!("{m}"))).unwrap()
    }

    fn send(&mut self, frame: &str) {
        writeln!(self.stdin, "{frame}").unwrap();
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `type` of a notification Bundle's SubscriptionStatus.
fn notification_type(bundle: &Value) -> String {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "type")
        .unwrap()["valueCode"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn websocket_subscribers_bind_and_receive_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config("[fhir.subscriptions.websocket]\nbind_timeout = \"1s\"\n");
    let b = Broker::start(&cfg, &d.join("d"));
    let base_url = base(&b);
    let oru_path = corpus_dir().join("hl7-v2-to-fhir-ig/IG-test-ORU_R01.hl7");
    let converted = converted(&oru_path);
    let patient = converted
        .iter()
        .find(|(t, _)| t == "Patient")
        .unwrap()
        .1
        .clone();
    let observations = converted.iter().filter(|(t, _)| t == "Observation").count();
    assert!(observations > 0);
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "test",
        "criteria": format!("Observation?patient=Patient/{patient}"),
        "channel": {"type": "websocket", "payload": "application/fhir+json"}});
    let created = create_subscription(&base_url, &sub, d);
    let sid = created["body"]["id"].as_str().unwrap().to_string();

    // An event before anyone binds is held, not lost.
    let oru = corpus_message("IG-test-ORU_R01.hl7");
    send(&b, &with_control_id(&oru, "WS-1"));

    let t = request(
        "GET",
        &format!("{base_url}/Subscription/{sid}/$get-ws-binding-token"),
        "-",
        None,
        d,
    );
    assert_eq!(status(&t), 200, "{t}");
    let param = |name: &str| -> Value {
        t["body"]["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {t}"))
    };
    let token = param("token")["valueString"].as_str().unwrap().to_string();
    let ws_url = param("websocket-url")["valueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ws_url, format!("ws://{}/fhir/$websocket", b.fhir.unwrap()));
    assert_eq!(
        param("subscription")["valueString"],
        json!(format!("Subscription/{sid}"))
    );

    let ws = Ws::connect(&ws_url, &[&format!("bind-with-token {token}")]);
    let handshake = ws.next_json();
    assert_eq!(handshake["resourceType"], "Bundle");
    assert_eq!(notification_type(&handshake), "handshake");
    let mut events = Vec::new();
    for _ in 0..observations {
        let n = ws.next_json();
        assert_eq!(notification_type(&n), "event-notification", "{n}");
        assert_eq!(n["entry"][1]["resource"]["resourceType"], "Observation");
        events.push(n);
    }
    // Live: the next message's events arrive on the open connection.
    send(&b, &with_control_id(&oru, "WS-2"));
    for _ in 0..observations {
        assert_eq!(notification_type(&ws.next_json()), "event-notification");
    }
    let mut checked = vec![t["body"].clone(), handshake];
    checked.extend(events);
    validate(&checked);

    // The R4 form: bind <id>, then a ping per event.
    let ping = Ws::connect(&ws_url, &[&format!("bind {sid}")]);
    assert_eq!(ping.next()["text"], json!(format!("bound {sid}")));
    send(&b, &with_control_id(&oru, "WS-3"));
    for _ in 0..observations {
        assert_eq!(ping.next()["text"], json!(format!("ping {sid}")));
        // Every connection bound to the Subscription hears every event.
        assert_eq!(notification_type(&ws.next_json()), "event-notification");
    }

    // Bad input: each gets an OperationOutcome, the connection stays.
    let mut bad = Ws::connect(&ws_url, &["bind-with-token not-a-token"]);
    let o = bad.next_json();
    assert_eq!(o["resourceType"], "OperationOutcome");
    assert_eq!(o["issue"][0]["code"], "security");
    bad.send("hello");
    assert_eq!(bad.next_json()["issue"][0]["code"], "not-supported");
    bad.send("bind no-such-subscription");
    assert_eq!(bad.next_json()["issue"][0]["code"], "not-found");
    // A binding token binds once.
    bad.send(&format!("bind-with-token {token}"));
    assert_eq!(bad.next_json()["issue"][0]["code"], "security");
    // ... and a connection that binds nothing is closed after bind_timeout.
    let closed = bad.next();
    assert_eq!(closed["closed"], 1008, "{closed}");
    // A binary frame closes the connection with 1003.
    let binary = Ws::connect(&ws_url, &["BINARY:xyz"]);
    assert_eq!(binary.next()["closed"], 1003);
    // A plain GET of the websocket endpoint is a 400 with an OperationOutcome.
    let plain = request("GET", &ws_url.replace("ws://", "http://"), "-", None, d);
    assert_eq!(status(&plain), 400);
    assert_eq!(plain["body"]["resourceType"], "OperationOutcome");
    // No token for a rest-hook Subscription, nor an unknown one.
    let mut hook = sub.clone();
    hook["channel"] = json!({"type": "rest-hook", "endpoint": "http://127.0.0.1:9/h"});
    let h = request(
        "POST",
        &format!("{base_url}/Subscription"),
        "-",
        Some(&hook),
        d,
    );
    let hid = h["body"]["id"].as_str().unwrap();
    let r = request(
        "POST",
        &format!("{base_url}/Subscription/{hid}/$get-ws-binding-token"),
        "-",
        None,
        d,
    );
    assert_eq!(status(&r), 422, "{r}");
    let r = request(
        "GET",
        &format!("{base_url}/Subscription/nope/$get-ws-binding-token"),
        "-",
        None,
        d,
    );
    assert_eq!(status(&r), 404);
    validate(&[r["body"].clone(), plain["body"].clone()]);

    // Turning the Subscription off closes its connections.
    let mut off = created["body"].clone();
    off["status"] = json!("off");
    let u = request(
        "PUT",
        &format!("{base_url}/Subscription/{sid}"),
        "-",
        Some(&off),
        d,
    );
    assert_eq!(status(&u), 200, "{u}");
    let c = ws.next();
    assert_eq!(c["closed"], 1000, "{c}");
    assert_eq!(ping.next()["closed"], 1000);
    let (_, metrics) = http_get(b.http.unwrap(), "/metrics").unwrap();
    assert!(
        metrics.contains("medbus_fhir_requests_total{interaction=\"operation\",status=\"200\"}"),
        "{metrics}"
    );
}

/// A Subscription turned off holds nothing: turned on again it notifies
/// what happens from then on, like a new one, not what happened while it
/// was off.
#[test]
fn a_subscription_turned_on_again_starts_from_then() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(&config(""), &dir.path().join("d"));
    let base_url = base(&b);
    let hook = Hook::start(dir.path(), 0);
    let adt = |control_id: &str| {
        format!(
            "MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01|{control_id}|P|2.5\r\
             PID|1||OFF-PAT^^^GENHOSP^MR||DOE^JANE\r"
        )
        .into_bytes()
    };
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "test",
        "criteria": "Patient?identifier=OFF-PAT",
        "channel": {"type": "rest-hook", "endpoint": format!("http://127.0.0.1:{}/hook", hook.port),
                    "payload": "application/fhir+json"}});
    let created = create_subscription(&base_url, &sub, dir.path());
    let sid = created["body"]["id"].as_str().unwrap().to_string();
    let put = |status_text: &str| {
        let mut s = created["body"].clone();
        s["status"] = json!(status_text);
        let u = request(
            "PUT",
            &format!("{base_url}/Subscription/{sid}"),
            "-",
            Some(&s),
            dir.path(),
        );
        assert_eq!(status(&u), 200, "{u}");
    };
    put("off");
    send(&b, &adt("OFF-1"));
    wait_for("the message stored", || {
        topic_records(&b, "fhir.Patient") >= 1
    });
    put("requested");
    send(&b, &adt("ON-1"));
    eventually("a notification", || {
        let r = hook.received();
        (!r.is_empty()).then_some(())
    });
    // Quiet for a while: nothing more comes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hook.received().len(), 1, "{:#?}", hook.received());
}

/// POST a Subscription; the 201 response.
fn create_subscription(base_url: &str, sub: &Value, dir: &Path) -> Value {
    let created = request(
        "POST",
        &format!("{base_url}/Subscription"),
        "-",
        Some(sub),
        dir,
    );
    assert_eq!(status(&created), 201, "{created}");
    created
}

/// The value of a metric line starting with `name` (labels included).
fn metric(b: &Broker, name: &str) -> Option<f64> {
    let (_, body) = http_get(b.http.unwrap(), "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_deleted_subscription_no_longer_holds_retention_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        "{}\n[retention]\ninterval = \"1s\"\n[[retention.topics]]\ntopic = \"fhir.Observation\"\nmax_records = 1\n",
        config("")
    );
    let b = Broker::start(&cfg, &d.join("d"));
    let base_url = base(&b);
    // A websocket Subscription nobody binds: its cursor stays where it was
    // placed, before the first Observation.
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
        "criteria": "Observation", "channel": {"type": "websocket"}});
    let created = create_subscription(&base_url, &sub, d);
    let sid = created["body"]["id"].as_str().unwrap().to_string();
    let oru = corpus_message("IG-test-ORU_R01.hl7");
    send(&b, &with_control_id(&oru, "RET-1"));
    send(&b, &with_control_id(&oru, "RET-2"));
    let first = "medbus_topic_first_offset{topic=\"fhir.Observation\"}";
    eventually("fhir.Observation records", || {
        metric(&b, "medbus_topic_records_total{topic=\"fhir.Observation\"}").filter(|n| *n >= 2.0)
    });
    // Several retention rounds: the Subscription's cursor holds them back.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric(&b, first), Some(0.0));
    let del = request(
        "DELETE",
        &format!("{base_url}/Subscription/{sid}"),
        "-",
        None,
        d,
    );
    assert!(status(&del) == 200 || status(&del) == 204, "{del}");
    // Its cursors are released; retention trims down to one record.
    eventually("retention after the delete", || {
        metric(&b, first).filter(|f| *f > 0.0)
    });
}

#[test]
fn smart_tokens_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = client(&["keys", &d.to_string_lossy()]);
    let aud = "https://medbus.example/fhir";
    let cfg = config(&format!(
        "[fhir.auth]\njwks = {:?}\nissuer = \"https://auth.example\"\naudience = \"{aud}\"\nleeway = \"0s\"\n",
        keys["jwks"].as_str().unwrap()
    ));
    let b = Broker::start(&cfg, &d.join("d"));
    let base = base(&b);
    let mint = |alg: &str, claims: Value| -> String {
        client(&["mint", &d.to_string_lossy(), alg, &claims.to_string()])["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let claims = |scope: &str| json!({"iss": "https://auth.example", "aud": aud, "exp": 300, "sub": "app", "scope": scope, "patient": "p-1"});
    let writer = mint("RS256", claims("system/*.read system/*.write"));
    let patient_json = json!({"resourceType": "Patient", "id": "p-1"});
    let w = request(
        "PUT",
        &format!("{base}/Patient/p-1"),
        &writer,
        Some(&patient_json),
        d,
    );
    assert_eq!(status(&w), 201, "{w}");
    let other = json!({"resourceType": "Patient", "id": "p-2"});
    assert_eq!(
        status(&request(
            "PUT",
            &format!("{base}/Patient/p-2"),
            &writer,
            Some(&other),
            d
        )),
        201
    );

    let reader_es = mint("ES256", claims("user/Patient.read"));
    let url = format!("{base}/Patient/p-1");
    let cases: Vec<(&str, String, u64)> = vec![
        ("valid ES256", reader_es.clone(), 200),
        ("valid RS256", writer.clone(), 200),
        ("no token", "-".into(), 401),
        (
            "expired",
            mint(
                "RS256",
                json!({"iss": "https://auth.example", "aud": aud, "exp": -60, "scope": "system/*.read"}),
            ),
            401,
        ),
        (
            "not yet valid",
            mint(
                "RS256",
                json!({"iss": "https://auth.example", "aud": aud, "exp": 300, "nbf": 120, "scope": "system/*.read"}),
            ),
            401,
        ),
        (
            "wrong audience",
            mint(
                "RS256",
                json!({"iss": "https://auth.example", "aud": "https://elsewhere", "exp": 300, "scope": "system/*.read"}),
            ),
            401,
        ),
        (
            "wrong issuer",
            mint(
                "ES256",
                json!({"iss": "https://evil.example", "aud": aud, "exp": 300, "scope": "system/*.read"}),
            ),
            401,
        ),
        (
            "tampered",
            format!("{}x", &reader_es[..reader_es.len() - 2]),
            401,
        ),
        (
            "insufficient scope",
            mint("RS256", claims("user/Observation.read")),
            403,
        ),
        (
            "own patient",
            mint("RS256", claims("patient/Patient.read")),
            200,
        ),
    ];
    let mut outcomes = Vec::new();
    for (what, token, want) in &cases {
        let r = request("GET", &url, token, None, d);
        assert_eq!(status(&r), *want, "{what}: {r}");
        if *want != 200 {
            assert_eq!(r["body"]["resourceType"], "OperationOutcome", "{what}");
            outcomes.push(r["body"].clone());
        }
    }
    // A patient-context token cannot read another patient.
    let own = mint("RS256", claims("patient/*.read"));
    assert_eq!(
        status(&request(
            "GET",
            &format!("{base}/Patient/p-2"),
            &own,
            None,
            d
        )),
        403
    );
    // A patient-context writer cannot take over another patient's resource
    // by rewriting its subject, nor learn its version from a 412.
    let obs = |subject: &str| {
        json!({"resourceType": "Observation", "id": "obs-p2", "status": "final",
               "code": {"text": "t"}, "subject": {"reference": subject}})
    };
    let url = format!("{base}/Observation/obs-p2");
    let made = request("PUT", &url, &writer, Some(&obs("Patient/p-2")), d);
    assert_eq!(status(&made), 201, "{made}");
    let own_writer = mint("RS256", claims("patient/*.read patient/*.write"));
    let taken = request("PUT", &url, &own_writer, Some(&obs("Patient/p-1")), d);
    assert_eq!(status(&taken), 403, "{taken}");
    let gone = request("DELETE", &url, &own_writer, None, d);
    assert_eq!(status(&gone), 403, "{gone}");
    let still = request("GET", &url, &writer, None, d);
    assert_eq!(
        still["body"]["subject"]["reference"], "Patient/p-2",
        "{still}"
    );
    // A read scope cannot write.
    let r = request(
        "PUT",
        &format!("{base}/Patient/p-1"),
        &reader_es,
        Some(&patient_json),
        d,
    );
    assert_eq!(status(&r), 403);
    outcomes.push(r["body"].clone());
    // fhirpy with a token reads; the CapabilityStatement is public and says SMART.
    let p = client(&["read", &base, "Patient", "p-1", &reader_es]);
    assert_eq!(p["id"], "p-1");
    let m = request("GET", &format!("{base}/metadata"), "-", None, d);
    assert_eq!(status(&m), 200);
    assert_eq!(
        m["body"]["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "SMART-on-FHIR"
    );
    outcomes.push(m["body"].clone());

    // Websocket binding tokens need a bearer token that may read what the
    // Subscription watches; the unauthenticated R4 `bind` is refused.
    for (id, p) in [("ws-1", "p-1"), ("ws-2", "p-2")] {
        let sub = json!({"resourceType": "Subscription", "id": id, "status": "requested", "reason": "t",
            "criteria": format!("Observation?patient=Patient/{p}"), "channel": {"type": "websocket"}});
        let r = request(
            "PUT",
            &format!("{base}/Subscription/{id}"),
            &writer,
            Some(&sub),
            d,
        );
        assert_eq!(status(&r), 201, "{r}");
    }
    let op = |id: &str| format!("{base}/Subscription/{id}/$get-ws-binding-token");
    let own_obs = mint(
        "RS256",
        claims("patient/Observation.read patient/Subscription.read"),
    );
    for (what, url, token, want) in [
        ("no token", op("ws-1"), "-".to_string(), 401),
        ("system read", op("ws-1"), writer.clone(), 200),
        ("own patient", op("ws-1"), own_obs.clone(), 200),
        ("another patient", op("ws-2"), own_obs.clone(), 403),
        ("no Observation scope", op("ws-1"), reader_es.clone(), 403),
    ] {
        let r = request("GET", &url, &token, None, d);
        assert_eq!(status(&r), want, "{what}: {r}");
    }
    let ws_url = format!("ws://{}/fhir/$websocket", b.fhir.unwrap());
    let ws = Ws::connect(&ws_url, &["bind ws-1"]);
    assert_eq!(ws.next_json()["issue"][0]["code"], "security");
    validate(&outcomes);
}

#[test]
fn check_config_refuses_a_public_gateway_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[fhir]\nlisten = \"0.0.0.0:8575\"\n").unwrap();
    let (code, _, err) = medbus(&["check-config", &path.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":2:10: fhir.listen: 0.0.0.0:8575 is not a loopback address"),
        "{err}"
    );
}

/// SIGTERM: during `shutdown_grace` the gateway still answers (only
/// `/readyz` turns 503), so clients finish what they were doing.
#[test]
fn the_gateway_answers_during_the_shutdown_grace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = config("").replace("shutdown_grace = \"0s\"", "shutdown_grace = \"3s\"");
    assert!(config.contains("shutdown_grace = \"3s\""));
    let b = Broker::start(&config, &tmp.path().join("data"));
    let fhir = b.fhir.expect("gateway");
    let http = b.http.expect("http");
    assert_eq!(http_get(fhir, "/fhir/metadata").map(|r| r.0), Some(200));
    Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    wait_for("not ready", || {
        http_get(http, "/readyz").map(|r| r.0) == Some(503)
    });
    assert_eq!(http_get(fhir, "/fhir/metadata").map(|r| r.0), Some(200));
    assert_eq!(b.stop(), Some(0));
}

/// A client that stops sending its body half-way is answered 408 with an
/// OperationOutcome once `request_timeout` has passed, not held for ever.
#[test]
fn a_body_that_stops_half_way_gets_408() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(
        &config("request_timeout = \"1s\"\n"),
        &tmp.path().join("data"),
    );
    let fhir = b.fhir.expect("gateway");
    let mut s = std::net::TcpStream::connect(fhir).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(
        b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n\
          Content-Length: 1000\r\n\r\n{\"resourceType\":\"Pat",
    )
    .expect("write");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("OperationOutcome"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}
