//! R4 `Subscription` resources: what the gateway accepts, how `criteria`
//! is read and matched, and the notification Bundle a rest-hook receives.
//!
//! Accepted: `criteria` = a resource type with optional `patient`,
//! `subject`, `identifier`, `code`, `status` and `_id` parameters (all must
//! hold), e.g. `Observation?patient=Patient/123`; `channel.type` =
//! `rest-hook` with an `http://` endpoint and optional `channel.header`
//! entries (`"Name: value"`), or `websocket` (no endpoint: clients connect
//! to `[base]/$websocket` and bind, see [`super::websocket`]);
//! `channel.payload` (`application/fhir+json` puts the resource in the
//! notification; absent: id only). The server sets `status` to `active`;
//! `off` stops deliveries.
//!
//! Notifications follow the R4 Subscriptions Backport shape: a `history`
//! Bundle whose first entry is a `Parameters` SubscriptionStatus naming the
//! subscription and the focus, followed by the resource when a payload is
//! asked for.

use super::hook::{self, Endpoint};
use super::outcome::FhirError;
use super::resource::{self, check_id, id_of};
use crate::headers;
use crate::storage::{cursor_key, Record, StorageError, Store};
use serde_json::{json, Map, Value};

/// Topic Subscription resources are written to (the manager and the view
/// read it).
pub const TOPIC: &str = "fhir.Subscription";
/// Cursor kind of subscription deliveries in the cursor tree.
pub const CURSOR_KIND: &str = "subscription";
/// Most `channel.header` entries: each goes into every notification.
const MAX_HEADERS: usize = 16;
/// The profile of a Backport SubscriptionStatus in R4.
const STATUS_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// A parsed `criteria`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// The resource type watched.
    pub resource_type: String,
    /// (name, value) filters, all of which must hold.
    pub params: Vec<(String, String)>,
}

/// Where a Subscription's notifications go.
#[derive(Debug, Clone)]
pub enum Channel {
    /// POSTed to an HTTP endpoint.
    RestHook {
        /// Where notifications are posted.
        endpoint: Endpoint,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// Sent to the websockets bound to the Subscription.
    Websocket,
}

/// A Subscription as the deliveries need it.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its id.
    pub id: String,
    /// What it watches.
    pub criteria: Criteria,
    /// Where notifications go.
    pub channel: Channel,
    /// Whether notifications carry the resource.
    pub full_resource: bool,
    /// Whether it is active (`status` is `active` or `requested`).
    pub active: bool,
}

/// Parse `Type?name=value&…`.
pub fn parse_criteria(s: &str) -> Result<Criteria, String> {
    let (t, query) = s.split_once('?').unwrap_or((s, ""));
    if !resource::is_resource_type(t) {
        return Err(format!(
            "criteria must start with a FHIR resource type, e.g. \"Observation?patient=Patient/123\" (got {:?})",
            resource::truncate(t, 64)
        ));
    }
    let mut params = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| format!("criteria has a bad query: {e}"))?
        .into_inner();
    for (k, v) in &mut params {
        *v = resource::one_value(k, v)?;
        match k.as_str() {
            "patient" | "subject" | "identifier" | "code" | "status" | "_id" => {}
            other => {
                return Err(format!(
                    "criteria parameter {:?} is not supported (supported: patient, subject, identifier, code, status, _id)",
                    resource::truncate(other, 64)
                ))
            }
        }
        if v.is_empty() {
            return Err(format!("criteria parameter {k} needs a value"));
        }
    }
    Ok(Criteria {
        resource_type: t.to_string(),
        params,
    })
}

/// Token match: `system|code`, `|code` or `code` against (system, code) pairs.
fn token_matches(want: &str, have: &[(String, String)]) -> bool {
    match want.split_once('|') {
        Some((system, code)) => have.iter().any(|(s, c)| s == system && c == code),
        None => have.iter().any(|(_, c)| c == want),
    }
}

fn codings(r: &Map<String, Value>) -> Vec<(String, String)> {
    r.get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some((
                        c.get("system")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.get("code")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Criteria {
    /// Whether a resource of the watched type meets every filter.
    pub fn matches(&self, r: &Map<String, Value>) -> bool {
        if resource::type_of(r) != self.resource_type {
            return false;
        }
        self.params.iter().all(|(k, v)| match k.as_str() {
            "patient" | "subject" => {
                let want = v.strip_prefix("Patient/").unwrap_or(v);
                resource::patients(r).iter().any(|p| p == want)
                    || (k == "subject"
                        && r.get("subject")
                            .and_then(|s| s.get("reference"))
                            .and_then(Value::as_str)
                            == Some(v.as_str()))
            }
            "identifier" => token_matches(v, &resource::identifiers(r)),
            "code" => token_matches(v, &codings(r)),
            "status" => r.get("status").and_then(Value::as_str) == Some(v.as_str()),
            "_id" => id_of(r) == Some(v.as_str()),
            _ => false,
        })
    }

    /// The topics a Subscription on this criteria reads: the type's own
    /// topic (filled by routes) and the gateway's inbound topic.
    pub fn sources(&self) -> [String; 2] {
        [
            format!("fhir.{}", self.resource_type),
            super::INBOUND_TOPIC.to_string(),
        ]
    }
}

/// Read a Subscription resource.
pub fn spec(r: &Map<String, Value>) -> Result<Spec, String> {
    let id = id_of(r).ok_or("the Subscription has no id")?.to_string();
    let criteria = r
        .get("criteria")
        .and_then(Value::as_str)
        .ok_or("Subscription.criteria is required")?;
    let criteria = parse_criteria(criteria)?;
    if criteria.resource_type == "Subscription" {
        return Err("a Subscription cannot watch Subscriptions".into());
    }
    let channel = r.get("channel").ok_or("Subscription.channel is required")?;
    let channel_out = match channel.get("type").and_then(Value::as_str) {
        Some("rest-hook") => rest_hook(channel)?,
        Some("websocket") => {
            if channel.get("endpoint").is_some() || channel.get("header").is_some() {
                return Err("a websocket channel takes no endpoint or header: clients connect to [base]/$websocket and bind".into());
            }
            Channel::Websocket
        }
        Some(other) => {
            return Err(format!(
                "channel.type {:?} is not supported: this server delivers rest-hook and websocket",
                resource::truncate(other, 32)
            ))
        }
        None => return Err("Subscription.channel.type is required".into()),
    };
    let full_resource = match channel.get("payload").and_then(Value::as_str) {
        None => false,
        Some(
            "application/fhir+json" | "application/json" | "application/fhir+json;fhirVersion=4.0",
        ) => true,
        Some(other) => {
            return Err(format!(
                "channel.payload {:?} is not supported: use application/fhir+json or leave it out",
                resource::truncate(other, 64)
            ))
        }
    };
    let status = r
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("requested");
    Ok(Spec {
        id,
        criteria,
        channel: channel_out,
        full_resource,
        active: matches!(status, "active" | "requested"),
    })
}

/// Read a rest-hook channel: its endpoint and headers.
fn rest_hook(channel: &Value) -> Result<Channel, String> {
    let url = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or("a rest-hook needs channel.endpoint")?;
    let endpoint = hook::parse_url(url)?;
    let mut headers = Vec::new();
    if let Some(h) = channel.get("header") {
        let list = h
            .as_array()
            .ok_or("channel.header must be a list of strings")?;
        if list.len() > MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} channel.header entries"));
        }
        for x in list {
            let s = x
                .as_str()
                .ok_or("channel.header must be a list of strings")?;
            let (k, v) = s
                .split_once(':')
                .ok_or("a channel.header entry is \"Name: value\"")?;
            let k = k.trim();
            let v = v.trim();
            let name_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok || v.bytes().any(|b| b.is_ascii_control()) {
                return Err(
                    "a channel.header entry is \"Name: value\" without control characters".into(),
                );
            }
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Ok(Channel::RestHook { endpoint, headers })
}

/// Check a Subscription for storing and set its status.
pub fn check(r: &mut Map<String, Value>) -> Result<(), FhirError> {
    if let Some(id) = id_of(r) {
        check_id(id)?;
    }
    let status = r
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("requested");
    let next = match status {
        "requested" | "active" => "active",
        "off" => "off",
        other => {
            return Err(FhirError::invalid(format!(
                "Subscription.status {:?} cannot be set by a client: use requested, active or off",
                resource::truncate(other, 32)
            )))
        }
    };
    if r.get("reason").and_then(Value::as_str).is_none() {
        return Err(FhirError::invalid("Subscription.reason is required"));
    }
    r.insert("status".into(), Value::String(next.into()));
    spec(r).map_err(FhirError::invalid)?;
    Ok(())
}

/// (cursor key, offset) pairs to place, and cursor keys to release.
pub type CursorChanges = (Vec<(Vec<u8>, u64)>, Vec<Vec<u8>>);

/// How a Subscription being written (or deleted) moves its cursors, in
/// the same atomic write as the record: (cursors to place, cursors to
/// release). A new Subscription hears what comes next (its sources' current
/// ends); an updated one keeps its place on the topics it still reads and
/// releases the others; a deleted one releases all — a cursor nobody reads
/// would hold retention back for ever. (An `off` one keeps its place.)
pub fn cursor_changes(
    store: &Store,
    id: &str,
    record: &Record,
) -> Result<CursorChanges, StorageError> {
    let sources: Vec<String> = if record.header(headers::FHIR_DELETED) == Some("true") {
        Vec::new()
    } else {
        match resource::parse_resource(&record.payload)
            .ok()
            .and_then(|m| spec(&m).ok())
        {
            // An inactive Subscription holds no cursor: turned on again, it
            // starts from then, as a new one does (not with what happened
            // while it was off), and meanwhile it holds no retention back.
            Some(s) if !s.active => Vec::new(),
            Some(s) => s.criteria.sources().to_vec(),
            // Not a Subscription we can read: leave its cursors alone.
            None => return Ok((Vec::new(), Vec::new())),
        }
    };
    let mut place = Vec::new();
    for topic in &sources {
        let key = cursor_key(CURSOR_KIND, id, topic);
        if store.cursor_if_set(&key)?.is_none() {
            let next = store.last_offset(topic)?.map(|l| l + 1).unwrap_or(0);
            place.push((key, next));
        }
    }
    let prefix = String::from_utf8_lossy(&cursor_key(CURSOR_KIND, id, "")).into_owned();
    let release = store
        .cursors()?
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix(&prefix)
                .is_some_and(|topic| !sources.iter().any(|t| t == topic))
        })
        .map(|(k, _)| k.into_bytes())
        .collect();
    Ok((place, release))
}

/// The notification Bundle for one event. The resource's JSON is spliced
/// in as it is stored (checked to be JSON, not parsed into a tree and
/// written again): a busy Subscription builds one of these per event.
pub fn notification(
    s: &Spec,
    resource_type: &str,
    id: &str,
    resource_json: Option<&[u8]>,
    timestamp: &str,
) -> Vec<u8> {
    let focus = format!("{resource_type}/{id}");
    let status = status_entry(
        s,
        "event-notification",
        Some(json!({"name": "notification-event", "part": [
            {"name": "focus", "valueReference": {"reference": focus}}
        ]})),
    );
    let resource = resource_json
        .filter(|_| s.full_resource)
        .filter(|j| serde_json::from_slice::<serde::de::IgnoredAny>(j).is_ok());
    let head = json!({
        "resourceType": "Bundle",
        "id": resource::new_id(),
        "type": "history",
        "timestamp": timestamp,
    })
    .to_string();
    let mut out = Vec::with_capacity(1024 + resource.map_or(0, <[u8]>::len));
    // `head` is an object: reopen it to add the entries.
    out.extend_from_slice(head.trim_end_matches('}').as_bytes());
    out.extend_from_slice(b",\"entry\":[");
    out.extend_from_slice(status.to_string().as_bytes());
    if let Some(r) = resource {
        out.extend_from_slice(b",{\"resource\":");
        out.extend_from_slice(r);
        out.extend_from_slice(b",\"request\":{\"method\":\"PUT\",\"url\":");
        out.extend_from_slice(Value::String(focus).to_string().as_bytes());
        out.extend_from_slice(b"},\"response\":{\"status\":\"200\"}}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// The handshake Bundle a websocket receives when it binds a Subscription.
pub fn handshake(s: &Spec, timestamp: &str) -> Vec<u8> {
    history_bundle(vec![status_entry(s, "handshake", None)], timestamp)
}

/// The SubscriptionStatus entry opening every notification Bundle.
fn status_entry(s: &Spec, kind: &str, event: Option<Value>) -> Value {
    let mut parameter = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("Subscription/{}", s.id)}}),
        json!({"name": "topic", "valueCanonical": format!("urn:medbus:criteria:{}", s.criteria.resource_type)}),
        json!({"name": "status", "valueCode": "active"}),
        json!({"name": "type", "valueCode": kind}),
    ];
    parameter.extend(event);
    let status = json!({
        "resourceType": "Parameters",
        "id": resource::new_id(),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameter,
    });
    json!({
        "fullUrl": format!("urn:uuid:{}", status["id"].as_str().unwrap_or_default()),
        "resource": status,
        "request": {"method": "GET", "url": format!("Subscription/{}/$status", s.id)},
        "response": {"status": "200"}
    })
}

fn history_bundle(entries: Vec<Value>, timestamp: &str) -> Vec<u8> {
    json!({
        "resourceType": "Bundle",
        "id": resource::new_id(),
        "type": "history",
        "timestamp": timestamp,
        "entry": entries,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn criteria_parse_and_match() {
        let c = parse_criteria("Observation?patient=Patient/123&code=http://loinc.org|1234-5")
            .expect("parses");
        assert_eq!(c.resource_type, "Observation");
        let hit = obj(json!({"resourceType": "Observation", "id": "o",
            "subject": {"reference": "Patient/123"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}}));
        assert!(c.matches(&hit));
        let other = obj(json!({"resourceType": "Observation", "id": "o",
            "subject": {"reference": "Patient/999"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}}));
        assert!(!c.matches(&other));
        assert!(parse_criteria("Nope?x=1").is_err());
        assert!(parse_criteria("Observation?name=x").is_err());
        assert!(parse_criteria("Observation").is_ok());
    }

    #[test]
    fn notifications_carry_the_resource_when_asked() {
        let mut r = obj(
            json!({"resourceType": "Subscription", "id": "s1", "reason": "r",
            "criteria": "Patient", "channel": {"type": "websocket", "payload": "application/fhir+json"}}),
        );
        check(&mut r).expect("valid");
        let mut s = spec(&r).expect("spec");
        let patient = br#"{"resourceType":"Patient","id":"p\"1"}"#;
        let full: Value = serde_json::from_slice(&notification(
            &s,
            "Patient",
            "p\"1",
            Some(patient),
            "2026-01-01T00:00:00Z",
        ))
        .expect("JSON");
        assert_eq!(full["type"], "history");
        assert_eq!(full["entry"].as_array().map(Vec::len), Some(2));
        assert_eq!(full["entry"][1]["resource"]["id"], "p\"1");
        assert_eq!(full["entry"][1]["request"]["url"], "Patient/p\"1");
        // Not asked for, or not JSON: the status entry only.
        let broken: Value =
            serde_json::from_slice(&notification(&s, "Patient", "p", Some(b"{not json"), "t"))
                .expect("JSON");
        assert_eq!(broken["entry"].as_array().map(Vec::len), Some(1));
        s.full_resource = false;
        let id_only: Value =
            serde_json::from_slice(&notification(&s, "Patient", "p", Some(patient), "t"))
                .expect("JSON");
        assert_eq!(id_only["entry"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn subscriptions_are_checked() {
        let mut s = obj(
            json!({"resourceType": "Subscription", "id": "s1", "reason": "r",
            "criteria": "Observation?patient=Patient/1",
            "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/h",
                        "payload": "application/fhir+json", "header": ["X-Token: abc"]}}),
        );
        check(&mut s).expect("valid");
        assert_eq!(s.get("status").and_then(Value::as_str), Some("active"));
        let mut ws = s.clone();
        ws.insert("channel".into(), json!({"type": "websocket"}));
        check(&mut ws).expect("a websocket channel is valid");
        ws.insert(
            "channel".into(),
            json!({"type": "websocket", "endpoint": "ws://elsewhere/"}),
        );
        assert!(check(&mut ws).is_err());
        let mut email = s.clone();
        email.insert("channel".into(), json!({"type": "email"}));
        assert!(check(&mut email).is_err());
        let mut inj = s.clone();
        inj.insert(
            "channel".into(),
            json!({"type": "rest-hook", "endpoint": "http://h/", "header": ["X: a\r\nY: b"]}),
        );
        assert!(check(&mut inj).is_err());
    }
}
