//! One record through one route: condition, transform, targets.
//!
//! Pure functions of the record and the compiled route, so that they can be
//! tested without storage and reused by replay.

use crate::headers;
use crate::storage::{EncodedRecord, Record, RecordParts, RecordView, SharedHeaders, StorageError};
use medbus_config::route::{CompiledRoute, Condition, TemplatePart};
use medbus_config::{Subject, Transform};
use medbus_fhir::{Conversion, ConvertOptions};
use medbus_hl7::Message;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// Most routes one record may pass through: a template target that leads
/// back to a source would otherwise loop forever.
pub const MAX_HOPS: u32 = 16;

/// A header of an output: borrowed from the source record where it can be.
pub type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// What became of one source record.
pub enum Routed<'a> {
    /// The condition did not hold.
    Filtered,
    /// Matched: these outputs.
    Outputs(Outputs<'a>),
    /// Matched but could not be transformed: dead-letter with this reason.
    Failed(String),
}

/// A matched record's outputs. Every one carries `shared` (the source
/// record's headers and the route's) before its own headers; they are kept
/// apart so that the twenty resources of one message do not each copy them.
pub struct Outputs<'a> {
    /// Headers of every output, first.
    pub shared: Vec<Header<'a>>,
    /// (topic, output with only its own headers), in write order.
    pub records: Vec<(String, Output)>,
}

impl Outputs<'_> {
    /// Each output as a record with all its headers.
    pub fn into_records(self) -> Vec<(String, Record)> {
        let shared: Vec<(String, String)> = self
            .shared
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        self.records
            .into_iter()
            .map(|(topic, o)| {
                let mut r = o.into_record();
                let own = std::mem::replace(&mut r.headers, shared.clone());
                r.headers.extend(own);
                (topic, r)
            })
            .collect()
    }
}

/// One output of a route, with only its own headers.
pub enum Output {
    /// A copy of the source record (transform `none`).
    Record(Record),
    /// A FHIR Bundle or resource of a conversion.
    Fhir(FhirOutput),
}

/// A FHIR Bundle or resource of a conversion. Its own headers are its type
/// and id; it is encoded from these parts, without building a [`Record`]
/// (a message makes tens of them).
pub struct FhirOutput {
    /// The source record's timestamp.
    pub timestamp_ms: u64,
    /// `Bundle` or the resource's type.
    pub resource_type: String,
    /// The resource's id (a Bundle's is in its JSON).
    pub id: Option<String>,
    /// The compact JSON.
    pub json: Vec<u8>,
}

impl FhirOutput {
    /// `f` of its own headers: the type, then the id when it has one.
    fn with_headers<R>(&self, f: impl FnOnce(&[(&'static str, &str)]) -> R) -> R {
        let own = [
            (headers::FHIR_RESOURCE_TYPE, self.resource_type.as_str()),
            (headers::FHIR_ID, self.id.as_deref().unwrap_or_default()),
        ];
        f(own
            .get(..1 + usize::from(self.id.is_some()))
            .unwrap_or_default())
    }
}

impl Output {
    /// Bytes of its payload.
    pub fn payload_len(&self) -> usize {
        match self {
            Output::Record(r) => r.payload.len(),
            Output::Fhir(f) => f.json.len(),
        }
    }

    /// The output as a record with its own headers.
    pub fn into_record(self) -> Record {
        match self {
            Output::Record(r) => r,
            Output::Fhir(f) => Record {
                timestamp_ms: f.timestamp_ms,
                headers: f.with_headers(|own| {
                    own.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                content_type: headers::CONTENT_TYPE_FHIR.to_string(),
                payload: f.json,
            },
        }
    }

    /// Encode it for the store, its headers `shared` then its own.
    pub(crate) fn encode(self, shared: &SharedHeaders) -> Result<EncodedRecord, StorageError> {
        match self {
            Output::Record(r) => EncodedRecord::with_shared(shared, r),
            Output::Fhir(mut f) => {
                let json = std::mem::take(&mut f.json);
                f.with_headers(|own| {
                    let parts = RecordParts {
                        timestamp_ms: f.timestamp_ms,
                        headers: own,
                        content_type: headers::CONTENT_TYPE_FHIR,
                        payload_len: json.len(),
                    };
                    EncodedRecord::from_parts(shared, parts, json)
                })
            }
        }
    }
}

/// The result plus how long a FHIR conversion took (for the metric).
pub struct RouteResult<'a> {
    /// The outcome.
    pub routed: Routed<'a>,
    /// `Some((message_type, time))` when a conversion ran.
    pub conversion: Option<(String, Duration)>,
}

/// Whether a record's content type is FHIR JSON.
fn is_fhir(r: &RecordView<'_>) -> bool {
    r.content_type().starts_with("application/fhir+json")
}

/// Route one record, read in place (its headers are copied into the
/// outputs' only when they are encoded).
pub fn route_record<'a>(
    route: &'a CompiledRoute,
    source_topic: &'a str,
    offset: u64,
    record: &'a RecordView<'a>,
    fhir: &ConvertOptions,
) -> RouteResult<'a> {
    // Parse only when something looks inside: a condition, a FHIR
    // transform, or a template filled from MSH (pass-through copies need not).
    let needs_hl7 = !matches!(route.condition, Condition::Always)
        || route.transform != Transform::None
        || route
            .targets
            .iter()
            .flatten()
            .any(|p| matches!(p, TemplatePart::Key(k) if k != "resourceType"));
    let hl7 = (needs_hl7 && record.content_type() == headers::CONTENT_TYPE_HL7)
        .then(|| Message::parse(record.payload()).ok())
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
    // One walk over the source's headers: the hop count, and the headers
    // every output carries (not the source's own route, source and hops).
    let mut seen_hops = None;
    let mut base_headers: Vec<Header<'a>> = Vec::with_capacity(24);
    for (k, v) in record.headers() {
        match k {
            headers::HOPS => {
                seen_hops = seen_hops.or(Some(v.parse::<u32>().unwrap_or(0)));
            }
            headers::ROUTE | headers::SOURCE_TOPIC | headers::SOURCE_OFFSET => {}
            _ => base_headers.push((Cow::Borrowed(k), Cow::Borrowed(v))),
        }
    }
    let hops = seen_hops.unwrap_or(0).saturating_add(1);
    if hops > MAX_HOPS {
        return RouteResult {
            routed: Routed::Failed(format!(
                "routing loop: the record has passed {MAX_HOPS} routes (check template targets that lead back to a source)"
            )),
            conversion: None,
        };
    }
    base_headers.push((headers::HOPS.into(), hops.to_string().into()));
    base_headers.push((headers::ROUTE.into(), route.name.as_str().into()));
    base_headers.push((headers::SOURCE_TOPIC.into(), source_topic.into()));
    base_headers.push((headers::SOURCE_OFFSET.into(), offset.to_string().into()));

    let result = transform(
        route,
        record,
        hl7.as_ref(),
        resource_type,
        base_headers,
        fhir,
    );
    match result.routed {
        Routed::Outputs(outputs)
            if outputs
                .records
                .iter()
                .any(|(t, _)| route.sources.contains(t)) =>
        {
            RouteResult {
                routed: Routed::Failed(
                    "a target template resolved to the route's own source topic".into(),
                ),
                conversion: result.conversion,
            }
        }
        _ => result,
    }
}

fn transform<'a>(
    route: &CompiledRoute,
    record: &RecordView<'_>,
    hl7: Option<&Message<'_>>,
    resource_type: Option<&str>,
    base_headers: Vec<Header<'a>>,
    fhir: &ConvertOptions,
) -> RouteResult<'a> {
    let fill = |parts: &[TemplatePart], resource: Option<&str>| fill_template(parts, hl7, resource);
    match route.transform {
        Transform::None => {
            let records = route
                .targets
                .iter()
                .map(|t| {
                    (
                        fill(t, resource_type),
                        Output::Record(Record {
                            timestamp_ms: record.timestamp_ms(),
                            headers: Vec::new(),
                            content_type: record.content_type().to_string(),
                            payload: record.payload().to_vec(),
                        }),
                    )
                })
                .collect();
            RouteResult {
                routed: Routed::Outputs(Outputs {
                    shared: base_headers,
                    records,
                }),
                conversion: None,
            }
        }
        Transform::Fhir | Transform::FhirResources => {
            let Some(msg) = hl7 else {
                let why = if record.content_type() == headers::CONTENT_TYPE_HL7 {
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
            let took = started.elapsed();
            let mut c = match converted {
                Ok(c) => c,
                Err(e) => {
                    return RouteResult {
                        routed: Routed::Failed(format!("FHIR conversion failed: {e}")),
                        conversion: Some((msg.header().message_type(), took)),
                    }
                }
            };
            let conversion = Some((std::mem::take(&mut c.message_type), took));
            RouteResult {
                routed: Routed::Outputs(fhir_outputs(
                    route,
                    record.timestamp_ms(),
                    base_headers,
                    c,
                    |t, r| fill(t, r),
                )),
                conversion,
            }
        }
    }
}

fn fhir_outputs<'a>(
    route: &CompiledRoute,
    timestamp_ms: u64,
    mut common: Vec<Header<'a>>,
    mut c: Conversion,
    fill: impl Fn(&[TemplatePart], Option<&str>) -> String,
) -> Outputs<'a> {
    if c.partial {
        common.push((headers::FHIR_PARTIAL.into(), "true".into()));
    }
    let per_resource = |t: &[TemplatePart]| {
        route.transform == Transform::FhirResources
            || t.iter()
                .any(|p| matches!(p, TemplatePart::Key(k) if k == "resourceType"))
    };
    // The JSON is moved into the last output that carries it; the others
    // get copies (a Bundle is tens of KiB).
    let mut bundle_uses = route.targets.iter().filter(|t| !per_resource(t)).count();
    let mut resource_uses = route.targets.len() - bundle_uses;
    let mut out = Vec::with_capacity(route.targets.len() * (1 + c.resources.len()));
    for t in &route.targets {
        if per_resource(t) {
            resource_uses -= 1;
            for r in &mut c.resources {
                // The last use takes the type, id and JSON; others copy them.
                let (resource_type, id, json) = if resource_uses == 0 {
                    (
                        std::mem::take(&mut r.0),
                        std::mem::take(&mut r.1),
                        std::mem::take(&mut r.2),
                    )
                } else {
                    r.clone()
                };
                out.push((
                    fill(t, Some(&resource_type)),
                    Output::Fhir(FhirOutput {
                        timestamp_ms,
                        resource_type,
                        id: Some(id),
                        json,
                    }),
                ));
            }
        } else {
            bundle_uses -= 1;
            let json = if bundle_uses == 0 {
                std::mem::take(&mut c.bundle_json)
            } else {
                c.bundle_json.clone()
            };
            out.push((
                fill(t, Some("Bundle")),
                Output::Fhir(FhirOutput {
                    timestamp_ms,
                    resource_type: "Bundle".to_string(),
                    id: None,
                    json,
                }),
            ));
        }
    }
    Outputs {
        shared: common,
        records: out,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RawRecord;
    use medbus_config::route::{parse_template, Condition};

    fn route(targets: &[&str], sources: &[&str]) -> CompiledRoute {
        CompiledRoute {
            name: "r".into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            condition: Condition::Always,
            transform: Transform::None,
            targets: targets
                .iter()
                .map(|t| parse_template(t).expect("template"))
                .collect(),
            dead_letter_topic: "dlq.r".into(),
            retry: Duration::from_secs(1),
        }
    }

    fn hl7(facility: &str, extra_headers: Vec<(String, String)>) -> Record {
        Record {
            timestamp_ms: 1,
            headers: extra_headers,
            content_type: headers::CONTENT_TYPE_HL7.into(),
            payload: format!("MSH|^~\\&|APP|{facility}|R|RF|2026||ADT^A01|1|P|2.5\r").into_bytes(),
        }
    }

    #[test]
    fn templates_are_filled_and_sanitised() {
        let bytes = b"MSH|^~\\&|APP|St Mary's/ER|R|RF|2026||ADT^A01|1|P|2.5\r";
        let msg = Message::parse(bytes).expect("parse");
        let parts = parse_template("hl7.{sendingFacility}.{messageCode}.{receivingApplication}")
            .expect("t");
        assert_eq!(
            fill_template(&parts, Some(&msg), None),
            "hl7.St_Mary_s_ER.ADT.R"
        );
        let parts = parse_template("x.{triggerEvent}.{resourceType}").expect("t");
        assert_eq!(fill_template(&parts, None, None), "x.unknown.unknown");
    }

    /// `r` as the router reads it: stored, then read in place.
    fn stored(r: &Record) -> RawRecord {
        RawRecord::new(bytes::Bytes::from(r.encode().expect("encode")))
    }

    #[test]
    fn a_template_resolving_to_the_source_is_dead_lettered() {
        let r = route(&["hl7.{sendingFacility}"], &["hl7.in"]);
        let opts = ConvertOptions::default();
        let raw = stored(&hl7("in", vec![]));
        let view = raw.view().expect("view");
        let out = route_record(&r, "hl7.in", 0, &view, &opts);
        assert!(matches!(out.routed, Routed::Failed(ref why) if why.contains("own source")));
        let raw = stored(&hl7("lab", vec![]));
        let view = raw.view().expect("view");
        let out = route_record(&r, "hl7.in", 0, &view, &opts);
        assert!(matches!(out.routed, Routed::Outputs(ref o) if o.records[0].0 == "hl7.lab"));
    }

    #[test]
    fn hop_count_stops_loops() {
        let r = route(&["out"], &["in"]);
        let opts = ConvertOptions::default();
        let raw = stored(&hl7(
            "x",
            vec![(headers::HOPS.into(), MAX_HOPS.to_string())],
        ));
        let at_limit = raw.view().expect("view");
        let out = route_record(&r, "in", 0, &at_limit, &opts);
        assert!(matches!(out.routed, Routed::Failed(ref why) if why.contains("routing loop")));
        let raw = stored(&hl7("x", vec![(headers::HOPS.into(), "3".into())]));
        let fresh = raw.view().expect("view");
        match route_record(&r, "in", 0, &fresh, &opts).routed {
            Routed::Outputs(o) => {
                let (_, out) = &o.into_records()[0];
                assert_eq!(out.header(headers::HOPS), Some("4"));
                assert_eq!(out.header(headers::SOURCE_OFFSET), Some("0"));
                assert_eq!(out.payload, fresh.payload());
            }
            _ => panic!("expected outputs"),
        }
    }
}
