//! ORC / RXE / RXR → MedicationRequest (RDE^O11).
//!
//! Status ORC-5/ORC-1, intent `order`, medication RXE-2 (give code), authoredOn ORC-9,
//! requester ORC-12 (else RXE-13), dose RXE-3 with units RXE-5, dispense quantity RXE-10/11,
//! refills RXE-12, instructions RXE-7 (as text), route RXR-1, site RXR-2.

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::identifier::{ei_key, ei_typed};
use crate::datatypes::numeric::quantity;
use crate::datatypes::{Node, SegmentExt};
use crate::resources::{DispenseRequest, Dosage, DoseAndRate, MedicationRequest, Resource};
use crate::ConvertError;

/// Map one RXE with its ORC and RXR.
pub fn medication_request(
    ctx: &mut Ctx<'_>,
    orc: Option<Seg<'_>>,
    rxe: Seg<'_>,
    rxr: Option<Seg<'_>>,
    index: usize,
) -> Result<(), ConvertError> {
    let Some(subject) = ctx.subject() else {
        ctx.note("RXE skipped: no Patient in the message");
        return Ok(());
    };
    let Some(medication) = concept(rxe.node(2)) else {
        ctx.note(format!("RXE #{index} skipped: RXE-2 give code is empty"));
        return Ok(());
    };
    let orc_node = |n: usize| orc.map(|o| o.node(n)).unwrap_or_default();
    let key = ei_key(orc_node(2))
        .map(|k| format!("placer|{k}"))
        .or_else(|| ei_key(orc_node(3)).map(|k| format!("filler|{k}")))
        .unwrap_or_else(|| {
            format!(
                "{}|{}|{}|{index}",
                ctx.patient_key,
                rxe.node(2).get(1).unwrap_or_default(),
                orc_node(9).first().unwrap_or_default()
            )
        });
    let mut identifier = Vec::new();
    identifier.extend(ei_typed(orc_node(2), "PLAC"));
    identifier.extend(ei_typed(orc_node(3), "FILL"));
    let requester = if orc_node(12).is_empty() {
        ctx.practitioner(rxe.node(13))?
    } else {
        ctx.practitioner(orc_node(12))?
    };
    let dose = rxe.text(3).and_then(|d| quantity(&d, rxe.node(5)));
    let dosage = Dosage {
        text: rxe
            .reps(7)
            .iter()
            .filter_map(|n: &Node<'_>| n.s(2).or_else(|| n.s(1)))
            .next(),
        route: rxr.and_then(|r| concept(r.node(1))),
        site: rxr.and_then(|r| concept(r.node(2))),
        dose_and_rate: dose
            .map(|q| DoseAndRate {
                dose_quantity: Some(q),
            })
            .into_iter()
            .collect(),
    };
    let m = MedicationRequest {
        id: ctx.id(MedicationRequest::TYPE, &key),
        identifier,
        status: match codes::request_status(
            orc.and_then(|o| o.text(5)).as_deref(),
            orc.and_then(|o| o.text(1)).as_deref(),
        ) {
            "revoked" => "cancelled",
            "on-hold" => "on-hold",
            "completed" => "completed",
            "entered-in-error" => "entered-in-error",
            "active" => "active",
            _ => "unknown",
        },
        intent: "order",
        medication_codeable_concept: medication,
        subject,
        encounter: ctx.encounter.clone(),
        authored_on: ctx.date_time(orc_node(9).first().as_deref()),
        requester,
        dosage_instruction: vec![dosage],
        dispense_request: Some(DispenseRequest {
            number_of_repeats_allowed: rxe.text(12).and_then(|r| r.parse().ok()),
            quantity: rxe.text(10).and_then(|q| quantity(&q, rxe.node(11))),
        }),
        ..MedicationRequest::default()
    };
    ctx.add(&m)?;
    Ok(())
}
