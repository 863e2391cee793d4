//! What every ACK we send needs besides the original message: a fresh
//! control id (MSH-10) and the current time as an HL7 timestamp (MSH-7).
//!
//! Control ids are a process-wide counter seeded with the start time in
//! microseconds, so they are unique within a run and across restarts (unless
//! a run sends more than a million ACKs a second), and stay within HL7's
//! 20-character limit.

use medbus_hl7::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT_ID: OnceLock<AtomicU64> = OnceLock::new();

/// A fresh, unique control id for an ACK's MSH-10.
pub fn next_control_id() -> String {
    let counter = NEXT_ID.get_or_init(|| {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        AtomicU64::new(micros)
    });
    format!("MB{}", counter.fetch_add(1, Ordering::Relaxed))
}

/// An ACK as read by a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReply {
    /// MSA-1.
    pub code: String,
    /// MSA-2: the control id of the message it answers.
    pub answers: String,
    /// The receiver's reason (ERR-8, ERR-3.2, MSA-3, ERR-1.4.2), if any.
    pub text: String,
}

/// Read an ACK frame; `None` when it is not an HL7 message with MSA-1.
pub fn read_ack(frame: &[u8]) -> Option<AckReply> {
    let m = Message::parse(frame).ok()?;
    let code = m.get("MSA-1").ok().flatten()?.to_string();
    let answers = m
        .get("MSA-2")
        .ok()
        .flatten()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let text = ["ERR-8", "ERR-3.2", "MSA-3", "ERR-1.4.2"]
        .iter()
        .find_map(|p| m.get(p).ok().flatten())
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some(AckReply {
        code,
        answers,
        text,
    })
}

/// The current UTC time as an HL7 DTM with milliseconds and offset:
/// `YYYYMMDDHHMMSS.sss+0000`.
pub fn hl7_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hl7_timestamp(d.as_secs(), d.subsec_millis())
}

/// Format Unix seconds + milliseconds as an HL7 UTC timestamp.
pub fn hl7_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}.{millis:03}+0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(hl7_timestamp(0, 0), "19700101000000.000+0000");
        // 2026-11-24 22:05:19 UTC
        assert_eq!(hl7_timestamp(1_795_557_919, 7), "20261124220519.007+0000");
        // A leap day.
        assert_eq!(hl7_timestamp(951_782_400, 0), "20000229000000.000+0000");
    }

    #[test]
    fn control_ids_are_unique_and_short() {
        let a = next_control_id();
        let b = next_control_id();
        assert_ne!(a, b);
        assert!(a.len() <= 20, "{a}");
    }
}
