//! Infrastructure resources: MessageHeader (the v2 MSH), Provenance (who sent what, when) and the
//! Bundle envelope.

use super::{CodeableConcept, Coding, Identifier, Meta, PrimitiveExtension, Reference};
use crate::{element, resource};

element! {
    /// `MessageHeader.source` / `.destination` endpoint block.
    pub struct MessageSource {
        pub name: Option<String>,
        pub software: Option<String>,
        pub version: Option<String>,
        pub endpoint: Option<String>,
        /// `data-absent-reason` when no real URL is known (the element is required).
        #[serde(rename = "_endpoint")]
        pub endpoint_ext: Option<PrimitiveExtension>,
    }
}

element! {
    /// `MessageHeader.destination`.
    pub struct MessageDestination {
        pub name: Option<String>,
        pub endpoint: Option<String>,
        #[serde(rename = "_endpoint")]
        pub endpoint_ext: Option<PrimitiveExtension>,
        pub receiver: Option<Reference>,
    }
}

resource! {
    /// FHIR `MessageHeader`, from MSH.
    pub struct MessageHeader {
        pub meta: Option<Meta>,
        pub event_coding: Coding,
        pub destination: Vec<MessageDestination>,
        pub sender: Option<Reference>,
        pub source: MessageSource,
        pub reason: Option<CodeableConcept>,
        pub focus: Vec<Reference>,
    }
}

element! {
    /// `Provenance.agent`.
    pub struct ProvenanceAgent {
        pub r#type: Option<CodeableConcept>,
        pub who: Reference,
    }
}

element! {
    /// `Provenance.entity`.
    pub struct ProvenanceEntity {
        pub role: &'static str,
        pub what: Reference,
    }
}

resource! {
    /// FHIR `Provenance`: the message as the source of every resource in the Bundle.
    pub struct Provenance {
        pub target: Vec<Reference>,
        pub occurred_date_time: Option<String>,
        pub recorded: String,
        pub reason: Vec<CodeableConcept>,
        pub activity: Option<CodeableConcept>,
        pub agent: Vec<ProvenanceAgent>,
        pub entity: Vec<ProvenanceEntity>,
    }
}

element! {
    /// The Bundle's own elements; the entries are appended as already-serialised bytes.
    pub struct BundleHead {
        pub resource_type: &'static str,
        pub id: String,
        pub meta: Option<Meta>,
        pub identifier: Option<Identifier>,
        pub r#type: &'static str,
        pub timestamp: Option<String>,
    }
}
