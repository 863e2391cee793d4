//! Behaviour of the mapping on small hand-written messages: event semantics, ids, datatypes,
//! partial and refused messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use medbus_fhir::{convert_bytes, ConvertError, ConvertOptions};
use serde_json::Value;

fn bundle(msg: &str, opts: &ConvertOptions) -> Value {
    let c = convert_bytes(msg.replace('\n', "\r").as_bytes(), opts).unwrap();
    serde_json::from_slice(&c.bundle_json).unwrap()
}

fn res<'a>(b: &'a Value, t: &str) -> Vec<&'a Value> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == t)
        .collect()
}

fn one<'a>(b: &'a Value, t: &str) -> &'a Value {
    let v = res(b, t);
    assert_eq!(v.len(), 1, "{t}: {v:?}");
    v[0]
}

const ADT: &str = "MSH|^~\\&|APP|FAC|RCV|RFAC|20240102030405+0100||ADT^{T}^ADT_A01|CTRL1|P|2.5\n\
EVN|{T}|20240102030405+0100\n\
PID|1||12345^^^HOSP^MR~999-99-9999^^^SSA^SS||Doe^Jane^Q^^Dr.||19800229|F|||1 Main St^^Town^ST^12345^USA^H||555-1234^PRN^PH|||M\n\
PV1|1|I|WARD^101^A^HOSP||||1234^Welby^Marcus^^^Dr^^^NPI||||||||||||V100^^^HOSP^VN|||||||||||||||||||||||||20240101120000+0100|{END}\n\
OBX|1|NM|8302-2^Body height^LN||172.50|cm^centimeter^UCUM|||||F|||20240101130000+0100\n";

fn adt(trigger: &str, end: &str) -> Value {
    bundle(
        &ADT.replace("{T}", trigger).replace("{END}", end),
        &ConvertOptions::default(),
    )
}

#[test]
fn a01_admits_and_a03_finishes_the_same_encounter() {
    let a01 = adt("A01", "");
    let a03 = adt("A03", "20240103100000+0100");
    let (e1, e3) = (one(&a01, "Encounter"), one(&a03, "Encounter"));
    assert_eq!(e1["status"], "in-progress");
    assert_eq!(e3["status"], "finished");
    assert_eq!(e1["id"], e3["id"], "PV1-19 keys the Encounter");
    assert_eq!(e3["period"]["end"], "2024-01-03T10:00:00+01:00");
    assert_eq!(e1["class"]["code"], "IMP");
    assert_eq!(one(&a01, "Patient")["id"], one(&a03, "Patient")["id"]);
}

#[test]
fn a11_cancels_and_a13_reinstates() {
    assert_eq!(one(&adt("A11", ""), "Encounter")["status"], "cancelled");
    let a13 = adt("A13", "20240103100000+0100");
    let e = one(&a13, "Encounter");
    assert_eq!(e["status"], "in-progress");
    assert!(
        e["period"]["end"].is_null(),
        "a cancelled discharge has no end"
    );
}

#[test]
fn a08_updates_with_the_same_ids() {
    let a01 = adt("A01", "");
    let a08 = adt("A08", "");
    for t in ["Patient", "Encounter", "Observation", "Practitioner"] {
        assert_eq!(one(&a01, t)["id"], one(&a08, t)["id"], "{t}");
    }
}

#[test]
fn a40_links_the_merged_patient() {
    let msg = "MSH|^~\\&|APP|FAC|||20240102030405+0100||ADT^A40^ADT_A39|C40|P|2.5\n\
EVN|A40|20240102030405+0100\n\
PID|1||12345^^^HOSP^MR||Doe^Jane\n\
MRG|777^^^HOSP^MR\n";
    let b = bundle(msg, &ConvertOptions::default());
    let patients = res(&b, "Patient");
    assert_eq!(patients.len(), 2);
    let merged = patients.iter().find(|p| p["active"] == false).unwrap();
    let survivor = patients.iter().find(|p| p["active"] == true).unwrap();
    assert_eq!(merged["link"][0]["type"], "replaced-by");
    assert_eq!(
        merged["link"][0]["other"]["reference"],
        format!("Patient/{}", survivor["id"].as_str().unwrap())
    );
    assert_eq!(survivor["link"][0]["type"], "replaces");
}

#[test]
fn message_header_comes_first_with_the_trigger() {
    let b = adt("A01", "");
    let first = &b["entry"][0]["resource"];
    assert_eq!(first["resourceType"], "MessageHeader");
    assert_eq!(
        first["eventCoding"]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0003"
    );
    assert_eq!(first["eventCoding"]["code"], "A01");
    assert_eq!(b["type"], "transaction");
    assert_eq!(b["timestamp"], "2024-01-02T03:04:05+01:00");
    for e in b["entry"].as_array().unwrap() {
        let id = e["resource"]["id"].as_str().unwrap();
        assert_eq!(e["fullUrl"], format!("urn:uuid:{id}"));
        assert_eq!(e["request"]["method"], "PUT");
        assert_eq!(
            e["request"]["url"],
            format!("{}/{id}", e["resource"]["resourceType"].as_str().unwrap())
        );
    }
    let prov = one(&b, "Provenance");
    assert_eq!(prov["recorded"], "2024-01-02T03:04:05+01:00");
}

#[test]
fn patient_datatypes() {
    let b = adt("A01", "");
    let p = one(&b, "Patient");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["birthDate"], "1980-02-29");
    assert_eq!(p["name"][0]["family"], "Doe");
    assert_eq!(p["name"][0]["given"], serde_json::json!(["Jane", "Q"]));
    assert_eq!(p["name"][0]["prefix"][0], "Dr.");
    assert_eq!(p["identifier"][0]["value"], "12345");
    assert_eq!(p["identifier"][0]["type"]["coding"][0]["code"], "MR");
    assert_eq!(
        p["identifier"][0]["system"],
        "urn:medbus:identifier-system:HOSP"
    );
    assert_eq!(p["address"][0]["line"][0], "1 Main St");
    assert_eq!(p["address"][0]["use"], "home");
    assert_eq!(p["address"][0]["postalCode"], "12345");
    assert_eq!(p["telecom"][0]["value"], "555-1234");
    assert_eq!(p["telecom"][0]["use"], "home");
    assert_eq!(p["telecom"][0]["system"], "phone");
}

#[test]
fn decimals_keep_their_written_precision() {
    let c = convert_bytes(
        ADT.replace("{T}", "A01")
            .replace("{END}", "")
            .replace('\n', "\r")
            .as_bytes(),
        &ConvertOptions::default(),
    )
    .unwrap();
    let text = String::from_utf8(c.bundle_json).unwrap();
    assert!(text.contains(r#""valueQuantity":{"value":172.50,"unit":"centimeter","system":"http://unitsofmeasure.org","code":"cm"}"#), "{text}");
}

#[test]
fn times_without_offset_follow_the_site_time_zone() {
    let mut pv1 = vec![""; 45];
    pv1[0] = "PV1";
    pv1[2] = "O";
    pv1[19] = "V2^^^H";
    pv1[44] = "20240101120000";
    let msg = format!(
        "MSH|^~\\&|APP|FAC|||202401020304||ADT^A01|C2|P|2.5\nPID|1||1^^^H^MR\n{}\n",
        pv1.join("|")
    );
    let msg = msg.as_str();
    let none = bundle(msg, &ConvertOptions::default());
    assert!(none["timestamp"].is_null(), "no invented zone");
    assert!(res(&none, "Provenance").is_empty(), "recorded is required");
    assert_eq!(one(&none, "Encounter")["period"]["start"], "2024-01-01");
    let tz = ConvertOptions {
        time_zone: Some("+0100".into()),
        ..Default::default()
    };
    let with = bundle(msg, &tz);
    assert_eq!(with["timestamp"], "2024-01-02T03:04:00+01:00");
    assert_eq!(
        one(&with, "Encounter")["period"]["start"],
        "2024-01-01T12:00:00+01:00"
    );
    assert_eq!(
        one(&with, "Provenance")["recorded"],
        "2024-01-02T03:04:00+01:00"
    );
}

#[test]
fn unmapped_types_are_partial_not_errors() {
    let msg = "MSH|^~\\&|APP|FAC|||20240102030405+0100||ADT^A06|C3|P|2.5\n\
PID|1||1^^^H^MR||Doe^John\n\
PV1|1|I\n";
    let c = convert_bytes(
        msg.replace('\n', "\r").as_bytes(),
        &ConvertOptions::default(),
    )
    .unwrap();
    assert!(c.partial);
    assert_eq!(c.message_type, "ADT^A06");
    let b: Value = serde_json::from_slice(&c.bundle_json).unwrap();
    assert_eq!(b["meta"]["tag"][0]["code"], "partial");
    let types: Vec<&str> = c.resources.iter().map(|r| r.0.as_str()).collect();
    assert!(types.contains(&"Patient") && types.contains(&"MessageHeader"));
    assert!(!types.contains(&"Encounter"));
    let mh = one(&b, "MessageHeader");
    assert!(mh["meta"]["tag"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["code"] == "partial"));
}

#[test]
fn missing_patient_identifier_is_refused_without_patient_data() {
    let msg = "MSH|^~\\&|APP|FAC|||20240102030405+0100||ADT^A01|C4|P|2.5\nPID|1||||Secret^Name\n";
    let e = convert_bytes(
        msg.replace('\n', "\r").as_bytes(),
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        ConvertError::MissingField { field: "PID-3", .. }
    ));
    assert!(!e.to_string().contains("Secret"));
}

#[test]
fn bad_options_are_refused() {
    let bytes = common::ms_input("ADT-A01-01.hl7");
    let bad_tz = ConvertOptions {
        time_zone: Some("CET".into()),
        ..Default::default()
    };
    assert!(matches!(
        convert_bytes(&bytes, &bad_tz),
        Err(ConvertError::InvalidTimeZone(_))
    ));
    let bad_url = ConvertOptions {
        source_endpoint: Some("urn:oid:1.2.3".into()),
        ..Default::default()
    };
    assert!(matches!(
        convert_bytes(&bytes, &bad_url),
        Err(ConvertError::InvalidEndpoint(_))
    ));
    let good_url = ConvertOptions {
        source_endpoint: Some("mllp://10.0.0.1:2575".into()),
        ..Default::default()
    };
    let c = convert_bytes(&bytes, &good_url).unwrap();
    let b: Value = serde_json::from_slice(&c.bundle_json).unwrap();
    assert_eq!(
        b["entry"][0]["resource"]["source"]["endpoint"],
        "mllp://10.0.0.1:2575"
    );
}

#[test]
fn not_hl7_is_a_parse_error() {
    assert!(matches!(
        convert_bytes(b"hello", &ConvertOptions::default()),
        Err(ConvertError::Parse(_))
    ));
}

#[test]
fn oru_groups_observations_under_their_order() {
    let b = bundle(
        std::str::from_utf8(&common::ms_input("LAB-ORU-1.hl7")).unwrap(),
        &ConvertOptions::default(),
    );
    let reports = res(&b, "DiagnosticReport");
    assert_eq!(reports.len(), 2);
    let counts: Vec<usize> = reports
        .iter()
        .map(|r| r["result"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(counts, vec![5, 5]);
    assert_eq!(res(&b, "Observation").len(), 10);
    let obs = res(&b, "Observation");
    let ery = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "11273-0")
        .unwrap();
    assert_eq!(ery["status"], "preliminary");
    assert_eq!(ery["effectiveDateTime"], "2014-10-06T06:27:00+07:00");
    assert_eq!(ery["valueQuantity"]["value"], serde_json::json!(4.06));
}

#[test]
fn siu_vxu_mdm_rde_map_their_main_resource() {
    let cases = [
        ("SIU-S12-01.hl7", "Appointment"),
        ("SIU-S15-01.hl7", "Appointment"),
        ("VXU-V04-01.hl7", "Immunization"),
        ("MDM-T02-01.hl7", "DocumentReference"),
        ("RDE-O11-01.hl7", "MedicationRequest"),
        ("ORM-O01-01.hl7", "ServiceRequest"),
        ("DFT-P03-01.hl7", "Encounter"),
    ];
    for (file, t) in cases {
        let b = bundle(
            &String::from_utf8_lossy(&common::ms_input(file)),
            &ConvertOptions::default(),
        );
        assert!(!res(&b, t).is_empty(), "{file}: no {t}");
    }
    let s15 = bundle(
        &String::from_utf8_lossy(&common::ms_input("SIU-S15-01.hl7")),
        &ConvertOptions::default(),
    );
    assert_eq!(res(&s15, "Appointment")[0]["status"], "cancelled");
}
