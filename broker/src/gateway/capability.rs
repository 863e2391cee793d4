//! `GET [base]/metadata`: the CapabilityStatement, telling the truth about
//! what this server does — every type takes read, search-type, create,
//! update and delete; searches take `_id`, `identifier` and (for
//! patient-compartment types) `patient`; transactions and batches; no
//! history, no conditional operations; rest-hook and websocket
//! Subscriptions (with `$get-ws-binding-token`); SMART on
//! FHIR when `[fhir.auth]` is configured. It is public, as SMART requires.

use super::resource::{self, RESOURCE_TYPES};
use super::{tagged, Ctx};
use crate::storage::now_ms;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// The CapabilityStatement for this server.
pub fn statement(ctx: &Ctx, base_url: &str) -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .filter(|t| !resource::NOT_STORABLE.contains(t))
        .map(|t| {
            let mut params = vec![
                json!({"name": "_id", "type": "token", "documentation": "logical id"}),
                json!({"name": "identifier", "type": "token", "documentation": "system|value, value or |value"}),
            ];
            if resource::patient_paths(t).is_some() {
                params.push(json!({"name": "patient", "type": "reference", "documentation": "the patient (id or Patient/id)"}));
            }
            let mut r = json!({
                "type": t,
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "search-type"}, {"code": "create"},
                    {"code": "update"}, {"code": "delete"}
                ],
                "versioning": "versioned",
                "readHistory": false,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": params,
            });
            if *t == "Subscription" {
                r["documentation"] = json!("R4 Subscriptions with channel.type rest-hook (http endpoints) or websocket (bind-with-token after $get-ws-binding-token, or bind <id> without authorization); criteria: a resource type with optional patient, subject, identifier, code, status and _id parameters");
                r["operation"] = json!([{
                    "name": "get-ws-binding-token",
                    "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"
                }]);
            }
            r
        })
        .collect();
    let ws_url = super::websocket::url(base_url);
    let mut rest = json!({
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
            "valueUri": ws_url
        }],
        "mode": "server",
        "documentation": "Reads answer from medbus's current-state view of the fhir.* topics; writes are appended durably to topic fhir.inbound before the answer.",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}],
    });
    if ctx.auth.is_some() {
        rest["security"] = json!({
            "cors": false,
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }]}],
            "description": "Bearer tokens (JWT, RS256 or ES256) with SMART scopes such as system/*.read, user/*.write, patient/Observation.read"
        });
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": resource::instant(now_ms()),
        "publisher": "medbus",
        "kind": "instance",
        "software": {"name": "medbus", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "medbus FHIR API gateway", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    })
}

/// `GET [base]/metadata`.
pub async fn metadata(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    let body = statement(&ctx, &ctx.base_url(&req));
    tagged(
        "capabilities",
        HttpResponse::Ok()
            .content_type(super::outcome::FHIR_JSON)
            .body(body.to_string()),
    )
}
