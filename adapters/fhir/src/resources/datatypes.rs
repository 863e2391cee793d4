//! FHIR R4 general-purpose datatypes (Identifier, HumanName, CodeableConcept, …) as typed structs.
//!
//! Only the elements medbus fills are declared; anything else would be dead weight.

use super::{Decimal, Shared, Text};
use crate::element;

element! {
    /// FHIR `Coding`.
    pub struct Coding {
        pub system: Option<Text>,
        pub version: Option<Text>,
        pub code: Option<Text>,
        pub display: Option<Text>,
    }
}

element! {
    /// FHIR `CodeableConcept`.
    pub struct CodeableConcept {
        pub coding: Vec<Coding>,
        pub text: Option<String>,
    }
}

impl CodeableConcept {
    /// A concept with one coding (constants: nothing is copied).
    pub fn code(
        system: &'static str,
        code: &'static str,
        display: Option<&'static str>,
    ) -> CodeableConcept {
        CodeableConcept {
            coding: vec![Coding {
                system: Some(Text::Borrowed(system)),
                code: Some(Text::Borrowed(code)),
                display: display.map(Text::Borrowed),
                ..Coding::default()
            }],
            text: None,
        }
    }

    /// A concept with text only.
    pub fn text(text: &str) -> CodeableConcept {
        CodeableConcept {
            coding: Vec::new(),
            text: Some(text.to_string()),
        }
    }
}

element! {
    /// FHIR `Period`.
    pub struct Period {
        pub start: Option<String>,
        pub end: Option<String>,
    }
}

element! {
    /// FHIR `Reference` (relative `Type/id` references, resolved by the transaction; the text
    /// is shared, as the Patient's and Encounter's are copied into most resources).
    pub struct Reference {
        pub reference: Option<Shared>,
        pub display: Option<String>,
    }
}

impl Reference {
    /// `Type/id`.
    pub fn to(resource_type: &str, id: &str) -> Reference {
        Reference {
            reference: Some(Shared::from(crate::concat(&[resource_type, "/", id]))),
            display: None,
        }
    }

    /// A reference that only names its target.
    pub fn display(text: &str) -> Reference {
        Reference {
            reference: None,
            display: Some(text.to_string()),
        }
    }
}

element! {
    /// FHIR `Identifier`.
    pub struct Identifier {
        pub r#use: Option<&'static str>,
        pub r#type: Option<CodeableConcept>,
        pub system: Option<Text>,
        pub value: Option<String>,
        pub period: Option<Period>,
        pub assigner: Option<Reference>,
    }
}

element! {
    /// FHIR `HumanName`.
    pub struct HumanName {
        pub r#use: Option<&'static str>,
        pub text: Option<String>,
        pub family: Option<String>,
        pub given: Vec<String>,
        pub prefix: Vec<String>,
        pub suffix: Vec<String>,
        pub period: Option<Period>,
    }
}

element! {
    /// FHIR `Address`.
    pub struct Address {
        pub r#use: Option<&'static str>,
        pub r#type: Option<&'static str>,
        pub text: Option<String>,
        pub line: Vec<String>,
        pub city: Option<String>,
        pub district: Option<String>,
        pub state: Option<String>,
        pub postal_code: Option<String>,
        pub country: Option<String>,
        pub period: Option<Period>,
    }
}

element! {
    /// FHIR `ContactPoint`.
    pub struct ContactPoint {
        pub system: Option<&'static str>,
        pub value: Option<String>,
        pub r#use: Option<&'static str>,
        pub rank: Option<u32>,
        pub period: Option<Period>,
    }
}

element! {
    /// FHIR `Quantity` (also used for `SimpleQuantity`, `Age` and `Duration`).
    pub struct Quantity {
        pub value: Option<Decimal>,
        pub comparator: Option<&'static str>,
        pub unit: Option<String>,
        pub system: Option<Text>,
        pub code: Option<String>,
    }
}

element! {
    /// FHIR `Range`.
    pub struct Range {
        pub low: Option<Quantity>,
        pub high: Option<Quantity>,
    }
}

element! {
    /// FHIR `Ratio`.
    pub struct Ratio {
        pub numerator: Option<Quantity>,
        pub denominator: Option<Quantity>,
    }
}

element! {
    /// FHIR `Annotation` (from NTE segments).
    pub struct Annotation {
        pub author_reference: Option<Reference>,
        pub time: Option<String>,
        pub text: String,
    }
}

element! {
    /// FHIR `Attachment`.
    pub struct Attachment {
        pub content_type: Option<String>,
        pub language: Option<String>,
        pub data: Option<String>,
        pub url: Option<String>,
        pub title: Option<String>,
        pub creation: Option<String>,
    }
}

element! {
    /// FHIR `Extension` (only the value types medbus uses).
    pub struct Extension {
        pub url: String,
        pub value_code: Option<&'static str>,
        pub value_string: Option<String>,
    }
}

element! {
    /// The `_element` sibling of a primitive: its extensions.
    pub struct PrimitiveExtension {
        pub extension: Vec<Extension>,
    }
}

impl PrimitiveExtension {
    /// A `data-absent-reason` extension saying the value is unknown.
    pub fn absent_unknown() -> PrimitiveExtension {
        PrimitiveExtension {
            extension: vec![Extension {
                url: "http://hl7.org/fhir/StructureDefinition/data-absent-reason".to_string(),
                value_code: Some("unknown"),
                value_string: None,
            }],
        }
    }
}

element! {
    /// FHIR `Meta` (only tags and security labels).
    pub struct Meta {
        pub tag: Vec<Coding>,
        pub security: Vec<Coding>,
    }
}
