//! Typed serde structs for the FHIR R4 resources and datatypes medbus emits.
//!
//! Why not `serde_json::Value`: typed structs make an invalid shape a compile error, keep the
//! element order (and so the bytes) deterministic, and serialise faster. Every element is
//! declared through [`element!`](crate::element) / [`resource!`](crate::resource), which skip
//! empty values ([`Skip`]): an empty string, an empty array or an object whose children are all
//! empty is never written, because FHIR forbids them.

pub mod admin;
pub mod clinical;
pub mod datatypes;
pub mod infra;
pub mod workflow;

use serde::{Serialize, Serializer};

pub use admin::*;
pub use clinical::*;
pub use datatypes::*;
pub use infra::*;
pub use workflow::*;

/// "Is this value empty, so that FHIR wants it left out?"
pub trait Skip {
    /// `true` when serialising the value would produce an empty string, array or object.
    fn skip(&self) -> bool;
}

impl Skip for String {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
/// Text that is often a constant (code systems, fixed codes and displays): a constant is
/// borrowed, not copied.
pub type Text = std::borrow::Cow<'static, str>;

impl Skip for Text {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}

/// Text many resources carry the same copy of (the Patient and Encounter references): cloning
/// it shares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared(std::rc::Rc<str>);

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Shared {
        Shared(s.into())
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Shared {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Skip for Shared {
    fn skip(&self) -> bool {
        self.0.is_empty()
    }
}

impl Skip for &'static str {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
impl<T: Skip> Skip for Option<T> {
    fn skip(&self) -> bool {
        match self {
            None => true,
            Some(v) => v.skip(),
        }
    }
}
impl<T> Skip for Vec<T> {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
impl Skip for bool {
    fn skip(&self) -> bool {
        false
    }
}
impl Skip for u32 {
    fn skip(&self) -> bool {
        false
    }
}
impl Skip for i64 {
    fn skip(&self) -> bool {
        false
    }
}

/// A FHIR `decimal`, kept exactly as written in the message (`72.50` stays `72.50`).
///
/// Built only through [`crate::datatypes::numeric::decimal`], which guarantees the text matches
/// FHIR's (and JSON's) number grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(pub(crate) String);

impl Decimal {
    /// The decimal as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Skip for Decimal {
    fn skip(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Decimal {
    /// As a JSON number written as is: the shape `serde_json`'s `RawValue` serialises as (a
    /// struct named by its token, the text its one field), which both `serde_json` and
    /// [`crate::json`] write verbatim. The text is a valid JSON number by construction, so it
    /// is neither copied nor validated again here.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut raw = s.serialize_struct(crate::json::RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(crate::json::RAW_VALUE_TOKEN, self.0.as_str())?;
        raw.end()
    }
}

/// Declare a FHIR element struct: camelCase names, empty children skipped, [`Skip`] derived.
#[macro_export]
#[doc(hidden)]
macro_rules! element {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $( $(#[$fm])* #[serde(skip_serializing_if = "crate::resources::Skip::skip")] pub $f : $t ),*
        }
        impl $crate::resources::Skip for $name {
            fn skip(&self) -> bool {
                true $(&& $crate::resources::Skip::skip(&self.$f))*
            }
        }
    };
}

/// Declare a FHIR resource: like [`element!`](crate::element) plus `resourceType` and `id` first.
#[macro_export]
#[doc(hidden)]
macro_rules! resource {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// Always the struct's name.
            pub resource_type: &'static str,
            /// The deterministic id from [`crate::ids`].
            pub id: String,
            $( $(#[$fm])* #[serde(skip_serializing_if = "crate::resources::Skip::skip")] pub $f : $t ),*
        }
        impl Default for $name {
            fn default() -> Self {
                $name { resource_type: stringify!($name), id: String::new(), $( $f: Default::default() ),* }
            }
        }
        impl $crate::resources::Resource for $name {
            const TYPE: &'static str = stringify!($name);
            fn id(&self) -> &str {
                &self.id
            }
        }
    };
}

/// What every emitted resource offers the Bundle builder.
pub trait Resource: Serialize {
    /// The FHIR resource type name.
    const TYPE: &'static str;
    /// The resource id.
    fn id(&self) -> &str;
}
