//! PV1 / PV2 → Encounter (+ Location, Practitioner).
//!
//! Class PV1-2 (table 0004 → v3 ActCode), type PV1-4, locations PV1-3 (current) and PV1-6
//! (prior, `completed`), participants PV1-7/8/9/17 (attender, referrer, consultant, admitter),
//! service type PV1-10, hospitalization PV1-5/13/14/36/38, identifier PV1-19, period
//! PV1-44/45, reason PV2-3.
//!
//! Status comes from the event ([`EncounterEvent`]): A03 finishes (period.end = PV1-45), A11
//! cancels, A13 reinstates (in progress, no end), A05 plans; other events read the data: an end
//! → `finished`, a start → `in-progress`, neither → `unknown`.

use crate::datatypes::Seg;

use crate::codes;
use crate::concat;
use crate::context::Ctx;
use crate::datatypes::coded::{concept, table_concept};
use crate::datatypes::identifier::{cx, cx_key};
use crate::datatypes::SegmentExt;
use crate::resources::{
    Coding, Encounter, EncounterLocation, EncounterParticipant, Hospitalization, Period, Reference,
    Resource,
};
use crate::ConvertError;

/// What the trigger event says about the Encounter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncounterEvent {
    /// A01/A02/A04: the visit is under way.
    InProgress,
    /// A03: discharge, the visit is finished.
    Finished,
    /// A05: pre-admission.
    Planned,
    /// A11: admission cancelled.
    Cancelled,
    /// A13: discharge cancelled, the visit goes on.
    Reinstated,
    /// Anything else: read the status from PV1-44/45.
    FromData,
}

/// Whether PV1 carries an encounter at all (A28/A31 often send `PV1|1|N`).
pub fn has_encounter(pv1: Seg<'_>) -> bool {
    let class = pv1.text(2);
    let informative = [3usize, 7, 10, 19, 44, 45]
        .iter()
        .any(|&n| !pv1.node(n).is_empty());
    informative || !matches!(class.as_deref(), None | Some("N"))
}

/// The Encounter's business key (see [`crate::ids`]).
pub fn encounter_key(ctx: &Ctx<'_>, pv1: Seg<'_>) -> String {
    if let Some(k) = cx_key(pv1.node(19)) {
        return concat(&["visit|", &k]);
    }
    match pv1.text(44) {
        Some(start) => concat(&["patient|", &ctx.patient_key, "|", &start]),
        None => ctx.scoped("PV1", 1),
    }
}

/// Map PV1/PV2 to the message's Encounter.
pub fn encounter(
    ctx: &mut Ctx<'_>,
    pv1: Seg<'_>,
    pv2: Option<Seg<'_>>,
    event: EncounterEvent,
) -> Result<Reference, ConvertError> {
    let key = encounter_key(ctx, pv1);
    let id = ctx.id(Encounter::TYPE, &key);
    let start = ctx.date_time(pv1.text(44).as_deref());
    let end = ctx.date_time(pv1.text(45).as_deref());
    let status = match event {
        EncounterEvent::InProgress => "in-progress",
        EncounterEvent::Finished => "finished",
        EncounterEvent::Planned => "planned",
        EncounterEvent::Cancelled => "cancelled",
        EncounterEvent::Reinstated => "in-progress",
        EncounterEvent::FromData => match (&start, &end) {
            (_, Some(_)) => "finished",
            (Some(_), None) => "in-progress",
            _ => "unknown",
        },
    };
    let end = if event == EncounterEvent::Reinstated {
        None
    } else {
        end
    };
    let (system, code, display) = codes::encounter_class(pv1.text(2).as_deref());
    let mut participant = Vec::new();
    for (field, code, display) in [
        (7usize, "ATND", "attender"),
        (8, "REF", "referrer"),
        (9, "CON", "consultant"),
        (17, "ADM", "admitter"),
    ] {
        for doc in pv1.reps(field) {
            if let Some(r) = ctx.practitioner(doc)? {
                participant.push(EncounterParticipant {
                    r#type: vec![codes::participation(code, display)],
                    individual: Some(r),
                });
            }
        }
    }
    let mut location = Vec::new();
    let current_status = if status == "finished" {
        "completed"
    } else {
        "active"
    };
    if let Some(r) = ctx.location(pv1.node(3))? {
        location.push(EncounterLocation {
            location: r,
            status: Some(current_status),
        });
    }
    if let Some(r) = ctx.location(pv1.node(6))? {
        if !location.iter().any(|l| l.location == r) {
            location.push(EncounterLocation {
                location: r,
                status: Some("completed"),
            });
        }
    }
    let hospitalization = Hospitalization {
        pre_admission_identifier: cx(pv1.node(5)),
        admit_source: table_concept(pv1.node(14), "0023"),
        re_admission: table_concept(pv1.node(13), "0092"),
        diet_preference: table_concept(pv1.node(38), "0114").into_iter().collect(),
        discharge_disposition: table_concept(pv1.node(36), "0112"),
    };
    let e = Encounter {
        id: id.clone(),
        identifier: cx(pv1.node(19)).into_iter().collect(),
        status,
        class: Coding {
            system: Some(system.into()),
            code: Some(code.into()),
            display: Some(display.into()),
            ..Coding::default()
        },
        r#type: table_concept(pv1.node(4), "0007").into_iter().collect(),
        service_type: table_concept(pv1.node(10), "0069"),
        subject: ctx.subject(),
        participant,
        period: Some(Period { start, end }),
        reason_code: pv2.and_then(|p| concept(p.node(3))).into_iter().collect(),
        hospitalization: Some(hospitalization),
        location,
        ..Encounter::default()
    };
    let r = ctx.add(&e)?;
    ctx.encounter = Some(r.clone());
    ctx.encounter_key = key;
    Ok(r)
}
