//! DG1 → Condition (category `encounter-diagnosis`).
//!
//! Code DG1-3 (DG1-4 description as text for old versions that send only a code), onset DG1-5,
//! verification from DG1-6 diagnosis type (A admitting / W working → provisional, F final →
//! confirmed), asserter DG1-16, recorded DG1-19, identifier DG1-20.

use crate::datatypes::Seg;

use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::identifier::{ei, ei_key};
use crate::datatypes::SegmentExt;
use crate::resources::{CodeableConcept, Condition, Resource};
use crate::ConvertError;

/// Map one DG1.
pub fn condition(ctx: &mut Ctx<'_>, dg1: Seg<'_>, index: usize) -> Result<(), ConvertError> {
    let Some(subject) = ctx.subject() else {
        ctx.note("DG1 skipped: no Patient in the message");
        return Ok(());
    };
    let mut code = concept(dg1.node(3));
    if let (Some(c), Some(desc)) = (code.as_mut(), dg1.s(4)) {
        if c.text.is_none() && c.coding.iter().all(|x| x.display.is_none()) {
            c.text = Some(desc);
        }
    }
    let code = code.or_else(|| dg1.s(4).map(|d| CodeableConcept::text(&d)));
    let key = match ei_key(dg1.node(20)) {
        Some(k) => format!("dg1-20|{k}"),
        None => format!(
            "{}|{}|{}|{}",
            ctx.patient_key,
            ctx.encounter_key,
            dg1.node(3)
                .get(1)
                .or_else(|| dg1.s(4).map(Into::into))
                .unwrap_or_default(),
            if code.is_none() { index } else { 0 }
        ),
    };
    let verification = match dg1.text(6).as_deref() {
        Some("A" | "W") => Some(("provisional", "Provisional")),
        Some("F") => Some(("confirmed", "Confirmed")),
        _ => None,
    };
    let c = Condition {
        id: ctx.id(Condition::TYPE, &key),
        identifier: ei(dg1.node(20)).into_iter().collect(),
        verification_status: verification.map(|(c, d)| {
            CodeableConcept::code(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                c,
                Some(d),
            )
        }),
        category: vec![CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "encounter-diagnosis",
            Some("Encounter Diagnosis"),
        )],
        code,
        subject,
        encounter: ctx.encounter.clone(),
        onset_date_time: ctx.date_time(dg1.text(5).as_deref()),
        recorded_date: ctx.date_time(dg1.text(19).as_deref()),
        asserter: ctx.practitioner(dg1.node(16))?,
        ..Condition::default()
    };
    ctx.add(&c)?;
    Ok(())
}
