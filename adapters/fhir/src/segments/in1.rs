//! IN1 (+ IN2) → Coverage (+ the insurer Organization).
//!
//! Payor IN1-3/IN1-4 (company id and name; self-pay falls back to the Patient), plan IN1-2 and
//! group IN1-8/9 as `class`, plan type IN1-15, period IN1-12/13, relationship IN1-17,
//! policy number IN1-36 (identifier), insured's id IN1-49 (subscriberId), order IN1-22 / IN1-1.
//! IN2 adds nothing Coverage has an element for; it is noted, not mapped.

use crate::datatypes::Seg;

use crate::context::Ctx;
use crate::datatypes::coded::table_concept;
use crate::datatypes::identifier::{cx, hd_system};
use crate::datatypes::{time, SegmentExt};
use crate::resources::{CodeableConcept, Coverage, CoverageClass, Identifier, Period, Resource};
use crate::ConvertError;

fn class(
    code: &'static str,
    display: &'static str,
    value: Option<String>,
    name: Option<String>,
) -> Option<CoverageClass> {
    Some(CoverageClass {
        r#type: CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/coverage-class",
            code,
            Some(display),
        ),
        value: value?,
        name,
    })
}

/// Map one IN1.
pub fn coverage(ctx: &mut Ctx<'_>, in1: Seg<'_>) -> Result<(), ConvertError> {
    let Some(beneficiary) = ctx.subject() else {
        ctx.note("IN1 skipped: no Patient in the message");
        return Ok(());
    };
    let company = in1.node(3);
    let auth = company.part(4);
    let insurer = ctx.organization(
        in1.node(4).s(1),
        company.s(1),
        hd_system(auth.get(1), auth.get(2), auth.get(3)),
    )?;
    let payor = vec![insurer.unwrap_or_else(|| beneficiary.clone())];
    let key = format!(
        "{}|{}|{}|{}",
        ctx.patient_key,
        company.get(1).unwrap_or_default(),
        in1.node(2).get(1).unwrap_or_default(),
        in1.text(36).unwrap_or_default()
    );
    let relationship = table_concept(in1.node(17), "0063");
    let mut classes = Vec::new();
    classes.extend(class("plan", "Plan", in1.node(2).s(1), in1.node(2).s(2)));
    classes.extend(class("group", "Group", in1.node(8).s(1), in1.s(9)));
    let c = Coverage {
        id: ctx.id(Coverage::TYPE, &key),
        identifier: in1
            .s(36)
            .map(|v| Identifier {
                value: Some(v),
                ..Identifier::default()
            })
            .into_iter()
            .collect(),
        status: "active",
        r#type: table_concept(in1.node(15), "0086"),
        subscriber_id: cx(in1.node(49)).and_then(|i| i.value),
        beneficiary,
        relationship,
        period: Some(Period {
            start: time::date(in1.text(12).as_deref()),
            end: time::date(in1.text(13).as_deref()),
        }),
        payor,
        class: classes,
        order: in1
            .text(22)
            .or_else(|| in1.text(1))
            .and_then(|o| o.parse::<u32>().ok())
            .filter(|o| *o > 0),
        ..Coverage::default()
    };
    ctx.add(&c)?;
    Ok(())
}
