//! ORC / OBR / OBX / NTE / SPM → ServiceRequest, DiagnosticReport, Observation, Specimen.
//!
//! v2 groups by position: an OBR (with the ORC just before it) opens an order; the OBX, NTE and
//! SPM segments after it belong to it, and an NTE after an OBX belongs to that OBX. The walk in
//! [`crate::messages`] collects an [`OrderGroup`] and calls [`finish`].
//!
//! - ServiceRequest: identifiers placer ORC-2/OBR-2 (`PLAC`) and filler ORC-3/OBR-3 (`FILL`),
//!   requisition ORC-4, status ORC-5 else ORC-1 (results without ORC: OBR-25 final →
//!   `completed`), intent `order`, priority OBR-5/ORC-7.6, code OBR-4, authoredOn ORC-9,
//!   requester ORC-12/OBR-16, reason OBR-31, notes.
//! - DiagnosticReport (result messages only): status OBR-25, code OBR-4, category OBR-24,
//!   effective OBR-7, issued OBR-22, results, specimens.
//! - Observation: see [`observation`].
//! - Specimen: id SPM-2, type SPM-4, method SPM-7, body site SPM-8, collected SPM-17, received
//!   SPM-18.

use crate::datatypes::Seg;

use crate::codes;
use crate::concat;
use crate::context::Ctx;
use crate::datatypes::coded::{concept, table_concept};
use crate::datatypes::encapsulated::{base64, ed, plain_text};
use crate::datatypes::identifier::{ei, ei_key, ei_typed};
use crate::datatypes::numeric::{quantity, structured, Structured};
use crate::datatypes::time::Ts;
use crate::datatypes::{Node, SegmentExt};
use crate::resources::{
    Attachment, CodeableConcept, DiagnosticReport, DocumentContent, DocumentReference, Identifier,
    Observation, Reference, ReferenceRange, Resource, ServiceRequest, Specimen, SpecimenCollection,
};
use crate::segments::annotation;
use crate::ConvertError;

/// One OBX with the NTEs that follow it.
#[derive(Debug, Clone)]
pub struct ObxGroup<'a> {
    /// The OBX.
    pub obx: Seg<'a>,
    /// Its notes.
    pub notes: Vec<Seg<'a>>,
}

/// One order: ORC and/or OBR, and what follows them.
#[derive(Debug, Clone, Default)]
pub struct OrderGroup<'a> {
    /// 1-based position among the message's orders (for message-scoped keys).
    pub index: usize,
    /// ORC, when present.
    pub orc: Option<Seg<'a>>,
    /// OBR, when present.
    pub obr: Option<Seg<'a>>,
    /// NTEs after the ORC/OBR.
    pub notes: Vec<Seg<'a>>,
    /// OBX groups.
    pub observations: Vec<ObxGroup<'a>>,
    /// SPMs.
    pub specimens: Vec<Seg<'a>>,
}

impl<'a> OrderGroup<'a> {
    fn field(&self, orc_field: usize, obr_field: usize) -> Node<'a> {
        let from_orc = self.orc.map(|o| o.node(orc_field)).unwrap_or_default();
        if !from_orc.is_empty() {
            return from_orc;
        }
        self.obr.map(|o| o.node(obr_field)).unwrap_or_default()
    }

    /// Placer order number (ORC-2, else OBR-2).
    pub fn placer(&self) -> Node<'a> {
        self.field(2, 2)
    }

    /// Filler order number (ORC-3, else OBR-3).
    pub fn filler(&self) -> Node<'a> {
        self.field(3, 3)
    }

    /// The key observations of this order are scoped by (see [`crate::ids`]).
    pub fn key(&self, ctx: &Ctx<'_>) -> String {
        ei_key(self.filler())
            .map(|k| concat(&["filler|", &k]))
            .or_else(|| ei_key(self.placer()).map(|k| concat(&["placer|", &k])))
            .unwrap_or_else(|| ctx.scoped("order", self.index))
    }
}

/// Where an OBX sits: what it is scoped by and what it inherits.
#[derive(Debug, Clone, Default)]
pub struct ObsScope {
    /// Key prefix (the order key, or the patient/encounter for OBX outside orders).
    pub key: String,
    /// The ServiceRequest the observation fulfils.
    pub based_on: Option<Reference>,
    /// The specimen it was made on.
    pub specimen: Option<Reference>,
    /// OBR-7, the fallback for OBX-14.
    pub effective: Option<String>,
}

/// What became of an OBX.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsOutcome {
    /// An Observation.
    Observation(Reference),
    /// An ED value: a DocumentReference (R4 Observation has no attachment value).
    Document(Reference),
    /// Nothing could be mapped (the reason is in the notes).
    Skipped,
}

fn text_value(obx: Seg<'_>) -> Option<String> {
    let parts: Vec<String> = obx
        .reps(5)
        .iter()
        .filter_map(Node::text)
        .map(|t| plain_text(&t))
        .collect();
    let s = parts.join("\n");
    if s.trim().is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Fill the `value[x]` of `o` from OBX-2/OBX-5 (and OBX-6 units).
fn set_value(ctx: &mut Ctx<'_>, o: &mut Observation, obx: Seg<'_>) {
    let kind = obx.text(2).map(|k| k.to_ascii_uppercase());
    let v = obx.node(5);
    let units = obx.node(6);
    if obx.reps(5).len() > 1 && !matches!(kind.as_deref(), Some("ST" | "TX" | "FT")) {
        ctx.note("OBX-5 repeats: only the first repetition is mapped");
    }
    match kind.as_deref() {
        Some("NM") => {
            if let Some(q) = v.first().and_then(|n| quantity(&n, units)) {
                o.value_quantity = Some(q);
            } else if let Some(t) = v.text() {
                o.value_string = Some(t.into_owned());
            }
        }
        Some("SN") => match structured(v, units) {
            Some(Structured::Quantity(q)) => o.value_quantity = Some(q),
            Some(Structured::Range(r)) => o.value_range = Some(r),
            Some(Structured::Ratio(r)) => o.value_ratio = Some(r),
            Some(Structured::Text(t)) => o.value_string = Some(t),
            None => {}
        },
        Some("CQ") => {
            o.value_quantity = v.first().and_then(|n| quantity(&n, v.part(2)));
        }
        Some("CWE" | "CE" | "CNE" | "CF" | "CV" | "CK" | "CN") => {
            o.value_codeable_concept = concept(v);
        }
        Some("IS" | "ID") => {
            o.value_codeable_concept = v.first().map(|c| CodeableConcept::text(&c));
        }
        Some("DT" | "TS" | "DTM") => {
            let ts = v.first();
            match ts.as_deref().and_then(Ts::parse) {
                Some(t) => o.value_date_time = Some(t.date_time(ctx.tz)),
                None => o.value_string = ts.map(|s| s.into_owned()),
            }
        }
        Some("TM") => {
            let t = v.first();
            o.value_time = t.as_deref().and_then(time_value);
            if o.value_time.is_none() {
                o.value_string = t.map(|s| s.into_owned());
            }
        }
        Some("RP") => o.value_string = v.s(1),
        _ => o.value_string = text_value(obx),
    }
}

/// v2 TM (`HH[MM[SS[.S]]]`) → FHIR `time` (`hh:mm:ss`).
fn time_value(s: &str) -> Option<String> {
    let body = s.split(['+', '-']).next().unwrap_or_default();
    let (digits, frac) = body.split_once('.').unwrap_or((body, ""));
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4 | 6) {
        return None;
    }
    let n = |a: usize| digits.get(a..a + 2).and_then(|x| x.parse::<u32>().ok());
    let (h, m, sec) = (n(0)?, n(2).unwrap_or(0), n(4).unwrap_or(0));
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let mut out = format!("{h:02}:{m:02}:{sec:02}");
    if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// OBX → Observation (or DocumentReference for ED values).
///
/// Code OBX-3 (required: an OBX without it is skipped), value OBX-5 by OBX-2 (NM → Quantity with
/// OBX-6 units, SN → Quantity/Range/Ratio, CWE/CE/CNE → CodeableConcept, DT/TS → dateTime,
/// TM → time, ST/TX/FT and anything else → string), interpretation OBX-8, reference range
/// OBX-7, status OBX-11, effective OBX-14 (else OBR-7), issued OBX-19, performer OBX-16,
/// method OBX-17, notes from the following NTEs.
pub fn observation(
    ctx: &mut Ctx<'_>,
    g: &ObxGroup<'_>,
    scope: &ObsScope,
    index: usize,
) -> Result<ObsOutcome, ConvertError> {
    let obx = g.obx;
    let code_node = obx.node(3);
    let set_id = obx.text(1);
    let index_text;
    let key = concat(&[
        &scope.key,
        "|",
        &code_node
            .get(1)
            .or_else(|| code_node.get(2))
            .unwrap_or_default(),
        "|",
        &code_node.get(3).unwrap_or_default(),
        "|",
        &obx.text(4).unwrap_or_default(),
        "|",
        match &set_id {
            Some(s) => s,
            None => {
                index_text = index.to_string();
                &index_text
            }
        },
    ]);
    if obx.text(2).is_some_and(|k| k.eq_ignore_ascii_case("ED")) {
        return document_from_ed(ctx, obx, &key);
    }
    let Some(code) = concept(code_node) else {
        ctx.note(format!(
            "OBX #{index} skipped: OBX-3 observation identifier is empty"
        ));
        return Ok(ObsOutcome::Skipped);
    };
    let mut notes = Vec::new();
    for n in &g.notes {
        notes.extend(annotation(ctx, *n));
    }
    let mut o = Observation {
        id: ctx.id(Observation::TYPE, &key),
        identifier: ei(obx.node(21)).into_iter().collect(),
        based_on: scope.based_on.clone().into_iter().collect(),
        status: codes::observation_status(obx.text(11).as_deref()),
        code,
        subject: ctx.subject(),
        encounter: ctx.encounter.clone(),
        effective_date_time: ctx
            .date_time(obx.text(14).as_deref())
            .or_else(|| scope.effective.clone()),
        issued: ctx.instant(obx.text(19).as_deref()),
        interpretation: obx
            .reps(8)
            .into_iter()
            .filter_map(|i| {
                let mut c = table_concept(i, "0078")?;
                for coding in &mut c.coding {
                    if coding.system.as_deref()
                        == Some("http://terminology.hl7.org/CodeSystem/v2-0078")
                    {
                        coding.system = Some(
                            "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
                                .into(),
                        );
                    }
                }
                Some(c)
            })
            .collect(),
        note: notes,
        method: concept(obx.node(17)),
        specimen: scope.specimen.clone(),
        reference_range: obx
            .node(7)
            .text()
            .map(|t| ReferenceRange {
                text: Some(t.into_owned()),
            })
            .into_iter()
            .collect(),
        ..Observation::default()
    };
    for p in obx.reps(16) {
        o.performer.extend(ctx.practitioner(p)?);
    }
    set_value(ctx, &mut o, obx);
    Ok(ObsOutcome::Observation(ctx.add(&o)?))
}

fn document_from_ed(
    ctx: &mut Ctx<'_>,
    obx: Seg<'_>,
    key: &str,
) -> Result<ObsOutcome, ConvertError> {
    let attachment = ed(obx.node(5)).unwrap_or_else(|| Attachment {
        content_type: Some("application/octet-stream".into()),
        ..Attachment::default()
    });
    if attachment.data.is_none() {
        ctx.note("OBX ED value is not valid base64/hex/text: attachment data left out");
    }
    let d = DocumentReference {
        id: ctx.id(DocumentReference::TYPE, key),
        status: "current",
        doc_status: match obx.text(11).as_deref() {
            Some("F" | "C") => Some("final"),
            Some("P") => Some("preliminary"),
            _ => None,
        },
        r#type: concept(obx.node(3)),
        subject: ctx.subject(),
        date: ctx.instant(obx.text(14).as_deref()),
        content: vec![DocumentContent { attachment }],
        ..DocumentReference::default()
    };
    Ok(ObsOutcome::Document(ctx.add(&d)?))
}

/// Plain-text content (TX/ST/FT OBX values, in order) as an attachment.
pub fn text_attachment(obxs: &[Seg<'_>]) -> Option<Attachment> {
    let mut text = String::new();
    for obx in obxs {
        if let Some(t) = text_value(*obx) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&t);
        }
    }
    if text.is_empty() {
        return None;
    }
    Some(Attachment {
        content_type: Some("text/plain".into()),
        data: Some(base64(text.as_bytes())),
        ..Attachment::default()
    })
}

fn priority(code: Option<&str>) -> Option<&'static str> {
    Some(match code?.to_ascii_uppercase().as_str() {
        "S" => "stat",
        "A" => "asap",
        "R" | "T" => "routine",
        "P" | "C" => "urgent",
        _ => return None,
    })
}

fn specimen(
    ctx: &mut Ctx<'_>,
    spm: Seg<'_>,
    order_key: &str,
    request: Option<&Reference>,
    n: usize,
) -> Result<Reference, ConvertError> {
    let placer = spm.node(2).part(1);
    let filler = spm.node(2).part(2);
    let key = ei_key(filler)
        .map(|k| concat(&["filler|", &k]))
        .or_else(|| ei_key(placer).map(|k| concat(&["placer|", &k])))
        .unwrap_or_else(|| format!("{order_key}|{}|{n}", spm.text(1).unwrap_or_default()));
    let mut identifier: Vec<Identifier> = Vec::new();
    identifier.extend(ei_typed(placer, "PLAC"));
    identifier.extend(ei_typed(filler, "FILL"));
    let collected = spm.node(17);
    let s = Specimen {
        id: ctx.id(Specimen::TYPE, &key),
        identifier,
        r#type: concept(spm.node(4)),
        subject: ctx.subject(),
        received_time: ctx.date_time(spm.text(18).as_deref()),
        request: request.cloned().into_iter().collect(),
        collection: Some(SpecimenCollection {
            collected_date_time: ctx.date_time(collected.get(1).as_deref()),
            method: concept(spm.node(7)),
            body_site: concept(spm.node(8)),
            ..SpecimenCollection::default()
        }),
        condition: spm.reps(24).into_iter().filter_map(concept).collect(),
        ..Specimen::default()
    };
    ctx.add(&s)
}

/// Emit the resources of one order group. `results`: the message reports results (ORU), so the
/// OBR also becomes a DiagnosticReport.
pub fn finish(ctx: &mut Ctx<'_>, g: &OrderGroup<'_>, results: bool) -> Result<(), ConvertError> {
    let order_key = g.key(ctx);
    let obr = g.obr;
    let obr_node = |n: usize| obr.map(|o| o.node(n)).unwrap_or_default();
    let code = concept(obr_node(4));
    let mut notes = Vec::new();
    for n in &g.notes {
        notes.extend(annotation(ctx, *n));
    }
    // ServiceRequest
    let sr_ref = match ctx.subject() {
        Some(subject) => {
            let sr_key = ei_key(g.placer())
                .map(|k| concat(&["placer|", &k]))
                .unwrap_or_else(|| order_key.clone());
            let mut identifier = Vec::new();
            identifier.extend(ei_typed(g.placer(), "PLAC"));
            identifier.extend(ei_typed(g.filler(), "FILL"));
            let orc = g.orc;
            let result_status = obr.and_then(|o| o.text(25));
            let status = match orc {
                Some(o) if o.text(5).is_some() || o.text(1).is_some() => {
                    codes::request_status(o.text(5).as_deref(), o.text(1).as_deref())
                }
                _ if results => match result_status.as_deref() {
                    Some("F" | "C") => "completed",
                    _ => "active",
                },
                _ => "unknown",
            };
            let prio = obr
                .and_then(|o| o.text(5))
                .or_else(|| orc.and_then(|o| o.node(7).get(6)));
            let requester = {
                let from_orc = orc.map(|o| o.node(12)).unwrap_or_default();
                if from_orc.is_empty() {
                    ctx.practitioner(obr_node(16))?
                } else {
                    ctx.practitioner(from_orc)?
                }
            };
            let sr = ServiceRequest {
                id: ctx.id(ServiceRequest::TYPE, &sr_key),
                identifier,
                requisition: orc.and_then(|o| ei(o.node(4))),
                status,
                intent: "order",
                priority: priority(prio.as_deref()),
                code: code.clone(),
                subject,
                encounter: ctx.encounter.clone(),
                occurrence_date_time: ctx.date_time(obr_node(6).first().as_deref()),
                authored_on: ctx.date_time(orc.and_then(|o| o.text(9)).as_deref()),
                requester,
                reason_code: obr
                    .map(|o| o.reps(31))
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(concept)
                    .collect(),
                note: notes,
                ..ServiceRequest::default()
            };
            Some(sr)
        }
        None => {
            ctx.note("ServiceRequest left out: no Patient in the message");
            None
        }
    };
    let sr_reference = sr_ref
        .as_ref()
        .map(|s| Reference::to(ServiceRequest::TYPE, &s.id));
    let mut specimens = Vec::new();
    for (n, spm) in g.specimens.iter().enumerate() {
        specimens.push(specimen(
            ctx,
            *spm,
            &order_key,
            sr_reference.as_ref(),
            n + 1,
        )?);
    }
    if let Some(mut sr) = sr_ref {
        sr.specimen = specimens.clone();
        ctx.add(&sr)?;
    }
    let scope = ObsScope {
        key: order_key.clone(),
        based_on: sr_reference.clone(),
        specimen: specimens.first().cloned(),
        effective: ctx.date_time(obr_node(7).first().as_deref()),
    };
    let mut result = Vec::new();
    for (i, og) in g.observations.iter().enumerate() {
        if let ObsOutcome::Observation(r) = observation(ctx, og, &scope, i + 1)? {
            result.push(r);
        }
    }
    if results && obr.is_some() {
        match code {
            Some(code) => {
                let dr = DiagnosticReport {
                    id: ctx.id(DiagnosticReport::TYPE, &order_key),
                    identifier: {
                        let mut v = Vec::new();
                        v.extend(ei_typed(g.filler(), "FILL"));
                        v.extend(ei_typed(g.placer(), "PLAC"));
                        v
                    },
                    based_on: sr_reference.into_iter().collect(),
                    status: codes::report_status(obr.and_then(|o| o.text(25)).as_deref()),
                    category: table_concept(obr_node(24), "0074").into_iter().collect(),
                    code,
                    subject: ctx.subject(),
                    encounter: ctx.encounter.clone(),
                    effective_date_time: scope.effective.clone(),
                    issued: ctx.instant(obr_node(22).first().as_deref()),
                    specimen: specimens,
                    result,
                    ..DiagnosticReport::default()
                };
                ctx.add(&dr)?;
            }
            None => ctx.note(format!(
                "DiagnosticReport for order #{} left out: OBR-4 is empty",
                g.index
            )),
        }
    }
    Ok(())
}
