//! Byte scanning primitives used by the parser: a word-at-a-time search for line breaks and
//! lazy splitting of a slice on one delimiter. Plain safe slices, no allocation.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline]
fn has_byte(word: u64, byte: u8) -> bool {
    let x = word ^ (LO * u64::from(byte));
    (x.wrapping_sub(LO) & !x & HI) != 0
}

/// Position of the first CR or LF in `hay`.
#[inline]
pub fn find_line_break(hay: &[u8]) -> Option<usize> {
    let mut offset = 0;
    let mut chunks = hay.chunks_exact(8);
    for chunk in chunks.by_ref() {
        if let Ok(arr) = <[u8; 8]>::try_from(chunk) {
            let w = u64::from_le_bytes(arr);
            if has_byte(w, b'\r') || has_byte(w, b'\n') {
                return chunk
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .map(|p| p + offset);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|p| p + offset)
}

/// The `n`th (0-based) piece of `s` split on `sep`.
#[inline]
pub fn nth_piece(s: &[u8], sep: u8, n: usize) -> Option<&[u8]> {
    s.split(move |&b| b == sep).nth(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks() {
        assert_eq!(find_line_break(b""), None);
        assert_eq!(find_line_break(b"abc"), None);
        assert_eq!(find_line_break(b"abc\r"), Some(3));
        assert_eq!(find_line_break(b"abcdefghijklmnop\nq"), Some(16));
        assert_eq!(find_line_break(b"abcdefgh\rijklmnop\nq"), Some(8));
        for n in 0..40 {
            let mut v = vec![b'x'; n];
            v.push(b'\n');
            v.extend_from_slice(b"\r\r");
            assert_eq!(find_line_break(&v), Some(n));
            // high bytes must not produce false positives
            let w = vec![0x8d_u8; n];
            assert_eq!(find_line_break(&w), None);
        }
    }

    #[test]
    fn pieces() {
        assert_eq!(nth_piece(b"a|b||c", b'|', 0), Some(&b"a"[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 2), Some(&b""[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 3), Some(&b"c"[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 4), None);
    }
}
