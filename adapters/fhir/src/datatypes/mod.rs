//! HL7 v2 datatypes → FHIR datatypes, one file per datatype family.
//!
//! A v2 datatype can sit at two depths: as a field repetition (its parts are components) or
//! inside a component (its parts are subcomponents, e.g. the SAD inside XAD-1). [`Node`] hides
//! that difference so every mapping is written once. Values are trimmed, and the HL7 explicit
//! null `""` counts as empty.
//!
//! - [`time`]: TS/DTM/DT → FHIR `date`, `dateTime`, `instant` (precision and offset kept).
//! - [`numeric`]: NM/SN/CQ → `decimal`, `Quantity`, `Range`, `Ratio`.
//! - [`coded`]: CWE/CE/CNE/CF/ID/IS → `CodeableConcept`/`Coding`, coding-system names → URIs.
//! - [`identifier`]: CX/EI/HD → `Identifier`, assigning authorities → system URIs.
//! - [`names`]: XPN/XCN → `HumanName` (and XCN → Practitioner keys).
//! - [`address`]: XAD → `Address`.
//! - [`telecom`]: XTN → `ContactPoint`.
//! - [`encapsulated`]: ED and text (FT/TX) → `Attachment` data and plain strings.

pub mod address;
pub mod coded;
pub mod encapsulated;
pub mod identifier;
pub mod names;
pub mod numeric;
pub mod telecom;
pub mod time;

use std::borrow::Cow;

use medbus_hl7::{Component, Field, LocatedRepetition, Repetition, Segment, Subcomponent};

/// One v2 value at any depth, seen as "something with numbered parts".
#[derive(Debug, Clone, Copy, Default)]
pub enum Node<'a> {
    /// A field repetition: parts are components, located once (mappings read many).
    Rep(LocatedRepetition<'a>),
    /// A component: parts are subcomponents. The flag is `false` when the component is known
    /// to hold no subcomponent separator (its only part is itself).
    Comp(Component<'a>, bool),
    /// A subcomponent: its only part is itself.
    Sub(Subcomponent<'a>),
    /// Absent.
    #[default]
    Empty,
}

fn clean<'a>(c: Cow<'a, str>) -> Option<Cow<'a, str>> {
    let t = c.trim();
    if t.is_empty() || t == "\"\"" {
        return None;
    }
    if t.len() == c.len() {
        return Some(c);
    }
    Some(match c {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => Cow::Owned(o.trim().to_string()),
    })
}

impl<'a> Node<'a> {
    /// A field repetition.
    pub fn rep(r: Repetition<'a>) -> Node<'a> {
        Node::Rep(LocatedRepetition::new(r))
    }

    /// Part `j` (1-based): component of a repetition, subcomponent of a component.
    pub fn part(&self, j: usize) -> Node<'a> {
        match self {
            Node::Rep(r) => r
                .component(j)
                .map_or(Node::Empty, |c| Node::Comp(c, r.may_have_subcomponents(j))),
            Node::Comp(_, false) if j == 1 => *self,
            Node::Comp(_, false) => Node::Empty,
            Node::Comp(c, true) => c.subcomponent(j).map_or(Node::Empty, Node::Sub),
            Node::Sub(_) if j == 1 => *self,
            _ => Node::Empty,
        }
    }

    /// Decoded, trimmed text of the whole node (`None` when empty or `""`).
    pub fn text(&self) -> Option<Cow<'a, str>> {
        let decoded = match self {
            Node::Rep(r) if !r.repetition().is_empty() => r.repetition().decoded(),
            Node::Comp(c, _) if !c.is_empty() => c.decoded(),
            Node::Sub(s) if !s.is_empty() => s.decoded(),
            _ => return None,
        };
        clean(decoded)
    }

    /// Text of the first part only (the "leaf" value when a composite appears where a
    /// primitive was expected, as happens across v2 versions).
    pub fn first(&self) -> Option<Cow<'a, str>> {
        match self {
            Node::Sub(_) | Node::Empty | Node::Comp(_, false) => self.text(),
            _ => self.part(1).first(),
        }
    }

    /// Text of part `j`'s first leaf.
    pub fn get(&self, j: usize) -> Option<Cow<'a, str>> {
        self.part(j).first()
    }

    /// Owned text of part `j`'s first leaf.
    pub fn s(&self, j: usize) -> Option<String> {
        self.get(j).map(Cow::into_owned)
    }

    /// The node's bytes as written (separators and escapes included; empty when absent).
    pub fn raw(&self) -> &'a [u8] {
        match self {
            Node::Rep(r) => r.repetition().raw(),
            Node::Comp(c, _) => c.raw(),
            Node::Sub(s) => s.raw(),
            Node::Empty => &[],
        }
    }

    /// 0 for a repetition, 1 for a component, 2 for a subcomponent (or absent): how deep the
    /// node sits, so which separator splits its bytes into parts.
    pub fn depth(&self) -> u8 {
        match self {
            Node::Rep(_) => 0,
            Node::Comp(..) => 1,
            Node::Sub(_) | Node::Empty => 2,
        }
    }

    /// Whether the node holds no text at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Node::Rep(r) => r
                .repetition()
                .raw()
                .iter()
                .all(|b| b.is_ascii_whitespace() || *b == b'^'),
            Node::Comp(c, _) => c.is_empty(),
            Node::Sub(s) => s.is_empty(),
            Node::Empty => true,
        }
    }
}

/// A segment whose fields were located once (by [`SegIndex`]), so that reading field `n` is
/// an index instead of a scan from the start of the segment; mappings read a segment's fields
/// many times. Segments no mapping reads are not located; their fields are found on demand.
#[derive(Debug, Clone, Copy)]
pub struct Seg<'a> {
    segment: Segment<'a>,
    /// The segment's [`Segment::locate_fields`] offsets; `None` when it was not located.
    seps: Option<&'a [u32]>,
}

impl<'a> Seg<'a> {
    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'a str {
        self.segment.id()
    }

    /// The underlying segment.
    pub fn segment(&self) -> Segment<'a> {
        self.segment
    }
}

/// Segments some mapping reads fields of; the others (GT1, IN2, ROL, Z-segments …) are only
/// named in the notes, so locating their fields would be wasted.
const READ: &[&str] = &[
    "MSH", "EVN", "SFT", "PID", "PD1", "MRG", "PV1", "PV2", "NK1", "AL1", "DG1", "PR1", "IN1",
    "ORC", "OBR", "OBX", "NTE", "SPM", "TXA", "SCH", "TQ1", "AIS", "AIG", "AIL", "AIP", "RXA",
    "RXE", "RXR",
];

/// The fields of every segment of a message, located in one pass.
#[derive(Debug, Default)]
pub struct SegIndex<'a> {
    /// Every located segment's separator offsets, one after another.
    seps: Vec<u32>,
    /// Per segment: the segment and the range of its offsets in `seps` (`None`: not located).
    segments: Vec<(Segment<'a>, Option<(usize, usize)>)>,
}

impl<'a> SegIndex<'a> {
    /// Locate the fields of `segments` (those a mapping reads).
    pub fn new(segments: impl Iterator<Item = Segment<'a>>) -> SegIndex<'a> {
        let mut index = SegIndex {
            seps: Vec::with_capacity(512),
            segments: Vec::with_capacity(32),
        };
        for seg in segments {
            let range = READ.contains(&seg.id()).then(|| {
                let start = index.seps.len();
                seg.locate_fields(&mut index.seps);
                (start, index.seps.len())
            });
            index.segments.push((seg, range));
        }
        index
    }

    /// The indexed segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = Seg<'_>> + '_ {
        self.segments.iter().map(|&(segment, range)| Seg {
            segment,
            seps: range.map(|(start, end)| self.seps.get(start..end).unwrap_or_default()),
        })
    }

    /// The first segment with id `id`.
    pub fn first(&self, id: &str) -> Option<Seg<'_>> {
        self.segments().find(|s| s.id() == id)
    }
}

/// Field access on a segment with the conventions above.
pub trait SegmentExt<'a> {
    /// Field `n` (HL7 numbering).
    fn field_at(&self, n: usize) -> Option<Field<'a>>;

    /// First repetition of field `n` (HL7 numbering).
    fn node(&self, n: usize) -> Node<'a> {
        self.field_at(n)
            .and_then(|f: Field<'a>| f.repetition(1))
            .map_or(Node::Empty, Node::rep)
    }

    /// Non-empty repetitions of field `n`.
    fn reps(&self, n: usize) -> Vec<Node<'a>> {
        match self.field_at(n) {
            Some(f) if !f.is_empty() => f
                .repetitions()
                .map(Node::rep)
                .filter(|r| !r.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// First leaf text of field `n`. Only the start of the field is scanned: locating all
    /// its components ([`Node::Rep`]) would cost more than the one read needs.
    fn text(&self, n: usize) -> Option<Cow<'a, str>> {
        self.field_at(n)
            .and_then(|f: Field<'a>| f.component(1))
            .map_or(Node::Empty, |c| Node::Comp(c, true))
            .first()
    }

    /// Owned first leaf text of field `n`.
    fn s(&self, n: usize) -> Option<String> {
        self.text(n).map(Cow::into_owned)
    }
}

impl<'a> SegmentExt<'a> for Segment<'a> {
    fn field_at(&self, n: usize) -> Option<Field<'a>> {
        self.field(n)
    }
}

impl<'a> SegmentExt<'a> for Seg<'a> {
    fn field_at(&self, n: usize) -> Option<Field<'a>> {
        match self.seps {
            Some(seps) => self.segment.located_field(seps, n),
            None => self.segment.field(n),
        }
    }
}
