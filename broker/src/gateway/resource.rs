//! What the gateway knows about FHIR R4 resources without a full model: the
//! resource type names, the id rule, identifiers, patient-compartment
//! references, and the timestamps it writes. Enough to check input, index
//! it, and answer searches; the content itself is passed through.

use super::outcome::FhirError;
use serde_json::{Map, Value};

/// Longest id FHIR allows (`[A-Za-z0-9\-\.]{1,64}`).
pub const MAX_ID_LEN: usize = 64;

/// Every FHIR R4 (4.0.1) resource type.
pub const RESOURCE_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Types that are not stored through the type endpoints: a Bundle goes to
/// `POST [base]` (transaction/batch), the others are server answers.
pub const NOT_STORABLE: [&str; 3] = ["Bundle", "OperationOutcome", "CapabilityStatement"];

/// Patient-compartment types and the elements that reference the patient
/// (a subset of FHIR R4's CompartmentDefinition for Patient: the types
/// medbus builds from HL7 v2 and their common neighbours).
pub const PATIENT_COMPARTMENT: [(&str, &[&str]); 30] = [
    ("Account", &["subject"]),
    ("AllergyIntolerance", &["patient"]),
    ("Appointment", &["participant.actor"]),
    ("CarePlan", &["subject"]),
    ("CareTeam", &["subject"]),
    ("ClinicalImpression", &["subject"]),
    ("Communication", &["subject"]),
    ("Condition", &["subject"]),
    ("Consent", &["patient"]),
    ("Coverage", &["beneficiary"]),
    ("DetectedIssue", &["patient"]),
    ("DeviceRequest", &["subject"]),
    ("DiagnosticReport", &["subject"]),
    ("DocumentReference", &["subject"]),
    ("Encounter", &["subject"]),
    ("EpisodeOfCare", &["patient"]),
    ("FamilyMemberHistory", &["patient"]),
    ("Flag", &["subject"]),
    ("Goal", &["subject"]),
    ("ImagingStudy", &["subject"]),
    ("Immunization", &["patient"]),
    ("MedicationAdministration", &["subject"]),
    ("MedicationDispense", &["subject"]),
    ("MedicationRequest", &["subject"]),
    ("MedicationStatement", &["subject"]),
    ("NutritionOrder", &["patient"]),
    ("Observation", &["subject"]),
    ("Procedure", &["subject"]),
    ("ServiceRequest", &["subject"]),
    ("Specimen", &["subject"]),
];

/// Whether `t` is an R4 resource type.
pub fn is_resource_type(t: &str) -> bool {
    RESOURCE_TYPES.binary_search(&t).is_ok()
}

/// Whether `id` follows FHIR's id rule.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The reference paths of a patient-compartment type.
pub fn patient_paths(resource_type: &str) -> Option<&'static [&'static str]> {
    PATIENT_COMPARTMENT
        .iter()
        .find(|(t, _)| *t == resource_type)
        .map(|(_, p)| *p)
}

/// Check a type name from a URL or a body.
pub fn check_type(t: &str) -> Result<(), FhirError> {
    if is_resource_type(t) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "unknown resource type {:?}: not a FHIR R4 resource type",
            truncate(t, 64)
        )))
    }
}

/// Check an id from a URL or a body.
pub fn check_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "invalid id {:?}: an id is 1 to {MAX_ID_LEN} of A-Z a-z 0-9 - .",
            truncate(id, 80)
        )))
    }
}

/// At most `n` characters of `s`, for error messages.
pub fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Parse a body as one JSON resource object with a known `resourceType`
/// (and a valid `id` when it has one).
pub fn parse_resource(body: &[u8]) -> Result<Map<String, Value>, FhirError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| FhirError::invalid(format!("the body is not valid JSON: {e}")))?;
    into_resource(v)
}

/// Check that a JSON value is a resource object.
pub fn into_resource(v: Value) -> Result<Map<String, Value>, FhirError> {
    let Value::Object(map) = v else {
        return Err(FhirError::invalid("a resource must be a JSON object"));
    };
    match map.get("resourceType") {
        Some(Value::String(t)) => check_type(t)?,
        Some(_) => return Err(FhirError::invalid("resourceType must be a string")),
        None => return Err(FhirError::invalid("the resource has no resourceType")),
    }
    match map.get("id") {
        None => {}
        Some(Value::String(id)) => check_id(id)?,
        Some(_) => return Err(FhirError::invalid("id must be a string")),
    }
    Ok(map)
}

/// The resource type of a checked resource.
pub fn type_of(r: &Map<String, Value>) -> &str {
    r.get("resourceType").and_then(Value::as_str).unwrap_or("")
}

/// The id of a resource, if it has one.
pub fn id_of(r: &Map<String, Value>) -> Option<&str> {
    r.get("id").and_then(Value::as_str)
}

/// Set the resource's `id`, where FHIR JSON puts it: after `resourceType`,
/// which goes first.
pub fn set_id(r: &mut Map<String, Value>, id: &str) {
    if let Some(t) = r.shift_remove("resourceType") {
        r.shift_insert(0, "resourceType".into(), t);
    }
    r.shift_remove("id");
    let at = usize::from(r.contains_key("resourceType"));
    r.shift_insert(at, "id".into(), Value::String(id.to_string()));
}

/// Set `id` and the `meta` the server owns (`versionId`, `lastUpdated`),
/// keeping the rest of `meta` and FHIR's member order (`resourceType`,
/// `id`, `meta`, then the others as they came).
pub fn set_id_and_meta(r: &mut Map<String, Value>, id: &str, version: u64, updated_ms: u64) {
    set_id(r, id);
    let mut meta = match r.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(instant(updated_ms)));
    // `id` is at 1 after `resourceType`, or at 0 without one.
    let at = 1 + usize::from(r.contains_key("resourceType"));
    r.shift_insert(at, "meta".into(), Value::Object(meta));
}

/// The one value of search parameter `name`. FHIR writes several values as
/// `a,b` (any of them), which this server does not search: refused rather
/// than matched as one odd value. A comma inside a value is written `\,`.
pub fn one_value(name: &str, v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                out.push(',');
                chars.next();
            }
            ',' => {
                return Err(format!(
                    "{name}={:?}: several values (a,b) are not supported: search once per value",
                    truncate(v, 80)
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A fresh random id (a UUID v4 in its text form).
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness (never seen on Linux): time and a counter
        // still make ids unique within this process.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[..8].copy_from_slice(&crate::storage::now_ms().to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Every (system, value) of the resource's `identifier` element (a list,
/// or one object for the few types that have a single identifier).
pub fn identifiers(r: &Map<String, Value>) -> Vec<(String, String)> {
    let one = |v: &Value| {
        let value = v.get("value")?.as_str()?;
        let system = v.get("system").and_then(Value::as_str).unwrap_or("");
        Some((system.to_string(), value.to_string()))
    };
    match r.get("identifier") {
        Some(Value::Array(a)) => a.iter().filter_map(one).collect(),
        Some(v @ Value::Object(_)) => one(v).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The values at a dotted path, descending through arrays.
fn at_path<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| at_path(x, path, out)),
        _ => match path.split_first() {
            None => out.push(v),
            Some((first, rest)) => {
                if let Some(next) = v.get(*first) {
                    at_path(next, rest, out);
                }
            }
        },
    }
}

/// Ids of the patients a resource belongs to: the resource's own id for a
/// Patient, otherwise the `Patient/<id>` references at its compartment paths.
pub fn patients(r: &Map<String, Value>) -> Vec<String> {
    let t = type_of(r);
    if t == "Patient" {
        return id_of(r).map(str::to_string).into_iter().collect();
    }
    let Some(paths) = patient_paths(t) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in paths {
        let parts: Vec<&str> = p.split('.').collect();
        let Some((first, rest)) = parts.split_first() else {
            continue;
        };
        let mut found = Vec::new();
        if let Some(v) = r.get(*first) {
            at_path(v, rest, &mut found);
        }
        for f in found {
            if let Some(id) = f
                .get("reference")
                .and_then(Value::as_str)
                .and_then(patient_ref_id)
            {
                if !out.iter().any(|x| x == id) {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}

/// `Patient/<id>` (relative, or absolute ending in it) → `<id>`.
pub fn patient_ref_id(reference: &str) -> Option<&str> {
    let tail = reference
        .rsplit_once("Patient/")
        .map(|(_, id)| id)
        .filter(|_| reference.starts_with("Patient/") || reference.contains("/Patient/"))?;
    let id = tail.split('/').next().unwrap_or(tail);
    is_valid_id(id).then_some(id)
}

/// A FHIR `instant` (UTC, millisecond precision) for Unix milliseconds.
pub fn instant(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_are_sorted_for_binary_search() {
        let mut sorted = RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, RESOURCE_TYPES.to_vec());
        assert!(is_resource_type("Observation"));
        assert!(!is_resource_type("Observatoin"));
    }

    #[test]
    fn ids_follow_the_fhir_rule() {
        assert!(is_valid_id("abc-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(is_valid_id(&new_id()));
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn instants_are_utc() {
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn patients_and_identifiers() {
        let Value::Object(o) = json!({
            "resourceType": "Observation", "id": "o1",
            "identifier": [{"system": "urn:s", "value": "1"}, {"value": "2"}],
            "subject": {"reference": "Patient/p1"}
        }) else {
            unreachable!()
        };
        assert_eq!(patients(&o), vec!["p1".to_string()]);
        assert_eq!(
            identifiers(&o),
            vec![("urn:s".into(), "1".into()), (String::new(), "2".into())]
        );
        assert_eq!(patient_ref_id("http://x/fhir/Patient/7"), Some("7"));
        assert_eq!(patient_ref_id("Group/7"), None);
    }

    #[test]
    fn several_search_values_are_refused_an_escaped_comma_is_kept() {
        assert_eq!(one_value("identifier", "P72").as_deref(), Ok("P72"));
        assert_eq!(one_value("identifier", "a\\,b").as_deref(), Ok("a,b"));
        assert!(one_value("identifier", "P72,P73").is_err());
        assert!(parse_criteria_ok("Patient?identifier=P72,P73").is_err());
    }

    fn parse_criteria_ok(c: &str) -> Result<(), String> {
        super::super::subscription::parse_criteria(c).map(|_| ())
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse_resource(b"{").is_err());
        assert!(parse_resource(b"[]").is_err());
        assert!(parse_resource(br#"{"resourceType":"Nope"}"#).is_err());
        assert!(parse_resource(br#"{"resourceType":"Patient","id":"a b"}"#).is_err());
        assert!(parse_resource(br#"{"resourceType":"Patient","id":"ok"}"#).is_ok());
    }
}
