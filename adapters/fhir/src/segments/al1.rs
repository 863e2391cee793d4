//! AL1 → AllergyIntolerance.
//!
//! Category AL1-2 (table 0127), code AL1-3, criticality AL1-4 (table 0128), reaction AL1-5
//! (each repetition a manifestation, as text), onset AL1-6. Clinical status is `active`: v2
//! lists the allergies a patient has.

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::{time, Node, SegmentExt};
use crate::resources::{AllergyIntolerance, AllergyReaction, CodeableConcept, Resource};
use crate::ConvertError;

/// Map one AL1.
pub fn allergy(ctx: &mut Ctx<'_>, al1: Seg<'_>, index: usize) -> Result<(), ConvertError> {
    let Some(patient) = ctx.subject() else {
        ctx.note("AL1 skipped: no Patient in the message");
        return Ok(());
    };
    let Some(code) = concept(al1.node(3)) else {
        ctx.note(format!("AL1 #{index} skipped: AL1-3 allergen is empty"));
        return Ok(());
    };
    let key = format!(
        "{}|{}|{}",
        ctx.patient_key,
        al1.node(3)
            .get(1)
            .or_else(|| al1.node(3).get(2))
            .unwrap_or_default(),
        al1.node(3).get(3).unwrap_or_default()
    );
    let manifestation: Vec<CodeableConcept> = al1
        .reps(5)
        .iter()
        .filter_map(Node::text)
        .map(|t| CodeableConcept::text(&t.replace('^', " ")))
        .collect();
    let a = AllergyIntolerance {
        id: ctx.id(AllergyIntolerance::TYPE, &key),
        clinical_status: Some(CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "active",
            Some("Active"),
        )),
        category: al1
            .text(2)
            .and_then(|c| codes::allergy_category(&c))
            .into_iter()
            .collect(),
        criticality: al1.text(4).and_then(|c| codes::allergy_criticality(&c)),
        code: Some(code),
        patient,
        encounter: ctx.encounter.clone(),
        onset_date_time: time::date(al1.text(6).as_deref()),
        reaction: if manifestation.is_empty() {
            Vec::new()
        } else {
            vec![AllergyReaction { manifestation }]
        },
        ..AllergyIntolerance::default()
    };
    ctx.add(&a)?;
    Ok(())
}
