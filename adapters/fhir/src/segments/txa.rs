//! TXA (+ the OBX content after it) → DocumentReference (MDM T01/T02/T06/T08/T10).
//!
//! masterIdentifier TXA-12 (unique document number), identifiers TXA-14 placer / TXA-15 filler
//! (TXA-16 unique file name), type TXA-2, date TXA-4 (an instant: needs an offset), author
//! TXA-9/TXA-5, authenticator TXA-10, docStatus TXA-17, status TXA-19, parent TXA-13 (T06
//! addendum → `appends`, T10 replacement → `replaces`), content: OBX TX/ST/FT text as a
//! `text/plain` attachment, an ED value as its own attachment. Notification-only events (no
//! content) keep a titled attachment, because `content` is required.

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::coded::table_concept;
use crate::datatypes::encapsulated::ed;
use crate::datatypes::identifier::{ei, ei_key, ei_typed};
use crate::datatypes::SegmentExt;
use crate::resources::{
    Attachment, DocumentContent, DocumentContext, DocumentReference, DocumentRelatesTo, Reference,
    Resource,
};
use crate::segments::order::text_attachment;
use crate::ConvertError;

fn doc_key(ctx: &Ctx<'_>, txa: Seg<'_>, node: usize) -> Option<String> {
    let n = txa.node(node);
    ei_key(n).map(|k| format!("doc|{k}")).or_else(|| {
        (node == 12)
            .then(|| txa.text(4))
            .flatten()
            .map(|d| format!("{}|{d}", ctx.patient_key))
    })
}

/// Map one TXA with its content OBXs. `trigger` is MSH-9.2.
pub fn document(
    ctx: &mut Ctx<'_>,
    txa: Seg<'_>,
    obxs: &[Seg<'_>],
    trigger: &str,
) -> Result<(), ConvertError> {
    let key = doc_key(ctx, txa, 12).unwrap_or_else(|| ctx.scoped("TXA", 1));
    let mut content = Vec::new();
    let (eds, texts): (Vec<Seg<'_>>, Vec<Seg<'_>>) = obxs
        .iter()
        .partition(|o| o.text(2).is_some_and(|k| k.eq_ignore_ascii_case("ED")));
    if let Some(a) = text_attachment(&texts) {
        content.push(DocumentContent { attachment: a });
    }
    for o in eds {
        if let Some(a) = ed(o.node(5)) {
            content.push(DocumentContent { attachment: a });
        }
    }
    if content.is_empty() {
        content.push(DocumentContent {
            attachment: Attachment {
                content_type: Some("text/plain".into()),
                title: Some(
                    txa.node(2)
                        .s(2)
                        .or_else(|| txa.node(2).s(1))
                        .unwrap_or_else(|| "document (content not sent)".to_string()),
                ),
                ..Attachment::default()
            },
        });
    }
    let mut author = Vec::new();
    for a in txa.reps(9).into_iter().chain(txa.reps(5)) {
        author.extend(ctx.practitioner(a)?);
    }
    let authenticator = match txa.reps(10).first() {
        Some(a) => ctx.practitioner(*a)?,
        None => None,
    };
    let mut relates_to = Vec::new();
    let relation = match trigger {
        "T06" | "T07" | "T08" => Some("appends"),
        "T10" | "T09" | "T11" => Some("replaces"),
        _ => None,
    };
    if let (Some(code), Some(parent)) = (relation, doc_key(ctx, txa, 13)) {
        let target = ctx.id(DocumentReference::TYPE, &parent);
        relates_to.push(DocumentRelatesTo {
            code,
            target: Reference::to(DocumentReference::TYPE, &target),
        });
    }
    let mut identifier = Vec::new();
    identifier.extend(ei_typed(txa.node(14), "PLAC"));
    identifier.extend(ei_typed(txa.node(15), "FILL"));
    let d = DocumentReference {
        id: ctx.id(DocumentReference::TYPE, &key),
        master_identifier: ei(txa.node(12)),
        identifier,
        status: codes::document_status(txa.text(19).as_deref()),
        doc_status: txa.text(17).and_then(|s| codes::doc_status(&s)),
        r#type: table_concept(txa.node(2), "0270"),
        subject: ctx.subject(),
        date: ctx.instant(txa.text(4).as_deref()),
        author,
        authenticator,
        relates_to,
        content,
        context: ctx.encounter.clone().map(|e| DocumentContext {
            encounter: vec![e],
            period: None,
        }),
        ..DocumentReference::default()
    };
    ctx.add(&d)?;
    Ok(())
}
