//! Administrative resources: Patient, RelatedPerson, Practitioner, Organization, Location, Coverage.

use super::{
    Address, CodeableConcept, ContactPoint, HumanName, Identifier, Meta, Period, Reference,
};
use crate::{element, resource};

element! {
    /// `Patient.communication`.
    pub struct PatientCommunication {
        pub language: CodeableConcept,
    }
}

element! {
    /// `Patient.link` (A40 merges).
    pub struct PatientLink {
        pub other: Reference,
        pub r#type: &'static str,
    }
}

resource! {
    /// FHIR `Patient`, from PID/PD1 (and MRG for merges).
    pub struct Patient {
        pub meta: Option<Meta>,
        pub identifier: Vec<Identifier>,
        pub active: Option<bool>,
        pub name: Vec<HumanName>,
        pub telecom: Vec<ContactPoint>,
        pub gender: Option<&'static str>,
        pub birth_date: Option<String>,
        pub deceased_boolean: Option<bool>,
        pub deceased_date_time: Option<String>,
        pub address: Vec<Address>,
        pub marital_status: Option<CodeableConcept>,
        pub multiple_birth_boolean: Option<bool>,
        pub multiple_birth_integer: Option<i64>,
        pub communication: Vec<PatientCommunication>,
        pub general_practitioner: Vec<Reference>,
        pub link: Vec<PatientLink>,
    }
}

resource! {
    /// FHIR `RelatedPerson`, from NK1.
    pub struct RelatedPerson {
        pub identifier: Vec<Identifier>,
        pub patient: Reference,
        pub relationship: Vec<CodeableConcept>,
        pub name: Vec<HumanName>,
        pub telecom: Vec<ContactPoint>,
        pub gender: Option<&'static str>,
        pub birth_date: Option<String>,
        pub address: Vec<Address>,
        pub period: Option<Period>,
    }
}

resource! {
    /// FHIR `Practitioner`, from an XCN.
    pub struct Practitioner {
        pub identifier: Vec<Identifier>,
        pub name: Vec<HumanName>,
    }
}

resource! {
    /// FHIR `Organization`, from an XON, HD or free-text name.
    pub struct Organization {
        pub identifier: Vec<Identifier>,
        pub name: Option<String>,
        pub telecom: Vec<ContactPoint>,
        pub address: Vec<Address>,
    }
}

resource! {
    /// FHIR `Location`, from a PL.
    pub struct Location {
        pub identifier: Vec<Identifier>,
        pub status: Option<&'static str>,
        pub name: Option<String>,
        pub description: Option<String>,
        pub mode: Option<&'static str>,
        pub physical_type: Option<CodeableConcept>,
    }
}

element! {
    /// `Coverage.class`.
    pub struct CoverageClass {
        pub r#type: CodeableConcept,
        pub value: String,
        pub name: Option<String>,
    }
}

resource! {
    /// FHIR `Coverage`, from IN1/IN2.
    pub struct Coverage {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub r#type: Option<CodeableConcept>,
        pub subscriber_id: Option<String>,
        pub beneficiary: Reference,
        pub dependent: Option<String>,
        pub relationship: Option<CodeableConcept>,
        pub period: Option<Period>,
        pub payor: Vec<Reference>,
        pub class: Vec<CoverageClass>,
        pub order: Option<u32>,
    }
}
