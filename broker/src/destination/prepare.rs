//! Turning a stored record into the bytes a receiver gets: HL7 only, segment
//! separators normalised to CR (stored LF-separated files are common), a BOM
//! dropped, and the destination's field rewrites (`set = { "MSH-5" = … }`)
//! applied.

use crate::headers;
use crate::storage::Record;
use medbus_hl7::{Message, MessageBuf, Path};

/// A message ready to send.
pub struct Prepared {
    /// The bytes to frame.
    pub payload: Vec<u8>,
    /// Its MSH-10, which the ACK's MSA-2 must name.
    pub control_id: String,
}

/// Prepare `record`; `Err` says why it cannot be sent at all.
pub fn prepare(record: &Record, set: &[(Path, String)]) -> Result<Prepared, String> {
    if record.content_type != headers::CONTENT_TYPE_HL7 {
        return Err(format!(
            "a destination sends HL7 v2; this record is {}",
            record.content_type
        ));
    }
    let mut payload = crate::cli::split::normalise(&record.payload);
    if !set.is_empty() {
        let mut buf =
            MessageBuf::parse(&payload).map_err(|e| format!("cannot rewrite fields: {e}"))?;
        for (path, value) in set {
            buf.set(path, value);
        }
        payload = buf.encode();
    }
    let msg = Message::parse(&payload).map_err(|e| format!("not a valid HL7 v2 message: {e}"))?;
    let control_id = msg
        .header()
        .control_id
        .map(|c| c.into_owned())
        .unwrap_or_default();
    Ok(Prepared {
        payload,
        control_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload: &[u8], ct: &str) -> Record {
        Record {
            timestamp_ms: 0,
            headers: vec![],
            content_type: ct.into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn normalises_and_rewrites() {
        let r = rec(
            b"\xEF\xBB\xBFMSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5\nPID|1\n",
            headers::CONTENT_TYPE_HL7,
        );
        let set = vec![("MSH-5".parse().expect("path"), "BILLING".to_string())];
        let p = prepare(&r, &set).expect("prepare");
        assert_eq!(
            p.payload,
            b"MSH|^~\\&|A|B|BILLING|D|1||ADT^A01|X1|P|2.5\rPID|1\r".to_vec()
        );
        assert_eq!(p.control_id, "X1");
        assert!(prepare(&rec(b"{}", headers::CONTENT_TYPE_FHIR), &[]).is_err());
        assert!(prepare(&rec(b"garbage", headers::CONTENT_TYPE_HL7), &[]).is_err());
    }
}
