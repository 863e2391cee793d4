//! The id recipe: every resource id is a UUID derived from its resource type and stable business
//! identifiers, so that the same message sent twice upserts the same resources.
//!
//! ```text
//! id = uuid8( SHA-256( namespace ␟ ResourceType ␟ key ) )
//! ```
//! `␟` is U+001F (unit separator); `namespace` is the site salt ([`crate::ConvertOptions::id_namespace`],
//! default empty), so two sites sharing one FHIR server never collide, and
//! [`crate::ConvertOptions::patient_identifier_type`] picks which PID-3 identifier keys the Patient; `uuid8` takes the first 16
//! bytes of the digest and sets the RFC 9562 version (8, "custom") and variant bits.
//!
//! The keys (the business identifiers, `|`-joined, each CX/EI as `value|authority`):
//!
//! | resource | key |
//! |---|---|
//! | Bundle | `MSH-3.1|MSH-10|d`, `d` = [`short_digest`] of MSH-7 and MSH-9 (no MSH-10: SHA-256 of the message bytes); `d` keeps apart messages whose sender reuses a control id (a counter restarted, or one id for several events) |
//! | MessageHeader, Provenance | the Bundle key |
//! | Patient | the chosen PID-3 repetition (first, or the first with CX-5 = `patient_identifier_type`): `CX-1|CX-4`; else PID-2, PID-4; none: the message is refused (`PID-3` missing) |
//! | Encounter | `PV1-19` (`CX-1|CX-4`); else Patient key + PV1-44; else message-scoped |
//! | ServiceRequest | placer order number (ORC-2 / OBR-2, `EI-1|EI-2`); else filler; else message-scoped |
//! | DiagnosticReport | filler order number (OBR-3 / ORC-3); else placer; else message-scoped |
//! | Observation | order key (filler, else placer, else message) + OBX-3.1 + OBX-3.3 + OBX-4 + OBX-1 |
//! | Specimen | SPM-2 (filler, else placer id); else order key + SPM-1 |
//! | Practitioner | XCN-1 + XCN-9 authority; else the rendered name |
//! | Organization | XON-10 / id + authority; else the name |
//! | Location | the PL components joined |
//! | RelatedPerson | Patient key + NK1-2 name + NK1-3 relationship |
//! | AllergyIntolerance | Patient key + AL1-3 code (+ system) |
//! | Condition | DG1-20 identifier; else Patient key + Encounter key + DG1-3 code |
//! | Procedure | PR1-19 identifier; else Patient key + PR1-3 code + PR1-5 time |
//! | Coverage | Patient key + IN1-3 plan id + IN1-2 plan + IN1-36 policy number |
//! | DocumentReference | TXA-12 unique document number; else Patient key + TXA-4; an OBX of type ED: its Observation key |
//! | Appointment | SCH-2 filler appointment id; else SCH-1 placer; else message-scoped |
//! | Immunization | ORC-3 filler order; else Patient key + RXA-5 code + RXA-3 time |
//! | MedicationRequest | ORC-2 placer order; else ORC-3; else Patient key + RXE-2 + ORC-9 |
//!
//! "Message-scoped" keys are the Bundle key plus the segment's position: stable across resends of
//! the same message, but not across messages — used only when the message carries no business
//! identifier at all.

use sha2::{Digest, Sha256};

/// The UUID for `resource_type` with business `key` under the site `namespace`.
pub fn uuid(namespace: &str, resource_type: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update([0x1f]);
    h.update(resource_type.as_bytes());
    h.update([0x1f]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    for (dst, src) in b.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Eight hex digits (32-bit FNV-1a) of `parts`, each followed by U+001F:
/// short, so that the keys built on it stay within one SHA-256 block.
pub fn short_digest(parts: &[&str]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for &b in p.as_bytes().iter().chain(&[0x1f]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

/// SHA-256 of arbitrary bytes as hex (the Bundle key of a message without MSH-10).
pub fn digest_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for byte in d.iter() {
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_salted() {
        let a = uuid("", "Patient", "123|MRN");
        assert_eq!(a, uuid("", "Patient", "123|MRN"));
        assert_ne!(a, uuid("site-b", "Patient", "123|MRN"));
        assert_ne!(a, uuid("", "RelatedPerson", "123|MRN"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'8');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }
}
