//! Clinical resources: Encounter, AllergyIntolerance, Condition, Procedure, Observation,
//! DiagnosticReport, Specimen, Immunization, DocumentReference.

use super::{
    Annotation, Attachment, CodeableConcept, Coding, Identifier, Period, Quantity, Range, Ratio,
    Reference,
};
use crate::{element, resource};

element! {
    /// `Encounter.participant`.
    pub struct EncounterParticipant {
        pub r#type: Vec<CodeableConcept>,
        pub individual: Option<Reference>,
    }
}

element! {
    /// `Encounter.location`.
    pub struct EncounterLocation {
        pub location: Reference,
        pub status: Option<&'static str>,
    }
}

element! {
    /// `Encounter.hospitalization`.
    pub struct Hospitalization {
        pub pre_admission_identifier: Option<Identifier>,
        pub admit_source: Option<CodeableConcept>,
        pub re_admission: Option<CodeableConcept>,
        pub diet_preference: Vec<CodeableConcept>,
        pub discharge_disposition: Option<CodeableConcept>,
    }
}

element! {
    /// `Encounter.diagnosis`.
    pub struct EncounterDiagnosis {
        pub condition: Reference,
        pub rank: Option<u32>,
    }
}

resource! {
    /// FHIR `Encounter`, from PV1/PV2.
    pub struct Encounter {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub class: Coding,
        pub r#type: Vec<CodeableConcept>,
        pub service_type: Option<CodeableConcept>,
        pub priority: Option<CodeableConcept>,
        pub subject: Option<Reference>,
        pub participant: Vec<EncounterParticipant>,
        pub period: Option<Period>,
        pub reason_code: Vec<CodeableConcept>,
        pub diagnosis: Vec<EncounterDiagnosis>,
        pub hospitalization: Option<Hospitalization>,
        pub location: Vec<EncounterLocation>,
    }
}

element! {
    /// `AllergyIntolerance.reaction`.
    pub struct AllergyReaction {
        pub manifestation: Vec<CodeableConcept>,
    }
}

resource! {
    /// FHIR `AllergyIntolerance`, from AL1.
    pub struct AllergyIntolerance {
        pub identifier: Vec<Identifier>,
        pub clinical_status: Option<CodeableConcept>,
        pub category: Vec<&'static str>,
        pub criticality: Option<&'static str>,
        pub code: Option<CodeableConcept>,
        pub patient: Reference,
        pub encounter: Option<Reference>,
        pub onset_date_time: Option<String>,
        pub reaction: Vec<AllergyReaction>,
    }
}

resource! {
    /// FHIR `Condition`, from DG1.
    pub struct Condition {
        pub identifier: Vec<Identifier>,
        pub verification_status: Option<CodeableConcept>,
        pub category: Vec<CodeableConcept>,
        pub code: Option<CodeableConcept>,
        pub subject: Reference,
        pub encounter: Option<Reference>,
        pub onset_date_time: Option<String>,
        pub recorded_date: Option<String>,
        pub asserter: Option<Reference>,
    }
}

element! {
    /// `Procedure.performer`.
    pub struct ProcedurePerformer {
        pub function: Option<CodeableConcept>,
        pub actor: Reference,
    }
}

resource! {
    /// FHIR `Procedure`, from PR1.
    pub struct Procedure {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub code: Option<CodeableConcept>,
        pub subject: Reference,
        pub encounter: Option<Reference>,
        pub performed_date_time: Option<String>,
        pub performer: Vec<ProcedurePerformer>,
    }
}

element! {
    /// `Observation.referenceRange`.
    pub struct ReferenceRange {
        pub text: Option<String>,
    }
}

resource! {
    /// FHIR `Observation`, from OBX.
    pub struct Observation {
        pub identifier: Vec<Identifier>,
        pub based_on: Vec<Reference>,
        pub status: &'static str,
        pub category: Vec<CodeableConcept>,
        pub code: CodeableConcept,
        pub subject: Option<Reference>,
        pub encounter: Option<Reference>,
        pub effective_date_time: Option<String>,
        pub issued: Option<String>,
        pub performer: Vec<Reference>,
        pub value_quantity: Option<Quantity>,
        pub value_codeable_concept: Option<CodeableConcept>,
        pub value_string: Option<String>,
        pub value_range: Option<Range>,
        pub value_ratio: Option<Ratio>,
        pub value_time: Option<String>,
        pub value_date_time: Option<String>,
        pub data_absent_reason: Option<CodeableConcept>,
        pub interpretation: Vec<CodeableConcept>,
        pub note: Vec<Annotation>,
        pub method: Option<CodeableConcept>,
        pub specimen: Option<Reference>,
        pub reference_range: Vec<ReferenceRange>,
    }
}

resource! {
    /// FHIR `DiagnosticReport`, from OBR in result messages.
    pub struct DiagnosticReport {
        pub identifier: Vec<Identifier>,
        pub based_on: Vec<Reference>,
        pub status: &'static str,
        pub category: Vec<CodeableConcept>,
        pub code: CodeableConcept,
        pub subject: Option<Reference>,
        pub encounter: Option<Reference>,
        pub effective_date_time: Option<String>,
        pub issued: Option<String>,
        pub specimen: Vec<Reference>,
        pub result: Vec<Reference>,
        pub conclusion: Option<String>,
    }
}

element! {
    /// `Specimen.collection`.
    pub struct SpecimenCollection {
        pub collected_date_time: Option<String>,
        pub collected_period: Option<Period>,
        pub quantity: Option<Quantity>,
        pub method: Option<CodeableConcept>,
        pub body_site: Option<CodeableConcept>,
    }
}

resource! {
    /// FHIR `Specimen`, from SPM.
    pub struct Specimen {
        pub identifier: Vec<Identifier>,
        pub accession_identifier: Option<Identifier>,
        pub status: Option<&'static str>,
        pub r#type: Option<CodeableConcept>,
        pub subject: Option<Reference>,
        pub received_time: Option<String>,
        pub request: Vec<Reference>,
        pub collection: Option<SpecimenCollection>,
        pub condition: Vec<CodeableConcept>,
        pub note: Vec<Annotation>,
    }
}

element! {
    /// `Immunization.performer`.
    pub struct ImmunizationPerformer {
        pub function: Option<CodeableConcept>,
        pub actor: Reference,
    }
}

resource! {
    /// FHIR `Immunization`, from RXA/RXR.
    pub struct Immunization {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub status_reason: Option<CodeableConcept>,
        pub vaccine_code: CodeableConcept,
        pub patient: Reference,
        pub encounter: Option<Reference>,
        pub occurrence_date_time: Option<String>,
        pub occurrence_string: Option<String>,
        pub recorded: Option<String>,
        pub primary_source: Option<bool>,
        pub location: Option<Reference>,
        pub manufacturer: Option<Reference>,
        pub lot_number: Option<String>,
        pub expiration_date: Option<String>,
        pub site: Option<CodeableConcept>,
        pub route: Option<CodeableConcept>,
        pub dose_quantity: Option<Quantity>,
        pub performer: Vec<ImmunizationPerformer>,
        pub note: Vec<Annotation>,
    }
}

element! {
    /// `DocumentReference.relatesTo`.
    pub struct DocumentRelatesTo {
        pub code: &'static str,
        pub target: Reference,
    }
}

element! {
    /// `DocumentReference.content`.
    pub struct DocumentContent {
        pub attachment: Attachment,
    }
}

element! {
    /// `DocumentReference.context`.
    pub struct DocumentContext {
        pub encounter: Vec<Reference>,
        pub period: Option<Period>,
    }
}

resource! {
    /// FHIR `DocumentReference`, from TXA (+ OBX content) or an OBX of type ED.
    pub struct DocumentReference {
        pub master_identifier: Option<Identifier>,
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub doc_status: Option<&'static str>,
        pub r#type: Option<CodeableConcept>,
        pub subject: Option<Reference>,
        pub date: Option<String>,
        pub author: Vec<Reference>,
        pub authenticator: Option<Reference>,
        pub relates_to: Vec<DocumentRelatesTo>,
        pub description: Option<String>,
        pub content: Vec<DocumentContent>,
        pub context: Option<DocumentContext>,
    }
}
