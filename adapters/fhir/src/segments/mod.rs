//! v2 segments → FHIR resources, one file per segment family.
//!
//! Each function takes the conversion [`Ctx`](crate::context::Ctx) and the segment(s) it maps,
//! emits its resources through the context and returns a reference when others point to it.

pub mod al1;
pub mod dg1;
pub mod in1;
pub mod msh;
pub mod nk1;
pub mod order;
pub mod pid;
pub mod pr1;
pub mod pv1;
pub mod rxa;
pub mod rxe;
pub mod sch;
pub mod txa;

use crate::datatypes::Seg;

use crate::context::Ctx;
use crate::datatypes::encapsulated::plain_text;
use crate::datatypes::{Node, SegmentExt};
use crate::resources::Annotation;

/// NTE → Annotation (NTE-3 comment lines joined; NTE-5 author, NTE-6 time when present).
pub fn annotation(ctx: &mut Ctx<'_>, nte: Seg<'_>) -> Option<Annotation> {
    let lines: Vec<String> = nte
        .reps(3)
        .iter()
        .filter_map(Node::text)
        .map(|t| plain_text(&t))
        .collect();
    let text = lines.join("\n");
    if text.trim().is_empty() {
        return None;
    }
    let author = ctx.practitioner(nte.node(5)).ok().flatten();
    Some(Annotation {
        author_reference: author,
        time: ctx.date_time(nte.text(6).as_deref()),
        text,
    })
}
