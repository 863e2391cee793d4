//! MSH → MessageHeader, and MSH + EVN → Provenance.
//!
//! `MessageHeader.eventCoding` is the v2 trigger (table 0003); `source` is the sending
//! application (MSH-3) with software from SFT; `endpoint` must be a real URL: the configured
//! one, else MSH-3's universal id when it is a URL, else a `data-absent-reason` extension.
//! Provenance says the message produced every resource: `recorded` is MSH-7 (an `instant`,
//! so it needs an offset — without one, and no site offset, no Provenance is written),
//! `occurredDateTime` EVN-6, `reason` EVN-4, agents the sending facility and EVN-5 operator.

use crate::datatypes::Seg;

use crate::bundle::is_absolute_url;
use crate::context::Ctx;
use crate::datatypes::coded::{code, concept};
use crate::datatypes::{Node, SegmentExt};
use crate::resources::{
    CodeableConcept, Coding, MessageDestination, MessageHeader, MessageSource, Meta,
    PrimitiveExtension, Provenance, ProvenanceAgent, Reference, Resource, Text,
};
use crate::ConvertError;

/// The tag marking a partial mapping.
pub fn partial_tag() -> Coding {
    Coding {
        system: Some("urn:medbus:conversion".into()),
        code: Some("partial".into()),
        display: Some("message type not mapped; only header and patient converted".into()),
        ..Coding::default()
    }
}

fn endpoint_of(hd: Node<'_>) -> Option<String> {
    let uid = hd.get(2)?;
    let kind = hd.get(3).map(|k| k.to_ascii_uppercase());
    (matches!(kind.as_deref(), Some("URI" | "URL")) && is_absolute_url(&uid))
        .then(|| uid.into_owned())
}

/// Build the MessageHeader (the caller puts it first in the Bundle).
pub fn message_header(
    ctx: &mut Ctx<'_>,
    msh: Seg<'_>,
    sft: Option<Seg<'_>>,
    partial: bool,
    focus: Vec<Reference>,
) -> Result<MessageHeader, ConvertError> {
    let app = msh.node(3);
    let endpoint = ctx
        .opts
        .source_endpoint
        .clone()
        .or_else(|| endpoint_of(app));
    let source = MessageSource {
        name: app.s(1).or_else(|| app.s(2)),
        software: sft.and_then(|s| s.s(3)),
        version: sft.and_then(|s| s.s(2)),
        endpoint_ext: endpoint.is_none().then(PrimitiveExtension::absent_unknown),
        endpoint,
    };
    let sender = ctx.organization(msh.node(4).s(1), msh.node(4).s(2), None)?;
    let mut destination = Vec::new();
    let rapp = msh.node(5);
    let receiver = ctx.organization(msh.node(6).s(1), msh.node(6).s(2), None)?;
    if !rapp.is_empty() || receiver.is_some() {
        let ep = endpoint_of(rapp);
        destination.push(MessageDestination {
            name: rapp.s(1).or_else(|| rapp.s(2)),
            endpoint_ext: ep.is_none().then(PrimitiveExtension::absent_unknown),
            endpoint: ep,
            receiver,
        });
    }
    let t9 = msh.node(9);
    let trigger = t9.get(2).and_then(|t| code(&t));
    let event = Coding {
        system: Some("http://terminology.hl7.org/CodeSystem/v2-0003".into()),
        code: trigger.or_else(|| t9.get(1).and_then(|c| code(&c))),
        display: t9.text().map(|t| Text::Owned(t.into_owned())),
        ..Coding::default()
    };
    let mut tag = Vec::new();
    if let Some(p) = msh.node(11).get(1).and_then(|p| code(&p)) {
        tag.push(Coding {
            system: Some("http://terminology.hl7.org/CodeSystem/v2-0103".into()),
            code: Some(p),
            ..Coding::default()
        });
    }
    if partial {
        tag.push(partial_tag());
    }
    Ok(MessageHeader {
        id: ctx.id(MessageHeader::TYPE, &ctx.msg_key),
        meta: Some(Meta {
            tag,
            security: Vec::new(),
        }),
        event_coding: event,
        destination,
        sender,
        source,
        focus,
        ..MessageHeader::default()
    })
}

/// Build the Provenance of the message, or `None` when MSH-7 gives no instant.
pub fn provenance(
    ctx: &mut Ctx<'_>,
    msh: Seg<'_>,
    evn: Option<Seg<'_>>,
    targets: Vec<Reference>,
) -> Result<Option<Provenance>, ConvertError> {
    let Some(recorded) = ctx
        .instant(msh.text(7).as_deref())
        .or_else(|| evn.and_then(|e| ctx.instant(e.text(2).as_deref())))
    else {
        ctx.note("Provenance left out: MSH-7 has no UTC offset and no site time zone is set");
        return Ok(None);
    };
    if targets.is_empty() {
        return Ok(None);
    }
    let mut agent = Vec::new();
    let facility = msh.node(4);
    let org = ctx.organization(facility.s(1), facility.s(2), None)?;
    let app_name = msh.node(3).s(1);
    let who = org.or_else(|| app_name.as_deref().map(Reference::display));
    if let Some(who) = who {
        agent.push(ProvenanceAgent {
            r#type: Some(CodeableConcept::code(
                "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "author",
                Some("Author"),
            )),
            who,
        });
    }
    if let Some(e) = evn {
        if let Some(op) = ctx.practitioner(e.node(5))? {
            agent.push(ProvenanceAgent {
                r#type: Some(CodeableConcept::code(
                    "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "enterer",
                    Some("Enterer"),
                )),
                who: op,
            });
        }
    }
    if agent.is_empty() {
        agent.push(ProvenanceAgent {
            r#type: None,
            who: Reference::display("HL7 v2 sending system"),
        });
    }
    let id = ctx.id(Provenance::TYPE, &ctx.msg_key);
    Ok(Some(Provenance {
        id,
        target: targets,
        occurred_date_time: evn.and_then(|e| ctx.date_time(e.text(6).as_deref())),
        recorded,
        reason: evn.and_then(|e| concept(e.node(4))).into_iter().collect(),
        activity: Some(CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "UPDATE",
            Some("revise"),
        )),
        agent,
        ..Provenance::default()
    }))
}
