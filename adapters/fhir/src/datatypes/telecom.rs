//! XTN → FHIR `ContactPoint`.
//!
//! The value is the e-mail address (XTN-4) for Internet addresses, otherwise the number built
//! from country code, area code, local number and extension (XTN-5..8), falling back to the
//! unformatted number (XTN-12) and the deprecated XTN-1.

use super::Node;
use crate::resources::ContactPoint;

/// XTN → ContactPoint. `default_use` applies when XTN-2 says nothing (PID-13 home, PID-14 work).
pub fn xtn(node: Node<'_>, default_use: Option<&'static str>) -> Option<ContactPoint> {
    let equip = node.get(3).map(|s| s.to_ascii_uppercase());
    let usage = node.get(2).map(|s| s.to_ascii_uppercase());
    let email = node.s(4);
    let is_mail =
        matches!(equip.as_deref(), Some("INTERNET" | "X.400")) || usage.as_deref() == Some("NET");
    let number = {
        let mut n = String::new();
        if let Some(cc) = node.get(5) {
            n.push('+');
            n.push_str(&cc);
            n.push(' ');
        }
        if let Some(area) = node.get(6) {
            n.push('(');
            n.push_str(&area);
            n.push_str(") ");
        }
        if let Some(local) = node.get(7) {
            n.push_str(&local);
            if let Some(ext) = node.get(8) {
                n.push_str(" ext. ");
                n.push_str(&ext);
            }
            Some(n)
        } else {
            None
        }
    };
    let (system, value) = if is_mail && email.is_some() {
        (Some("email"), email)
    } else {
        let v = number.or_else(|| node.s(12)).or_else(|| node.s(1));
        let system = match equip.as_deref() {
            Some("FX") => Some("fax"),
            Some("BP") => Some("pager"),
            Some("PH" | "CP" | "SAT") => Some("phone"),
            Some("INTERNET" | "X.400") => Some("url"),
            Some(_) => Some("other"),
            None => v.as_ref().map(|_| "phone"),
        };
        (system, v)
    };
    let value = value?;
    let r#use = match (usage.as_deref(), equip.as_deref()) {
        (_, Some("CP")) => Some("mobile"),
        (Some("PRN" | "VHN"), _) => Some("home"),
        (Some("WPN"), _) => Some("work"),
        (Some("ORN"), _) => Some("temp"),
        (Some("BPN"), _) => Some("work"),
        (Some(_), _) => None,
        (None, _) => default_use,
    };
    Some(ContactPoint {
        system,
        value: Some(value),
        r#use,
        rank: node
            .get(18)
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|r| *r > 0),
        period: None,
    })
}
