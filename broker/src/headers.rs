//! Names of the record headers medbus writes, in one place so that writers,
//! routes and `dump` readers agree.

/// Content type of HL7 v2 ER7 payloads.
pub const CONTENT_TYPE_HL7: &str = "application/hl7-v2+er7";
/// Content type of FHIR R4 JSON (a Bundle or one resource).
pub const CONTENT_TYPE_FHIR: &str = "application/fhir+json";
/// Content type of raw bytes that could not be interpreted.
pub const CONTENT_TYPE_RAW: &str = "application/octet-stream";

/// The listener a message arrived on.
pub const LISTENER: &str = "medbus.listener";
/// The `[[clients]]` name of the binary-protocol client that published a record.
pub const CLIENT: &str = "medbus.client";
/// The peer's `ip:port`.
pub const PEER: &str = "medbus.peer";
/// Why a record is in a dead-letter topic.
pub const ERROR: &str = "medbus.error";
/// Where a dead-lettered record came from (listener, route, destination).
pub const SOURCE: &str = "medbus.source";
/// MSH-9 as `code^trigger`.
pub const MESSAGE_TYPE: &str = "hl7.message_type";
/// MSH-10.
pub const CONTROL_ID: &str = "hl7.control_id";
/// MSH-3.1.
pub const SENDING_APPLICATION: &str = "hl7.sending_application";
/// MSH-4.1.
pub const SENDING_FACILITY: &str = "hl7.sending_facility";
/// MSH-5.1.
pub const RECEIVING_APPLICATION: &str = "hl7.receiving_application";
/// MSH-6.1.
pub const RECEIVING_FACILITY: &str = "hl7.receiving_facility";
/// MSH-12.1.
pub const VERSION: &str = "hl7.version";
/// The route that wrote a record.
pub const ROUTE: &str = "medbus.route";
/// How many routes a record has passed through (loop guard).
pub const HOPS: &str = "medbus.hops";
/// The topic a routed record was read from.
pub const SOURCE_TOPIC: &str = "medbus.source_topic";
/// The offset a routed record was read from.
pub const SOURCE_OFFSET: &str = "medbus.source_offset";
/// The FHIR resource type of a FHIR record (`Bundle` for a Bundle).
pub const FHIR_RESOURCE_TYPE: &str = "fhir.resource_type";
/// The FHIR resource id of a one-resource record.
pub const FHIR_ID: &str = "fhir.id";
/// Present (`true`) when the message type is not fully mapped to FHIR.
pub const FHIR_PARTIAL: &str = "fhir.partial";
/// Present (`true`) on a record that deletes the resource `fhir.id` (a
/// FHIR gateway DELETE): views and subscriptions drop it.
pub const FHIR_DELETED: &str = "fhir.deleted";
/// The FHIR interaction that wrote a gateway record (`create`, `update`,
/// `transaction`, `batch`, `delete`).
pub const FHIR_INTERACTION: &str = "fhir.interaction";
/// Present (`true`) on records written or delivered again by a replay.
pub const REPLAYED: &str = "medbus.replayed";
