//! Splitting a byte stream of concatenated, unframed messages (a batch file without FHS/BHS, or
//! a file holding several messages) at each segment that starts with `MSH` plus a delimiter.

use crate::scan::find_line_break;

fn starts_message(line: &[u8]) -> bool {
    let line = line.strip_prefix(crate::message::BOM).unwrap_or(line);
    match line {
        [b'M', b'S', b'H', d, ..] => d.is_ascii_graphic() && !d.is_ascii_alphanumeric(),
        _ => false,
    }
}

/// Split `bytes` into messages. Each piece runs from one `MSH` line to the next (terminators
/// and blank lines stay with the preceding message; anything before the first `MSH` stays with
/// the first). Input without any `MSH` line is returned as one piece; empty input as none.
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        if starts_message(rest) {
            starts.push(pos);
        }
        match find_line_break(rest) {
            Some(i) => pos += i + 1,
            None => break,
        }
    }
    if bytes.is_empty() {
        return Vec::new();
    }
    if starts.first() != Some(&0) {
        // leading bytes belong to the first message
        if starts.is_empty() {
            return vec![bytes];
        }
        if let Some(first) = starts.first_mut() {
            *first = 0;
        }
    }
    starts
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| {
            let e = starts.get(i + 1).copied().unwrap_or(bytes.len());
            bytes.get(s..e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let s = b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\nEVN\n\nMSH*^~\\&*C";
        let parts = split_messages(s);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1\r\n");
        assert_eq!(parts[1], b"MSH|^~\\&|B\nEVN\n\n");
        assert_eq!(parts[2], b"MSH*^~\\&*C");
        assert!(split_messages(b"").is_empty());
        assert_eq!(split_messages(b"PID|1"), vec![&b"PID|1"[..]]);
        assert_eq!(
            split_messages(b"\nMSH|x\rMSHA"),
            vec![&b"\nMSH|x\rMSHA"[..]]
        );
    }
}
