//! Routes: `[[routes]]` as users write them, and their `when` conditions
//! compiled once at load (globs, regexes and HL7 field paths), so that a bad
//! pattern is a config error with file:line:col, and evaluation per record
//! does no parsing of the rule.

use crate::units::HumanDuration;
use medbus_hl7::{Message, Path as FieldPath};
use regex::Regex;
use serde::Deserialize;
use serde_spanned::Spanned;

/// `[[routes]]`: read one or more topics, keep what matches, transform,
/// write to every target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique route name (metrics label, cursor name, dead-letter topic
    /// `dlq.<name>`).
    pub name: Spanned<String>,
    /// Source topic, or a list of them. Each is read in order through the
    /// route's own durable cursor.
    pub from: Spanned<OneOrMany>,
    /// Condition a record must meet; absent: every record.
    #[serde(default)]
    pub when: Option<Spanned<ConditionConfig>>,
    /// `"none"` (default) keeps the HL7 bytes; `"fhir"` writes the FHIR
    /// Bundle; `"fhir-resources"` writes each resource separately.
    #[serde(default = "default_transform")]
    pub transform: Spanned<Transform>,
    /// Target topics. A target may be a template: `{resourceType}` (one
    /// record per FHIR resource), `{sendingFacility}`, `{sendingApplication}`,
    /// `{receivingFacility}`, `{receivingApplication}`, `{messageCode}`,
    /// `{triggerEvent}`.
    pub to: Spanned<Vec<Spanned<String>>>,
    /// How long a route waits before retrying after a storage error
    /// (default `"1s"`).
    #[serde(default = "default_retry")]
    pub retry: HumanDuration,
    /// Dead-letter topic for records that cannot be transformed (default
    /// `dlq.<name>`; must start with `dlq.`).
    #[serde(default)]
    pub dead_letter: Option<Spanned<String>>,
}

fn default_transform() -> Spanned<Transform> {
    Spanned::new(0..0, Transform::None)
}

fn default_retry() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

impl RouteConfig {
    /// The name as a plain string.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// Source topics.
    pub fn sources(&self) -> Vec<String> {
        self.from.get_ref().to_vec()
    }

    /// Target topics (templates unexpanded).
    pub fn targets(&self) -> Vec<String> {
        self.to
            .get_ref()
            .iter()
            .map(|t| t.get_ref().clone())
            .collect()
    }

    /// The route's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        match &self.dead_letter {
            Some(d) => d.get_ref().clone(),
            None => format!("dlq.{}", self.name.get_ref()),
        }
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"x"`
    One(String),
    /// `["x", "y"]`
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// What a route does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Transform {
    /// Keep the record as it is.
    #[default]
    #[serde(rename = "none")]
    None,
    /// HL7 v2 → one FHIR Bundle.
    #[serde(rename = "fhir")]
    Fhir,
    /// HL7 v2 → one record per FHIR resource.
    #[serde(rename = "fhir-resources")]
    FhirResources,
}

impl Transform {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Fhir => "fhir",
            Transform::FhirResources => "fhir-resources",
        }
    }
}

/// `when = { … }`: every key present must hold (they are ANDed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// MSH-9 as `code^trigger`, glob (`"ADT^A0*"`), or a list of globs.
    #[serde(default)]
    pub message_type: Option<Spanned<OneOrMany>>,
    /// MSH-3.1 glob(s).
    #[serde(default)]
    pub sending_application: Option<Spanned<OneOrMany>>,
    /// MSH-4.1 glob(s).
    #[serde(default)]
    pub sending_facility: Option<Spanned<OneOrMany>>,
    /// MSH-5.1 glob(s).
    #[serde(default)]
    pub receiving_application: Option<Spanned<OneOrMany>>,
    /// MSH-6.1 glob(s).
    #[serde(default)]
    pub receiving_facility: Option<Spanned<OneOrMany>>,
    /// An HL7 field path (`PID-8`, `OBX-8`, `PV1-3.1`, `OBX(2)-5`); tested
    /// with exactly one of `eq`, `in`, `regex`, `exists`. Without an
    /// occurrence it holds when ANY occurrence of the segment (and any
    /// repetition of the field) satisfies the test.
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    /// The field equals this value.
    #[serde(default)]
    pub eq: Option<String>,
    /// The field equals one of these values.
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<String>>,
    /// The field matches this regular expression (anywhere in the value;
    /// anchor with `^…$`).
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// The field is present and non-empty (`true`) or absent/empty (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
    /// For FHIR records: the resource type glob(s) (`"Observation"`).
    #[serde(default)]
    pub resource_type: Option<Spanned<OneOrMany>>,
    /// Every sub-condition holds.
    #[serde(default)]
    pub all: Option<Vec<Spanned<ConditionConfig>>>,
    /// At least one sub-condition holds.
    #[serde(default)]
    pub any: Option<Vec<Spanned<ConditionConfig>>>,
    /// The sub-condition does not hold.
    #[serde(default)]
    pub not: Option<Box<Spanned<ConditionConfig>>>,
}

/// A compiled glob: `*` any run, `?` one character; everything else literal.
#[derive(Debug, Clone)]
pub struct Glob(Regex);

impl Glob {
    /// Compile a glob.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        let mut re = String::with_capacity(pattern.len() + 8);
        re.push('^');
        for c in pattern.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Regex::new(&re).map(Glob).map_err(|e| e.to_string())
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

/// How a field is tested.
#[derive(Debug, Clone)]
pub enum FieldTest {
    /// Equal to.
    Eq(String),
    /// One of.
    In(Vec<String>),
    /// Matches.
    Regex(Regex),
    /// Present and non-empty, or not.
    Exists(bool),
}

/// Which MSH value a header glob tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKey {
    /// `code^trigger`
    MessageType,
    /// MSH-3.1
    SendingApplication,
    /// MSH-4.1
    SendingFacility,
    /// MSH-5.1
    ReceivingApplication,
    /// MSH-6.1
    ReceivingFacility,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Always true (no `when`).
    Always,
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// Negation.
    Not(Box<Condition>),
    /// An MSH value matches one of the globs.
    Header(HeaderKey, Vec<Glob>),
    /// A field test.
    Field {
        /// The path.
        path: FieldPath,
        /// The test.
        test: FieldTest,
        /// The path names a segment occurrence (`OBX(2)-5`): test only it.
        one_occurrence: bool,
        /// The path names a repetition (`PID-3[2]`): test only it.
        one_repetition: bool,
    },
    /// The FHIR resource type matches one of the globs.
    ResourceType(Vec<Glob>),
}

/// What a condition is evaluated against.
pub struct Subject<'m, 'a> {
    /// The HL7 message, when the record is HL7 and parses.
    pub message: Option<&'m Message<'a>>,
    /// The FHIR resource type, when the record is one resource.
    pub resource_type: Option<&'m str>,
}

impl Condition {
    /// Evaluate. A test about HL7 content is false for a record that is not
    /// HL7; a `resource_type` test is false for a record that is not a FHIR
    /// resource.
    pub fn matches(&self, s: &Subject<'_, '_>) -> bool {
        match self {
            Condition::Always => true,
            Condition::All(v) => v.iter().all(|c| c.matches(s)),
            Condition::Any(v) => v.iter().any(|c| c.matches(s)),
            Condition::Not(c) => !c.matches(s),
            Condition::Header(key, globs) => {
                let Some(m) = s.message else { return false };
                let h = m.header();
                let value = match key {
                    HeaderKey::MessageType => h.message_type(),
                    HeaderKey::SendingApplication => {
                        h.sending_application.as_deref().unwrap_or("").to_string()
                    }
                    HeaderKey::SendingFacility => {
                        h.sending_facility.as_deref().unwrap_or("").to_string()
                    }
                    HeaderKey::ReceivingApplication => {
                        h.receiving_application.as_deref().unwrap_or("").to_string()
                    }
                    HeaderKey::ReceivingFacility => {
                        h.receiving_facility.as_deref().unwrap_or("").to_string()
                    }
                };
                globs.iter().any(|g| g.matches(&value))
            }
            Condition::Field {
                path,
                test,
                one_occurrence,
                one_repetition,
            } => {
                let Some(m) = s.message else { return false };
                field_matches(m, path, test, *one_occurrence, *one_repetition)
            }
            Condition::ResourceType(globs) => s
                .resource_type
                .is_some_and(|t| globs.iter().any(|g| g.matches(t))),
        }
    }
}

/// Most segment occurrences a field test looks at (bounds work per record).
const MAX_OCCURRENCES: usize = 1000;
/// Most repetitions of a field a test looks at.
const MAX_REPETITIONS: usize = 100;

fn field_matches(
    m: &Message<'_>,
    path: &FieldPath,
    test: &FieldTest,
    explicit_occurrence: bool,
    explicit_repetition: bool,
) -> bool {
    let occurrences: Vec<usize> = if explicit_occurrence {
        vec![path.occurrence]
    } else {
        (1..=MAX_OCCURRENCES).collect()
    };
    let mut any_value = false;
    for occ in occurrences {
        if m.segment(&path.segment, occ).is_none() {
            break;
        }
        let reps: Vec<usize> = if explicit_repetition {
            vec![path.repetition]
        } else {
            (1..=MAX_REPETITIONS).collect()
        };
        for rep in reps {
            let mut p = path.clone();
            p.occurrence = occ;
            p.repetition = rep;
            let Some(v) = m.get_path(&p) else {
                if rep > 1 {
                    break;
                }
                continue;
            };
            if v.is_empty() {
                continue;
            }
            any_value = true;
            let hit = match test {
                FieldTest::Eq(want) => v == want.as_str(),
                FieldTest::In(set) => set.iter().any(|w| v == w.as_str()),
                FieldTest::Regex(re) => re.is_match(&v),
                FieldTest::Exists(want) => *want,
            };
            if hit {
                return true;
            }
        }
    }
    matches!(test, FieldTest::Exists(false)) && !any_value
}

/// A problem found while compiling a condition: (byte span, key, message).
pub type CompileProblem = (std::ops::Range<usize>, String, String);

/// Compile a condition, collecting every problem.
pub fn compile(
    c: &Spanned<ConditionConfig>,
    key: &str,
    problems: &mut Vec<CompileProblem>,
) -> Condition {
    let span = c.span();
    let c = c.get_ref();
    let mut parts = Vec::new();
    let globs =
        |v: &Spanned<OneOrMany>, k: &str, problems: &mut Vec<CompileProblem>| -> Vec<Glob> {
            let mut out = Vec::new();
            for p in v.get_ref().to_vec() {
                match Glob::new(&p) {
                    Ok(g) => out.push(g),
                    Err(e) => problems.push((
                        v.span(),
                        format!("{key}.{k}"),
                        format!("bad pattern {p:?}: {e}"),
                    )),
                }
            }
            out
        };
    for (field, hk) in [
        (&c.message_type, HeaderKey::MessageType),
        (&c.sending_application, HeaderKey::SendingApplication),
        (&c.sending_facility, HeaderKey::SendingFacility),
        (&c.receiving_application, HeaderKey::ReceivingApplication),
        (&c.receiving_facility, HeaderKey::ReceivingFacility),
    ] {
        if let Some(v) = field {
            let name = match hk {
                HeaderKey::MessageType => "message_type",
                HeaderKey::SendingApplication => "sending_application",
                HeaderKey::SendingFacility => "sending_facility",
                HeaderKey::ReceivingApplication => "receiving_application",
                HeaderKey::ReceivingFacility => "receiving_facility",
            };
            parts.push(Condition::Header(hk, globs(v, name, problems)));
        }
    }
    if let Some(v) = &c.resource_type {
        parts.push(Condition::ResourceType(globs(v, "resource_type", problems)));
    }
    let tests = [
        c.eq.is_some(),
        c.in_.is_some(),
        c.regex.is_some(),
        c.exists.is_some(),
    ]
    .iter()
    .filter(|t| **t)
    .count();
    match &c.field {
        Some(f) => {
            let path = match f.get_ref().parse::<FieldPath>() {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push((
                        f.span(),
                        format!("{key}.field"),
                        format!("bad field path {:?}: {}", f.get_ref(), e.reason),
                    ));
                    None
                }
            };
            if tests != 1 {
                problems.push((
                    f.span(),
                    format!("{key}.field"),
                    "a field needs exactly one of eq, in, regex, exists".into(),
                ));
            }
            let test = if let Some(v) = &c.eq {
                Some(FieldTest::Eq(v.clone()))
            } else if let Some(v) = &c.in_ {
                Some(FieldTest::In(v.clone()))
            } else if let Some(r) = &c.regex {
                match Regex::new(r.get_ref()) {
                    Ok(re) => Some(FieldTest::Regex(re)),
                    Err(e) => {
                        let msg = e.to_string().replace('\n', " ");
                        problems.push((
                            r.span(),
                            format!("{key}.regex"),
                            format!("bad regex: {msg}"),
                        ));
                        None
                    }
                }
            } else {
                c.exists.map(FieldTest::Exists)
            };
            if let (Some(p), Some(t)) = (path, test) {
                parts.push(Condition::Field {
                    path: p,
                    test: t,
                    one_occurrence: f.get_ref().contains('('),
                    one_repetition: f.get_ref().contains('['),
                });
            }
        }
        None if tests > 0 => problems.push((
            span.clone(),
            key.to_string(),
            "eq, in, regex and exists need a field".into(),
        )),
        None => {}
    }
    if let Some(v) = &c.all {
        let subs = v
            .iter()
            .enumerate()
            .map(|(i, s)| compile(s, &format!("{key}.all[{i}]"), problems))
            .collect();
        parts.push(Condition::All(subs));
    }
    if let Some(v) = &c.any {
        if v.is_empty() {
            problems.push((
                span.clone(),
                format!("{key}.any"),
                "any = [] can never hold".into(),
            ));
        }
        let subs = v
            .iter()
            .enumerate()
            .map(|(i, s)| compile(s, &format!("{key}.any[{i}]"), problems))
            .collect();
        parts.push(Condition::Any(subs));
    }
    if let Some(n) = &c.not {
        parts.push(Condition::Not(Box::new(compile(
            n,
            &format!("{key}.not"),
            problems,
        ))));
    }
    match parts.len() {
        // A field given but refused (its problem is reported) is not an
        // empty condition.
        0 if c.field.is_some() || tests > 0 => Condition::Always,
        0 => {
            problems.push((
                span,
                key.to_string(),
                "empty condition: say what must hold".into(),
            ));
            Condition::Always
        }
        1 => parts.pop().unwrap_or(Condition::Always),
        _ => Condition::All(parts),
    }
}

/// Template placeholders a target may use.
pub const TEMPLATE_KEYS: [&str; 7] = [
    "resourceType",
    "sendingFacility",
    "sendingApplication",
    "receivingFacility",
    "receivingApplication",
    "messageCode",
    "triggerEvent",
];

/// Split a target into literal text and `{key}` placeholders; `Err` names
/// an unknown or unclosed placeholder.
pub fn parse_template(target: &str) -> Result<Vec<TemplatePart>, String> {
    let mut out = Vec::new();
    let mut rest = target;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(TemplatePart::Literal(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {target:?}"))?;
        let key = &after[..close];
        if !TEMPLATE_KEYS.contains(&key) {
            return Err(format!(
                "unknown placeholder {{{key}}} in {target:?}; known: {}",
                TEMPLATE_KEYS.map(|k| format!("{{{k}}}")).join(", ")
            ));
        }
        out.push(TemplatePart::Key(key.to_string()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(TemplatePart::Literal(rest.to_string()));
    }
    Ok(out)
}

/// A piece of a target template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal topic text.
    Literal(String),
    /// A placeholder.
    Key(String),
}

/// Whether a target template could produce `topic` (placeholders match any
/// non-empty run of topic characters).
pub fn template_could_produce(parts: &[TemplatePart], topic: &str) -> bool {
    let mut re = String::from("^");
    for p in parts {
        match p {
            TemplatePart::Literal(l) => re.push_str(&regex::escape(l)),
            TemplatePart::Key(_) => re.push_str("[A-Za-z0-9._-]+"),
        }
    }
    re.push('$');
    Regex::new(&re).is_ok_and(|r| r.is_match(topic))
}

/// A route ready to run: condition compiled, targets parsed.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// Route name.
    pub name: String,
    /// Source topics.
    pub sources: Vec<String>,
    /// The `when` condition.
    pub condition: Condition,
    /// The transform.
    pub transform: Transform,
    /// Targets, parsed into literal text and placeholders.
    pub targets: Vec<Vec<TemplatePart>>,
    /// `dlq.<name>`.
    pub dead_letter_topic: String,
    /// Pause after a storage error.
    pub retry: std::time::Duration,
}

/// Compile a route; `Err` lists every problem (span, key, message).
pub fn compile_route(r: &RouteConfig, key: &str) -> Result<CompiledRoute, Vec<CompileProblem>> {
    let mut problems = Vec::new();
    let condition = match &r.when {
        Some(w) => compile(w, &format!("{key}.when"), &mut problems),
        None => Condition::Always,
    };
    let mut targets = Vec::new();
    for (i, t) in r.to.get_ref().iter().enumerate() {
        match parse_template(t.get_ref()) {
            Ok(parts) => targets.push(parts),
            Err(e) => problems.push((t.span(), format!("{key}.to[{i}]"), e)),
        }
    }
    if problems.is_empty() {
        Ok(CompiledRoute {
            name: r.name().to_string(),
            sources: r.sources(),
            condition,
            transform: *r.transform.get_ref(),
            targets,
            dead_letter_topic: r.dead_letter_topic(),
            retry: r.retry.0,
        })
    } else {
        Err(problems)
    }
}
