//! XAD → FHIR `Address`.
//!
//! Street (XAD-1, whose first subcomponent is the street line) and other designation (XAD-2) are
//! lines; city, state, postal code, country, county (district); XAD-7 address type gives `use`
//! and `type`; validity from XAD-12 (DR) or XAD-13/14.

use super::time;
use super::Node;
use crate::resources::{Address, Period};

/// v2 table 0190 address type → (FHIR address-use, address-type).
pub fn address_kind(code: &str) -> (Option<&'static str>, Option<&'static str>) {
    match code {
        "H" | "L" | "P" => (Some("home"), None),
        "B" | "O" => (Some("work"), None),
        "C" | "TEMP" => (Some("temp"), None),
        "BA" | "BAD" => (Some("old"), None),
        "M" => (None, Some("postal")),
        "SH" => (None, Some("physical")),
        "BI" => (Some("billing"), None),
        _ => (None, None),
    }
}

/// XAD → Address; `None` when it carries nothing.
pub fn xad(node: Node<'_>) -> Option<Address> {
    let mut line = Vec::new();
    // XAD-1 is an SAD: street address, street name, dwelling number — one line.
    let street = node.part(1);
    let parts: Vec<String> = (1..=3)
        .filter_map(|k| street.part(k).first().map(|s| s.into_owned()))
        .collect();
    if !parts.is_empty() {
        line.push(parts.join(" "));
    }
    line.extend(node.s(2));
    let (r#use, r#type) = node
        .get(7)
        .map(|k| address_kind(&k))
        .unwrap_or((None, None));
    let period = Period {
        start: time::date(node.part(12).get(1).as_deref())
            .or_else(|| time::date(node.get(13).as_deref())),
        end: time::date(node.part(12).get(2).as_deref())
            .or_else(|| time::date(node.get(14).as_deref())),
    };
    let a = Address {
        r#use,
        r#type,
        line,
        city: node.s(3),
        state: node.s(4),
        postal_code: node.s(5),
        country: node.s(6),
        district: node.s(9),
        period: Some(period),
        ..Address::default()
    };
    if a.line.is_empty()
        && a.city.is_none()
        && a.state.is_none()
        && a.postal_code.is_none()
        && a.country.is_none()
        && a.district.is_none()
    {
        return None;
    }
    Some(a)
}
