//! v2 table values → FHIR `code` values (the V2-to-FHIR IG ConceptMaps where it has them).
//!
//! Every function returns a code that is valid in its FHIR value set; unmapped input yields the
//! documented fallback (usually `unknown`) or `None`, never the raw v2 value.

/// Table 0001 administrative sex → AdministrativeGender.
pub fn gender(v2: &str) -> Option<&'static str> {
    Some(match v2.to_ascii_uppercase().as_str() {
        "M" => "male",
        "F" => "female",
        "O" | "A" | "N" | "X" => "other",
        "U" => "unknown",
        _ => return None,
    })
}

/// Table 0004 patient class → v3 ActCode (code, display).
pub fn encounter_class(v2: Option<&str>) -> (&'static str, &'static str, &'static str) {
    const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    const NULL: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";
    match v2.map(str::to_ascii_uppercase).as_deref() {
        Some("E") => (ACT, "EMER", "emergency"),
        Some("I") => (ACT, "IMP", "inpatient encounter"),
        Some("O") => (ACT, "AMB", "ambulatory"),
        Some("P") => (ACT, "PRENC", "pre-admission"),
        Some("R") => (ACT, "AMB", "ambulatory"),
        Some("B") => (ACT, "IMP", "inpatient encounter"),
        Some("C") => (ACT, "AMB", "ambulatory"),
        _ => (NULL, "UNK", "unknown"),
    }
}

/// Table 0085 observation result status → ObservationStatus.
pub fn observation_status(v2: Option<&str>) -> &'static str {
    match v2.map(str::to_ascii_uppercase).as_deref() {
        Some("F" | "U") => "final",
        Some("C") => "corrected",
        Some("A") => "amended",
        Some("P" | "R" | "S") => "preliminary",
        Some("I" | "O") => "registered",
        Some("D" | "W") => "entered-in-error",
        Some("X" | "N") => "cancelled",
        _ => "unknown",
    }
}

/// Table 0123 result status → DiagnosticReportStatus.
pub fn report_status(v2: Option<&str>) -> &'static str {
    match v2.map(str::to_ascii_uppercase).as_deref() {
        Some("F") => "final",
        Some("C") => "corrected",
        Some("A" | "S") => "partial",
        Some("P" | "R") => "preliminary",
        Some("I" | "O") => "registered",
        Some("X") => "cancelled",
        Some("D" | "W") => "entered-in-error",
        _ => "unknown",
    }
}

/// Table 0038 order status (ORC-5), else table 0119 order control (ORC-1) → RequestStatus.
pub fn request_status(order_status: Option<&str>, order_control: Option<&str>) -> &'static str {
    let by_status = match order_status.map(str::to_ascii_uppercase).as_deref() {
        Some("A" | "IP" | "SC") => Some("active"),
        Some("CM") => Some("completed"),
        Some("CA" | "DC" | "RP") => Some("revoked"),
        Some("ER") => Some("entered-in-error"),
        Some("HD") => Some("on-hold"),
        _ => None,
    };
    if let Some(s) = by_status {
        return s;
    }
    match order_control.map(str::to_ascii_uppercase).as_deref() {
        Some("NW" | "OK" | "SN" | "XO" | "XX" | "SC" | "RE" | "RL" | "RO" | "PA" | "CH") => {
            "active"
        }
        Some("CA" | "CR" | "DC" | "DR" | "OC" | "OD" | "RP") => "revoked",
        Some("HD" | "HR" | "OH") => "on-hold",
        Some("OE") => "entered-in-error",
        _ => "unknown",
    }
}

/// Table 0322 completion status (RXA-20) and 0323 action code (RXA-21) → ImmunizationStatus.
pub fn immunization_status(completion: Option<&str>, action: Option<&str>) -> &'static str {
    if action.is_some_and(|a| a.eq_ignore_ascii_case("D")) {
        return "entered-in-error";
    }
    match completion.map(str::to_ascii_uppercase).as_deref() {
        Some("RE" | "NA") => "not-done",
        _ => "completed",
    }
}

/// Table 0127 allergen type → AllergyIntoleranceCategory.
pub fn allergy_category(v2: &str) -> Option<&'static str> {
    Some(match v2.to_ascii_uppercase().as_str() {
        "DA" | "MC" => "medication",
        "FA" => "food",
        "EA" | "AA" | "PA" | "LA" => "environment",
        _ => return None,
    })
}

/// Table 0128 allergy severity → AllergyIntoleranceCriticality.
pub fn allergy_criticality(v2: &str) -> Option<&'static str> {
    Some(match v2.to_ascii_uppercase().as_str() {
        "SV" => "high",
        "MO" | "MI" => "low",
        "U" => "unable-to-assess",
        _ => return None,
    })
}

/// Filler status (SCH-25, table 0278) → AppointmentStatus.
pub fn appointment_status(v2: &str) -> Option<&'static str> {
    Some(match v2.to_ascii_lowercase().as_str() {
        "booked" | "started" | "overbook" | "blocked" => "booked",
        "pending" => "pending",
        "waitlist" => "waitlist",
        "complete" => "fulfilled",
        "cancelled" | "dc" | "deleted" => "cancelled",
        "noshow" => "noshow",
        _ => return None,
    })
}

/// Document completion status (TXA-17, table 0271) → CompositionStatus (`docStatus`).
pub fn doc_status(v2: &str) -> Option<&'static str> {
    Some(match v2.to_ascii_uppercase().as_str() {
        "AU" | "LA" => "final",
        "DI" | "DO" | "IN" | "IP" | "PA" => "preliminary",
        _ => return None,
    })
}

/// Document availability (TXA-19, table 0273) → DocumentReferenceStatus.
pub fn document_status(v2: Option<&str>) -> &'static str {
    match v2.map(str::to_ascii_uppercase).as_deref() {
        Some("OB") => "superseded",
        Some("CA") => "entered-in-error",
        _ => "current",
    }
}

/// Encounter participant type (v3 ParticipationType) for a PV1 doctor field.
pub fn participation(
    code: &'static str,
    display: &'static str,
) -> crate::resources::CodeableConcept {
    crate::resources::CodeableConcept::code(
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
        code,
        Some(display),
    )
}

/// Table 0063 relationship → v3 RoleCode is not 1:1; we keep the v2 table as the system.
pub const V2_RELATIONSHIP: &str = "0063";
