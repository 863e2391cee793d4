//! Byte scanning primitives used by the parser: a word-at-a-time search for line breaks and
//! lazy splitting of a slice on one delimiter (one piece by index, or all pieces in order).
//! Plain safe slices, no allocation.

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

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// High bit set in exactly the bytes of `word` equal to `byte` (no false positives, unlike
/// [`has_byte`], so the bits can be counted).
#[inline]
fn byte_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (LO * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Position of the `k`th (1-based) `sep` in `s`, eight bytes at a time.
#[inline]
fn find_nth(s: &[u8], sep: u8, mut k: usize) -> Option<usize> {
    if k == 0 {
        return None;
    }
    let mut offset = 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in chunks.by_ref() {
        if let Ok(arr) = <[u8; 8]>::try_from(chunk) {
            let mut m = byte_mask(u64::from_le_bytes(arr), sep);
            let count = m.count_ones() as usize;
            if count >= k {
                // Drop the first k-1 matches; the lowest remaining bit is the kth.
                for _ in 1..k {
                    m &= m - 1;
                }
                return Some(offset + (m.trailing_zeros() / 8) as usize);
            }
            k -= count;
        }
        offset += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == sep {
            k -= 1;
            if k == 0 {
                return Some(offset + i);
            }
        }
    }
    None
}

/// Position of the first `sep` in `s`, eight bytes at a time.
#[inline]
fn find_byte(s: &[u8], sep: u8) -> Option<usize> {
    let mut offset = 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in chunks.by_ref() {
        if let Ok(arr) = <[u8; 8]>::try_from(chunk) {
            let m = byte_mask(u64::from_le_bytes(arr), sep);
            if m != 0 {
                return Some(offset + (m.trailing_zeros() / 8) as usize);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == sep)
        .map(|p| p + offset)
}

/// The pieces of a slice split on one byte, in order: the same pieces as
/// `s.split(|&b| b == sep)`, found eight bytes at a time. Without a separator the slice is one
/// piece.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: Option<&'a [u8]>,
    sep: Option<u8>,
}

/// The pieces of `s` split on `sep` (`None`: `s` whole, as one piece).
#[inline]
pub fn pieces(s: &[u8], sep: Option<u8>) -> Pieces<'_> {
    Pieces { rest: Some(s), sep }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match self.sep.and_then(|sep| find_byte(rest, sep)) {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Append the offset of every `sep` in `s` to `out`, eight bytes at a time.
#[inline]
pub fn push_offsets(s: &[u8], sep: u8, out: &mut Vec<u32>) {
    let mut offset = 0u32;
    let mut chunks = s.chunks_exact(8);
    for chunk in chunks.by_ref() {
        if let Ok(arr) = <[u8; 8]>::try_from(chunk) {
            let mut m = byte_mask(u64::from_le_bytes(arr), sep);
            while m != 0 {
                out.push(offset + m.trailing_zeros() / 8);
                m &= m - 1;
            }
        }
        offset += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == sep {
            out.push(offset + i as u32);
        }
    }
}

/// The `n`th (0-based) piece of `s` split on `sep`.
#[inline]
pub fn nth_piece(s: &[u8], sep: u8, n: usize) -> Option<&[u8]> {
    let start = if n == 0 { 0 } else { find_nth(s, sep, n)? + 1 };
    let rest = s.get(start..)?;
    match find_byte(rest, sep) {
        Some(len) => rest.get(..len),
        None => Some(rest),
    }
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
    fn pieces_by_index() {
        assert_eq!(nth_piece(b"a|b||c", b'|', 0), Some(&b"a"[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 2), Some(&b""[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 3), Some(&b"c"[..]));
        assert_eq!(nth_piece(b"a|b||c", b'|', 4), None);
        assert_eq!(nth_piece(b"", b'|', 0), Some(&b""[..]));
        assert_eq!(nth_piece(b"", b'|', 1), None);
        assert_eq!(nth_piece(b"|", b'|', 1), Some(&b""[..]));
        assert!(pieces(b"", Some(b'|')).eq([&b""[..]]));
        assert!(pieces(b"a|b", None).eq([&b"a|b"[..]]));
        assert!(pieces(b"a||", Some(b'|')).eq([&b"a"[..], b"", b""]));
        // agree with `split` across word boundaries, repeated separators and high bytes
        let samples: [&[u8]; 5] = [
            b"MSH|^~\\&|app|fac|||20240101||ADT^A01|1|P|2.5|||||",
            b"||||||||||||||||||||||||",
            b"\x80|\xff\x7c|\x01|\x00||\x7d|\x7b\x7c\x7c\xfc|end",
            b"abcdefghijklmnopqrstuvwxyz",
            b"x",
        ];
        for s in samples {
            for sep in [b'|', b'^', 0x7c, 0x00, 0xff] {
                for n in 0..40 {
                    assert_eq!(nth_piece(s, sep, n), s.split(|&b| b == sep).nth(n), "{n}");
                }
                assert!(pieces(s, Some(sep)).eq(s.split(|&b| b == sep)));
                let mut offsets = Vec::new();
                push_offsets(s, sep, &mut offsets);
                let expected: Vec<u32> = (0..s.len() as u32)
                    .filter(|&i| s[i as usize] == sep)
                    .collect();
                assert_eq!(offsets, expected);
                for start in 0..s.len() {
                    let tail = s.get(start..).unwrap();
                    assert!(pieces(tail, Some(sep)).eq(tail.split(|&b| b == sep)));
                }
            }
        }
    }
}
