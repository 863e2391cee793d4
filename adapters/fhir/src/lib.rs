//! `medbus-fhir`: HL7 v2 → FHIR R4 mapping with no I/O.
//!
//! [`convert`] turns one parsed v2 message into one FHIR R4 transaction Bundle (compact,
//! deterministic JSON) plus each resource on its own, ready for the `fhir.bundles` and
//! `fhir.<Type>` topics. Ids are UUIDs derived from business identifiers ([`ids`]), so a
//! re-sent message upserts the same resources; nothing in the output depends on the clock.
//!
//! # Layout
//!
//! - [`datatypes`]: v2 datatypes → FHIR datatypes, one file per family (`time` TS/DTM/DT,
//!   `numeric` NM/SN/CQ, `coded` CWE/CE/CNE, `identifier` CX/EI/HD, `names` XPN/XCN,
//!   `address` XAD, `telecom` XTN, `encapsulated` ED/FT).
//! - [`segments`]: v2 segments → resources, one file per segment family (`msh` MSH/EVN →
//!   MessageHeader/Provenance, `pid` PID/PD1/MRG → Patient, `pv1` PV1/PV2 → Encounter, `nk1`,
//!   `al1`, `dg1`, `pr1`, `in1`, `order` ORC/OBR/OBX/SPM/NTE, `txa` MDM documents, `sch` SIU
//!   appointments, `rxa` immunizations, `rxe` pharmacy orders).
//! - [`messages`]: which message types are mapped, the segment walk (grouping by order) and
//!   the event semantics (A03 finishes, A11 cancels, A40 merges …).
//! - [`resources`]: the typed serde structs of every resource and datatype emitted.
//! - [`codes`]: v2 table values → FHIR codes.
//! - [`ids`]: the deterministic id recipe (documented there).
//! - [`context`]: per-conversion state (emitted resources, Patient/Encounter, notes).
//! - [`bundle`]: the transaction Bundle assembled from serialised resources.
//! - [`json`]: the compact JSON writer (`serde_json`'s bytes, faster on strings).
//!
//! Nothing here panics on input: every accessor returns `Option`, every failure a
//! [`ConvertError`] whose text names the problem but carries no patient data.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bundle;
pub mod codes;
pub mod context;
pub mod datatypes;
pub mod ids;
pub mod json;
pub mod messages;
pub mod resources;
pub mod segments;

use medbus_hl7::Message;

use crate::datatypes::time::Offset;

/// Options of a conversion; `Default` suits a single site with no time zone configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Site salt mixed into every id (see [`ids`]): sites sharing a FHIR server pick different
    /// namespaces so their ids never collide. Default empty.
    pub id_namespace: String,
    /// UTC offset (`+0100`, `-05:00`, `Z`) applied to v2 times written without one. `None`:
    /// such `instant`s are left out and such `dateTime`s keep only their date.
    pub time_zone: Option<String>,
    /// Which PID-3 repetition keys the Patient id: the first with this identifier type code
    /// (CX-5, e.g. `MR`); `None` (default) takes the first repetition.
    pub patient_identifier_type: Option<String>,
    /// URL written as `MessageHeader.source.endpoint` (e.g. `mllp://host:port` of the
    /// listener). `None`: the sending application's HD when it is a URL, otherwise the element
    /// carries a `data-absent-reason` extension.
    pub source_endpoint: Option<String>,
}

/// The result of converting one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The transaction Bundle, compact JSON, byte-identical for identical input and options.
    pub bundle_json: Vec<u8>,
    /// Each resource of the Bundle: `(resourceType, id, compact JSON)`, in Bundle order.
    pub resources: Vec<(String, String, Vec<u8>)>,
    /// `true` when the message type is not mapped (only MessageHeader, Provenance and Patient
    /// were produced); the Bundle and MessageHeader carry the tag `partial` too.
    pub partial: bool,
    /// `CODE^TRIGGER` from MSH-9.
    pub message_type: String,
    /// Remarks: segments not mapped, values dropped. No patient data.
    pub notes: Vec<String>,
}

/// Why a message could not be mapped. The text names the field, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The bytes are not an HL7 v2 message.
    #[error("not a parsable HL7 v2 message: {0}")]
    Parse(String),
    /// A field the mapping cannot do without is empty.
    #[error("{field} is required to map {what} but is empty or missing")]
    MissingField {
        /// e.g. `PID-3`.
        field: &'static str,
        /// e.g. `the Patient`.
        what: &'static str,
    },
    /// [`ConvertOptions::time_zone`] is not a UTC offset.
    #[error("time zone {0:?} is not a UTC offset like +0100")]
    InvalidTimeZone(String),
    /// [`ConvertOptions::source_endpoint`] is not an absolute URL.
    #[error("source endpoint {0:?} is not an absolute URL")]
    InvalidEndpoint(String),
    /// Serialisation failed (not expected to happen).
    #[error("serialising FHIR JSON failed: {0}")]
    Serialize(String),
}

/// `parts` joined, in one allocation of the exact size (the hot paths build many small keys,
/// references and URIs; `format!` costs several times more for them).
pub(crate) fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Convert a parsed message into a FHIR R4 transaction Bundle.
pub fn convert(msg: &Message<'_>, opts: &ConvertOptions) -> Result<Conversion, ConvertError> {
    let tz = match opts.time_zone.as_deref() {
        None => None,
        Some(s) => Some(Offset::parse(s).ok_or_else(|| ConvertError::InvalidTimeZone(s.into()))?),
    };
    if let Some(e) = &opts.source_endpoint {
        if !bundle::is_absolute_url(e) {
            return Err(ConvertError::InvalidEndpoint(e.clone()));
        }
    }
    messages::convert(msg, opts, tz)
}

/// Parse `bytes` as an HL7 v2 message and [`convert`] it.
pub fn convert_bytes(bytes: &[u8], opts: &ConvertOptions) -> Result<Conversion, ConvertError> {
    let msg = Message::parse(bytes).map_err(|e| ConvertError::Parse(e.to_string()))?;
    convert(&msg, opts)
}
