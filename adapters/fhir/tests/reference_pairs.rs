//! Compare our Bundles with Microsoft FHIR-Converter's expected outputs (corpus `pairs.tsv`) on
//! the facts that matter. Every difference must be listed in `DIFFERENCES.md` (a table this
//! test reads); any other difference fails, and so does a listed difference that no longer
//! occurs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use medbus_tests::corpus_dir as corpus;

/// One row of DIFFERENCES.md.
#[derive(Debug)]
struct Rule {
    line: usize,
    fact: String,
    files: Vec<String>,
    rule: String,
    used: std::cell::Cell<bool>,
}

fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(p) {
                return false;
            }
            rest = &rest[p.len()..];
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(pos) = rest.find(p) {
            rest = &rest[pos + p.len()..];
        } else {
            return false;
        }
    }
    true
}

fn rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/DIFFERENCES.md"))
        .expect("DIFFERENCES.md");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if !l.starts_with('|') || l.starts_with("| fact") || l.starts_with("|---") {
            continue;
        }
        let cols: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cols.len() >= 4, "DIFFERENCES.md:{}: need 4 columns", i + 1);
        out.push(Rule {
            line: i + 1,
            fact: cols[0].trim_matches('`').to_string(),
            files: cols[1]
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            rule: cols[2].trim_matches('`').to_string(),
            used: std::cell::Cell::new(false),
        });
    }
    out
}

fn resources<'a>(b: &'a Value, t: &str) -> Vec<&'a Value> {
    b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| &e["resource"])
                .filter(|r| r["resourceType"] == t)
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Date-times with an offset become UTC seconds (so +05:30 and +01:10 renderings of one instant
/// compare equal); anything else stays as written.
fn when(v: &Value) -> String {
    let t = s(v);
    let b = t.as_bytes();
    if t.len() < 19 || b.get(10) != Some(&b'T') {
        return t;
    }
    let n = |a: usize, l: usize| t.get(a..a + l).and_then(|x| x.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) =
        (n(0, 4), n(5, 2), n(8, 2), n(11, 2), n(14, 2), n(17, 2))
    else {
        return t;
    };
    let tail = &t[19..];
    let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let off = if tail == "Z" {
        0
    } else if tail.len() == 6 {
        let sign = if tail.starts_with('-') { -1 } else { 1 };
        sign * (tail[1..3].parse::<i64>().unwrap_or(0) * 60
            + tail[4..6].parse::<i64>().unwrap_or(0))
    } else {
        return t;
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off * 60;
    format!("utc:{secs}")
}

fn code_of(cc: &Value) -> String {
    let c = &cc["coding"][0]["code"];
    if c.is_null() {
        s(&cc["text"])
    } else {
        s(c)
    }
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map(|f| format!("{f}")).unwrap_or_default(),
        other => s(other),
    }
}

fn obs_value(o: &Value) -> String {
    if let Some(q) = o.get("valueQuantity") {
        return format!("Q:{}", num(&q["value"]));
    }
    if let Some(x) = o.get("valueString") {
        return format!("S:{}", s(x).trim());
    }
    if let Some(x) = o.get("valueCodeableConcept") {
        return format!("C:{}", code_of(x));
    }
    if let Some(x) = o.get("valueDateTime") {
        return format!("D:{}", when(x));
    }
    if let Some(x) = o.get("valueRange") {
        return format!("R:{}-{}", num(&x["low"]["value"]), num(&x["high"]["value"]));
    }
    if let Some(x) = o.get("valueRatio") {
        return format!(
            "Ratio:{}/{}",
            num(&x["numerator"]["value"]),
            num(&x["denominator"]["value"])
        );
    }
    "-".to_string()
}

fn unit(o: &Value) -> String {
    let q = &o["valueQuantity"];
    s(&q["unit"])
}

/// fact name → set of rendered values.
fn facts(b: &Value) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut f: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut put = |k: &'static str, v: String| {
        f.entry(k).or_default().insert(v);
    };
    for e in b["entry"].as_array().into_iter().flatten() {
        put("types", s(&e["resource"]["resourceType"]));
    }
    for p in resources(b, "Patient") {
        for i in p["identifier"].as_array().into_iter().flatten() {
            put("Patient.identifier", s(&i["value"]));
        }
        for n in p["name"].as_array().into_iter().flatten() {
            put(
                "Patient.name",
                format!("{}|{}", s(&n["family"]).trim(), s(&n["given"][0]).trim()),
            );
        }
        if !p["birthDate"].is_null() {
            put("Patient.birthDate", s(&p["birthDate"]));
        }
        if !p["gender"].is_null() {
            put("Patient.gender", s(&p["gender"]));
        }
        for a in p["address"].as_array().into_iter().flatten() {
            for l in a["line"].as_array().into_iter().flatten() {
                for w in s(l).split_whitespace() {
                    put("Patient.address.line", w.to_string());
                }
            }
            put(
                "Patient.address",
                format!(
                    "{}|{}|{}|{}",
                    s(&a["city"]).trim(),
                    s(&a["state"]).trim(),
                    s(&a["postalCode"]).trim(),
                    s(&a["country"]).trim()
                ),
            );
        }
    }
    for e in resources(b, "Encounter") {
        put("Encounter.class", s(&e["class"]["code"]));
        put("Encounter.status", s(&e["status"]));
        put(
            "Encounter.period",
            format!(
                "{}..{}",
                when(&e["period"]["start"]),
                when(&e["period"]["end"])
            ),
        );
    }
    for o in resources(b, "Observation") {
        let code = code_of(&o["code"]);
        put("Observation.code", code.clone());
        put("Observation.value", format!("{code}={}", obs_value(o)));
        put("Observation.unit", format!("{code}={}", unit(o)));
        put("Observation.status", format!("{code}={}", s(&o["status"])));
        put(
            "Observation.effective",
            format!("{code}={}", when(&o["effectiveDateTime"])),
        );
    }
    for d in resources(b, "DiagnosticReport") {
        put("DiagnosticReport.code", code_of(&d["code"]));
        put(
            "DiagnosticReport.status",
            format!("{}={}", code_of(&d["code"]), s(&d["status"])),
        );
    }
    f
}

const FACTS: &[&str] = &[
    "types",
    "Patient.identifier",
    "Patient.name",
    "Patient.birthDate",
    "Patient.gender",
    "Patient.address",
    "Patient.address.line",
    "Encounter.class",
    "Encounter.status",
    "Encounter.period",
    "Observation.code",
    "Observation.value",
    "Observation.unit",
    "Observation.status",
    "Observation.effective",
    "DiagnosticReport.code",
    "DiagnosticReport.status",
];

/// Check one fact of one file against the rules; `Err` describes an unlisted difference.
fn judge(
    rules: &[Rule],
    stem: &str,
    fact: &str,
    ours: &BTreeSet<String>,
    theirs: &BTreeSet<String>,
) -> Result<(), String> {
    if ours == theirs {
        return Ok(());
    }
    let matching: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.fact == fact && r.files.iter().any(|p| glob(p, stem)))
        .collect();
    // `partial` rows cover every fact of an unmapped message type.
    let partial: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.rule == "partial" && r.files.iter().any(|p| glob(p, stem)))
        .collect();
    let mut theirs = theirs.clone();
    let mut ours_adj = ours.clone();
    for r in &matching {
        if let Some(map) = r.rule.strip_prefix("map ") {
            if let Some((from, to)) = map.split_once("=>") {
                let (from, to) = (from.trim(), to.trim());
                let before = theirs.clone();
                theirs = theirs
                    .into_iter()
                    .map(|v| {
                        if v == from {
                            to.to_string()
                        } else if v.ends_with(&format!("={from}")) {
                            format!("{}{to}", &v[..v.len() - from.len()])
                        } else {
                            v
                        }
                    })
                    .collect();
                if before != theirs {
                    r.used.set(true);
                }
            }
        }
    }
    for r in &matching {
        if let Some(list) = r.rule.strip_prefix("lacks ") {
            for t in list.split_whitespace() {
                if theirs.contains(t) && !ours_adj.contains(t) {
                    theirs.remove(t);
                    r.used.set(true);
                }
            }
        }
        if let Some(list) = r.rule.strip_prefix("adds ") {
            for t in list.split_whitespace() {
                if ours_adj.contains(t) && !theirs.contains(t) {
                    ours_adj.remove(t);
                    r.used.set(true);
                }
            }
        }
    }
    if ours_adj == theirs {
        return Ok(());
    }
    if !partial.is_empty() && ours_adj.is_subset(&theirs) {
        partial.iter().for_each(|r| r.used.set(true));
        return Ok(());
    }
    for r in &matching {
        let ok = match r.rule.as_str() {
            "ignore" => true,
            "subset" => ours_adj.is_subset(&theirs),
            "superset" => ours_adj.is_superset(&theirs),
            _ => false,
        };
        if ok {
            r.used.set(true);
            return Ok(());
        }
    }
    let only_ours: Vec<_> = ours_adj.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours_adj).collect();
    Err(format!(
        "{stem}: {fact}: only ours {only_ours:?}; only Microsoft's {only_theirs:?}"
    ))
}

#[test]
fn differences_from_the_reference_converter_are_all_listed() {
    let root = corpus().join("microsoft-fhir-converter");
    let pairs = std::fs::read_to_string(root.join("pairs.tsv")).expect("pairs.tsv");
    let rules = rules();
    let opts = medbus_fhir::ConvertOptions::default();
    let mut failures = Vec::new();
    let mut compared = 0;
    for line in pairs.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [_, input, expected] = cols[..] else {
            continue;
        };
        let stem = input
            .trim_start_matches("input/")
            .trim_end_matches(".hl7")
            .to_string();
        let bytes = std::fs::read(root.join(input)).unwrap();
        let ours = match medbus_fhir::convert_bytes(&bytes, &opts) {
            Ok(c) => serde_json::from_slice::<Value>(&c.bundle_json).unwrap(),
            Err(e) => {
                failures.push(format!("{stem}: conversion failed: {e}"));
                continue;
            }
        };
        let theirs: Value =
            serde_json::from_slice(&std::fs::read(root.join(expected)).unwrap()).unwrap();
        let (fo, ft) = (facts(&ours), facts(&theirs));
        let empty = BTreeSet::new();
        for fact in FACTS {
            let o = fo.get(fact).unwrap_or(&empty);
            let t = ft.get(fact).unwrap_or(&empty);
            if let Err(e) = judge(&rules, &stem, fact, o, t) {
                failures.push(e);
            }
        }
        compared += 1;
    }
    for r in &rules {
        if !r.used.get() {
            failures.push(format!(
                "DIFFERENCES.md:{}: listed difference no longer occurs ({} {} {:?})",
                r.line, r.fact, r.rule, r.files
            ));
        }
    }
    assert!(compared >= 132, "only {compared} pairs compared");
    assert!(
        failures.is_empty(),
        "{} unlisted differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
