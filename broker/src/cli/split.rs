//! Cutting a file into HL7 messages: MLLP-framed files are unframed, plain
//! files are split at each `MSH` segment, and LF or CRLF segment separators
//! become the standard CR. A UTF-8 BOM at the start of a message is dropped.

use medbus_mllp::{Decoded, MllpCodec};
use tokio_util::codec::Decoder;

/// The messages in `bytes`, each with CR segment separators.
pub fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.contains(&medbus_mllp::START_BLOCK) {
        let mut codec = MllpCodec::new(usize::MAX);
        let mut buf = bytes::BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(d)) = codec.decode_eof(&mut buf) {
            let (Decoded::Frame(f) | Decoded::Truncated(f) | Decoded::Oversized { head: f, .. }) =
                d;
            out.push(normalise(&f));
            if buf.is_empty() {
                break;
            }
        }
        return out;
    }
    let text = normalise(bytes);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in text.split(|&b| b == b'\r') {
        if seg.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let seg = strip_bom(seg);
        if seg.starts_with(b"MSH") || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(cur) = out.last_mut() {
            cur.extend_from_slice(seg);
            cur.push(b'\r');
        }
    }
    out
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// LF and CRLF to CR, BOM dropped.
pub fn normalise(bytes: &[u8]) -> Vec<u8> {
    let bytes = strip_bom(bytes);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 1;
            }
            b'\n' => out.push(b'\r'),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_files() {
        let f = b"\xEF\xBB\xBFMSH|^~\\&|A\nPID|1\n\nMSH|^~\\&|B\r\nPID|2";
        assert_eq!(
            split_messages(f),
            vec![
                b"MSH|^~\\&|A\rPID|1\r".to_vec(),
                b"MSH|^~\\&|B\rPID|2\r".to_vec()
            ]
        );
    }

    #[test]
    fn unframes_mllp_files() {
        let f = b"\x0bMSH|A\rPID|1\r\x1c\x0d\n\x0bMSH|B\x1c\x0d";
        assert_eq!(
            split_messages(f),
            vec![b"MSH|A\rPID|1\r".to_vec(), b"MSH|B".to_vec()]
        );
    }
}
