//! The state of one conversion: options, the resources emitted so far (already serialised, in
//! order, de-duplicated by type + id), the Patient/Encounter every clinical resource points to,
//! and the notes that end up in [`crate::Conversion::notes`].
//!
//! Shared resources that many segments mention (Practitioner, Organization, Location) are
//! created here on demand, so two mentions of one doctor yield one Practitioner.

use std::collections::BTreeSet;

use crate::datatypes::identifier::hd_system;
use crate::datatypes::names::{display, xcn_name};
use crate::datatypes::time::{self, Offset};
use crate::datatypes::Node;
use crate::ids;
use crate::resources::{
    CodeableConcept, Identifier, Location, Organization, Practitioner, Reference, Resource, Shared,
    Text,
};
use crate::{concat, ConvertError, ConvertOptions};

/// One emitted resource.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// FHIR resource type.
    pub resource_type: &'static str,
    /// Resource id.
    pub id: String,
    /// Compact JSON.
    pub json: Vec<u8>,
}

/// Conversion state.
pub struct Ctx<'o> {
    /// The caller's options.
    pub opts: &'o ConvertOptions,
    /// The parsed site offset for instants/dateTimes written without one.
    pub tz: Option<Offset>,
    /// The Bundle key (MSH-10, or a digest of the message).
    pub msg_key: String,
    /// Resources in emission order.
    pub out: Vec<Emitted>,
    /// `Type/id` of every emitted resource (the reference text, so a lookup needs no key of
    /// its own).
    seen: BTreeSet<Shared>,
    /// Scratch buffer every resource is serialised into before it is copied out at its exact
    /// size (no growing of a fresh buffer per resource).
    json_buf: Vec<u8>,
    /// Human-readable remarks (skipped segments, dropped values). No patient data.
    pub notes: Vec<String>,
    /// The message's Patient.
    pub patient: Option<Reference>,
    /// The Patient's business key (scopes other keys).
    pub patient_key: String,
    /// The message's Encounter.
    pub encounter: Option<Reference>,
    /// The Encounter's business key.
    pub encounter_key: String,
    /// Practitioners already mapped, by the raw bytes of their XCN: one doctor is named by
    /// many segments of a message (OBX-16 of every result, OBR-16, PV1-7 …), and mapping the
    /// same bytes again would only rebuild the same key, id and resource.
    /// The depth ([`Node::depth`]) is part of the key, as it decides which separator splits
    /// the bytes.
    practitioners: Vec<(u8, Box<[u8]>, Option<Reference>)>,
}

impl<'o> Ctx<'o> {
    /// A fresh context.
    pub fn new(opts: &'o ConvertOptions, tz: Option<Offset>, msg_key: String) -> Ctx<'o> {
        Ctx {
            opts,
            tz,
            msg_key,
            out: Vec::with_capacity(24),
            seen: BTreeSet::new(),
            json_buf: Vec::with_capacity(4096),
            notes: Vec::new(),
            patient: None,
            patient_key: String::new(),
            encounter: None,
            encounter_key: String::new(),
            practitioners: Vec::new(),
        }
    }

    /// The id for `resource_type` with business `key`.
    pub fn id(&self, resource_type: &str, key: &str) -> String {
        ids::uuid(&self.opts.id_namespace, resource_type, key)
    }

    /// A message-scoped key for a segment without business identifiers.
    pub fn scoped(&self, what: &str, index: usize) -> String {
        format!("msg|{}|{what}|{index}", self.msg_key)
    }

    /// Whether a resource of this type and id was emitted already.
    pub fn has(&self, resource_type: &'static str, id: &str) -> bool {
        self.emitted(resource_type, id).is_some()
    }

    /// The reference to the resource of this type and id when it was emitted already (shared
    /// resources check this before building a resource that [`Ctx::add`] would drop).
    fn emitted(&self, resource_type: &'static str, id: &str) -> Option<Reference> {
        let reference = Reference::to(resource_type, id);
        self.seen
            .contains(reference.reference.as_deref().unwrap_or_default())
            .then_some(reference)
    }

    /// Serialise and record `r`; a second resource with the same type and id is dropped (the
    /// first mention wins). Returns the reference to it.
    pub fn add<R: Resource>(&mut self, r: &R) -> Result<Reference, ConvertError> {
        let reference = Reference::to(R::TYPE, r.id());
        let Some(key) = &reference.reference else {
            return Ok(reference);
        };
        if !self.seen.insert(key.clone()) {
            return Ok(reference);
        }
        self.json_buf.clear();
        crate::json::write(&mut self.json_buf, r)
            .map_err(|e| ConvertError::Serialize(e.to_string()))?;
        self.out.push(Emitted {
            resource_type: R::TYPE,
            id: r.id().to_string(),
            json: self.json_buf.as_slice().to_vec(),
        });
        Ok(reference)
    }

    /// Record a note.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// `dateTime` from a v2 value with the site offset.
    pub fn date_time(&self, v: Option<&str>) -> Option<String> {
        time::date_time(v, self.tz)
    }

    /// `instant` from a v2 value with the site offset.
    pub fn instant(&self, v: Option<&str>) -> Option<String> {
        time::instant(v, self.tz)
    }

    /// A Practitioner from an XCN (id + name); `None` when the XCN is empty.
    pub fn practitioner(&mut self, xcn: Node<'_>) -> Result<Option<Reference>, ConvertError> {
        let (depth, raw) = (xcn.depth(), xcn.raw());
        let seen = self.practitioners.iter();
        if let Some((.., r)) = seen
            .into_iter()
            .find(|(d, b, _)| *d == depth && **b == *raw)
        {
            return Ok(r.clone());
        }
        let r = self.map_practitioner(xcn)?;
        self.practitioners.push((depth, raw.into(), r.clone()));
        Ok(r)
    }

    fn map_practitioner(&mut self, xcn: Node<'_>) -> Result<Option<Reference>, ConvertError> {
        let id_value = xcn.s(1);
        let auth = xcn.part(9);
        // The name is built only when it keys the Practitioner or the Practitioner is new.
        let mut name = None;
        let key = match &id_value {
            Some(v) => concat(&[
                v,
                "|",
                &auth.get(1).or_else(|| auth.get(2)).unwrap_or_default(),
            ]),
            None => match xcn_name(xcn) {
                Some(n) => {
                    let key = concat(&["name|", &display(&n)]);
                    name = Some(n);
                    key
                }
                None => return Ok(None),
            },
        };
        let id = self.id(Practitioner::TYPE, &key);
        if let Some(r) = self.emitted(Practitioner::TYPE, &id) {
            return Ok(Some(r));
        }
        if id_value.is_some() {
            name = xcn_name(xcn);
        }
        let identifier = id_value.map(|v| Identifier {
            system: hd_system(auth.get(1), auth.get(2), auth.get(3)),
            value: Some(v),
            ..Identifier::default()
        });
        let p = Practitioner {
            id,
            identifier: identifier.into_iter().collect(),
            name: name.into_iter().collect(),
            ..Practitioner::default()
        };
        self.add(&p).map(Some)
    }

    /// An Organization from an XON (name, id XON-10 or XON-3, authority XON-6).
    pub fn organization_xon(&mut self, xon: Node<'_>) -> Result<Option<Reference>, ConvertError> {
        let name = xon.s(1);
        let value = xon.s(10).or_else(|| xon.s(3));
        let auth = xon.part(6);
        self.organization(
            name,
            value,
            hd_system(auth.get(1), auth.get(2), auth.get(3)),
        )
    }

    /// An Organization from a name and/or an identifier.
    pub fn organization(
        &mut self,
        name: Option<String>,
        value: Option<String>,
        system: Option<Text>,
    ) -> Result<Option<Reference>, ConvertError> {
        let key = match (&value, &name) {
            (Some(v), _) => concat(&[v, "|", system.as_deref().unwrap_or_default()]),
            (None, Some(n)) => concat(&["name|", n]),
            (None, None) => return Ok(None),
        };
        let id = self.id(Organization::TYPE, &key);
        if let Some(r) = self.emitted(Organization::TYPE, &id) {
            return Ok(Some(r));
        }
        let identifier = value.map(|v| Identifier {
            system,
            value: Some(v),
            ..Identifier::default()
        });
        let o = Organization {
            id,
            identifier: identifier.into_iter().collect(),
            name,
            ..Organization::default()
        };
        self.add(&o).map(Some)
    }

    /// A Location from a PL (point of care, room, bed, facility, …, building, floor, description).
    pub fn location(&mut self, pl: Node<'_>) -> Result<Option<Reference>, ConvertError> {
        let parts: Vec<String> = [1usize, 2, 3, 4, 7, 8]
            .iter()
            .filter_map(|&j| pl.part(j).first().map(|s| s.into_owned()))
            .collect();
        if parts.is_empty() {
            return Ok(None);
        }
        let key = parts.join("|");
        let id = self.id(Location::TYPE, &key);
        if let Some(r) = self.emitted(Location::TYPE, &id) {
            return Ok(Some(r));
        }
        let (pt_code, pt_display) = if pl.get(3).is_some() {
            ("bd", "Bed")
        } else if pl.get(2).is_some() {
            ("ro", "Room")
        } else if pl.get(1).is_some() {
            ("wa", "Ward")
        } else if pl.get(8).is_some() {
            ("lvl", "Level")
        } else if pl.get(7).is_some() {
            ("bu", "Building")
        } else {
            ("si", "Site")
        };
        let loc = Location {
            id,
            status: Some("active"),
            name: Some(parts.join(" ")),
            description: pl.s(9),
            mode: Some("instance"),
            physical_type: Some(CodeableConcept::code(
                "http://terminology.hl7.org/CodeSystem/location-physical-type",
                pt_code,
                Some(pt_display),
            )),
            ..Location::default()
        };
        self.add(&loc).map(Some)
    }

    /// Subject reference (the message's Patient).
    pub fn subject(&self) -> Option<Reference> {
        self.patient.clone()
    }
}
