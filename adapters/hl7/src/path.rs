//! Textual addresses of values inside a message, e.g. `PID-3`, `PID-3[2].1`, `OBX(2)-5.1.2`.
//!
//! Grammar: `SEG[(occurrence)]-field[[repetition]][.component[.subcomponent]]`, where `SEG` is
//! `[A-Z][A-Z0-9]{2}` and every number is a 1-based decimal. Occurrence and repetition default to
//! 1; without a component the whole repetition is meant, without a subcomponent the whole
//! component.

use std::fmt;
use std::str::FromStr;

/// A parsed path. Numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// Which occurrence of the segment (`OBX(2)` → 2).
    pub occurrence: usize,
    /// Field number (HL7 numbering; MSH-1 is the field separator).
    pub field: usize,
    /// Field repetition.
    pub repetition: usize,
    /// Component, `None` for the whole repetition.
    pub component: Option<usize>,
    /// Subcomponent, `None` for the whole component.
    pub subcomponent: Option<usize>,
}

/// A path that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {path:?}: {reason}")]
pub struct PathError {
    /// The text that failed to parse.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Largest number accepted in a path.
const MAX_NUMBER: usize = 1_000_000;

impl Path {
    /// `SEG-field` with the defaults for everything else.
    pub fn new(segment: &str, field: usize) -> Result<Path, PathError> {
        format!("{segment}-{field}").parse()
    }

    /// The same path restricted to a component.
    pub fn with_component(mut self, component: usize) -> Path {
        self.component = Some(component.max(1));
        self
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if self.repetition != 1 {
            write!(f, "[{}]", self.repetition)?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
            if let Some(s) = self.subcomponent {
                write!(f, ".{s}")?;
            }
        }
        Ok(())
    }
}

/// Is `id` a syntactically valid segment id (`[A-Z][A-Z0-9]{2}`)?
pub fn is_segment_id(id: &[u8]) -> bool {
    matches!(id, [a, b, c] if a.is_ascii_uppercase()
        && (b.is_ascii_uppercase() || b.is_ascii_digit())
        && (c.is_ascii_uppercase() || c.is_ascii_digit()))
}

struct Cursor<'s> {
    text: &'s str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self, what: &str) -> Result<usize, String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.text.get(start..self.pos).unwrap_or_default();
        if digits.is_empty() {
            return Err(format!("expected a {what} number at offset {start}"));
        }
        match digits.parse::<usize>() {
            Ok(0) => Err(format!("{what} numbers start at 1")),
            Ok(n) if n <= MAX_NUMBER => Ok(n),
            _ => Err(format!("{what} number {digits} is too large")),
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at offset {}",
                char::from(b),
                self.pos
            ))
        }
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        parse(s).map_err(|reason| PathError {
            path: s.to_string(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<Path, String> {
    let id = s.get(..3).unwrap_or(s);
    if !is_segment_id(id.as_bytes()) {
        return Err(format!(
            "segment id {id:?} must be three characters [A-Z][A-Z0-9]{{2}}"
        ));
    }
    let mut c = Cursor { text: s, pos: 3 };
    let occurrence = if c.eat(b'(') {
        let n = c.number("segment occurrence")?;
        c.expect(b')')?;
        n
    } else {
        1
    };
    c.expect(b'-')?;
    let field = c.number("field")?;
    let repetition = if c.eat(b'[') {
        let n = c.number("repetition")?;
        c.expect(b']')?;
        n
    } else {
        1
    };
    let mut component = None;
    let mut subcomponent = None;
    if c.eat(b'.') {
        component = Some(c.number("component")?);
        if c.eat(b'.') {
            subcomponent = Some(c.number("subcomponent")?);
        }
    }
    if c.pos != s.len() {
        return Err(format!("unexpected text at offset {}", c.pos));
    }
    Ok(Path {
        segment: id.to_string(),
        occurrence,
        field,
        repetition,
        component,
        subcomponent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn forms() {
        let x = p("PID-3");
        assert_eq!(
            (x.segment.as_str(), x.occurrence, x.field, x.repetition),
            ("PID", 1, 3, 1)
        );
        assert_eq!((x.component, x.subcomponent), (None, None));
        let x = p("PID-3[2]");
        assert_eq!(x.repetition, 2);
        let x = p("PID-3[2].1");
        assert_eq!((x.repetition, x.component), (2, Some(1)));
        let x = p("OBX-5.1.2");
        assert_eq!((x.component, x.subcomponent), (Some(1), Some(2)));
        let x = p("OBX(2)-5");
        assert_eq!((x.occurrence, x.field), (2, 5));
        let x = p("Z01-1");
        assert_eq!(x.segment, "Z01");
    }

    #[test]
    fn display_round_trips() {
        for s in ["PID-3", "PID-3[2]", "PID-3[2].1", "OBX-5.1.2", "OBX(2)-5"] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "PI",
            "pid-3",
            "1ID-3",
            "PID",
            "PID-",
            "PID-0",
            "PID-3[0]",
            "PID-3.0",
            "PID-3.1.0",
            "PID-3[",
            "PID-3[2",
            "PID(0)-3",
            "PID(2-3",
            "PID-3.",
            "PID-3.1.",
            "PID-3.1.2.3",
            "PID-3x",
            "PID-99999999999999999999",
            "PIDX-3",
            "PÍD-3",
            "PID-+3",
            "P",
        ] {
            let e = s.parse::<Path>().unwrap_err();
            assert!(!e.reason.is_empty(), "{s}");
            assert!(e.to_string().contains("invalid path"));
        }
    }
}
