//! SCH + AIS / AIG / AIL / AIP → Appointment (SIU S12–S26).
//!
//! Identifiers SCH-1 placer / SCH-2 filler, status from the event (S15 cancelled, S26 noshow)
//! else SCH-25 filler status, else `booked`; reason SCH-7, type SCH-8, start/end from SCH-11
//! (TQ-4/5) or the first AIS-4, duration SCH-9/10 or AIS-7; service types AIS-3; participants:
//! the Patient, AIP-3 practitioners, AIL-3 locations, AIG-3 resources (as displays); comment
//! from NTEs. `start`/`end` are instants: without an offset (written or configured) they are
//! left out.

use crate::datatypes::Seg;

use crate::codes;
use crate::context::Ctx;
use crate::datatypes::coded::concept;
use crate::datatypes::encapsulated::plain_text;
use crate::datatypes::identifier::{ei_key, ei_typed};
use crate::datatypes::{Node, SegmentExt};
use crate::resources::{Appointment, AppointmentParticipant, Reference, Resource};
use crate::ConvertError;

/// SCH and the segments that belong to it.
#[derive(Debug, Clone, Default)]
pub struct Schedule<'a> {
    /// SCH.
    pub sch: Option<Seg<'a>>,
    /// TQ1 (timing, v2.5+).
    pub tq1: Option<Seg<'a>>,
    /// NTEs.
    pub notes: Vec<Seg<'a>>,
    /// AIS/AIG/AIL/AIP in order.
    pub resources: Vec<Seg<'a>>,
}

fn minutes(amount: Option<&str>, unit: Option<&str>) -> Option<u32> {
    let n: u32 = amount?.trim().parse().ok()?;
    let factor = match unit.map(str::to_ascii_uppercase).as_deref() {
        None | Some("MIN" | "M" | "MINUTES") => 1,
        Some("H" | "HR" | "HOURS" | "HOUR") => 60,
        Some("S" | "SEC" | "SECONDS") => return Some(n / 60).filter(|m| *m > 0),
        Some(_) => return None,
    };
    n.checked_mul(factor).filter(|m| *m > 0)
}

/// Map the schedule. `trigger` is MSH-9.2.
pub fn appointment(ctx: &mut Ctx<'_>, s: &Schedule<'_>, trigger: &str) -> Result<(), ConvertError> {
    let Some(sch) = s.sch else {
        return Ok(());
    };
    let key = ei_key(sch.node(2))
        .map(|k| format!("filler|{k}"))
        .or_else(|| ei_key(sch.node(1)).map(|k| format!("placer|{k}")))
        .unwrap_or_else(|| ctx.scoped("SCH", 1));
    let status = match trigger {
        "S15" => "cancelled",
        "S26" => "noshow",
        _ => sch
            .text(25)
            .and_then(|c| codes::appointment_status(&c))
            .unwrap_or("booked"),
    };
    let ais: Vec<Seg<'_>> = s
        .resources
        .iter()
        .copied()
        .filter(|r| r.id() == "AIS")
        .collect();
    let tq = sch.node(11);
    let start_v2 = tq
        .get(4)
        .or_else(|| s.tq1.and_then(|t| t.node(7).first()))
        .or_else(|| ais.first().and_then(|a| a.text(4)));
    let end_v2 = tq.get(5).or_else(|| s.tq1.and_then(|t| t.node(8).first()));
    let start = ctx.instant(start_v2.as_deref());
    let end = ctx.instant(end_v2.as_deref());
    if start_v2.is_some() && start.is_none() {
        ctx.note("Appointment.start left out: no UTC offset in the message and none configured");
    }
    let duration = minutes(sch.text(9).as_deref(), sch.node(10).get(1).as_deref()).or_else(|| {
        ais.first()
            .and_then(|a| minutes(a.text(7).as_deref(), a.node(8).get(1).as_deref()))
    });
    let mut participant = Vec::new();
    if let Some(p) = ctx.subject() {
        participant.push(AppointmentParticipant {
            r#type: Vec::new(),
            actor: Some(p),
            status: "accepted",
        });
    }
    let mut service_type = Vec::new();
    for r in &s.resources {
        match r.id() {
            "AIS" => service_type.extend(concept(r.node(3))),
            "AIP" => {
                for x in r.reps(3) {
                    if let Some(a) = ctx.practitioner(x)? {
                        participant.push(AppointmentParticipant {
                            r#type: concept(r.node(4)).into_iter().collect(),
                            actor: Some(a),
                            status: "accepted",
                        });
                    }
                }
            }
            "AIL" => {
                if let Some(a) = ctx.location(r.node(3))? {
                    participant.push(AppointmentParticipant {
                        r#type: Vec::new(),
                        actor: Some(a),
                        status: "accepted",
                    });
                }
            }
            "AIG" => {
                let name = r.node(3).s(2).or_else(|| r.node(3).s(1));
                if let Some(n) = name {
                    participant.push(AppointmentParticipant {
                        r#type: concept(r.node(4)).into_iter().collect(),
                        actor: Some(Reference::display(&n)),
                        status: "accepted",
                    });
                }
            }
            _ => {}
        }
    }
    if participant.is_empty() {
        ctx.note("Appointment left out: it has no participant (no PID, AIP, AIL or AIG)");
        return Ok(());
    }
    let comment: Vec<String> = s
        .notes
        .iter()
        .flat_map(|n| n.reps(3))
        .filter_map(|n: Node<'_>| n.text())
        .map(|t| plain_text(&t))
        .collect();
    let mut identifier = Vec::new();
    identifier.extend(ei_typed(sch.node(1), "PLAC"));
    identifier.extend(ei_typed(sch.node(2), "FILL"));
    let a = Appointment {
        id: ctx.id(Appointment::TYPE, &key),
        identifier,
        status,
        cancelation_reason: if status == "cancelled" {
            concept(sch.node(6))
        } else {
            None
        },
        service_type,
        appointment_type: concept(sch.node(8)),
        reason_code: concept(sch.node(7)).into_iter().collect(),
        start,
        end,
        minutes_duration: duration,
        comment: if comment.is_empty() {
            None
        } else {
            Some(comment.join("\n"))
        },
        participant,
        ..Appointment::default()
    };
    ctx.add(&a)?;
    Ok(())
}
