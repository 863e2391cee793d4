//! Workflow resources: ServiceRequest (orders), MedicationRequest (pharmacy orders), Appointment.

use super::{Annotation, CodeableConcept, Identifier, Quantity, Reference};
use crate::{element, resource};

resource! {
    /// FHIR `ServiceRequest`, from ORC/OBR.
    pub struct ServiceRequest {
        pub identifier: Vec<Identifier>,
        pub requisition: Option<Identifier>,
        pub status: &'static str,
        pub intent: &'static str,
        pub priority: Option<&'static str>,
        pub code: Option<CodeableConcept>,
        pub subject: Reference,
        pub encounter: Option<Reference>,
        pub occurrence_date_time: Option<String>,
        pub authored_on: Option<String>,
        pub requester: Option<Reference>,
        pub reason_code: Vec<CodeableConcept>,
        pub specimen: Vec<Reference>,
        pub note: Vec<Annotation>,
    }
}

element! {
    /// `MedicationRequest.dosageInstruction.doseAndRate`.
    pub struct DoseAndRate {
        pub dose_quantity: Option<Quantity>,
    }
}

element! {
    /// `MedicationRequest.dosageInstruction`.
    pub struct Dosage {
        pub text: Option<String>,
        pub route: Option<CodeableConcept>,
        pub site: Option<CodeableConcept>,
        pub dose_and_rate: Vec<DoseAndRate>,
    }
}

element! {
    /// `MedicationRequest.dispenseRequest`.
    pub struct DispenseRequest {
        pub number_of_repeats_allowed: Option<u32>,
        pub quantity: Option<Quantity>,
    }
}

resource! {
    /// FHIR `MedicationRequest`, from ORC/RXE/RXR.
    pub struct MedicationRequest {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub intent: &'static str,
        pub medication_codeable_concept: CodeableConcept,
        pub subject: Reference,
        pub encounter: Option<Reference>,
        pub authored_on: Option<String>,
        pub requester: Option<Reference>,
        pub note: Vec<Annotation>,
        pub dosage_instruction: Vec<Dosage>,
        pub dispense_request: Option<DispenseRequest>,
    }
}

element! {
    /// `Appointment.participant`.
    pub struct AppointmentParticipant {
        pub r#type: Vec<CodeableConcept>,
        pub actor: Option<Reference>,
        pub status: &'static str,
    }
}

resource! {
    /// FHIR `Appointment`, from SCH and its AIS/AIG/AIL/AIP resources.
    pub struct Appointment {
        pub identifier: Vec<Identifier>,
        pub status: &'static str,
        pub cancelation_reason: Option<CodeableConcept>,
        pub service_type: Vec<CodeableConcept>,
        pub appointment_type: Option<CodeableConcept>,
        pub reason_code: Vec<CodeableConcept>,
        pub priority: Option<u32>,
        pub description: Option<String>,
        pub start: Option<String>,
        pub end: Option<String>,
        pub minutes_duration: Option<u32>,
        pub comment: Option<String>,
        pub participant: Vec<AppointmentParticipant>,
    }
}
