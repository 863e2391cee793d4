//! TS / DTM / DT → FHIR `date`, `dateTime` and `instant`.
//!
//! v2 writes `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`. The precision written is kept:
//! `2014` stays `2014`, `201410` becomes `2014-10`. FHIR needs seconds and an offset as soon as
//! a time is given, so:
//! - hour-only or minute-only times are padded with `:00` (the V2-to-FHIR IG's DTM map does
//!   the same);
//! - a time without an offset takes the site's configured offset; with none configured, a
//!   `dateTime` keeps only its date and an `instant` is left out. We never invent `Z`.

/// A UTC offset in minutes east of UTC, as written (`+0100` → 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub i32);

impl Offset {
    /// Parse `+HHMM`, `-HHMM`, `+HH:MM` or `Z`; offsets beyond ±14:00 are refused.
    pub fn parse(s: &str) -> Option<Offset> {
        let s = s.trim();
        if s == "Z" {
            return Some(Offset(0));
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, s.get(1..)?),
            b'-' => (-1, s.get(1..)?),
            _ => return None,
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i32 = digits.get(..2)?.parse().ok()?;
        let m: i32 = digits.get(2..)?.parse().ok()?;
        if m >= 60 || h > 14 || (h == 14 && m != 0) {
            return None;
        }
        Some(Offset(sign * (h * 60 + m)))
    }

    fn render_into(self, s: &mut String) {
        s.push(if self.0 < 0 { '-' } else { '+' });
        let a = self.0.unsigned_abs();
        push_padded(s, a / 60, 2);
        s.push(':');
        push_padded(s, a % 60, 2);
    }
}

/// Append `n` zero-padded to `width` digits, like `format!("{n:0width$}")` (without its cost:
/// dates are rendered many times per message).
fn push_padded(s: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut len = 0;
    let mut v = n;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
        len += 1;
        if v == 0 {
            break;
        }
    }
    for _ in len..width {
        s.push('0');
    }
    let digits = buf.get(buf.len() - len..).unwrap_or_default();
    s.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

/// A parsed v2 timestamp with the precision it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ts {
    year: u32,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
    minute: Option<u32>,
    second: Option<u32>,
    /// Fraction digits after the point, as written.
    fraction: Option<String>,
    offset: Option<Offset>,
}

fn num(s: &str) -> Option<u32> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap =
                (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
            if leap {
                29
            } else {
                28
            }
        }
    }
}

impl Ts {
    /// Parse a v2 TS/DTM/DT value; `None` when it is not a valid date/time.
    pub fn parse(s: &str) -> Option<Ts> {
        let s = s.trim();
        let (body, offset) = match s.find(['+', '-']) {
            Some(i) => (s.get(..i)?, Some(Offset::parse(s.get(i..)?)?)),
            None => match s.strip_suffix('Z') {
                Some(b) => (b, Some(Offset(0))),
                None => (s, None),
            },
        };
        let (digits, fraction) = match body.split_once('.') {
            Some((d, f)) => {
                if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (d, Some(f.to_string()))
            }
            None => (body, None),
        };
        if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
            return None;
        }
        if fraction.is_some() && digits.len() != 14 {
            return None;
        }
        let part = |a: usize, b: usize| digits.get(a..b).and_then(num);
        let year = part(0, 4)?;
        let month = part(4, 6);
        let day = part(6, 8);
        let hour = part(8, 10);
        let minute = part(10, 12);
        let second = part(12, 14);
        if year == 0 {
            return None;
        }
        if let Some(m) = month {
            if !(1..=12).contains(&m) {
                return None;
            }
            if let Some(d) = day {
                if d == 0 || d > days_in_month(year, m) {
                    return None;
                }
            }
        }
        if hour.is_some_and(|h| h > 23)
            || minute.is_some_and(|m| m > 59)
            || second.is_some_and(|x| x > 59)
        {
            return None;
        }
        // A written length that is not fully numeric fails above via `num`.
        let expected = match digits.len() {
            4 => month.is_none(),
            6 => month.is_some(),
            8 => day.is_some(),
            10 => hour.is_some(),
            12 => minute.is_some(),
            _ => second.is_some(),
        };
        if !expected {
            return None;
        }
        Some(Ts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
            offset,
        })
    }

    /// The date part at its written precision: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        let mut s = String::with_capacity(10);
        self.date_into(&mut s);
        s
    }

    fn date_into(&self, s: &mut String) {
        push_padded(s, self.year, 4);
        if let Some(m) = self.month {
            s.push('-');
            push_padded(s, m, 2);
            if let Some(d) = self.day {
                s.push('-');
                push_padded(s, d, 2);
            }
        }
    }

    fn time_with(&self, offset: Offset) -> Option<String> {
        let day = self.day?;
        let month = self.month?;
        let hour = self.hour?;
        let mut s = String::with_capacity(32);
        push_padded(&mut s, self.year, 4);
        s.push('-');
        push_padded(&mut s, month, 2);
        s.push('-');
        push_padded(&mut s, day, 2);
        s.push('T');
        push_padded(&mut s, hour, 2);
        s.push(':');
        push_padded(&mut s, self.minute.unwrap_or(0), 2);
        s.push(':');
        push_padded(&mut s, self.second.unwrap_or(0), 2);
        if let Some(f) = &self.fraction {
            s.push('.');
            s.push_str(f);
        }
        offset.render_into(&mut s);
        Some(s)
    }

    /// FHIR `dateTime`: the written precision; a time needs an offset (written or `site`),
    /// otherwise only the date is kept.
    pub fn date_time(&self, site: Option<Offset>) -> String {
        match self.offset.or(site) {
            Some(o) if self.hour.is_some() => self.time_with(o).unwrap_or_else(|| self.date()),
            _ => self.date(),
        }
    }

    /// FHIR `instant`: needs a time and an offset (written or `site`); `None` otherwise.
    pub fn instant(&self, site: Option<Offset>) -> Option<String> {
        self.hour?;
        self.time_with(self.offset.or(site)?)
    }

    /// Whether a time of day was written.
    pub fn has_time(&self) -> bool {
        self.hour.is_some()
    }
}

/// `date` from a v2 value (the date part of a TS).
pub fn date(v: Option<&str>) -> Option<String> {
    Ts::parse(v?).map(|t| t.date())
}

/// `dateTime` from a v2 value.
pub fn date_time(v: Option<&str>, site: Option<Offset>) -> Option<String> {
    Ts::parse(v?).map(|t| t.date_time(site))
}

/// `instant` from a v2 value.
pub fn instant(v: Option<&str>, site: Option<Offset>) -> Option<String> {
    Ts::parse(v?)?.instant(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str, site: Option<&str>) -> Option<String> {
        date_time(Some(s), site.and_then(Offset::parse))
    }

    #[test]
    fn padding_matches_format() {
        for (n, w) in [
            (0, 2),
            (7, 2),
            (59, 2),
            (123, 2),
            (2014, 4),
            (99, 4),
            (u32::MAX, 4),
        ] {
            let mut s = String::new();
            push_padded(&mut s, n, w);
            assert_eq!(s, format!("{n:0w$}"));
        }
    }

    #[test]
    fn precision_is_kept() {
        assert_eq!(dt("2014", None).as_deref(), Some("2014"));
        assert_eq!(dt("201410", None).as_deref(), Some("2014-10"));
        assert_eq!(dt("20141006", None).as_deref(), Some("2014-10-06"));
    }

    #[test]
    fn times_need_an_offset() {
        assert_eq!(
            dt("201410060627+0700", None).as_deref(),
            Some("2014-10-06T06:27:00+07:00")
        );
        assert_eq!(
            dt("20141006062701+0100", None).as_deref(),
            Some("2014-10-06T06:27:01+01:00")
        );
        assert_eq!(
            dt("20141006062701.1234-0500", None).as_deref(),
            Some("2014-10-06T06:27:01.1234-05:00")
        );
        // No offset, none configured: the date survives, the time does not.
        assert_eq!(dt("201410060627", None).as_deref(), Some("2014-10-06"));
        assert_eq!(
            dt("201410060627", Some("+0100")).as_deref(),
            Some("2014-10-06T06:27:00+01:00")
        );
        assert_eq!(
            dt("2014100606", Some("-0330")).as_deref(),
            Some("2014-10-06T06:00:00-03:30")
        );
    }

    #[test]
    fn instants_never_invent_a_zone() {
        assert_eq!(instant(Some("20141006062701"), None), None);
        assert_eq!(instant(Some("20141006"), Offset::parse("+0100")), None);
        assert_eq!(
            instant(Some("20141006062701"), Offset::parse("+0100")).as_deref(),
            Some("2014-10-06T06:27:01+01:00")
        );
        assert_eq!(
            instant(Some("198908181126+0215"), None).as_deref(),
            Some("1989-08-18T11:26:00+02:15")
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "2014-10",
            "20141",
            "20140230",
            "20141306",
            "2014100625",
            "0000",
            "20141006062799",
            "201410060627+2500",
            "2014.5",
            "abcd",
        ] {
            assert_eq!(Ts::parse(bad), None, "{bad}");
        }
        assert!(Ts::parse("20000229").is_some());
        assert!(Ts::parse("19000229").is_none());
    }

    #[test]
    fn date_takes_the_date_part() {
        assert_eq!(
            date(Some("198808181126+0215")).as_deref(),
            Some("1988-08-18")
        );
    }
}
