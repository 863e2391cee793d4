//! CWE / CE / CNE / CF / ID / IS → FHIR `CodeableConcept` and `Coding`.
//!
//! Coding-system names (CWE-3/6) become URIs by the table in [`system_uri`] (the V2-to-FHIR IG's
//! and terminology.hl7.org's canonical names); `HL7nnnn` becomes the v2 table's code system; an
//! OID becomes `urn:oid:…`; any other token becomes `urn:medbus:coding-system:<name>` so that
//! the original name survives (documented in the crate README). Codes are `code`-typed in FHIR,
//! so their internal whitespace is collapsed.

use super::Node;
use crate::concat;
use crate::resources::{CodeableConcept, Coding, Text};

/// Base of the URIs given to coding systems FHIR has no canonical URI for.
pub const LOCAL_SYSTEM_BASE: &str = "urn:medbus:coding-system:";

/// The FHIR URI for a v2 coding-system name, or `None` when the name cannot form a URI.
pub fn system_uri(name: &str) -> Option<Text> {
    let n = name.trim();
    // Upper-cased on the stack: every known name is short.
    let mut buf = [0u8; 16];
    let upper = match buf.get_mut(..n.len()) {
        Some(b) => {
            b.copy_from_slice(n.as_bytes());
            b.make_ascii_uppercase();
            std::str::from_utf8(b).unwrap_or_default()
        }
        None => "",
    };
    let known = match upper {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNM" | "SNM3" | "SNOMED" | "SNOMEDCT" | "SNOMED-CT" => "http://snomed.info/sct",
        "I10" | "ICD10" | "ICD-10" => "http://hl7.org/fhir/sid/icd-10",
        "I10C" | "ICD10CM" | "ICD-10-CM" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I9" | "I9C" | "ICD9" | "ICD9CM" | "ICD-9-CM" => "http://hl7.org/fhir/sid/icd-9-cm",
        "C4" | "C5" | "CPT" | "CPT4" | "CPT-4" => "http://www.ama-assn.org/go/cpt",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "MVX" => "http://hl7.org/fhir/sid/mvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "RXNORM" | "RXN" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "UCUM" | "ANSI+" => "http://unitsofmeasure.org",
        "NUCC" => "http://nucc.org/provider-taxonomy",
        "CDCREC" => "urn:oid:2.16.840.1.113883.6.238",
        "ISO3166_1" | "ISO3166-1" => "urn:iso:std:iso:3166",
        "ISO+" => "http://unitsofmeasure.org",
        "HCPCS" => "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        _ => "",
    };
    if !known.is_empty() {
        return Some(Text::Borrowed(known));
    }
    if let Some(table) = n
        .strip_prefix("HL7")
        .or_else(|| n.strip_prefix("hl7"))
        .filter(|t| t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(Text::Owned(concat(&[
            "http://terminology.hl7.org/CodeSystem/v2-",
            table,
        ])));
    }
    if n.contains('.')
        && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !n.starts_with('.')
        && !n.ends_with('.')
        && !n.contains("..")
    {
        return Some(Text::Owned(concat(&["urn:oid:", n])));
    }
    if !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some(Text::Owned(concat(&[LOCAL_SYSTEM_BASE, n])));
    }
    None
}

/// A v2 code as a FHIR `code`: whitespace runs collapsed to one space.
pub fn code(s: &str) -> Option<Text> {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    if out.is_empty() {
        None
    } else {
        Some(Text::Owned(out))
    }
}

fn coding_at(node: Node<'_>, id: usize, text: usize, sys: usize, ver: usize) -> Option<Coding> {
    let code_v = node.get(id).and_then(|c| code(&c));
    let display = node.s(text);
    code_v.as_ref()?;
    Some(Coding {
        system: node.get(sys).and_then(|s| system_uri(&s)),
        version: node.s(ver).map(Text::Owned),
        code: code_v,
        display: display.map(Text::Owned),
    })
}

/// CWE/CE/CNE → CodeableConcept: primary and alternate codings; text from the original text
/// (CWE-9) or, when no code is given, from the display text.
pub fn concept(node: Node<'_>) -> Option<CodeableConcept> {
    let mut coding = Vec::with_capacity(2);
    coding.extend(coding_at(node, 1, 2, 3, 7));
    coding.extend(coding_at(node, 4, 5, 6, 8));
    let text = node.s(9).or_else(|| {
        if coding.is_empty() {
            node.s(2).or_else(|| node.s(5))
        } else {
            None
        }
    });
    if coding.is_empty() && text.is_none() {
        return None;
    }
    Some(CodeableConcept { coding, text })
}

/// A coded value from a v2 table (ID/IS, or the first component of a CWE) with a fixed system.
pub fn table_concept(node: Node<'_>, table: &str) -> Option<CodeableConcept> {
    let c = node.first().and_then(|c| code(&c))?;
    let system = node.get(3).and_then(|s| system_uri(&s)).unwrap_or_else(|| {
        Text::Owned(concat(&[
            "http://terminology.hl7.org/CodeSystem/v2-",
            table,
        ]))
    });
    Some(CodeableConcept {
        coding: vec![Coding {
            system: Some(system),
            code: Some(c),
            display: node.s(2).map(Text::Owned),
            ..Coding::default()
        }],
        text: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_systems() {
        assert_eq!(system_uri("LN").as_deref(), Some("http://loinc.org"));
        assert_eq!(
            system_uri("HL70078").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/v2-0078")
        );
        assert_eq!(
            system_uri("2.16.840.1.113883.6.1").as_deref(),
            Some("urn:oid:2.16.840.1.113883.6.1")
        );
        assert_eq!(
            system_uri("99zzz").as_deref(),
            Some("urn:medbus:coding-system:99zzz")
        );
        assert_eq!(system_uri("bad name"), None);
    }

    #[test]
    fn codes_collapse_whitespace() {
        assert_eq!(code("  a   b ").as_deref(), Some("a b"));
        assert_eq!(code("   "), None);
    }
}
