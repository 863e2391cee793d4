//! Errors as FHIR clients expect them: an HTTP status plus an
//! `OperationOutcome` that says what is wrong, in words a developer can act
//! on. Diagnostics never echo resource content (patient data).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

/// Content type of every FHIR response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A request the gateway refuses, with its status and OperationOutcome.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {diagnostics}")]
pub struct FhirError {
    /// HTTP status.
    pub status: StatusCode,
    /// `issue.code` (FHIR IssueType: `invalid`, `not-found`, `security`, …).
    pub code: &'static str,
    /// What is wrong.
    pub diagnostics: String,
}

impl FhirError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }
    /// 400 with `issue.code = invalid`.
    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }
    /// 400 with `issue.code = not-supported`.
    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "not-supported", diagnostics)
    }
    /// 404 with `issue.code = not-found`.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", diagnostics)
    }

    /// 410: the resource was deleted.
    pub fn gone(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "deleted", diagnostics)
    }

    /// 412: an `If-Match` version is not the current one.
    pub fn version_conflict(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "conflict", diagnostics)
    }
    /// 503 after a storage failure: nothing was stored.
    pub fn storage(error: &crate::storage::StorageError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!("not stored, send it again later: {error}"),
        )
    }

    /// The OperationOutcome resource.
    pub fn outcome(&self) -> serde_json::Value {
        operation_outcome("error", self.code, &self.diagnostics)
    }

    /// The HTTP response.
    pub fn response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type(FHIR_JSON);
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header((
                "WWW-Authenticate",
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.diagnostics.replace('"', "'")
                ),
            ));
        } else if self.status == StatusCode::FORBIDDEN {
            r.insert_header(("WWW-Authenticate", "Bearer error=\"insufficient_scope\""));
        }
        r.body(self.outcome().to_string())
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: &str, code: &str, diagnostics: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    })
}

impl actix_web::ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}
