//! The transaction Bundle: `type = transaction`, one `PUT <Type>/<id>` entry per resource with
//! `fullUrl = urn:uuid:<id>`, MessageHeader first.
//!
//! Resources arrive already serialised (they are also published one by one), so the Bundle is
//! written by appending their bytes after its own head instead of serialising everything twice.
//! Ids are UUIDs and types are ASCII names, so nothing in an entry's envelope needs escaping.

use crate::context::Emitted;
use crate::resources::BundleHead;
use crate::ConvertError;

/// Whether `s` looks like an absolute URL FHIR's `url` type accepts (`scheme://…`, `mailto:`,
/// `mllp:`), with no whitespace.
pub fn is_absolute_url(s: &str) -> bool {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return false;
    }
    if let Some(rest) = s.strip_prefix("mllp:").or_else(|| s.strip_prefix("llp:")) {
        return !rest.is_empty();
    }
    match s.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && scheme
                    .as_bytes()
                    .first()
                    .is_some_and(u8::is_ascii_alphabetic)
                && rest
                    .split(['/', '?', '#'])
                    .next()
                    .is_some_and(|host| !host.is_empty())
        }
        None => false,
    }
}

/// Write the Bundle JSON: `head` followed by the entries.
pub fn write(head: &BundleHead, entries: &[Emitted]) -> Result<Vec<u8>, ConvertError> {
    let total: usize = entries.iter().map(|e| e.json.len() + 140).sum();
    let mut out = Vec::with_capacity(total + 256);
    crate::json::write(&mut out, head).map_err(|e| ConvertError::Serialize(e.to_string()))?;
    if out.pop() != Some(b'}') {
        return Err(ConvertError::Serialize(
            "bundle head is not an object".into(),
        ));
    }
    out.extend_from_slice(b",\"entry\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"fullUrl\":\"urn:uuid:");
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(b"\",\"resource\":");
        out.extend_from_slice(&e.json);
        out.extend_from_slice(b",\"request\":{\"method\":\"PUT\",\"url\":\"");
        out.extend_from_slice(e.resource_type.as_bytes());
        out.push(b'/');
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(b"\"}}");
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_absolute_url("http://example.org/x"));
        assert!(is_absolute_url("mllp://10.0.0.1:2575"));
        assert!(is_absolute_url("mllp:host"));
        assert!(!is_absolute_url("urn:oid:1.2.3"));
        assert!(!is_absolute_url("http://"));
        assert!(!is_absolute_url("a b://x"));
        assert!(!is_absolute_url(""));
    }

    #[test]
    fn bundle_shape() {
        let head = BundleHead {
            resource_type: "Bundle",
            id: "b".into(),
            r#type: "transaction",
            ..BundleHead::default()
        };
        let e = Emitted {
            resource_type: "Patient",
            id: "p1".into(),
            json: br#"{"resourceType":"Patient","id":"p1"}"#.to_vec(),
        };
        let out = write(&head, &[e]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["entry"][0]["request"]["url"], "Patient/p1");
        assert_eq!(v["entry"][0]["fullUrl"], "urn:uuid:p1");
        assert_eq!(v["type"], "transaction");
    }
}
