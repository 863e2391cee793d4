//! NM / SN / CQ → FHIR `decimal`, `Quantity`, `Range`, `Ratio`.
//!
//! A FHIR decimal keeps its written precision (`72.50` stays `72.50`); we only normalise what
//! JSON cannot carry: a leading `+`, leading zeros, a bare leading or trailing point.

use super::coded;
use super::Node;
use crate::resources::{Decimal, Quantity, Range, Ratio};

/// A v2 NM as a FHIR decimal, or `None` when it is not a number.
pub fn decimal(s: &str) -> Option<Decimal> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, s.get(1..)?),
        b'+' => (false, s.get(1..)?),
        _ => (false, s),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(f) = frac {
        if !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let frac = frac.filter(|f| !f.is_empty());
    if int.is_empty() && frac.is_none() {
        return None;
    }
    let int = int.trim_start_matches('0');
    let mut out = String::with_capacity(s.len() + 1);
    let is_zero = int.is_empty() && frac.is_none_or_zero();
    if neg && !is_zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(Decimal(out))
}

trait ZeroFrac {
    fn is_none_or_zero(&self) -> bool;
}
impl ZeroFrac for Option<&str> {
    fn is_none_or_zero(&self) -> bool {
        match self {
            None => true,
            Some(f) => f.bytes().all(|b| b == b'0'),
        }
    }
}

/// A Quantity from a number and a v2 units CWE (`OBX-6`, `RXA-7`, CQ-2 …).
///
/// The unit's code and system are written only when the coding system is known (UCUM or a
/// mapped one), as FHIR's qty-3 invariant asks; the readable unit is always kept.
pub fn quantity(value: &str, units: Node<'_>) -> Option<Quantity> {
    let value = decimal(value)?;
    let mut q = Quantity {
        value: Some(value),
        ..Quantity::default()
    };
    apply_units(&mut q, units);
    Some(q)
}

fn apply_units(q: &mut Quantity, units: Node<'_>) {
    let code = units.get(1);
    let text = units.get(2);
    let system = units.get(3).and_then(|s| coded::system_uri(&s));
    q.unit = text.as_ref().or(code.as_ref()).map(|s| s.to_string());
    if let (Some(c), Some(sys)) = (code, system) {
        q.code = Some(c.into_owned());
        q.system = Some(sys);
    }
}

/// The value of a v2 SN (`<comparator>^<num1>^<separator>^<num2>`).
#[derive(Debug, Clone, PartialEq)]
pub enum Structured {
    /// `>=5`, `7`: a quantity, maybe with a comparator.
    Quantity(Quantity),
    /// `1-5`.
    Range(Range),
    /// `1:128`, `1/2`.
    Ratio(Ratio),
    /// What FHIR cannot carry as a number (e.g. the `<>` comparator): kept as text.
    Text(String),
}

/// Map an SN (with units for the quantity forms).
pub fn structured(sn: Node<'_>, units: Node<'_>) -> Option<Structured> {
    let comparator = sn.get(1);
    let n1 = sn.get(2);
    let sep = sn.get(3);
    let n2 = sn.get(4);
    let unitised = |v: &str| quantity(v, units);
    match (sep.as_deref(), n1.as_deref(), n2.as_deref()) {
        (Some("-"), Some(a), Some(b)) if comparator.is_none() => Some(Structured::Range(Range {
            low: Some(unitised(a)?),
            high: Some(unitised(b)?),
        })),
        (Some(":" | "/"), Some(a), Some(b)) if comparator.is_none() => {
            Some(Structured::Ratio(Ratio {
                numerator: Some(quantity(a, Node::Empty)?),
                denominator: Some(quantity(b, Node::Empty)?),
            }))
        }
        (None, Some(a), None) => {
            let cmp = match comparator.as_deref() {
                None | Some("=") => None,
                Some("<") => Some("<"),
                Some(">") => Some(">"),
                Some("<=") => Some("<="),
                Some(">=") => Some(">="),
                Some(_) => None,
            };
            if comparator.is_some() && cmp.is_none() && comparator.as_deref() != Some("=") {
                return sn.text().map(|t| Structured::Text(t.replace('^', "")));
            }
            let mut q = unitised(a)?;
            q.comparator = cmp;
            Some(Structured::Quantity(q))
        }
        _ => sn.text().map(|t| Structured::Text(t.replace('^', ""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<String> {
        decimal(s).map(|d| d.0)
    }

    #[test]
    fn written_precision_is_kept() {
        assert_eq!(d("72.50").as_deref(), Some("72.50"));
        assert_eq!(d("72.5").as_deref(), Some("72.5"));
        assert_eq!(d("100").as_deref(), Some("100"));
        assert_eq!(d("0.0010").as_deref(), Some("0.0010"));
    }

    #[test]
    fn json_unfriendly_forms_are_normalised() {
        assert_eq!(d("+5").as_deref(), Some("5"));
        assert_eq!(d("007.5").as_deref(), Some("7.5"));
        assert_eq!(d(".5").as_deref(), Some("0.5"));
        assert_eq!(d("5.").as_deref(), Some("5"));
        assert_eq!(d("-0").as_deref(), Some("0"));
        assert_eq!(d("-0.50").as_deref(), Some("-0.50"));
        assert_eq!(d("000").as_deref(), Some("0"));
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in ["", ".", "-", "1,5", "1e5", "abc", "1.2.3", "--1", " "] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn quantity_serialises_the_written_digits() {
        let q = quantity("72.50", Node::Empty).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"value":72.50}"#);
    }
}
