//! Which message types are mapped, the segment walk, and the event semantics.
//!
//! Mapped (first tier): ADT A01 A02 A03 A04 A05 A08 A11 A13 A28 A31 A40, ORU^R01, ORM^O01,
//! OML^O21, SIU S12 S13 S14 S15 S26, MDM T01 T02 T06 T08 T10, VXU^V04; second tier: RDE^O11,
//! DFT^P03 (its FT1 financial transactions are not mapped). Any other type is *partial*:
//! MessageHeader, Provenance and the Patient only, tagged `partial`.
//!
//! The walk: PID/PD1/MRG and PV1/PV2 are mapped first (every other resource points to the
//! Patient and Encounter, and SIU sends SCH before PID); then the segments are walked in order,
//! grouping ORC/OBR/OBX/NTE/SPM into orders, TXA + OBX into documents, SCH + AI* into an
//! appointment, ORC + RXA/RXE + RXR into immunizations and medication orders.

use std::borrow::Cow;
use std::collections::BTreeSet;

use medbus_hl7::Message;

use crate::bundle;
use crate::context::Ctx;
use crate::datatypes::time::Offset;
use crate::datatypes::{Seg, SegIndex, SegmentExt};
use crate::ids;
use crate::resources::{BundleHead, Identifier, Meta, Reference};
use crate::segments::order::{finish, observation, ObsOutcome, ObsScope, ObxGroup, OrderGroup};
use crate::segments::pv1::EncounterEvent;
use crate::segments::sch::Schedule;
use crate::segments::{al1, dg1, in1, msh, nk1, pid, pr1, pv1, rxa, rxe, sch, txa};
use crate::{concat, Conversion, ConvertError, ConvertOptions};

/// The family a message type belongs to, which decides the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ADT (and DFT, which carries the same segments).
    Adt,
    /// ORU^R01: orders with results.
    Results,
    /// ORM^O01, OML^O21: orders.
    Orders,
    /// SIU: appointments.
    Schedule,
    /// MDM: documents.
    Documents,
    /// VXU^V04: immunizations.
    Immunization,
    /// RDE^O11: pharmacy orders.
    Pharmacy,
    /// Not mapped: header and patient only.
    Unmapped,
}

/// The family of `code^trigger`.
pub fn family(code: &str, trigger: &str) -> Family {
    match (code, trigger) {
        (
            "ADT",
            "A01" | "A02" | "A03" | "A04" | "A05" | "A08" | "A11" | "A13" | "A28" | "A31" | "A40",
        ) => Family::Adt,
        ("DFT", "P03") => Family::Adt,
        ("ORU", "R01") => Family::Results,
        ("ORM", "O01") | ("OML", "O21") => Family::Orders,
        ("SIU", "S12" | "S13" | "S14" | "S15" | "S26") => Family::Schedule,
        ("MDM", "T01" | "T02" | "T06" | "T08" | "T10") => Family::Documents,
        ("VXU", "V04") => Family::Immunization,
        ("RDE", "O11") => Family::Pharmacy,
        _ => Family::Unmapped,
    }
}

fn encounter_event(code: &str, trigger: &str) -> EncounterEvent {
    if code != "ADT" {
        return EncounterEvent::FromData;
    }
    match trigger {
        "A01" | "A02" | "A04" => EncounterEvent::InProgress,
        "A03" => EncounterEvent::Finished,
        "A05" => EncounterEvent::Planned,
        "A11" => EncounterEvent::Cancelled,
        "A13" => EncounterEvent::Reinstated,
        _ => EncounterEvent::FromData,
    }
}

/// Segments the walk consumes without a resource of their own (their content is used
/// elsewhere or deliberately not mapped).
const CONSUMED: &[&str] = &["MSH", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "SFT"];

#[derive(Default)]
struct Walk<'a> {
    order: Option<OrderGroup<'a>>,
    orders: usize,
    /// Where the next NTE goes.
    last: Last,
    /// Standalone OBX (outside orders and documents).
    loose_obx: Vec<ObxGroup<'a>>,
    doc: Option<(Seg<'a>, Vec<Seg<'a>>)>,
    schedule: Schedule<'a>,
    orc: Option<Seg<'a>>,
    pharmacy: Option<(Option<Seg<'a>>, Seg<'a>, Option<Seg<'a>>)>,
    rx_count: usize,
    ignored: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Last {
    #[default]
    None,
    Order,
    OrderObx,
    LooseObx,
    Schedule,
}

struct Run<'m, 'o> {
    ctx: Ctx<'o>,
    family: Family,
    trigger: String,
    _msg: std::marker::PhantomData<&'m ()>,
}

impl<'m, 'o> Run<'m, 'o> {
    fn flush_order(&mut self, w: &mut Walk<'m>) -> Result<(), ConvertError> {
        if let Some(g) = w.order.take() {
            finish(&mut self.ctx, &g, self.family == Family::Results)?;
        }
        Ok(())
    }

    fn flush_pharmacy(&mut self, w: &mut Walk<'m>) -> Result<(), ConvertError> {
        if let Some((orc, seg, rxr)) = w.pharmacy.take() {
            w.rx_count += 1;
            match seg.id() {
                "RXA" => rxa::immunization(&mut self.ctx, orc, seg, rxr, w.rx_count)?,
                _ => rxe::medication_request(&mut self.ctx, orc, seg, rxr, w.rx_count)?,
            }
        }
        Ok(())
    }

    fn segment(
        &mut self,
        w: &mut Walk<'m>,
        seg: Seg<'m>,
        counts: &mut [usize; 6],
    ) -> Result<(), ConvertError> {
        let id = seg.id();
        match (id, self.family) {
            ("NK1", _) => {
                counts[0] += 1;
                nk1::related_person(&mut self.ctx, seg, counts[0])?;
            }
            ("AL1", _) => {
                counts[1] += 1;
                al1::allergy(&mut self.ctx, seg, counts[1])?;
            }
            ("DG1", _) => {
                counts[2] += 1;
                dg1::condition(&mut self.ctx, seg, counts[2])?;
            }
            ("PR1", _) => {
                counts[3] += 1;
                pr1::procedure(&mut self.ctx, seg, counts[3])?;
            }
            ("IN1", _) => in1::coverage(&mut self.ctx, seg)?,
            ("ORC", Family::Immunization | Family::Pharmacy) => {
                self.flush_pharmacy(w)?;
                w.orc = Some(seg);
                w.last = Last::None;
            }
            ("RXA" | "RXE", Family::Immunization | Family::Pharmacy) => {
                self.flush_pharmacy(w)?;
                w.pharmacy = Some((w.orc, seg, None));
                w.last = Last::None;
            }
            ("RXR", Family::Immunization | Family::Pharmacy) => {
                if let Some(p) = w.pharmacy.as_mut() {
                    if p.2.is_none() {
                        p.2 = Some(seg);
                    }
                }
            }
            ("ORC", Family::Results | Family::Orders) => {
                self.flush_order(w)?;
                w.orders += 1;
                w.order = Some(OrderGroup {
                    index: w.orders,
                    orc: Some(seg),
                    ..OrderGroup::default()
                });
                w.last = Last::Order;
            }
            ("OBR", Family::Results | Family::Orders) => {
                let attach =
                    matches!(&w.order, Some(g) if g.obr.is_none() && g.observations.is_empty());
                if !attach {
                    self.flush_order(w)?;
                    w.orders += 1;
                    w.order = Some(OrderGroup {
                        index: w.orders,
                        ..OrderGroup::default()
                    });
                }
                if let Some(g) = w.order.as_mut() {
                    g.obr = Some(seg);
                }
                w.last = Last::Order;
            }
            ("SPM", Family::Results | Family::Orders) => {
                if let Some(g) = w.order.as_mut() {
                    g.specimens.push(seg);
                }
                w.last = Last::None;
            }
            ("OBX", Family::Documents) if w.doc.is_some() => {
                if let Some(d) = w.doc.as_mut() {
                    d.1.push(seg);
                }
            }
            ("OBX", _) => match w.order.as_mut() {
                Some(g) if matches!(self.family, Family::Results | Family::Orders) => {
                    g.observations.push(ObxGroup {
                        obx: seg,
                        notes: Vec::new(),
                    });
                    w.last = Last::OrderObx;
                }
                _ => {
                    w.loose_obx.push(ObxGroup {
                        obx: seg,
                        notes: Vec::new(),
                    });
                    w.last = Last::LooseObx;
                }
            },
            ("NTE", _) => match w.last {
                Last::Order => {
                    if let Some(g) = w.order.as_mut() {
                        g.notes.push(seg);
                    }
                }
                Last::OrderObx => {
                    if let Some(o) = w.order.as_mut().and_then(|g| g.observations.last_mut()) {
                        o.notes.push(seg);
                    }
                }
                Last::LooseObx => {
                    if let Some(o) = w.loose_obx.last_mut() {
                        o.notes.push(seg);
                    }
                }
                Last::Schedule => w.schedule.notes.push(seg),
                Last::None => {
                    w.ignored.insert("NTE".into());
                }
            },
            ("TXA", Family::Documents) => {
                if let Some((t, obxs)) = w.doc.take() {
                    txa::document(&mut self.ctx, t, &obxs, &self.trigger)?;
                }
                w.doc = Some((seg, Vec::new()));
            }
            ("SCH", Family::Schedule) => {
                w.schedule.sch = Some(seg);
                w.last = Last::Schedule;
            }
            ("TQ1", Family::Schedule) => {
                if w.schedule.tq1.is_none() {
                    w.schedule.tq1 = Some(seg);
                }
            }
            ("AIS" | "AIG" | "AIL" | "AIP", Family::Schedule) => {
                w.schedule.resources.push(seg);
                w.last = Last::None;
            }
            (other, _) => {
                if !CONSUMED.contains(&other) {
                    w.ignored.insert(other.to_string());
                }
            }
        }
        Ok(())
    }
}

/// Convert (the body of [`crate::convert`], after the options were checked).
pub fn convert(
    msg: &Message<'_>,
    opts: &ConvertOptions,
    tz: Option<Offset>,
) -> Result<Conversion, ConvertError> {
    let index = SegIndex::new(msg.segments());
    let first = |id: &str| index.first(id);
    let msh_seg = index.segments().next().ok_or(ConvertError::MissingField {
        field: "MSH",
        what: "the MessageHeader",
    })?;
    let header = |field: usize, component: Option<usize>| header_value(msh_seg, field, component);
    let code = header(9, Some(1)).unwrap_or_default().into_owned();
    let trigger = header(9, Some(2));
    let message_type = match trigger.as_deref() {
        Some(t) => concat(&[&code, "^", t]),
        None => code.clone(),
    };
    let trigger = trigger.unwrap_or_default().into_owned();
    let fam = family(&code, &trigger);
    // A control id names one message only if the sender never reuses it;
    // senders that restart their counter, or send different events under
    // one id, still get distinct messages through MSH-7 and MSH-9.
    let msg_key = match header(10, None) {
        Some(c) => concat(&[
            &header(3, Some(1)).unwrap_or_default(),
            "|",
            &c,
            "|",
            &ids::short_digest(&[&header(7, None).unwrap_or_default(), &message_type]),
        ]),
        None => concat(&["sha256|", &ids::digest_hex(msg.input())]),
    };
    let mut run = Run {
        ctx: Ctx::new(opts, tz, msg_key),
        family: fam,
        trigger: trigger.clone(),
        _msg: std::marker::PhantomData,
    };
    let pid_seg = first("PID");
    let partial = fam == Family::Unmapped;
    if let Some(p) = pid_seg {
        if partial {
            pid::patient_only(&mut run.ctx, p)?;
        } else {
            let mrg = if code == "ADT" && trigger == "A40" {
                Some(first("MRG").ok_or(ConvertError::MissingField {
                    field: "MRG",
                    what: "a merge (A40)",
                })?)
            } else {
                None
            };
            pid::patient(&mut run.ctx, p, first("PD1"), mrg)?;
        }
    }
    if !partial {
        if let Some(pv1_seg) = first("PV1") {
            if pv1::has_encounter(pv1_seg) {
                pv1::encounter(
                    &mut run.ctx,
                    pv1_seg,
                    first("PV2"),
                    encounter_event(&code, &trigger),
                )?;
            }
        }
        let mut w = Walk::default();
        let mut counts = [0usize; 6];
        let mut seen_pid = false;
        let mut seen_pv1 = false;
        for seg in index.segments() {
            match seg.id() {
                "PID" if !seen_pid => seen_pid = true,
                "PV1" if !seen_pv1 => seen_pv1 = true,
                "PID" | "PV1" => {
                    w.ignored.insert(format!("{} (repeated)", seg.id()));
                }
                _ => run.segment(&mut w, seg, &mut counts)?,
            }
        }
        run.flush_order(&mut w)?;
        run.flush_pharmacy(&mut w)?;
        if let Some((t, obxs)) = w.doc.take() {
            txa::document(&mut run.ctx, t, &obxs, &trigger)?;
        }
        sch::appointment(&mut run.ctx, &w.schedule, &trigger)?;
        let scope = ObsScope {
            key: format!("patient|{}|{}", run.ctx.patient_key, run.ctx.encounter_key),
            ..ObsScope::default()
        };
        for (i, g) in w.loose_obx.iter().enumerate() {
            if let ObsOutcome::Skipped = observation(&mut run.ctx, g, &scope, i + 1)? {
                continue;
            }
        }
        if !w.ignored.is_empty() {
            let list: Vec<&str> = w.ignored.iter().map(String::as_str).collect();
            run.ctx
                .note(format!("segments not mapped: {}", list.join(", ")));
        }
    } else {
        run.ctx.note(format!(
            "message type {message_type} is not mapped: only MessageHeader, Provenance and Patient"
        ));
    }
    finish_bundle(run.ctx, &index, msh_seg, partial, message_type)
}

/// An MSH value the way [`medbus_hl7::Message::header`] reads it: first repetition, the
/// component if one is named, decoded, `None` when empty (not trimmed, unlike [`Seg`] text).
fn header_value<'a>(msh: Seg<'a>, field: usize, component: Option<usize>) -> Option<Cow<'a, str>> {
    let rep = msh.field_at(field)?.repetition(1)?;
    let (empty, decoded) = match component {
        Some(c) => {
            let c = rep.component(c)?;
            (c.is_empty(), c.decoded())
        }
        None => (rep.is_empty(), rep.decoded()),
    };
    (!empty).then_some(decoded)
}

fn finish_bundle(
    mut ctx: Ctx<'_>,
    index: &SegIndex<'_>,
    msh_seg: Seg<'_>,
    partial: bool,
    message_type: String,
) -> Result<Conversion, ConvertError> {
    let targets: Vec<Reference> = ctx
        .out
        .iter()
        .map(|e| Reference::to(e.resource_type, &e.id))
        .collect();
    let focus: Vec<Reference> = ctx
        .out
        .iter()
        .filter(|e| {
            !matches!(
                e.resource_type,
                "Organization" | "Practitioner" | "Location"
            )
        })
        .take(1)
        .map(|e| Reference::to(e.resource_type, &e.id))
        .collect();
    let header = msh::message_header(&mut ctx, msh_seg, index.first("SFT"), partial, focus)?;
    let mut targets = targets;
    targets.insert(0, Reference::to("MessageHeader", &header.id));
    let provenance = msh::provenance(&mut ctx, msh_seg, index.first("EVN"), targets)?;
    // MessageHeader first: serialise it and move it to the front.
    let before = ctx.out.len();
    ctx.add(&header)?;
    if ctx.out.len() > before {
        let mh = ctx.out.remove(before);
        ctx.out.insert(0, mh);
    }
    if let Some(p) = &provenance {
        ctx.add(p)?;
    }
    let control = msh_seg.s(10);
    let head = BundleHead {
        resource_type: "Bundle",
        id: ctx.id("Bundle", &ctx.msg_key),
        meta: partial.then(|| Meta {
            tag: vec![msh::partial_tag()],
            security: Vec::new(),
        }),
        identifier: control.map(|c| Identifier {
            system: Some("urn:medbus:hl7v2:message-control-id".into()),
            value: Some(c),
            ..Identifier::default()
        }),
        r#type: "transaction",
        timestamp: ctx.instant(msh_seg.text(7).as_deref()),
    };
    let bundle_json = bundle::write(&head, &ctx.out)?;
    let resources = ctx
        .out
        .into_iter()
        .map(|e| (e.resource_type.to_string(), e.id, e.json))
        .collect();
    Ok(Conversion {
        bundle_json,
        resources,
        partial,
        message_type,
        notes: ctx.notes,
    })
}
