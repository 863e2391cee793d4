//! The messages a bench sends: a built-in mix of realistic HL7 v2.5 messages
//! or the user's own files, each sent with a fresh, unique MSH-10.
//!
//! Why unique control ids: the broker recognises retransmissions by
//! MSH-3/MSH-4/MSH-10 plus content and stores them once, so a bench that
//! re-sent the same message would measure the duplicate path, not ingest.
//! Every message is cut once into the bytes before MSH-10 and the bytes
//! after it; sending one is then two copies and a 20-byte id, cheap enough
//! that the load generator does not compete with the broker for CPU.
//!
//! A mix can also put the id into PID-3.1 ([`Mix::builtin_patients`]): each
//! message then describes its own patient, whose FHIR `Patient` (id derived
//! from the identifiers) is new, and carries the control id as an
//! identifier value, so a FHIR notification names the message it came from.

use super::BenchError;
use medbus_mllp::{END_BLOCK, START_BLOCK, TRAILER};
use std::io::Write as _;
use std::path::PathBuf;

/// Bytes of every generated control id: within v2.5's 20-character MSH-10.
pub const CONTROL_ID_LEN: usize = 20;
/// Most connections a control id can number (4 decimal digits).
pub const MAX_CONNECTIONS: usize = 9_999;

/// One message with holes where the control id goes: MSH-10, and PID-3.1
/// when asked for.
#[derive(Debug, Clone)]
struct Template {
    /// Everything up to and including the separator before MSH-10.
    head: Vec<u8>,
    /// Everything after MSH-10 up to the next hole (if any).
    mid: Vec<Vec<u8>>,
    /// Everything after the last hole, NTE padding included, ending in CR.
    tail: Vec<u8>,
}

impl Template {
    /// Cut `msg` around its MSH-10 (and its first PID-3.1 when `pid` is
    /// set) and pad it to `size` bytes.
    fn cut(msg: &[u8], size: usize, pid: bool) -> Option<Template> {
        if !msg.starts_with(b"MSH") {
            return None;
        }
        let sep = *msg.get(3)?;
        let seg_end = msg
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(msg.len());
        // MSH-1 is the separator itself, so MSH-10 follows the ninth one.
        let mut seen = 0;
        let mut start = None;
        for (i, &b) in msg.get(..seg_end)?.iter().enumerate() {
            if b == sep {
                seen += 1;
                if seen == 9 {
                    start = Some(i + 1);
                    break;
                }
            }
        }
        let start = start?;
        let end = msg
            .get(start..seg_end)?
            .iter()
            .position(|&b| b == sep)
            .map_or(seg_end, |p| start + p);
        let head = msg.get(..start)?.to_vec();
        let mut tail = original_mode(msg.get(end..seg_end)?, sep);
        tail.extend_from_slice(msg.get(seg_end..)?);
        if tail.last() != Some(&b'\r') {
            tail.push(b'\r');
        }
        let mut t = Template {
            head,
            mid: Vec::new(),
            tail,
        };
        if pid {
            t.hole_at_pid3(sep)?;
        }
        t.pad_to(size, sep);
        Some(t)
    }

    /// Cut the tail again at the first component of PID-3 (the patient's
    /// first identifier value); `None` without a PID-3.
    fn hole_at_pid3(&mut self, sep: u8) -> Option<()> {
        let seg = self.tail.windows(5).position(|w| {
            w.first() == Some(&b'\r') && w.get(1..4) == Some(&b"PID"[..]) && w.get(4) == Some(&sep)
        })? + 1;
        // PID-3 follows the third separator of the segment.
        let mut seen = 0;
        let mut start = None;
        for (i, &b) in self.tail.get(seg..)?.iter().enumerate() {
            if b == b'\r' {
                return None;
            }
            if b == sep {
                seen += 1;
                if seen == 3 {
                    start = Some(seg + i + 1);
                    break;
                }
            }
        }
        let start = start?;
        // The value ends at the next component, repetition or field.
        let end = start
            + self
                .tail
                .get(start..)?
                .iter()
                .position(|&b| b == sep || b == b'^' || b == b'~' || b == b'\r')?;
        let rest = self.tail.split_off(end);
        self.tail.truncate(start);
        self.mid.push(std::mem::replace(&mut self.tail, rest));
        Some(())
    }

    /// Message length in bytes (without MLLP framing).
    fn len(&self) -> usize {
        let mid: usize = self.mid.iter().map(Vec::len).sum();
        self.head.len() + CONTROL_ID_LEN * (1 + self.mid.len()) + mid + self.tail.len()
    }

    /// Append an `NTE|1|L|xxxx` segment so the message is `size` bytes; a
    /// message already that large (or too close to it for a segment) is
    /// left as it is.
    fn pad_to(&mut self, size: usize, sep: u8) {
        let overhead = "NTE|1|L|\r".len();
        let Some(room) = size.checked_sub(self.len() + overhead) else {
            return;
        };
        if room == 0 {
            return;
        }
        self.tail.extend_from_slice(b"NTE");
        for part in [&b"1"[..], b"L"] {
            self.tail.push(sep);
            self.tail.extend_from_slice(part);
        }
        self.tail.push(sep);
        const FILLER: &[u8] = b"medbus bench padding ";
        self.tail.extend(FILLER.iter().cycle().take(room).copied());
        self.tail.push(b'\r');
    }
}

/// The rest of an MSH segment after MSH-10 with MSH-15 and MSH-16 emptied:
/// the bench waits for one ACK per message, and a message asking for
/// enhanced mode with MSH-15 `NE` or `ER` would get none.
fn original_mode(after_msh10: &[u8], sep: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(after_msh10.len());
    // Piece 0 is empty (the separator after MSH-10), piece k is MSH-(10+k).
    for (k, piece) in after_msh10.split(|&b| b == sep).enumerate() {
        if k > 0 {
            out.push(sep);
        }
        if k != 5 && k != 6 {
            out.extend_from_slice(piece);
        }
    }
    out
}

/// The messages of one run, sent round-robin.
#[derive(Debug, Clone)]
pub struct Mix {
    /// At least one template.
    templates: Vec<Template>,
}

/// A run id for unique control ids: differs between runs and between
/// processes started in the same second.
pub fn run_id() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32)
        ^ std::process::id().rotate_left(12)
}

/// A unique MSH-10: run id (6 hex digits), connection (4 digits), sequence
/// number (10 digits).
pub fn control_id(run: u32, connection: usize, seq: u64) -> [u8; CONTROL_ID_LEN] {
    let mut id = [b'0'; CONTROL_ID_LEN];
    let mut w = &mut id[..];
    // Exactly 20 bytes for in-range values; larger ones are cut, never panic.
    let _ = write!(
        w,
        "{:06X}{:04}{:010}",
        run & 0x00FF_FFFF,
        connection % (MAX_CONNECTIONS + 1),
        seq % 10_000_000_000
    );
    id
}

impl Mix {
    /// The built-in mix (ADT^A01, ORU^R01, SIU^S12 in turn), each padded to
    /// `size` bytes.
    pub fn builtin(size: usize) -> Mix {
        Mix::builtin_with(size, false)
    }

    /// The built-in mix with the control id also in PID-3.1: one new
    /// patient per message, identified by the message's control id.
    pub fn builtin_patients(size: usize) -> Mix {
        Mix::builtin_with(size, true)
    }

    fn builtin_with(size: usize, pid: bool) -> Mix {
        let ts = crate::ack::hl7_now();
        let templates = BUILTIN
            .iter()
            .filter_map(|t| {
                let text = t.replace("{TS}", &ts).replace('\n', "\r");
                Template::cut(text.as_bytes(), size, pid)
            })
            .collect();
        Mix { templates }
    }

    /// Every message in `files` (framed or not, any segment separator),
    /// each padded to `size` bytes.
    pub fn from_files(files: &[PathBuf], size: usize) -> Result<Mix, BenchError> {
        let mut templates = Vec::new();
        for path in files {
            let bytes = std::fs::read(path).map_err(|source| BenchError::ReadFile {
                path: path.display().to_string(),
                source,
            })?;
            for (i, msg) in crate::cli::split::split_messages(&bytes)
                .into_iter()
                .enumerate()
            {
                let t = Template::cut(&msg, size, false).ok_or_else(|| {
                    BenchError::Usage(format!(
                        "{} message {}: not an HL7 message with an MSH-10 field",
                        path.display(),
                        i + 1
                    ))
                })?;
                templates.push(t);
            }
        }
        if templates.is_empty() {
            return Err(BenchError::Usage(
                "no HL7 messages found in the given files".into(),
            ));
        }
        Ok(Mix { templates })
    }

    /// Number of distinct messages.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether the mix is empty (never, for a mix built by this module).
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// Mean message size in bytes.
    pub fn mean_size(&self) -> usize {
        let total: usize = self.templates.iter().map(Template::len).sum();
        total / self.templates.len().max(1)
    }

    /// Write message number `seq` with control id `id` into `out` as one
    /// MLLP frame (replacing what `out` held); returns the message length.
    pub fn frame(&self, seq: u64, id: &[u8; CONTROL_ID_LEN], out: &mut Vec<u8>) -> usize {
        out.clear();
        let n = self.templates.len().max(1);
        let Some(t) = self.templates.get((seq % n as u64) as usize) else {
            return 0;
        };
        out.push(START_BLOCK);
        out.extend_from_slice(&t.head);
        out.extend_from_slice(id);
        for part in &t.mid {
            out.extend_from_slice(part);
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&t.tail);
        out.push(END_BLOCK);
        out.push(TRAILER);
        t.len()
    }
}

/// Why an ACK did not confirm the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckProblem {
    /// Not an HL7 message with an MSA segment.
    Unparseable,
    /// MSA-2 names another message.
    WrongMessage,
    /// MSA-1 was AE or CE.
    Error,
    /// MSA-1 was AR or CR.
    Reject,
    /// MSA-1 was something else.
    OtherCode,
}

/// Check that `ack` accepts the message `control_id`: MSA-1 `AA` (or `CA`,
/// should a broker answer in enhanced mode anyway) and MSA-2 naming it.
pub fn check_ack(ack: &[u8], control_id: &[u8]) -> Result<(), AckProblem> {
    if !ack.starts_with(b"MSH") {
        return Err(AckProblem::Unparseable);
    }
    let sep = *ack.get(3).ok_or(AckProblem::Unparseable)?;
    let msa = ack
        .split(|&b| b == b'\r' || b == b'\n')
        .find(|s| s.starts_with(b"MSA") && s.get(3) == Some(&sep))
        .ok_or(AckProblem::Unparseable)?;
    let mut fields = msa.split(|&b| b == sep).skip(1);
    let code = fields.next().unwrap_or_default();
    let answered = fields.next().unwrap_or_default();
    if answered != control_id {
        return Err(AckProblem::WrongMessage);
    }
    match code {
        b"AA" | b"CA" => Ok(()),
        b"AE" | b"CE" => Err(AckProblem::Error),
        b"AR" | b"CR" => Err(AckProblem::Reject),
        _ => Err(AckProblem::OtherCode),
    }
}

/// The built-in templates; `{TS}` is the run's start time, MSH-10 is
/// replaced per message, newlines become CR.
const BUILTIN: [&str; 3] = [
    "MSH|^~\\&|BENCH-ADT|MEDBUS-BENCH|MEDBUS|HOSP|{TS}||ADT^A01^ADT_A01|X|P|2.5|||||USA|UNICODE UTF-8
EVN|A01|{TS}|||7001^NURSE^ALICE^^^^RN
PID|1||MRN482915^^^HOSP^MR~112-55-9999^^^USSSA^SS||GARCIA^MARIA^ELENA^^MRS||19720314|F|||418 ELM STREET^APT 2B^SPRINGFIELD^IL^62704^USA^H||^PRN^PH^^1^217^5550142|||M|CAT|ACC7788123|112-55-9999
NK1|1|GARCIA^LUIS^A|SPO^Spouse^HL70063|418 ELM STREET^APT 2B^SPRINGFIELD^IL^62704^USA|^PRN^PH^^1^217^5550143
PV1|1|I|4WEST^412^B^HOSP^^^^MED||||1234567890^CHEN^DAVID^K^^DR^MD^^NPI|||MED||||7|||1234567890^CHEN^DAVID^K^^DR^MD^^NPI|IN||SELF|||||||||||||||||||HOSP||||{TS}
PV2|||R07.9^Chest pain, unspecified^I10
AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives
DG1|1||R07.9^Chest pain, unspecified^I10||{TS}|A
IN1|1|BCBS-PPO^Blue Cross PPO|60054|BLUE CROSS BLUE SHIELD OF ILLINOIS|PO BOX 805107^^CHICAGO^IL^60680||||||||||GARCIA^MARIA^ELENA|SEL|19720314
",
    "MSH|^~\\&|BENCH-LAB|MEDBUS-BENCH|MEDBUS|HOSP|{TS}||ORU^R01^ORU_R01|X|P|2.5|||||USA|UNICODE UTF-8
PID|1||MRN771204^^^HOSP^MR||OKAFOR^JAMES^T||19580922|M|||77 RIVER ROAD^^SPRINGFIELD^IL^62702^USA^H||^PRN^PH^^1^217^5550987
PV1|1|O|LAB^^^HOSP||||2233445566^PATEL^ANITA^^^DR^MD^^NPI
ORC|RE|ORD552071^EPIC|FIL883412^LAB||CM||||{TS}|||2233445566^PATEL^ANITA^^^DR^MD^^NPI
OBR|1|ORD552071^EPIC|FIL883412^LAB|24323-8^Comprehensive metabolic panel^LN|||{TS}|||||||{TS}||2233445566^PATEL^ANITA^^^DR^MD^^NPI||||||{TS}|||F
OBX|1|NM|2345-7^Glucose^LN||142|mg/dL|70-99|H|||F|||{TS}
OBX|2|NM|2160-0^Creatinine^LN||1.1|mg/dL|0.7-1.3|N|||F|||{TS}
OBX|3|NM|2951-2^Sodium^LN||139|mmol/L|136-145|N|||F|||{TS}
OBX|4|NM|2823-3^Potassium^LN||5.9|mmol/L|3.5-5.1|H|||F|||{TS}
OBX|5|NM|17861-6^Calcium^LN||9.4|mg/dL|8.6-10.3|N|||F|||{TS}
",
    "MSH|^~\\&|BENCH-SCHED|MEDBUS-BENCH|MEDBUS|HOSP|{TS}||SIU^S12^SIU_S12|X|P|2.5|||||USA|UNICODE UTF-8
SCH|APT30917^SCHED|APT30917^SCHED|||||FOLLOWUP^Follow-up visit^LOCAL|OFFICE^Office visit^LOCAL|30|min|^^30^{TS}|||||5566778899^NGUYEN^LINH^^^DR^MD||||5566778899^NGUYEN^LINH^^^DR^MD|||||BOOKED
PID|1||MRN203377^^^HOSP^MR||BROWN^EMILY^R||19900605|F|||12 OAK AVENUE^^SPRINGFIELD^IL^62701^USA^H||^PRN^PH^^1^217^5550321
PV1|1|O|CLINIC2^^^HOSP||||5566778899^NGUYEN^LINH^^^DR^MD
RGS|1|A
AIS|1|A|FOLLOWUP^Follow-up visit^LOCAL|{TS}|0|min|30|min
AIL|1|A|CLINIC2^EXAM3^^HOSP|||{TS}|0|min|30|min
AIP|1|A|5566778899^NGUYEN^LINH^^^DR^MD|ATT^Attending^HL70443|{TS}|0|min|30|min
",
];

#[cfg(test)]
mod tests {
    use super::*;
    use medbus_hl7::Message;

    fn message(mix: &Mix, seq: u64, id: &[u8; CONTROL_ID_LEN]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = mix.frame(seq, id, &mut out);
        assert_eq!(out.len(), n + 3);
        out[1..out.len() - 2].to_vec()
    }

    #[test]
    fn builtin_messages_are_valid_and_unique() {
        let mix = Mix::builtin(2048);
        assert_eq!(mix.len(), 3);
        let mut types = Vec::new();
        for seq in 0..3 {
            let id = control_id(0xABCDEF, 7, seq);
            let msg = message(&mix, seq, &id);
            assert_eq!(msg.len(), 2048);
            let m = Message::parse(&msg).expect("parses");
            let h = m.header();
            assert_eq!(h.control_id.as_deref(), std::str::from_utf8(&id).ok());
            assert_eq!(h.version.as_deref(), Some("2.5"));
            types.push(h.message_type());
        }
        assert_eq!(types, ["ADT^A01", "ORU^R01", "SIU^S12"]);
    }

    #[test]
    fn patient_mix_puts_the_id_in_pid_3() {
        let mix = Mix::builtin_patients(2048);
        assert_eq!(mix.len(), 3);
        for seq in 0..3 {
            let id = control_id(0x12, 1, seq);
            let msg = message(&mix, seq, &id);
            assert_eq!(msg.len(), 2048);
            let m = Message::parse(&msg).expect("parses");
            assert_eq!(
                m.header().control_id.as_deref(),
                std::str::from_utf8(&id).ok()
            );
            let pid = msg
                .split(|&b| b == b'\r')
                .find(|s| s.starts_with(b"PID|"))
                .expect("PID");
            let pid3 = pid.split(|&b| b == b'|').nth(3).expect("PID-3");
            assert!(pid3.starts_with(&id), "{}", String::from_utf8_lossy(pid3));
            assert_eq!(pid3.get(20), Some(&b'^'));
        }
    }

    #[test]
    fn control_ids_are_fixed_width() {
        assert_eq!(&control_id(0x1F, 3, 42), b"00001F00030000000042");
        assert_eq!(&control_id(u32::MAX, 99_999, u64::MAX)[..6], b"FFFFFF");
    }

    #[test]
    fn small_size_means_no_padding() {
        let mix = Mix::builtin(10);
        let msg = message(&mix, 0, &control_id(1, 1, 1));
        assert!(!msg.windows(4).any(|w| w == b"NTE|"));
    }

    #[test]
    fn files_are_cut_at_msh_10() {
        let dir = std::env::temp_dir().join(format!("medbus-corpus-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("a.hl7");
        std::fs::write(
            &f,
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|ORIG|P|2.5\nPID|1||9\n",
        )
        .expect("write");
        let mix = Mix::from_files(&[f], 0).expect("mix");
        let msg = message(&mix, 0, &control_id(2, 0, 5));
        let mut expected = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|".to_vec();
        expected.extend_from_slice(&control_id(2, 0, 5));
        expected.extend_from_slice(b"|P|2.5\rPID|1||9\r");
        assert_eq!(msg, expected);
        let g = dir.join("g.hl7");
        std::fs::write(
            &g,
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|ORIG|P|2.5|||NE|NE|USA\r",
        )
        .expect("write");
        let mix = Mix::from_files(&[g], 0).expect("mix");
        let msg = message(&mix, 0, &control_id(2, 0, 5));
        assert!(
            msg.ends_with(b"|P|2.5|||||USA\r"),
            "{}",
            String::from_utf8_lossy(&msg)
        );
        let bad = dir.join("b.hl7");
        std::fs::write(&bad, "MSH|^~\\&|A\n").expect("write");
        assert!(matches!(
            Mix::from_files(&[bad], 0),
            Err(BenchError::Usage(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn acks_are_checked() {
        let id = b"ID1";
        assert_eq!(check_ack(b"MSH|^~\\&|X\rMSA|AA|ID1\r", id), Ok(()));
        assert_eq!(
            check_ack(b"MSH|^~\\&|X\rMSA|AA|ID2\r", id),
            Err(AckProblem::WrongMessage)
        );
        assert_eq!(
            check_ack(b"MSH|^~\\&|X\rMSA|AE|ID1\rERR|", id),
            Err(AckProblem::Error)
        );
        assert_eq!(
            check_ack(b"MSH|^~\\&|X\rMSA|AR|ID1\r", id),
            Err(AckProblem::Reject)
        );
        assert_eq!(check_ack(b"garbage", id), Err(AckProblem::Unparseable));
        assert_eq!(
            check_ack(b"MSH|^~\\&|X\rPID|1\r", id),
            Err(AckProblem::Unparseable)
        );
    }
}
