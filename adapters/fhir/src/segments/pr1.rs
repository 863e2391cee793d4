//! PR1 → Procedure (status `completed`: PR1 reports procedures performed).
//!
//! Code PR1-3 (PR1-4 description as text when PR1-3 is empty), performed PR1-5, performers
//! PR1-8 (anesthesiologist) and PR1-11/12 (surgeon, practitioner), identifier PR1-19.

use crate::datatypes::Seg;

use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::identifier::{ei, ei_key};
use crate::datatypes::SegmentExt;
use crate::resources::{CodeableConcept, Procedure, ProcedurePerformer, Resource};
use crate::ConvertError;

/// Map one PR1.
pub fn procedure(ctx: &mut Ctx<'_>, pr1: Seg<'_>, index: usize) -> Result<(), ConvertError> {
    let Some(subject) = ctx.subject() else {
        ctx.note("PR1 skipped: no Patient in the message");
        return Ok(());
    };
    let code = concept(pr1.node(3)).or_else(|| pr1.s(4).map(|d| CodeableConcept::text(&d)));
    let key = match ei_key(pr1.node(19)) {
        Some(k) => format!("pr1-19|{k}"),
        None => format!(
            "{}|{}|{}|{}",
            ctx.patient_key,
            pr1.node(3).get(1).unwrap_or_default(),
            pr1.text(5).unwrap_or_default(),
            if code.is_none() { index } else { 0 }
        ),
    };
    let mut performer = Vec::new();
    for (field, code, display) in [
        (8usize, "88189002", "Anesthesiologist"),
        (11, "304292004", "Surgeon"),
        (12, "223366009", "Healthcare professional"),
    ] {
        for x in pr1.reps(field) {
            if let Some(actor) = ctx.practitioner(x)? {
                performer.push(ProcedurePerformer {
                    function: Some(CodeableConcept::code(
                        "http://snomed.info/sct",
                        code,
                        Some(display),
                    )),
                    actor,
                });
            }
        }
    }
    let p = Procedure {
        id: ctx.id(Procedure::TYPE, &key),
        identifier: ei(pr1.node(19)).into_iter().collect(),
        status: "completed",
        code,
        subject,
        encounter: ctx.encounter.clone(),
        performed_date_time: ctx.date_time(pr1.text(5).as_deref()),
        performer,
        ..Procedure::default()
    };
    ctx.add(&p)?;
    Ok(())
}
