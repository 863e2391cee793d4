//! Checks serde cannot express: address syntax, names, topic names, limits,
//! duplicates. Every problem is collected so that one run of
//! `medbus check-config` shows all of them.

use crate::error::ConfigError;
use crate::schema::Config;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 200;
/// Longest listener name.
pub const MAX_COMPONENT_NAME: usize = 64;
/// Largest frame cap a listener may set: bigger frames belong in a document
/// store, not an HL7 feed, and the cap bounds per-connection memory.
pub const MAX_FRAME_LIMIT: u64 = 64 << 20;

/// Whether `name` is a valid topic name: `[A-Za-z0-9._-]{1,200}`.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_valid_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// All problems in `config` (empty when it is valid).
pub fn validate(config: &Config, file: &str, text: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |span: std::ops::Range<usize>, key: String, msg: String| {
        errors.push(ConfigError::at(file, text, span.start, key, msg));
    };

    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, &str> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let key = |field: &str| format!("listeners[{i}].{field}");
        let name = l.name.get_ref().as_str();
        if !is_valid_component_name(name) {
            err(
                l.name.span(),
                key("name"),
                format!("invalid name {name:?}: use 1 to {MAX_COMPONENT_NAME} letters, digits, '_' or '-'"),
            );
        } else if names.insert(name, ()).is_some() {
            err(
                l.name.span(),
                key("name"),
                format!("duplicate listener name {name:?}"),
            );
        }
        match l.listen.get_ref().parse::<SocketAddr>() {
            // Port 0 (the OS picks) never collides.
            Ok(addr) if addr.port() == 0 => {}
            Ok(addr) => {
                if let Some(other) = addrs.insert(addr, name) {
                    err(
                        l.listen.span(),
                        key("listen"),
                        format!("address {addr} is already used by listener {other:?}"),
                    );
                }
            }
            Err(_) => err(
                l.listen.span(),
                key("listen"),
                format!("invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:2575\"", l.listen.get_ref()),
            ),
        }
        if let Some(topic) = &l.topic {
            check_topic(topic, key("topic"), &mut err);
            let t = topic.get_ref();
            if t.starts_with("dlq.") || t.starts_with("fhir.") {
                err(
                    topic.span(),
                    key("topic"),
                    format!("topic {t:?} uses a reserved prefix (dlq., fhir.): a listener writes HL7, e.g. \"hl7.lab\""),
                );
            }
        }
        let frame = l.max_frame.get_ref().0;
        if frame == 0 || frame > MAX_FRAME_LIMIT {
            err(
                l.max_frame.span(),
                key("max_frame"),
                format!("{} is out of range: 1B to 64MiB", l.max_frame.get_ref()),
            );
        }
        if *l.max_connections.get_ref() == 0 {
            err(
                l.max_connections.span(),
                key("max_connections"),
                "must be at least 1".into(),
            );
        }
        if let Some(t) = &l.tls {
            for (span, k, msg) in crate::tls::check_server(t) {
                err(span, key(&format!("tls.{k}")), msg);
            }
        }
        for a in &l.allow {
            if let Err(e) = a.get_ref().parse::<crate::cidr::Cidr>() {
                err(a.span(), key("allow"), e);
            }
        }
        if l.idle_timeout.get_ref().0.is_zero() {
            err(
                l.idle_timeout.span(),
                key("idle_timeout"),
                "must be greater than zero".into(),
            );
        }
    }
    match config.http.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {}
        Ok(addr) => {
            if let Some(other) = addrs.get(&addr) {
                err(
                    config.http.listen.span(),
                    "http.listen".into(),
                    format!("address {addr} is already used by listener {other:?}"),
                );
            }
        }
        Err(_) => err(
            config.http.listen.span(),
            "http.listen".into(),
            format!(
                "invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:9575\"",
                config.http.listen.get_ref()
            ),
        ),
    }
    validate_routes(config, &mut err);
    {
        let mut used: HashMap<SocketAddr, String> = addrs
            .iter()
            .map(|(a, n)| (*a, format!("listener {n:?}")))
            .collect();
        if let Ok(a) = config.http.listen.get_ref().parse::<SocketAddr>() {
            used.entry(a).or_insert_with(|| "the HTTP endpoint".into());
        }
        crate::protocol::validate(config.protocol.as_ref(), &config.clients, &used, &mut err);
        if let Some(p) = &config.protocol {
            if let Ok(a) = p.listen.get_ref().parse::<SocketAddr>() {
                used.entry(a)
                    .or_insert_with(|| "the protocol listener".into());
            }
        }
        crate::fhir::validate(config.fhir.as_ref(), &used, &mut err);
    }
    validate_destinations(config, &mut err);
    for (i, t) in config.retention.topics.iter().enumerate() {
        if let Err(e) = crate::route::Glob::new(t.topic.get_ref()) {
            err(
                t.topic.span(),
                format!("retention.topics[{i}].topic"),
                format!("bad pattern: {e}"),
            );
        }
    }
    if config.retention.interval.get_ref().0.is_zero() {
        err(
            config.retention.interval.span(),
            "retention.interval".into(),
            "must be greater than zero".into(),
        );
    }
    if let Some(tz) = &config.mapping.time_zone {
        if !is_utc_offset(tz.get_ref()) {
            err(
                tz.span(),
                "mapping.time_zone".into(),
                format!(
                    "{:?} is not a UTC offset: write e.g. \"+0100\", \"-05:00\" or \"Z\"",
                    tz.get_ref()
                ),
            );
        }
    }
    if let Some(t) = &config.mapping.threads {
        if !(1..=crate::schema::MAX_MAPPING_THREADS).contains(t.get_ref()) {
            err(
                t.span(),
                "mapping.threads".into(),
                format!(
                    "must be 1 to {} (1: convert on the routes' own thread)",
                    crate::schema::MAX_MAPPING_THREADS
                ),
            );
        }
    }
    if *config.storage.max_topics.get_ref() == 0 {
        err(
            config.storage.max_topics.span(),
            "storage.max_topics".into(),
            "must be at least 1".into(),
        );
    }
    if *config.storage.max_batch_records.get_ref() == 0 {
        let span = config.storage.max_batch_records.span();
        err(
            span,
            "storage.max_batch_records".into(),
            "must be at least 1".into(),
        );
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

fn check_topic(
    topic: &Spanned<String>,
    key: String,
    err: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    if !is_valid_topic(topic.get_ref()) {
        err(
            topic.span(),
            key,
            format!(
                "invalid topic name {:?}: use 1 to {MAX_TOPIC_NAME} of A-Z a-z 0-9 . _ -",
                topic.get_ref()
            ),
        );
    }
}

/// Topics fed by something other than a listener or a route.
pub const EXTERNALLY_FED: [&str; 1] = ["fhir.inbound"];

fn validate_routes(config: &Config, err: &mut impl FnMut(std::ops::Range<usize>, String, String)) {
    use crate::route::{
        compile_route, parse_template, template_could_produce, TemplatePart, Transform,
    };
    let mut names: HashMap<&str, ()> = HashMap::new();
    // Parsed targets of every route, for "is this source fed" and cycles.
    let mut produced: Vec<Vec<Vec<TemplatePart>>> = Vec::new();
    for r in &config.routes {
        produced.push(
            r.targets()
                .iter()
                .filter_map(|t| parse_template(t).ok())
                .collect(),
        );
    }
    let listener_topics: Vec<&str> = config.listeners.iter().map(|l| l.topic()).collect();
    for (i, r) in config.routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let name = r.name();
        if !is_valid_component_name(name) {
            err(
                r.name.span(),
                key("name"),
                format!("invalid name {name:?}: use 1 to {MAX_COMPONENT_NAME} letters, digits, '_' or '-'"),
            );
        } else if names.insert(name, ()).is_some() {
            err(
                r.name.span(),
                key("name"),
                format!("duplicate route name {name:?}"),
            );
        }
        let sources = r.sources();
        if sources.is_empty() {
            err(
                r.from.span(),
                key("from"),
                "a route needs at least one source topic".into(),
            );
        }
        for (k, s) in sources.iter().enumerate() {
            if sources.get(..k).is_some_and(|before| before.contains(s)) {
                err(
                    r.from.span(),
                    key("from"),
                    format!("topic {s:?} is listed twice: each source is read once"),
                );
                continue;
            }
            if !is_valid_topic(s) {
                err(
                    r.from.span(),
                    key("from"),
                    format!(
                        "invalid topic name {s:?}: use 1 to {MAX_TOPIC_NAME} of A-Z a-z 0-9 . _ -"
                    ),
                );
                continue;
            }
            let fed = listener_topics.contains(&s.as_str())
                || EXTERNALLY_FED.contains(&s.as_str())
                || s.starts_with("dlq.")
                || produced
                    .iter()
                    .enumerate()
                    .any(|(j, ts)| j != i && ts.iter().any(|t| template_could_produce(t, s)));
            if !fed {
                err(
                    r.from.span(),
                    key("from"),
                    format!("no listener or route writes to topic {s:?}: this route would never see a record"),
                );
            }
        }
        if let Some(d) = &r.dead_letter {
            if !is_valid_topic(d.get_ref()) || !d.get_ref().starts_with("dlq.") {
                err(
                    d.span(),
                    key("dead_letter"),
                    format!(
                        "{:?} must be a topic name starting with \"dlq.\"",
                        d.get_ref()
                    ),
                );
            }
        }
        let transform = *r.transform.get_ref();
        if r.to.get_ref().is_empty() {
            err(
                r.to.span(),
                key("to"),
                "a route needs at least one target topic".into(),
            );
        }
        for (j, t) in r.to.get_ref().iter().enumerate() {
            let Ok(parts) = parse_template(t.get_ref()) else {
                continue;
            }; // reported by compile_route
            for p in &parts {
                match p {
                    TemplatePart::Literal(l) if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') => err(
                        t.span(),
                        format!("routes[{i}].to[{j}]"),
                        format!("invalid topic name {:?}: use A-Z a-z 0-9 . _ - and {{placeholders}}", t.get_ref()),
                    ),
                    TemplatePart::Key(k) if k == "resourceType" && transform == Transform::None => err(
                        t.span(),
                        format!("routes[{i}].to[{j}]"),
                        "{resourceType} needs transform = \"fhir\" or \"fhir-resources\"".into(),
                    ),
                    _ => {}
                }
            }
            // Only a literal target is certainly a loop; a template that could
            // resolve to a source is caught per record at run time.
            let literal = parts.iter().all(|p| matches!(p, TemplatePart::Literal(_)));
            if literal && sources.iter().any(|s| template_could_produce(&parts, s)) {
                err(
                    t.span(),
                    format!("routes[{i}].to[{j}]"),
                    format!("route writes to its own source {:?}", t.get_ref()),
                );
            }
        }
        if let Err(problems) = compile_route(r, &format!("routes[{i}]")) {
            for (span, k, msg) in problems {
                err(span, k, msg);
            }
        }
    }
    // Cycles: route i feeds route j when one of i's literal targets is one
    // of j's sources (template targets are guarded per record at run time by
    // a hop count).
    let n = config.routes.len();
    let feeds = |i: usize, j: usize| {
        config.routes[j].sources().iter().any(|s| {
            produced[i].iter().any(|t| {
                t.iter().all(|p| matches!(p, TemplatePart::Literal(_)))
                    && template_could_produce(t, s)
            })
        })
    };
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(
        i: usize,
        n: usize,
        state: &mut Vec<u8>,
        stack: &mut Vec<usize>,
        feeds: &dyn Fn(usize, usize) -> bool,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for j in 0..n {
            if i == j || !feeds(i, j) {
                continue;
            }
            if state[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, n, state, stack, feeds) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; n];
    for i in 0..n {
        if state[i] == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(i, n, &mut state, &mut stack, &feeds) {
                let names: Vec<&str> = cycle.iter().map(|&k| config.routes[k].name()).collect();
                let first = cycle[0];
                err(
                    config.routes[first].to.span(),
                    format!("routes[{first}].to"),
                    format!(
                        "routes form a cycle: {} -> {}",
                        names.join(" -> "),
                        names[0]
                    ),
                );
                break;
            }
        }
    }
}

/// `Z`, `±HHMM` or `±HH:MM` with hours ≤ 14 and minutes < 60.
fn is_utc_offset(s: &str) -> bool {
    if s == "Z" {
        return true;
    }
    let digits: String = s.chars().skip(1).filter(|c| *c != ':').collect();
    let sign_ok = s.starts_with('+') || s.starts_with('-');
    let shape_ok = s.len() == 5 || (s.len() == 6 && s.as_bytes().get(3) == Some(&b':'));
    if !sign_ok || !shape_ok || digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let h: u32 = digits[..2].parse().unwrap_or(99);
    let m: u32 = digits[2..].parse().unwrap_or(99);
    h <= 14 && m < 60
}

fn validate_destinations(
    config: &Config,
    err: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    use crate::route::{compile, parse_template, template_could_produce};
    let mut names: HashMap<&str, ()> = HashMap::new();
    for (i, d) in config.destinations.iter().enumerate() {
        let key = |field: &str| format!("destinations[{i}].{field}");
        let name = d.name();
        if !is_valid_component_name(name) {
            err(
                d.name.span(),
                key("name"),
                format!("invalid name {name:?}: use 1 to {MAX_COMPONENT_NAME} letters, digits, '_' or '-'"),
            );
        } else if names.insert(name, ()).is_some() {
            err(
                d.name.span(),
                key("name"),
                format!("duplicate destination name {name:?}"),
            );
        }
        let from = d.from.get_ref();
        if !is_valid_topic(from) {
            err(
                d.from.span(),
                key("from"),
                format!("invalid topic name {from:?}"),
            );
        } else {
            let fed = config.listeners.iter().any(|l| l.topic() == from)
                || EXTERNALLY_FED.contains(&from.as_str())
                || from.starts_with("dlq.")
                || config
                    .routes
                    .iter()
                    .flat_map(|r| r.targets())
                    .filter_map(|t| parse_template(&t).ok())
                    .any(|t| template_could_produce(&t, from));
            if !fed {
                err(
                    d.from.span(),
                    key("from"),
                    format!("no listener or route writes to topic {from:?}: this destination would never send anything"),
                );
            }
        }
        if d.connect
            .get_ref()
            .rsplit_once(':')
            .and_then(|(h, p)| (!h.is_empty()).then_some(p))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .is_none()
        {
            err(
                d.connect.span(),
                key("connect"),
                format!(
                    "invalid address {:?}: write host:port, e.g. \"10.2.0.7:2575\"",
                    d.connect.get_ref()
                ),
            );
        }
        if let Some(w) = &d.when {
            let mut problems = Vec::new();
            compile(w, &key("when"), &mut problems);
            for (span, k, msg) in problems {
                err(span, k, msg);
            }
        }
        for path in d.set.keys() {
            if let Err(e) = path.parse::<medbus_hl7::Path>() {
                err(
                    d.name.span(),
                    key("set"),
                    format!("bad field path {path:?}: {}", e.reason),
                );
            } else if path.starts_with("MSH-1") && (path.len() == 5 || path.starts_with("MSH-1."))
                || path.starts_with("MSH-2")
            {
                err(
                    d.name.span(),
                    key("set"),
                    format!("{path} holds the delimiters and cannot be rewritten"),
                );
            }
        }
        if let Some(t) = &d.tls {
            for (span, k, msg) in crate::tls::check_client(t) {
                err(span, key(&format!("tls.{k}")), msg);
            }
        }
        if *d.retry.max_attempts.get_ref() == 0 {
            err(
                d.retry.max_attempts.span(),
                key("retry.max_attempts"),
                "must be at least 1".into(),
            );
        }
        if d.retry.initial.0.is_zero() || d.retry.initial > d.retry.max {
            err(
                d.name.span(),
                key("retry"),
                "initial must be greater than zero and at most max".into(),
            );
        }
        if d.ack_timeout.0.is_zero() || d.connect_timeout.0.is_zero() {
            err(
                d.name.span(),
                key("ack_timeout"),
                "timeouts must be greater than zero".into(),
            );
        }
    }
}
