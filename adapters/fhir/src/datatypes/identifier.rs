//! CX / EI / HD → FHIR `Identifier` and identifier-system URIs.
//!
//! An assigning authority (HD) becomes `urn:oid:<id>` for ISO OIDs, `urn:uuid:<id>` for UUIDs,
//! the URI itself for `URI`/`URL` types, and `urn:medbus:identifier-system:<namespace>` for a bare
//! namespace id (so that the same namespace always yields the same system).

use std::borrow::Cow;

use super::coded::code;
use super::time;
use super::Node;
use crate::concat;
use crate::resources::{CodeableConcept, Coding, Identifier, Period, Text};

/// Base of the URIs given to assigning authorities known only by a local namespace id.
pub const LOCAL_IDENTIFIER_BASE: &str = "urn:medbus:identifier-system:";

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_oid(s: &str) -> bool {
    s.contains('.')
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

/// An HD (namespace id, universal id, universal id type) as an identifier system URI.
pub fn hd_system(
    namespace: Option<Cow<'_, str>>,
    universal: Option<Cow<'_, str>>,
    kind: Option<Cow<'_, str>>,
) -> Option<Text> {
    hd_uri(namespace, universal, kind).map(Text::Owned)
}

fn hd_uri(
    namespace: Option<Cow<'_, str>>,
    universal: Option<Cow<'_, str>>,
    kind: Option<Cow<'_, str>>,
) -> Option<String> {
    if let Some(u) = universal.as_deref() {
        let k = kind.as_deref().unwrap_or("").to_ascii_uppercase();
        if is_oid(u) {
            return Some(concat(&["urn:oid:", u]));
        }
        if k == "UUID" && token(u) {
            return Some(format!("urn:uuid:{}", u.to_ascii_lowercase()));
        }
        if (k == "URI" || k == "URL") && !u.contains(char::is_whitespace) {
            return Some(u.to_string());
        }
        if token(u) {
            return Some(concat(&[LOCAL_IDENTIFIER_BASE, u]));
        }
    }
    namespace
        .as_deref()
        .filter(|n| token(n))
        .map(|n| concat(&[LOCAL_IDENTIFIER_BASE, n]))
}

/// The identifier type CodeableConcept for a v2 table 0203 code.
pub fn id_type(c: &str) -> Option<CodeableConcept> {
    Some(CodeableConcept {
        coding: vec![Coding {
            system: Some("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
            code: Some(code(c)?),
            ..Coding::default()
        }],
        text: None,
    })
}

/// CX → Identifier (value CX-1, system from CX-4, type CX-5, period CX-7/CX-8).
pub fn cx(node: Node<'_>) -> Option<Identifier> {
    let value = node.s(1)?;
    let auth = node.part(4);
    let period = Period {
        start: time::date(node.get(7).as_deref()),
        end: time::date(node.get(8).as_deref()),
    };
    Some(Identifier {
        r#type: node.get(5).and_then(|t| id_type(&t)),
        system: hd_system(auth.get(1), auth.get(2), auth.get(3)),
        value: Some(value),
        period: Some(period),
        ..Identifier::default()
    })
}

/// The business key of a CX: value and assigning authority (namespace or universal id).
pub fn cx_key(node: Node<'_>) -> Option<String> {
    let value = node.get(1)?;
    let auth = node.part(4);
    let a = auth.get(1).or_else(|| auth.get(2)).unwrap_or_default();
    Some(concat(&[&value, "|", &a]))
}

/// EI → Identifier (entity id EI-1, system from EI-2..4).
pub fn ei(node: Node<'_>) -> Option<Identifier> {
    Some(Identifier {
        system: hd_system(node.get(2), node.get(3), node.get(4)),
        value: Some(node.s(1)?),
        ..Identifier::default()
    })
}

/// EI with a type code (e.g. `PLAC`, `FILL`).
pub fn ei_typed(node: Node<'_>, type_code: &str) -> Option<Identifier> {
    let mut id = ei(node)?;
    id.r#type = id_type(type_code);
    Some(id)
}

/// The business key of an EI: entity id and namespace (or universal id).
pub fn ei_key(node: Node<'_>) -> Option<String> {
    let value = node.get(1)?;
    let ns = node.get(2).or_else(|| node.get(3)).unwrap_or_default();
    Some(concat(&[&value, "|", &ns]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hd_forms() {
        let c = |s: &'static str| Some(Cow::Borrowed(s));
        assert_eq!(
            hd_system(c("X"), c("1.2.3"), c("ISO")).as_deref(),
            Some("urn:oid:1.2.3")
        );
        assert_eq!(
            hd_system(c("MRN"), None, None).as_deref(),
            Some("urn:medbus:identifier-system:MRN")
        );
        assert_eq!(
            hd_system(None, c("http://x.org/ids"), c("URI")).as_deref(),
            Some("http://x.org/ids")
        );
        assert_eq!(hd_system(c("with space"), None, None), None);
    }
}
