//! `[protocol]` and `[[clients]]`: every error pinned to its file:line:col
//! and key, and the documented defaults checked against the code.

use medbus_config::{embedded_default, parse};

fn errors(text: &str) -> Vec<String> {
    match parse(text, "p.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn protocol_error_table() {
    let cases: Vec<(String, &str)> = vec![
        (
            "[protocol]\nlisten = \"nowhere\"\n".into(),
            "p.toml:2:10: protocol.listen: invalid address \"nowhere\"",
        ),
        (
            "[protocol]\nlisten = \"0.0.0.0:7575\"\n".into(),
            "p.toml:2:10: protocol.listen: 0.0.0.0:7575 is not a loopback address: without [[clients]]",
        ),
        (
            "[protocol]\nlisten = \"127.0.0.1:7575\"\nmax_frame = \"1GiB\"\n".into(),
            "p.toml:3:13: protocol.max_frame: 1GiB is out of range",
        ),
        (
            "[protocol]\nmax_credits = 0\n".into(),
            "p.toml:2:15: protocol.max_credits: 0 is out of range",
        ),
        (
            "[protocol]\ntls = { cert = \"/nonexistent/c.pem\", key = \"/nonexistent/k.pem\" }\n".into(),
            "p.toml:2:16: protocol.tls.cert: cannot read",
        ),
        (
            "[protocol]\nmax_connections = 0\n".into(),
            "p.toml:2:19: protocol.max_connections: must be at least 1",
        ),
        (
            "[protocol]\ncolour = 1\n".into(),
            "p.toml:2:1: protocol.colour: unknown field `colour`",
        ),
        (
            "[http]\nlisten = \"127.0.0.1:9000\"\n[protocol]\nlisten = \"127.0.0.1:9000\"\n".into(),
            "p.toml:4:10: protocol.listen: address 127.0.0.1:9000 is already used by the HTTP endpoint",
        ),
        (
            "[protocol]\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n".to_string(),
            "p.toml:4:16: clients[0].token_sha256: must be the 64 hex digits",
        ),
        (
            format!("[protocol]\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n", HASH.replace('9', "8")),
            "p.toml:6:8: clients[1].name: duplicate client name \"a\"",
        ),
        (
            format!("[protocol]\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\n[[clients]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n", HASH.to_uppercase()),
            "p.toml:7:16: clients[1].token_sha256: the same token is already given to client \"a\"",
        ),
        (
            format!("[protocol]\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\nsubscribe = [\"fhir.*\", \"bad topic\"]\n"),
            "p.toml:5:24: clients[0].subscribe: bad topic pattern \"bad topic\"",
        ),
        (
            format!("[[clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\n"),
            "p.toml:2:8: clients: [[clients]] without a [protocol] section",
        ),
        (
            format!("[protocol]\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"{HASH}\"\nsecret = \"x\"\n"),
            "p.toml:5:1: clients.secret: unknown field `secret`",
        ),
    ];
    for (text, want) in &cases {
        let got = errors(text);
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "config:\n{text}\nwant: {want}\ngot:  {got:#?}"
        );
    }
}

#[test]
fn clients_allow_a_public_listen_address() {
    let text = format!(
        "[protocol]\nlisten = \"0.0.0.0:7575\"\n\
         [[clients]]\nname = \"portal\"\ntoken_sha256 = \"{HASH}\"\nsubscribe = [\"fhir.*\"]\npublish = [\"fhir.inbound\"]\n"
    );
    let c = parse(&text, "p.toml").expect("valid");
    let p = c.protocol.expect("protocol");
    assert!(p.tls.is_none());
    assert_eq!(c.clients[0].subscribe_globs().len(), 1);
    assert!(c.clients[0].subscribe_globs()[0].matches("fhir.Patient"));
}

#[test]
fn embedded_default_has_the_documented_protocol_listener() {
    let c = embedded_default();
    let p = c.protocol.expect("the embedded default has [protocol]");
    assert_eq!(p.listen.get_ref(), "127.0.0.1:7575");
    assert_eq!(p.max_frame_bytes(), 1 << 20);
    assert_eq!(*p.max_connections.get_ref(), 256);
    assert_eq!(*p.max_credits.get_ref(), 1024);
    assert!(p.tls.is_none());
    assert!(c.clients.is_empty());
    // A file without [protocol] has no protocol listener.
    let c = parse("", "p.toml").expect("valid");
    assert!(c.protocol.is_none());
}
