//! PID / PD1 (and MRG for merges) → Patient.
//!
//! Identifiers: PID-3 (all repetitions), PID-2 and PID-4 (older versions), PID-19 (SSN) and
//! PID-20 (driver's licence). Names PID-5 (+ PID-9 alias), birthDate PID-7 (date part),
//! gender PID-8, address PID-11, telecom PID-13 (home) / PID-14 (work), language PID-15,
//! marital status PID-16, multiple birth PID-24/25, deceased PID-29/30; PD1-4 and PD1-3 are the
//! general practitioner. Race/ethnicity (PID-10/22) need US Core extensions: not mapped.
//!
//! A40 (merge): PID is the surviving patient and MRG-1 the one merged into it. The merged
//! Patient is written with `active = false` and `link.type = replaced-by` → survivor; the
//! survivor links back with `replaces`.

use crate::datatypes::Seg;

use crate::codes;
use crate::concat;
use crate::context::Ctx;
use crate::datatypes::address::xad;
use crate::datatypes::coded::{concept, table_concept};
use crate::datatypes::identifier::{cx, cx_key, id_type};
use crate::datatypes::names::xpn;
use crate::datatypes::telecom::xtn;
use crate::datatypes::time;
use crate::datatypes::SegmentExt;
use crate::resources::{
    Identifier, Patient, PatientCommunication, PatientLink, Reference, Resource,
};
use crate::ConvertError;

/// The business key of the Patient of `pid` per the id recipe, or `None` when PID carries no
/// identifier at all.
pub fn patient_key(ctx: &Ctx<'_>, pid: Seg<'_>) -> Option<String> {
    let reps = pid.reps(3);
    let chosen = match ctx.opts.patient_identifier_type.as_deref() {
        Some(t) => reps
            .iter()
            .find(|r| r.get(5).as_deref() == Some(t) && r.get(1).is_some())
            .or_else(|| reps.iter().find(|r| r.get(1).is_some())),
        None => reps.iter().find(|r| r.get(1).is_some()),
    };
    chosen
        .and_then(|r| cx_key(*r))
        .or_else(|| cx_key(pid.node(2)).map(|k| concat(&["pid2|", &k])))
        .or_else(|| cx_key(pid.node(4)).map(|k| concat(&["pid4|", &k])))
}

fn simple_identifier(
    value: Option<String>,
    system: &'static str,
    type_code: &str,
) -> Option<Identifier> {
    Some(Identifier {
        r#type: id_type(type_code),
        system: Some(system.into()),
        value: Some(value?),
        ..Identifier::default()
    })
}

/// Map PID (+ PD1) to the message's Patient and remember it in the context.
pub fn patient(
    ctx: &mut Ctx<'_>,
    pid: Seg<'_>,
    pd1: Option<Seg<'_>>,
    merged_from: Option<Seg<'_>>,
) -> Result<Reference, ConvertError> {
    let key = patient_key(ctx, pid).ok_or(ConvertError::MissingField {
        field: "PID-3",
        what: "the Patient (its id comes from the patient identifier)",
    })?;
    let id = ctx.id(Patient::TYPE, &key);
    let mut identifier: Vec<Identifier> = pid.reps(3).into_iter().filter_map(cx).collect();
    identifier.extend(pid.reps(2).into_iter().filter_map(cx));
    identifier.extend(pid.reps(4).into_iter().filter_map(cx));
    identifier.extend(simple_identifier(
        pid.s(19),
        "http://hl7.org/fhir/sid/us-ssn",
        "SS",
    ));
    if let Some(dl) = pid.node(20).s(1) {
        identifier.push(Identifier {
            r#type: id_type("DL"),
            value: Some(dl),
            ..Identifier::default()
        });
    }
    let mut name: Vec<_> = pid.reps(5).into_iter().filter_map(xpn).collect();
    name.extend(pid.reps(9).into_iter().filter_map(xpn).map(|mut n| {
        n.r#use = n.r#use.or(Some("nickname"));
        n
    }));
    let mut telecom: Vec<_> = pid
        .reps(13)
        .into_iter()
        .filter_map(|t| xtn(t, Some("home")))
        .collect();
    telecom.extend(
        pid.reps(14)
            .into_iter()
            .filter_map(|t| xtn(t, Some("work"))),
    );
    let deceased_dt = ctx.date_time(pid.text(29).as_deref());
    let deceased_flag = match pid.text(30).as_deref() {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => None,
    };
    let multiple = match pid.text(24).as_deref() {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => None,
    };
    let birth_order = pid
        .text(25)
        .and_then(|o| o.parse::<i64>().ok())
        .filter(|_| multiple == Some(true));
    let mut general_practitioner = Vec::new();
    if let Some(pd1) = pd1 {
        for gp in pd1.reps(4) {
            general_practitioner.extend(ctx.practitioner(gp)?);
        }
        for org in pd1.reps(3) {
            general_practitioner.extend(ctx.organization_xon(org)?);
        }
    }
    let mut p = Patient {
        id: id.clone(),
        identifier,
        name,
        telecom,
        gender: pid.text(8).and_then(|g| codes::gender(&g)),
        birth_date: time::date(pid.text(7).as_deref()),
        deceased_boolean: if deceased_dt.is_some() {
            None
        } else {
            deceased_flag
        },
        deceased_date_time: deceased_dt,
        address: pid.reps(11).into_iter().filter_map(xad).collect(),
        marital_status: table_concept(pid.node(16), "0002"),
        multiple_birth_boolean: if birth_order.is_some() {
            None
        } else {
            multiple
        },
        multiple_birth_integer: birth_order,
        communication: concept(pid.node(15))
            .map(|language| PatientCommunication { language })
            .into_iter()
            .collect(),
        general_practitioner,
        ..Patient::default()
    };
    let reference = Reference::to(Patient::TYPE, &id);
    if let Some(mrg) = merged_from {
        let old_key =
            mrg.reps(1)
                .into_iter()
                .find_map(cx_key)
                .ok_or(ConvertError::MissingField {
                    field: "MRG-1",
                    what: "the merged Patient of a merge (A40)",
                })?;
        let old_id = ctx.id(Patient::TYPE, &old_key);
        if old_id != id {
            let old = Patient {
                id: old_id.clone(),
                identifier: mrg.reps(1).into_iter().filter_map(cx).collect(),
                active: Some(false),
                name: mrg.reps(7).into_iter().filter_map(xpn).collect(),
                link: vec![PatientLink {
                    other: reference.clone(),
                    r#type: "replaced-by",
                }],
                ..Patient::default()
            };
            p.link.push(PatientLink {
                other: Reference::to(Patient::TYPE, &old_id),
                r#type: "replaces",
            });
            p.active = Some(true);
            ctx.add(&p)?;
            ctx.add(&old)?;
        } else {
            ctx.add(&p)?;
        }
    } else {
        ctx.add(&p)?;
    }
    ctx.patient = Some(reference.clone());
    ctx.patient_key = key;
    Ok(reference)
}

/// A Patient from PID for unmapped message types: same recipe, no PD1 fan-out.
pub fn patient_only(ctx: &mut Ctx<'_>, pid: Seg<'_>) -> Result<Reference, ConvertError> {
    patient(ctx, pid, None, None)
}
