//! SMART on FHIR authorization: `Authorization: Bearer <JWT>` checked
//! against the keys of a JWKS file (RS256 and ES256; no network fetch), with
//! `exp`, `nbf`, `iss` and `aud` enforced, and scopes mapped to what a
//! request may do.
//!
//! Scopes: `{patient|user|system}/{Type|*}.{read|write|*}` (SMART v1) and
//! `.{c,r,u,d,s}` letters (SMART v2: `r`/`s` read, `c`/`u`/`d` write). A
//! `patient/` scope needs the token's `patient` claim and confines the
//! request to that patient's compartment. No token or a bad one: 401; a
//! valid token whose scopes do not cover the request: 403.

use super::outcome::FhirError;
use super::resource;
use actix_web::http::StatusCode;
use base64::Engine as _;
use medbus_config::fhir::FhirAuth;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Longest token accepted: real SMART tokens are a few KiB.
const MAX_TOKEN: usize = 16 << 10;

/// One verification key.
#[derive(Debug, Clone)]
enum Key {
    /// RSA modulus and exponent (big-endian bytes).
    Rsa {
        kid: Option<String>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// P-256 public point, uncompressed (0x04 ‖ x ‖ y).
    Ec { kid: Option<String>, point: Vec<u8> },
}

/// The token checker built from `[fhir.auth]`.
#[derive(Debug, Clone)]
pub struct Auth {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    leeway_s: u64,
}

/// What a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any resource of the type.
    All,
    /// Only this patient's compartment.
    Patient(String),
}

impl Access {
    /// Whether a resource is within reach.
    pub fn permits(&self, r: &Map<String, Value>) -> bool {
        match self {
            Access::All => true,
            Access::Patient(p) => {
                if resource::type_of(r) == "Patient" {
                    resource::id_of(r) == Some(p.as_str())
                } else if resource::patient_paths(resource::type_of(r)).is_some() {
                    resource::patients(r).iter().any(|x| x == p)
                } else {
                    true
                }
            }
        }
    }
}

/// 403 for a resource outside a patient-context token's compartment.
pub fn outside_compartment() -> FhirError {
    FhirError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the token's patient context does not cover this resource",
    )
}

fn unauthorized(why: &str) -> FhirError {
    FhirError::new(StatusCode::UNAUTHORIZED, "login", why)
}

/// A verified token's grants.
#[derive(Debug, Clone)]
pub struct Grant {
    scopes: Vec<Scope>,
    patient: Option<String>,
}

#[derive(Debug, Clone)]
struct Scope {
    /// `patient`, `user` or `system`.
    context: String,
    /// A type or `*`.
    resource: String,
    read: bool,
    write: bool,
}

fn parse_scope(s: &str) -> Option<Scope> {
    let (context, rest) = s.split_once('/')?;
    if !matches!(context, "patient" | "user" | "system") {
        return None;
    }
    let (resource, perm) = rest.split_once('.')?;
    let perm = perm.split('?').next().unwrap_or(perm);
    let (read, write) = match perm {
        "read" => (true, false),
        "write" => (false, true),
        "*" => (true, true),
        letters if !letters.is_empty() && letters.bytes().all(|b| b"cruds".contains(&b)) => (
            letters.contains('r') || letters.contains('s'),
            letters.contains('c') || letters.contains('u') || letters.contains('d'),
        ),
        _ => return None,
    };
    Some(Scope {
        context: context.to_string(),
        resource: resource.to_string(),
        read,
        write,
    })
}

impl Grant {
    /// What the grant allows for `t`: `None` when nothing.
    pub fn access(&self, t: &str, write: bool) -> Option<Access> {
        let covering = self.scopes.iter().filter(|s| {
            (s.resource == "*" || s.resource == t) && if write { s.write } else { s.read }
        });
        let mut patient_only = false;
        for s in covering {
            if s.context != "patient" {
                return Some(Access::All);
            }
            patient_only = true;
        }
        if patient_only {
            return self.patient.clone().map(Access::Patient);
        }
        None
    }
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "bad base64url".to_string())
}

impl Auth {
    /// Read the JWKS file and settings.
    pub fn from_config(c: &FhirAuth) -> Result<Auth, String> {
        let path = c.jwks.get_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let keys = parse_jwks(&text).map_err(|e| format!("{path}: {e}"))?;
        Ok(Auth {
            keys,
            issuer: c.issuer.get_ref().clone(),
            audience: c.audience.get_ref().clone(),
            leeway_s: c.leeway.0.as_secs(),
        })
    }

    /// Verify an `Authorization` header value; the token's grants.
    pub fn verify_header(&self, header: Option<&str>, now_s: u64) -> Result<Grant, FhirError> {
        let Some(h) = header else {
            return Err(unauthorized("a bearer token is required"));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))?
            .trim();
        self.verify(token, now_s).map_err(|e| unauthorized(&e))
    }

    /// Verify the token and check its scopes for an access to `t`.
    pub fn authorize(
        &self,
        header: Option<&str>,
        t: &str,
        write: bool,
        now_s: u64,
    ) -> Result<Access, FhirError> {
        let grant = self.verify_header(header, now_s)?;
        grant.access(t, write).ok_or_else(|| {
            FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the token's scopes do not allow {} {t}",
                    if write { "writing" } else { "reading" }
                ),
            )
        })
    }

    /// Verify a compact JWT: signature, `exp`, `nbf`, `iss`, `aud`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Grant, String> {
        if token.len() > MAX_TOKEN {
            return Err("the token is too long".into());
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the token is not a JWT (header.payload.signature)".into());
        };
        let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| "bad JWT header")?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str);
        let sig = b64(sig)?;
        let signed = token.get(..h.len() + 1 + p.len()).unwrap_or("").as_bytes();
        let candidates = self.keys.iter().filter(|k| {
            let (key_kid, fits) = match k {
                Key::Rsa { kid, .. } => (kid, alg == "RS256"),
                Key::Ec { kid, .. } => (kid, alg == "ES256"),
            };
            fits && (kid.is_none() || key_kid.as_deref() == kid)
        });
        let mut verified = false;
        for k in candidates {
            let ok = match k {
                Key::Rsa { n, e, .. } => signature::RsaPublicKeyComponents { n, e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                    .is_ok(),
                Key::Ec { point, .. } => {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed, &sig)
                        .is_ok()
                }
            };
            if ok {
                verified = true;
                break;
            }
        }
        if !matches!(alg, "RS256" | "ES256") {
            return Err(format!(
                "unsupported JWT algorithm {:?}: RS256 or ES256",
                resource::truncate(alg, 16)
            ));
        }
        if !verified {
            return Err("the token's signature does not verify with any configured key".into());
        }
        let claims: Value = serde_json::from_slice(&b64(p)?).map_err(|_| "bad JWT claims")?;
        let num = |k: &str| claims.get(k).and_then(Value::as_u64);
        let exp = num("exp").ok_or("the token has no exp")?;
        if now_s > exp.saturating_add(self.leeway_s) {
            return Err("the token has expired".into());
        }
        if let Some(nbf) = num("nbf") {
            if now_s.saturating_add(self.leeway_s) < nbf {
                return Err("the token is not valid yet (nbf)".into());
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err("the token's issuer is not accepted".into());
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err("the token's audience is not this server".into());
        }
        let scopes = claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(parse_scope)
            .collect();
        let patient = claims
            .get("patient")
            .and_then(Value::as_str)
            .filter(|p| resource::is_valid_id(p))
            .map(str::to_string);
        Ok(Grant { scopes, patient })
    }
}

/// The RSA and P-256 keys of a JWKS document.
fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for k in list {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        let kid = s("kid").map(str::to_string);
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        match s("kty") {
            Some("RSA") => {
                let (Some(n), Some(e)) = (s("n"), s("e")) else {
                    return Err("an RSA key needs n and e".into());
                };
                let mut n = b64(n)?;
                while n.first() == Some(&0) {
                    n.remove(0);
                }
                keys.push(Key::Rsa { kid, n, e: b64(e)? });
            }
            Some("EC") => {
                if s("crv") != Some("P-256") {
                    continue;
                }
                let (Some(x), Some(y)) = (s("x"), s("y")) else {
                    return Err("an EC key needs x and y".into());
                };
                let (x, y) = (b64(x)?, b64(y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("a P-256 key's x and y are 32 bytes each".into());
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                keys.push(Key::Ec { kid, point });
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err("no RSA or P-256 signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let g = Grant {
            scopes: [
                "system/*.read",
                "patient/Observation.rs",
                "user/Patient.write",
                "bogus",
            ]
            .iter()
            .filter_map(|s| parse_scope(s))
            .collect(),
            patient: Some("p1".into()),
        };
        assert_eq!(g.access("Encounter", false), Some(Access::All));
        assert_eq!(g.access("Encounter", true), None);
        assert_eq!(g.access("Patient", true), Some(Access::All));
        let p = Grant {
            scopes: vec![parse_scope("patient/Observation.read").expect("scope")],
            patient: Some("p1".into()),
        };
        assert_eq!(
            p.access("Observation", false),
            Some(Access::Patient("p1".into()))
        );
        assert_eq!(p.access("Observation", true), None);
    }

    #[test]
    fn garbage_tokens_are_refused_not_panicked_on() {
        let a = Auth {
            keys: vec![Key::Ec {
                kid: None,
                point: vec![4; 65],
            }],
            issuer: "i".into(),
            audience: "a".into(),
            leeway_s: 0,
        };
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJub25lIn0.e30.",
            &"x".repeat(MAX_TOKEN + 1),
        ] {
            assert!(a.verify(t, 0).is_err(), "{t:?}");
        }
        assert!(a.verify_header(None, 0).is_err());
        assert!(a.verify_header(Some("Basic x"), 0).is_err());
    }
}
