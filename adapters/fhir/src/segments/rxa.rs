//! RXA / RXR (with the ORC before them) → Immunization (VXU^V04).
//!
//! Vaccine RXA-5, occurrence RXA-3 (required by FHIR: an unreadable date is kept as
//! `occurrenceString`), dose RXA-6/7 (999 means unknown and is left out), performer RXA-10
//! (administering provider), location RXA-11.4 facility, lot RXA-15, expiry RXA-16,
//! manufacturer RXA-17, status RXA-20/21, reason not given RXA-18, route RXR-1, site RXR-2,
//! primary source from RXA-9 (`00` new record).

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::identifier::{ei, ei_key};
use crate::datatypes::numeric::quantity;
use crate::datatypes::{time, SegmentExt};
use crate::resources::{CodeableConcept, Immunization, ImmunizationPerformer, Resource};
use crate::ConvertError;

/// Map one RXA with its RXR and ORC.
pub fn immunization(
    ctx: &mut Ctx<'_>,
    orc: Option<Seg<'_>>,
    rxa: Seg<'_>,
    rxr: Option<Seg<'_>>,
    index: usize,
) -> Result<(), ConvertError> {
    let Some(patient) = ctx.subject() else {
        ctx.note("RXA skipped: no Patient in the message");
        return Ok(());
    };
    let Some(vaccine) = concept(rxa.node(5)) else {
        ctx.note(format!(
            "RXA #{index} skipped: RXA-5 administered code is empty"
        ));
        return Ok(());
    };
    let when = rxa.node(3).first();
    let occurrence = ctx.date_time(when.as_deref());
    let occurrence_string = if occurrence.is_none() {
        when.map(|w| w.into_owned())
            .or_else(|| Some("unknown".into()))
    } else {
        None
    };
    let key = orc
        .and_then(|o| ei_key(o.node(3)))
        .map(|k| format!("filler|{k}"))
        .unwrap_or_else(|| {
            format!(
                "{}|{}|{}",
                ctx.patient_key,
                rxa.node(5).get(1).unwrap_or_default(),
                rxa.node(3).first().unwrap_or_default()
            )
        });
    let dose = rxa
        .text(6)
        .filter(|d| d.trim() != "999")
        .and_then(|d| quantity(&d, rxa.node(7)));
    let mut performer = Vec::new();
    for p in rxa.reps(10) {
        if let Some(actor) = ctx.practitioner(p)? {
            performer.push(ImmunizationPerformer {
                function: Some(CodeableConcept::code(
                    "http://terminology.hl7.org/CodeSystem/v2-0443",
                    "AP",
                    Some("Administering Provider"),
                )),
                actor,
            });
        }
    }
    let manufacturer = match concept(rxa.node(17)) {
        Some(m) => ctx.organization(
            m.coding
                .first()
                .and_then(|c| c.display.as_deref().map(str::to_string))
                .or(m.text.clone()),
            rxa.node(17).s(1),
            Some("http://hl7.org/fhir/sid/mvx".into()),
        )?,
        None => None,
    };
    let status = codes::immunization_status(rxa.text(20).as_deref(), rxa.text(21).as_deref());
    let i = Immunization {
        id: ctx.id(Immunization::TYPE, &key),
        identifier: orc.and_then(|o| ei(o.node(3))).into_iter().collect(),
        status,
        status_reason: if status == "not-done" {
            concept(rxa.node(18))
        } else {
            None
        },
        vaccine_code: vaccine,
        patient,
        encounter: ctx.encounter.clone(),
        occurrence_date_time: occurrence,
        occurrence_string,
        primary_source: rxa.node(9).get(1).map(|s| s == "00"),
        location: ctx.location(rxa.node(11).part(4))?,
        manufacturer,
        lot_number: rxa.s(15),
        expiration_date: time::date(rxa.text(16).as_deref()),
        site: rxr.and_then(|r| concept(r.node(2))),
        route: rxr.and_then(|r| concept(r.node(1))),
        dose_quantity: dose,
        performer,
        ..Immunization::default()
    };
    ctx.add(&i)?;
    Ok(())
}
