//! A repetition whose components were located in one pass.
//!
//! Mappings read most components of a value one by one (an XCN's id, family name, given name,
//! …, authority). Through [`Repetition::component`] every read scans the repetition from its
//! start again, and reading a component's first subcomponent or decoding its text scans it once
//! more for a separator or an escape. Those short, data-dependent scans are where a converter
//! spends much of its time, mostly in mispredicted branches. [`LocatedRepetition`] walks the
//! bytes once, without branching on them, and records where each component ends, which
//! components hold a subcomponent separator, and whether any escape character occurs; a
//! component is then an index away and a plain one is decoded without another scan.

use crate::message::{Component, Repetition};

/// How many components are located (a power of two, so a slot index needs no bounds check);
/// a repetition with more is not located and every access scans, as without this type (no
/// HL7 datatype medbus maps has more than 23 components: XCN).
pub const LOCATED_COMPONENTS: usize = 32;

const SLOT: usize = LOCATED_COMPONENTS - 1;

/// A [`Repetition`] with its components located (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct LocatedRepetition<'a> {
    rep: Repetition<'a>,
    /// `ends[i]`: end offset of component `i + 1`, for `i < count`.
    ends: [u16; LOCATED_COMPONENTS],
    /// Components located; 0 when the repetition was not located (MSH-1/MSH-2, more than
    /// [`LOCATED_COMPONENTS`] components, or longer than `u16` offsets reach).
    count: u8,
    /// Bit `i`: component `i + 1` holds a subcomponent separator.
    with_subcomponents: u32,
    /// Some byte is the escape character.
    escaped: bool,
}

impl<'a> LocatedRepetition<'a> {
    /// Locate the components of `rep`.
    pub fn new(rep: Repetition<'a>) -> LocatedRepetition<'a> {
        let value = rep.0;
        let raw = value.raw;
        let mut located = LocatedRepetition {
            rep,
            ends: [0; LOCATED_COMPONENTS],
            count: 0,
            with_subcomponents: 0,
            escaped: true,
        };
        if value.is_atomic() || raw.len() > usize::from(u16::MAX) {
            return located;
        }
        let d = value.delims();
        let (comp, sub) = (d.component, d.subcomponent);
        // A byte that cannot occur in a value stands in for a missing escape character.
        let esc = d.escape.unwrap_or(d.field);
        let mut n = 0usize;
        let mut subs = 0u32;
        let mut escaped = false;
        let ends = &mut located.ends;
        for (i, &b) in raw.iter().enumerate() {
            // Every byte writes its offset into the current slot and a separator moves on to
            // the next, so each slot ends up holding its component's separator position.
            ends[n & SLOT] = i as u16;
            subs |= u32::from(b == sub) << (n & SLOT);
            escaped |= b == esc;
            n += usize::from(b == comp);
        }
        if n < LOCATED_COMPONENTS {
            // The last component ends where the repetition does.
            ends[n] = raw.len() as u16;
            located.count = (n + 1) as u8;
            located.with_subcomponents = subs;
            located.escaped = escaped;
        }
        located
    }

    /// The repetition itself.
    pub fn repetition(&self) -> Repetition<'a> {
        self.rep
    }

    /// Component `j` (1-based), as [`Repetition::component`] would return it.
    pub fn component(&self, j: usize) -> Option<Component<'a>> {
        let count = usize::from(self.count);
        if count == 0 {
            return self.rep.component(j);
        }
        if j == 0 || j > count {
            return None;
        }
        let end = usize::from(*self.ends.get(j - 1)?);
        let start = match j {
            1 => 0,
            _ => usize::from(*self.ends.get(j - 2)?) + 1,
        };
        let value = self.rep.0;
        Some(Component(
            value.part(value.raw.get(start..end)?, !self.escaped),
        ))
    }

    /// Whether component `j` (1-based) may hold subcomponents: `false` means its first
    /// subcomponent is the whole component.
    pub fn may_have_subcomponents(&self, j: usize) -> bool {
        if self.count == 0 || j == 0 || j > usize::from(self.count) {
            return true;
        }
        self.with_subcomponents & (1 << (j - 1)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use proptest::prelude::*;

    fn msg(pid3: &str) -> Vec<u8> {
        format!("MSH|^~\\&|a|b|c|d|20240101||ADT^A01|1|P|2.5\rPID|||{pid3}\r").into_bytes()
    }

    /// Every component of every repetition of PID-3, through both paths.
    fn agree(bytes: &[u8]) {
        let m = Message::parse(bytes).unwrap();
        let pid = m.segment("PID", 1).unwrap();
        let Some(field) = pid.field(3) else { return };
        for rep in field.repetitions() {
            let located = LocatedRepetition::new(rep);
            for j in 0..40 {
                let a = rep.component(j);
                let b = located.component(j);
                assert_eq!(a.map(|c| c.raw()), b.map(|c| c.raw()), "component {j}");
                assert_eq!(
                    a.map(|c| c.decoded()),
                    b.map(|c| c.decoded()),
                    "component {j}"
                );
                if let Some(c) = a {
                    if !located.may_have_subcomponents(j) {
                        assert_eq!(c.subcomponent(1).map(|s| s.raw()), Some(c.raw()));
                        assert!(c.subcomponent(2).is_none());
                    }
                }
            }
        }
    }

    #[test]
    fn agrees_with_scanning() {
        for pid3 in [
            "",
            "123",
            "123^^^HOSP&1.2.3&ISO^MR",
            "1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23^24^25^26^27",
            "1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23^24^25^26^27^28^29^30^31^32",
            "1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23^24^25^26^27^28^29^30^31^32^33&x",
            "1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23^24",
            "1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23",
            "a\\S\\b^c\\T\\d&e~x^y",
            "^^^^",
            "&&&^&",
        ] {
            agree(&msg(pid3));
        }
        // MSH-2 is atomic: never split.
        let bytes = msg("1");
        let m = Message::parse(&bytes).unwrap();
        let msh2 = m.msh().unwrap().field(2).unwrap().repetition(1).unwrap();
        let located = LocatedRepetition::new(msh2);
        assert_eq!(located.component(1).map(|c| c.raw()), Some(&b"^~\\&"[..]));
        assert!(located.component(2).is_none());
    }

    proptest! {
        #[test]
        fn agrees_on_any_field(pid3 in "[a-c^&~\\\\ ]{0,80}") {
            agree(&msg(&pid3));
        }
    }
}
