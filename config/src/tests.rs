//! Table tests that pin each config error to its line, column and key, and
//! check the documented defaults against the code.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text, "t.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn embedded_default_matches_the_documented_defaults() {
    let c = embedded_default();
    assert_eq!(c.data_dir, "medbus-data");
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert!(!c.log_payloads);
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.name(), "default");
    assert_eq!(l.listen.get_ref(), "127.0.0.1:2575");
    assert_eq!(l.topic(), "hl7.inbound");
    assert_eq!(l.max_frame_bytes(), 1 << 20);
    assert_eq!(*l.max_connections.get_ref(), 256);
    assert_eq!(l.idle_timeout.get_ref().to_string(), "10m");
    assert_eq!(l.dedup_window.to_string(), "10m");
    assert_eq!(c.http.listen.get_ref(), "127.0.0.1:9575");
    assert_eq!(c.http.shutdown_grace.to_string(), "2s");
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(r.name(), "normalise");
    assert_eq!(r.sources(), vec!["hl7.inbound".to_string()]);
    assert_eq!(
        r.targets(),
        vec![
            "fhir.bundles".to_string(),
            "fhir.{resourceType}".to_string()
        ]
    );
    assert_eq!(r.dead_letter_topic(), "dlq.fhir");
    assert!(c.mapping.threads.is_none());
    assert_eq!(
        c.mapping.threads(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
}

#[test]
fn error_table() {
    let cases: &[(&str, &str)] = &[
        ("bogus = 1\n", "t.toml:1:1: bogus: unknown field `bogus`"),
        ("[storage]\ndurability = \"sometimes\"\n", "t.toml:2:14: "),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"nowhere\"\n",
            "t.toml:3:10: listeners[0].listen: invalid address \"nowhere\"",
        ),
        (
            "[[listeners]]\nname = \"a b\"\nlisten = \"127.0.0.1:1\"\n",
            "t.toml:2:8: listeners[0].name: invalid name \"a b\"",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntopic = \"dlq.x\"\n",
            "t.toml:4:9: listeners[0].topic: topic \"dlq.x\" uses a reserved prefix",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntopic = \"bad topic\"\n",
            "t.toml:4:9: listeners[0].topic: invalid topic name",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_frame = \"1TB\"\n",
            "t.toml:4:13: listeners.max_frame: invalid size \"1TB\"",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_frame = \"1GiB\"\n",
            "t.toml:4:13: listeners[0].max_frame: 1GiB is out of range",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nidle_timeout = 5\n",
            "t.toml:4:16: listeners.idle_timeout: a duration needs a unit",
        ),
        (
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_connections = 0\n",
            "t.toml:4:19: listeners[0].max_connections: must be at least 1",
        ),
        (
            "[retention]\nmax_records = 5\ninterval = \"0s\"\n",
            "t.toml:3:12: retention.interval: must be greater than zero",
        ),
        (
            "[mapping]\nthreads = 0\n",
            "t.toml:2:11: mapping.threads: must be 1 to 256",
        ),
        (
            "[mapping]\nthreads = 257\n",
            "t.toml:2:11: mapping.threads: must be 1 to 256",
        ),
        (
            "[http]\nlisten = \"9575\"\n",
            "t.toml:2:10: http.listen: invalid address \"9575\"",
        ),
        ("[storage\n", "t.toml:1:9: storage: invalid table header"),
        (
            "[[listeners]]\nname = \"a\"\n",
            "t.toml:1:1: listeners: missing field `listen`",
        ),
    ];
    for (text, want) in cases {
        let got = errors(text);
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "for {text:?}: want prefix {want:?}, got {got:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "[[listeners]]\nname = \"a\"\nlisten = \"x\"\n\n[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntopic = \"fhir.x\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].starts_with("t.toml:3:10: listeners[0].listen"));
    assert!(got[1].starts_with("t.toml:6:8: listeners[1].name: duplicate listener name"));
    assert!(got[2].starts_with("t.toml:8:9: listeners[1].topic"));
}

#[test]
fn units_parse_and_print() {
    assert_eq!("1MiB".parse::<ByteSize>().map(|b| b.0), Ok(1 << 20));
    assert_eq!("512".parse::<ByteSize>().map(|b| b.0), Ok(512));
    assert!("1 furlong".parse::<ByteSize>().is_err());
    assert_eq!(
        "30s".parse::<HumanDuration>().map(|d| d.0.as_secs()),
        Ok(30)
    );
    assert_eq!(
        "250ms".parse::<HumanDuration>().map(|d| d.to_string()),
        Ok("250ms".into())
    );
    assert!("10".parse::<HumanDuration>().is_err());
    assert!("99999999999999999999d".parse::<HumanDuration>().is_err());
}

#[test]
fn a_reload_names_what_needs_a_restart() {
    let running = "data_dir = \"d\"\n[storage]\ndurability = \"fsync\"\n\n[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"r\"\nfrom = \"x\"\nto = [\"y\"]\n";
    // Only routes and mapping changed: nothing needs a restart.
    let reloadable = format!(
        "{}\n[mapping]\nthreads = 2\n",
        running.replace("to = [\"y\"]", "to = [\"z\"]")
    );
    assert!(restart_needed(running, &reloadable).is_empty());
    // A listener added, durability changed, retention added.
    let more = format!(
        "{}\n[[listeners]]\nname = \"b\"\nlisten = \"127.0.0.1:2\"\n\n[retention]\nmax_records = 5\n",
        running.replace("\"fsync\"", "\"none\"")
    );
    assert_eq!(
        restart_needed(running, &more),
        ["listeners", "retention", "storage"]
    );
}
