//! XPN / XCN → FHIR `HumanName`.
//!
//! XPN: family (FN-1 surname) · given · second names (more given) · suffix · prefix · degree
//! (suffix) · name type (→ `use`) · validity (XPN-10 or XPN-12/13). XCN carries the same name at
//! an offset of one component, after the person's id.

use super::time;
use super::Node;
use crate::resources::{HumanName, Period};

/// v2 table 0200 name type → FHIR name-use (following the V2-to-FHIR IG ConceptMap; types it
/// leaves unmapped are left out).
pub fn name_use(code: &str) -> Option<&'static str> {
    Some(match code {
        "L" | "R" | "C" => "official",
        "D" | "U" | "T" => "usual",
        "A" | "N" => "nickname",
        "M" | "B" => "maiden",
        "S" => "anonymous",
        "BAD" | "F" => "old",
        "TEMP" => "temp",
        _ => return None,
    })
}

/// Name parts starting at component `at` (XPN: 1, XCN: 2).
fn name_at(node: Node<'_>, at: usize, with_use: bool) -> Option<HumanName> {
    let family = node.part(at).first().map(|s| s.into_owned());
    let mut given = Vec::new();
    given.extend(node.s(at + 1));
    if let Some(second) = node.get(at + 2) {
        given.extend(second.split_whitespace().map(str::to_string));
    }
    let mut suffix = Vec::new();
    suffix.extend(node.s(at + 3));
    let prefix: Vec<String> = node.s(at + 4).into_iter().collect();
    // XPN-6 / XCN-7 degree (e.g. MD) is a suffix too.
    suffix.extend(node.s(at + 5));
    let (name_type_pos, period) = if at == 1 {
        let p = Period {
            start: time::date(node.part(10).get(1).as_deref())
                .or_else(|| time::date(node.get(12).as_deref())),
            end: time::date(node.part(10).get(2).as_deref())
                .or_else(|| time::date(node.get(13).as_deref())),
        };
        (7, Some(p))
    } else {
        (10, None)
    };
    let name = HumanName {
        r#use: if with_use {
            node.get(name_type_pos).and_then(|t| name_use(&t))
        } else {
            None
        },
        family,
        given,
        prefix,
        suffix,
        period,
        ..HumanName::default()
    };
    if name.family.is_none() && name.given.is_empty() {
        return None;
    }
    Some(name)
}

/// XPN → HumanName.
pub fn xpn(node: Node<'_>) -> Option<HumanName> {
    name_at(node, 1, true)
}

/// The name inside an XCN (components 2…).
pub fn xcn_name(node: Node<'_>) -> Option<HumanName> {
    name_at(node, 2, true)
}

/// A one-line rendering of a name (for keys and displays).
pub fn display(name: &HumanName) -> String {
    let mut parts: Vec<&str> = name.prefix.iter().map(String::as_str).collect();
    parts.extend(name.given.iter().map(String::as_str));
    parts.extend(name.family.as_deref());
    parts.extend(name.suffix.iter().map(String::as_str));
    parts.join(" ")
}
