//! One record through one route: condition, transform, targets.
//!
//! Pure functions of the record and the compiled route, so that they can be
//! tested without storage and reused by replay.

use crate::headers;
use crate::storage::Record;
use medbus_config::route::{CompiledRoute, TemplatePart};
use medbus_config::{Subject, Transform};
use medbus_fhir::{Conversion, ConvertOptions};
use medbus_hl7::Message;
use std::time::{Duration, Instant};

/// What became of one source record.
pub enum Routed {
    /// The condition did not hold.
    Filtered,
    /// Matched: these (topic, record) outputs.
    Outputs(Vec<(String, Record)>),
    /// Matched but could not be transformed: dead-letter with this reason.
    Failed(String),
}

/// The result plus how long a FHIR conversion took (for the metric).
pub struct RouteResult {
    /// The outcome.
    pub routed: Routed,
    /// `Some((message_type, time))` when a conversion ran.
    pub conversion: Option<(String, Duration)>,
}

/// Whether a record's content type is FHIR JSON.
fn is_fhir(r: &Record) -> bool {
    r.content_type.starts_with("application/fhir+json")
}

/// Route one record.
pub fn route_record(
    route: &CompiledRoute,
    source_topic: &str,
    offset: u64,
    record: &Record,
    fhir: &ConvertOptions,
) -> RouteResult {
    let hl7 = (record.content_type == headers::CONTENT_TYPE_HL7)
        .then(|| Message::parse(&record.payload).ok())
        .flatten();
    let resource_type = if is_fhir(record) {
        record.header(headers::FHIR_RESOURCE_TYPE)
    } else {
        None
    };
    let subject = Subject {
        message: hl7.as_ref(),
        resource_type,
    };
    if !route.condition.matches(&subject) {
        return RouteResult {
            routed: Routed::Filtered,
            conversion: None,
        };
    }
    let mut base_headers = record.headers.clone();
    base_headers.retain(|(k, _)| {
        !k.starts_with("medbus.route") && k != headers::SOURCE_TOPIC && k != headers::SOURCE_OFFSET
    });
    base_headers.push((headers::ROUTE.to_string(), route.name.clone()));
    base_headers.push((headers::SOURCE_TOPIC.to_string(), source_topic.to_string()));
    base_headers.push((headers::SOURCE_OFFSET.to_string(), offset.to_string()));
    let fill = |parts: &[TemplatePart], resource: Option<&str>| {
        fill_template(parts, hl7.as_ref(), resource)
    };

    match route.transform {
        Transform::None => {
            let outputs = route
                .targets
                .iter()
                .map(|t| {
                    (
                        fill(t, resource_type),
                        Record {
                            timestamp_ms: record.timestamp_ms,
                            headers: base_headers.clone(),
                            content_type: record.content_type.clone(),
                            payload: record.payload.clone(),
                        },
                    )
                })
                .collect();
            RouteResult {
                routed: Routed::Outputs(outputs),
                conversion: None,
            }
        }
        Transform::Fhir | Transform::FhirResources => {
            let Some(msg) = hl7.as_ref() else {
                let why = if record.content_type == headers::CONTENT_TYPE_HL7 {
                    "the record is not a parsable HL7 v2 message"
                } else {
                    "transform fhir needs HL7 v2 records"
                };
                return RouteResult {
                    routed: Routed::Failed(why.into()),
                    conversion: None,
                };
            };
            let started = Instant::now();
            let converted = medbus_fhir::convert(msg, fhir);
            let conversion = Some((msg.header().message_type(), started.elapsed()));
            let c = match converted {
                Ok(c) => c,
                Err(e) => {
                    return RouteResult {
                        routed: Routed::Failed(format!("FHIR conversion failed: {e}")),
                        conversion,
                    }
                }
            };
            RouteResult {
                routed: Routed::Outputs(fhir_outputs(route, record, &base_headers, &c, |t, r| {
                    fill(t, r)
                })),
                conversion,
            }
        }
    }
}

fn fhir_outputs(
    route: &CompiledRoute,
    record: &Record,
    base: &[(String, String)],
    c: &Conversion,
    fill: impl Fn(&[TemplatePart], Option<&str>) -> String,
) -> Vec<(String, Record)> {
    let mut common = base.to_vec();
    if c.partial {
        common.push((headers::FHIR_PARTIAL.to_string(), "true".into()));
    }
    let bundle = || Record {
        timestamp_ms: record.timestamp_ms,
        headers: {
            let mut h = common.clone();
            h.push((headers::FHIR_RESOURCE_TYPE.to_string(), "Bundle".into()));
            h
        },
        content_type: headers::CONTENT_TYPE_FHIR.to_string(),
        payload: c.bundle_json.clone(),
    };
    let resource = |(rtype, id, json): &(String, String, Vec<u8>)| Record {
        timestamp_ms: record.timestamp_ms,
        headers: {
            let mut h = common.clone();
            h.push((headers::FHIR_RESOURCE_TYPE.to_string(), rtype.clone()));
            h.push((headers::FHIR_ID.to_string(), id.clone()));
            h
        },
        content_type: headers::CONTENT_TYPE_FHIR.to_string(),
        payload: json.clone(),
    };
    let mut out = Vec::new();
    for t in &route.targets {
        let per_resource = route.transform == Transform::FhirResources
            || t.iter()
                .any(|p| matches!(p, TemplatePart::Key(k) if k == "resourceType"));
        if per_resource {
            for r in &c.resources {
                out.push((fill(t, Some(&r.0)), resource(r)));
            }
        } else {
            out.push((fill(t, Some("Bundle")), bundle()));
        }
    }
    out
}

/// Fill a target template. A value that would make an invalid topic name
/// has its other characters replaced by `_`; an absent one becomes `unknown`.
pub fn fill_template(
    parts: &[TemplatePart],
    msg: Option<&Message<'_>>,
    resource_type: Option<&str>,
) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            TemplatePart::Literal(l) => out.push_str(l),
            TemplatePart::Key(k) => {
                let h = msg.map(|m| m.header());
                let v: Option<String> = match k.as_str() {
                    "resourceType" => resource_type.map(str::to_string),
                    "sendingFacility" => h
                        .as_ref()
                        .and_then(|h| h.sending_facility.as_deref().map(str::to_string)),
                    "sendingApplication" => h
                        .as_ref()
                        .and_then(|h| h.sending_application.as_deref().map(str::to_string)),
                    "receivingFacility" => h
                        .as_ref()
                        .and_then(|h| h.receiving_facility.as_deref().map(str::to_string)),
                    "receivingApplication" => h
                        .as_ref()
                        .and_then(|h| h.receiving_application.as_deref().map(str::to_string)),
                    "messageCode" => h
                        .as_ref()
                        .and_then(|h| h.message_code.as_deref().map(str::to_string)),
                    "triggerEvent" => h
                        .as_ref()
                        .and_then(|h| h.trigger_event.as_deref().map(str::to_string)),
                    _ => None,
                };
                let v = v
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "unknown".into());
                out.extend(v.chars().take(64).map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                }));
            }
        }
    }
    out.truncate(200);
    out
}
