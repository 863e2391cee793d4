//! Typed errors shared by the parser and the ACK builder.
//!
//! Parse failures carry an HL7 table 0357 [`ErrorCode`] and, when known, a [`Location`]
//! (segment, occurrence, field …) so that an ACK's ERR segment can point at the culprit.

use std::fmt;

/// HL7 table 0357 "Message error condition codes".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: Message accepted.
    MessageAccepted,
    /// 100: Segment sequence error.
    SegmentSequenceError,
    /// 101: Required field missing.
    RequiredFieldMissing,
    /// 102: Data type error.
    DataTypeError,
    /// 103: Table value not found.
    TableValueNotFound,
    /// 200: Unsupported message type.
    UnsupportedMessageType,
    /// 201: Unsupported event code.
    UnsupportedEventCode,
    /// 202: Unsupported processing id.
    UnsupportedProcessingId,
    /// 203: Unsupported version id.
    UnsupportedVersionId,
    /// 204: Unknown key identifier.
    UnknownKeyIdentifier,
    /// 205: Duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: Application record locked.
    ApplicationRecordLocked,
    /// 207: Application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MessageAccepted,
        ErrorCode::SegmentSequenceError,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataTypeError,
        ErrorCode::TableValueNotFound,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::UnknownKeyIdentifier,
        ErrorCode::DuplicateKeyIdentifier,
        ErrorCode::ApplicationRecordLocked,
        ErrorCode::ApplicationInternalError,
    ];

    /// The numeric table 0357 value.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::MessageAccepted => 0,
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table 0357 description, e.g. "Required field missing".
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// The code with the given numeric value, if it is in table 0357.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

/// Where in a message something is (or went wrong). Numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// 1-based occurrence of that segment (for structural errors: the segment's index in the message).
    pub sequence: u32,
    /// Field number, HL7 numbering.
    pub field: Option<u32>,
    /// Field repetition.
    pub repetition: Option<u32>,
    /// Component.
    pub component: Option<u32>,
    /// Subcomponent.
    pub subcomponent: Option<u32>,
}

impl Location {
    /// A whole segment.
    pub fn segment(segment: impl Into<String>, sequence: u32) -> Location {
        Location {
            segment: segment.into(),
            sequence,
            field: None,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// One field of a segment.
    pub fn field(segment: impl Into<String>, sequence: u32, field: u32) -> Location {
        Location {
            field: Some(field),
            ..Location::segment(segment, sequence)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.sequence > 1 {
            write!(f, "({})", self.sequence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(rep) = self.repetition {
                write!(f, "[{rep}]")?;
            }
            if let Some(comp) = self.component {
                write!(f, ".{comp}")?;
                if let Some(sub) = self.subcomponent {
                    write!(f, ".{sub}")?;
                }
            }
        }
        Ok(())
    }
}

fn at(location: &Option<Location>) -> String {
    match location {
        Some(l) => format!(" at {l}"),
        None => String::new(),
    }
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}: {message}", at(.location))]
pub struct ParseError {
    /// The HL7 table 0357 condition.
    pub code: ErrorCode,
    /// Where, when known.
    pub location: Option<Location>,
    /// Human-readable explanation.
    pub message: String,
}

impl ParseError {
    /// Build an error.
    pub fn new(code: ErrorCode, location: Option<Location>, message: impl Into<String>) -> Self {
        ParseError {
            code,
            location,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts() {
        assert_eq!(ErrorCode::RequiredFieldMissing.code(), 101);
        assert_eq!(
            ErrorCode::RequiredFieldMissing.text(),
            "Required field missing"
        );
        assert_eq!(ErrorCode::ApplicationInternalError.code(), 207);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(999), None);
    }

    #[test]
    fn display() {
        let e = ParseError::new(
            ErrorCode::RequiredFieldMissing,
            Some(Location::field("MSH", 1, 10)),
            "MSH-10 is empty",
        );
        assert_eq!(
            e.to_string(),
            "101 Required field missing at MSH-10: MSH-10 is empty"
        );
        let l = Location {
            repetition: Some(2),
            component: Some(1),
            subcomponent: Some(3),
            ..Location::field("OBX", 2, 5)
        };
        assert_eq!(l.to_string(), "OBX(2)-5[2].1.3");
    }
}
