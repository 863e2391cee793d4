//! Which acknowledgment a sender gets: original mode (AA/AE/AR) unless the
//! message carries MSH-15 (accept acknowledgment type), which asks for
//! enhanced mode — a commit ACK (CA/CE/CR) sent according to MSH-15:
//! `AL` always, `NE` never, `ER` only on error/reject, `SU` only on success.
//! An unknown MSH-15 value is treated as `AL`, so that a sender is never
//! left without an answer it may expect. MSH-16 (application ACKs) is not
//! ours to give: medbus is the transport, not the receiving application.

use crate::events::Outcome;
use medbus_config::AckPolicy;
use medbus_hl7::ack::AckCode;
use medbus_hl7::Message;

/// When an enhanced-mode commit ACK is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `AL`
    Always,
    /// `NE`
    Never,
    /// `ER`
    ErrorOnly,
    /// `SU`
    SuccessOnly,
}

/// The acknowledgment mode a message asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// No MSH-15: AA / AE / AR, always sent.
    Original,
    /// MSH-15 present: CA / CE / CR, sent per [`When`].
    Enhanced(When),
}

impl AckMode {
    /// The mode of `msg` under the listener's policy (original when there
    /// is no message to read).
    pub fn of(msg: Option<&Message<'_>>, policy: AckPolicy) -> AckMode {
        if policy == AckPolicy::Original {
            return AckMode::Original;
        }
        let accept = msg.and_then(|m| {
            m.header()
                .accept_ack_type
                .map(|v| v.trim().to_ascii_uppercase())
        });
        match accept.as_deref() {
            None | Some("") => AckMode::Original,
            Some("NE") => AckMode::Enhanced(When::Never),
            Some("ER") => AckMode::Enhanced(When::ErrorOnly),
            Some("SU") => AckMode::Enhanced(When::SuccessOnly),
            Some(_) => AckMode::Enhanced(When::Always),
        }
    }

    /// The MSA-1 code for an outcome.
    pub fn code(self, outcome: Outcome) -> AckCode {
        let enhanced = matches!(self, AckMode::Enhanced(_));
        match (outcome, enhanced) {
            (Outcome::Stored | Outcome::Duplicate, false) => AckCode::AA,
            (Outcome::Stored | Outcome::Duplicate, true) => AckCode::CA,
            (Outcome::Failed, false) => AckCode::AE,
            (Outcome::Failed, true) => AckCode::CE,
            (Outcome::Rejected, false) => AckCode::AR,
            (Outcome::Rejected, true) => AckCode::CR,
        }
    }

    /// Whether an ACK is sent for an outcome.
    pub fn sends(self, outcome: Outcome) -> bool {
        let success = matches!(outcome, Outcome::Stored | Outcome::Duplicate);
        match self {
            AckMode::Original | AckMode::Enhanced(When::Always) => true,
            AckMode::Enhanced(When::Never) => false,
            AckMode::Enhanced(When::ErrorOnly) => !success,
            AckMode::Enhanced(When::SuccessOnly) => success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(msh15: &str) -> AckMode {
        let text = format!("MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5|||{msh15}\r");
        let m = Message::parse(text.as_bytes()).expect("parse");
        AckMode::of(Some(&m), AckPolicy::Auto)
    }

    #[test]
    fn modes_and_codes() {
        assert_eq!(mode(""), AckMode::Original);
        assert_eq!(mode("AL"), AckMode::Enhanced(When::Always));
        assert_eq!(mode("XX"), AckMode::Enhanced(When::Always));
        assert_eq!(AckMode::Original.code(Outcome::Stored), AckCode::AA);
        assert_eq!(mode("AL").code(Outcome::Duplicate), AckCode::CA);
        assert_eq!(mode("AL").code(Outcome::Failed), AckCode::CE);
        assert_eq!(mode("AL").code(Outcome::Rejected), AckCode::CR);
        assert!(!mode("NE").sends(Outcome::Stored));
        assert!(!mode("NE").sends(Outcome::Rejected));
        assert!(mode("ER").sends(Outcome::Rejected));
        assert!(!mode("ER").sends(Outcome::Stored));
        assert!(mode("SU").sends(Outcome::Stored));
        assert!(!mode("SU").sends(Outcome::Failed));
        assert!(AckMode::Original.sends(Outcome::Failed));
        let text = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5|||NE\r";
        let m = Message::parse(text).expect("parse");
        assert_eq!(
            AckMode::of(Some(&m), AckPolicy::Original),
            AckMode::Original
        );
    }
}
