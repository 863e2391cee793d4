//! ED and formatted text (FT/TX) → FHIR `Attachment` data and plain strings.
//!
//! FT formatting commands (`\.br\`, `\.sp\`, `\H\`, `\N\` …) are kept verbatim by the HL7 parser;
//! here `\.br\` becomes a line break and the other commands are dropped. Attachment data must be
//! valid base64: Base64 payloads are checked (whitespace removed), `A` (ASCII) and `Hex`
//! payloads are encoded, anything else is left out.

use super::Node;
use crate::resources::Attachment;

/// Plain text from FT/TX: `\.br\` → newline, other formatting commands removed.
pub fn plain_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        match after.find('\\') {
            Some(j) => {
                let cmd = after.get(..j).unwrap_or_default();
                let known = cmd.starts_with('.') || matches!(cmd, "H" | "N");
                if cmd == ".br" {
                    out.push('\n');
                } else if !known {
                    out.push('\\');
                    out.push_str(cmd);
                    out.push('\\');
                }
                rest = after.get(j + 1..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = |shift: u32| {
            char::from(
                ALPHABET
                    .get(((n >> shift) & 63) as usize)
                    .copied()
                    .unwrap_or(b'A'),
            )
        };
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

/// Whether `s` is well-formed padded base64 (what FHIR's base64Binary accepts).
pub fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        && !s.trim_end_matches('=').contains('=')
        && s.len() - s.trim_end_matches('=').len() <= 2
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let h = (char::from(*p.first()?)).to_digit(16)?;
            let l = (char::from(*p.get(1)?)).to_digit(16)?;
            u8::try_from(h * 16 + l).ok()
        })
        .collect()
}

/// The MIME type for an ED's type of data / subtype (ED-2, ED-3).
pub fn mime(kind: Option<&str>, subtype: Option<&str>) -> Option<String> {
    let k = kind?.to_ascii_lowercase();
    let major = match k.as_str() {
        "ap" | "application" => "application",
        "au" | "audio" => "audio",
        "im" | "image" => "image",
        "tx" | "text" => "text",
        "mu" | "multipart" => "multipart",
        "vi" | "video" => "video",
        _ => return None,
    };
    let sub = subtype
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
        })
        .unwrap_or_else(|| {
            if major == "text" {
                "plain"
            } else {
                "octet-stream"
            }
            .to_string()
        });
    Some(format!("{major}/{sub}"))
}

/// ED (source application, type, subtype, encoding, data) → Attachment.
pub fn ed(node: Node<'_>) -> Option<Attachment> {
    let content_type = mime(node.get(2).as_deref(), node.get(3).as_deref());
    let encoding = node.get(4).map(|e| e.to_ascii_uppercase());
    let raw = node.part(5).text();
    let data = raw.and_then(|d| match encoding.as_deref() {
        Some("BASE64") => {
            let compact: String = d.chars().filter(|c| !c.is_whitespace()).collect();
            is_base64(&compact).then_some(compact)
        }
        Some("HEX") => hex_decode(&d).map(|b| base64(&b)),
        Some("A") | None => Some(base64(d.as_bytes())),
        _ => None,
    });
    let a = Attachment {
        content_type,
        data,
        ..Attachment::default()
    };
    if a.content_type.is_none() && a.data.is_none() {
        return None;
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_numbers() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert!(is_base64("Zm8="));
        assert!(!is_base64("<Base64 encoded>"));
        assert!(!is_base64("Zm=8"));
    }

    #[test]
    fn formatted_text() {
        assert_eq!(plain_text(r"a\.br\b\H\c\N\"), "a\nbc");
        assert_eq!(plain_text(r"x\y"), r"x\y");
    }
}
