//! NK1 → RelatedPerson.
//!
//! Name NK1-2, relationship NK1-3 (table 0063) and contact role NK1-7 (table 0131), address
//! NK1-4, phones NK1-5 (home) / NK1-6 (work), period NK1-8/9, gender NK1-15, birth date NK1-16.
//! An NK1 that names an organisation only (NK1-13) has no person to map and is skipped.

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::address::xad;
use crate::datatypes::coded::table_concept;
use crate::datatypes::identifier::cx;
use crate::datatypes::names::{display, xpn};
use crate::datatypes::telecom::xtn;
use crate::datatypes::{time, SegmentExt};
use crate::resources::{Period, RelatedPerson, Resource};
use crate::ConvertError;

/// Map one NK1.
pub fn related_person(ctx: &mut Ctx<'_>, nk1: Seg<'_>, index: usize) -> Result<(), ConvertError> {
    let Some(patient) = ctx.subject() else {
        ctx.note("NK1 skipped: no Patient in the message");
        return Ok(());
    };
    let name: Vec<_> = nk1.reps(2).into_iter().filter_map(xpn).collect();
    let mut relationship: Vec<_> = table_concept(nk1.node(3), codes::V2_RELATIONSHIP)
        .into_iter()
        .collect();
    relationship.extend(table_concept(nk1.node(7), "0131"));
    if name.is_empty() && relationship.is_empty() {
        ctx.note(format!("NK1 #{index} skipped: no name and no relationship"));
        return Ok(());
    }
    let key = format!(
        "{}|{}|{}",
        ctx.patient_key,
        name.first().map(display).unwrap_or_default(),
        nk1.text(3).unwrap_or_default()
    );
    let mut telecom: Vec<_> = nk1
        .reps(5)
        .into_iter()
        .filter_map(|t| xtn(t, Some("home")))
        .collect();
    telecom.extend(nk1.reps(6).into_iter().filter_map(|t| xtn(t, Some("work"))));
    let rp = RelatedPerson {
        id: ctx.id(RelatedPerson::TYPE, &key),
        identifier: nk1.reps(12).into_iter().filter_map(cx).collect(),
        patient,
        relationship,
        name,
        telecom,
        gender: nk1.text(15).and_then(|g| codes::gender(&g)),
        birth_date: time::date(nk1.text(16).as_deref()),
        address: nk1.reps(4).into_iter().filter_map(xad).collect(),
        period: Some(Period {
            start: time::date(nk1.text(8).as_deref()),
            end: time::date(nk1.text(9).as_deref()),
        }),
        ..RelatedPerson::default()
    };
    ctx.add(&rp)?;
    Ok(())
}
