//! The delimiter set of a message (MSH-1 and MSH-2), read once at parse time.
//!
//! Rules: MSH-1 is the byte right after `MSH`; MSH-2 runs to the next field separator and holds,
//! in order, the component, repetition, escape and subcomponent characters, optionally followed by
//! the v2.7 truncation character. MSH-2 of length 2 or 3 has no escape character (component,
//! repetition[, subcomponent]); when the subcomponent character is absent `&` is assumed.
//! All delimiters must be distinct printable ASCII punctuation (no letters, digits, space, CR, LF).
//!
//! One real-world quirk is tolerated: `^~\\&` (the escape character doubled, an artefact of
//! un-unescaped source code strings) is read as `^~\&`.

use crate::error::{ErrorCode, Location, ParseError};

/// The six ER7 delimiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`; `None` when MSH-2 declares none.
    pub escape: Option<u8>,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: u8,
    /// v2.7+ truncation character (`#`), when declared.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// `|^~\&`
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: b'&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// The MSH-2 encoding characters in canonical order (e.g. `^~\&` or `^~\&#`).
    pub fn encoding_characters(&self) -> Vec<u8> {
        let mut out = vec![self.component, self.repetition];
        if let Some(e) = self.escape {
            out.push(e);
        }
        out.push(self.subcomponent);
        if let Some(t) = self.truncation {
            out.push(t);
        }
        out
    }

    /// Whether `b` is any of the delimiters (field, component, repetition, escape, subcomponent,
    /// truncation).
    pub fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.subcomponent
            || Some(b) == self.escape
            || Some(b) == self.truncation
    }

    /// Check the set: distinct, printable, non-alphanumeric ASCII.
    pub fn validate(&self) -> Result<(), String> {
        let mut all = vec![self.field];
        all.extend(self.encoding_characters());
        for (i, &b) in all.iter().enumerate() {
            if !b.is_ascii_graphic() || b.is_ascii_alphanumeric() {
                return Err(format!(
                    "delimiter {:?} is not printable ASCII punctuation",
                    char::from(b)
                ));
            }
            if all.iter().skip(i + 1).any(|&o| o == b) {
                return Err(format!("delimiter {:?} is used twice", char::from(b)));
            }
        }
        Ok(())
    }

    /// Read the delimiters from the raw MSH segment (starting with `MSH`).
    pub(crate) fn from_msh(msh: &[u8]) -> Result<Delimiters, ParseError> {
        let field = match msh.get(3) {
            Some(&b) => b,
            None => {
                return Err(ParseError::new(
                    ErrorCode::RequiredFieldMissing,
                    Some(Location::field("MSH", 1, 1)),
                    "MSH has no field separator (MSH-1)",
                ))
            }
        };
        let rest = msh.get(4..).unwrap_or_default();
        let enc_len = rest.iter().position(|&b| b == field).unwrap_or(rest.len());
        let enc = rest.get(..enc_len).unwrap_or_default();
        let bad = |msg: String| {
            ParseError::new(
                ErrorCode::DataTypeError,
                Some(Location::field("MSH", 1, 2)),
                msg,
            )
        };
        let d = match *enc {
            [c, r] => Delimiters {
                field,
                component: c,
                repetition: r,
                escape: None,
                subcomponent: b'&',
                truncation: None,
            },
            [c, r, s] => Delimiters {
                field,
                component: c,
                repetition: r,
                escape: None,
                subcomponent: s,
                truncation: None,
            },
            [c, r, e, s] => Delimiters {
                field,
                component: c,
                repetition: r,
                escape: Some(e),
                subcomponent: s,
                truncation: None,
            },
            // tolerated quirk: `^~\\&` — escape character doubled
            [c, r, e, e2, s] if e == e2 && e == b'\\' => Delimiters {
                field,
                component: c,
                repetition: r,
                escape: Some(e),
                subcomponent: s,
                truncation: None,
            },
            [c, r, e, s, t] => Delimiters {
                field,
                component: c,
                repetition: r,
                escape: Some(e),
                subcomponent: s,
                truncation: Some(t),
            },
            _ => {
                return Err(bad(format!(
                    "MSH-2 encoding characters must be 2 to 5 characters, found {}",
                    enc.len()
                )))
            }
        };
        d.validate()
            .map_err(|m| bad(format!("invalid delimiters: {m}")))?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set() {
        let d = Delimiters::from_msh(b"MSH|^~\\&|A").unwrap();
        assert_eq!(d, Delimiters::default());
        assert_eq!(d.encoding_characters(), b"^~\\&");
    }

    #[test]
    fn truncation_character() {
        let d = Delimiters::from_msh(b"MSH|^~\\&#|A").unwrap();
        assert_eq!(d.truncation, Some(b'#'));
        assert_eq!(d.subcomponent, b'&');
        assert_eq!(d.encoding_characters(), b"^~\\&#");
    }

    #[test]
    fn non_standard_set() {
        let d = Delimiters::from_msh(b"MSH*:+!%*A").unwrap();
        assert_eq!(d.field, b'*');
        assert_eq!(d.component, b':');
        assert_eq!(d.repetition, b'+');
        assert_eq!(d.escape, Some(b'!'));
        assert_eq!(d.subcomponent, b'%');
    }

    #[test]
    fn short_sets_have_no_escape() {
        let d = Delimiters::from_msh(b"MSH|^~|A").unwrap();
        assert_eq!(d.escape, None);
        assert_eq!(d.subcomponent, b'&');
        let d = Delimiters::from_msh(b"MSH|^~&|A").unwrap();
        assert_eq!(d.escape, None);
        assert_eq!(d.subcomponent, b'&');
        // MSH-2 running to the end of the segment
        assert!(Delimiters::from_msh(b"MSH|^~\\&").is_ok());
    }

    #[test]
    fn doubled_escape_quirk() {
        let d = Delimiters::from_msh(b"MSH|^~\\\\&|A").unwrap();
        assert_eq!(d, Delimiters::default());
    }

    #[test]
    fn rejects_bad_sets() {
        for bad in [
            &b"MSH"[..],
            b"MSH|^|A",
            b"MSH|^^\\&|A",
            b"MSH|^~\\~|A",
            b"MSH|A~\\&|A",
            b"MSH|^ \\&|A",
            b"MSH|^~\\&#@|A",
            b"MSH\r^~\\&",
        ] {
            assert!(Delimiters::from_msh(bad).is_err(), "{:?}", bad);
        }
    }
}
