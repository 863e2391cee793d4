//! The binary protocol end to end: a real broker child process, real
//! sockets, the `medbus-protocol` client, raw bytes for bad input, and the
//! `tail` / `publish` / `topics --server` commands.

use medbus_protocol::frame::{self, MAX_FRAME};
use medbus_protocol::{
    Client, ClientError, ClientFrame, ClientOptions, Delivery, ErrorCode, PublishRecord,
    ServerFrame, StartAt, SubscribeOptions, Subscription,
};
use medbus_tests::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

/// Longest wait for something that must happen.
const WAIT: Duration = Duration::from_secs(30);
/// How long "nothing more arrives" is watched (a correctness check, not a
/// performance one: a wrong broker would deliver well within it).
const QUIET: Duration = Duration::from_millis(700);
/// SHA-256 of the token "test".
const TEST_TOKEN_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn config(extra: &str) -> String {
    format!(
        "{}{}{extra}",
        listener_config("in", ""),
        protocol_config("")
    )
}

async fn connect(b: &Broker) -> Client {
    Client::connect(&b.protocol(), ClientOptions::default())
        .await
        .expect("connect")
}

fn rec(text: &str) -> PublishRecord {
    PublishRecord {
        headers: vec![("app.key".into(), text.into())],
        content_type: "text/plain".into(),
        payload: text.as_bytes().to_vec(),
    }
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("subscription open")
        .expect("a delivery, not an error")
}

async fn quiet(sub: &mut Subscription) -> bool {
    tokio::time::timeout(QUIET, sub.next()).await.is_err()
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.record.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_answered_only_once_durable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let b = Broker::start(&config(""), &data);
    let client = connect(&b).await;
    let single = client
        .publish("app.events", rec("first"))
        .await
        .expect("publish");
    let batch: Vec<PublishRecord> = (0..100).map(|i| rec(&format!("batch-{i}"))).collect();
    let offsets = client
        .publish_batch("app.events", batch)
        .await
        .expect("batch");
    // Crash right after the replies.
    b.kill9();
    assert_eq!(single, 0);
    assert_eq!(offsets, (1..=100).collect::<Vec<u64>>());

    let b = Broker::start(&config(""), &data);
    let client = connect(&b).await;
    let mut sub = client
        .subscribe(
            SubscribeOptions::new("app.events")
                .start(StartAt::Earliest)
                .credits(200),
        )
        .await
        .expect("subscribe");
    let d = next(&mut sub).await;
    assert_eq!((d.offset, text(&d).as_str()), (0, "first"));
    assert!(d
        .record
        .headers
        .contains(&("app.key".into(), "first".into())));
    assert!(d
        .record
        .headers
        .contains(&("medbus.client".into(), "development".into())));
    for i in 0..100u64 {
        let d = next(&mut sub).await;
        assert_eq!(d.offset, i + 1);
        assert_eq!(text(&d), format!("batch-{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mllp_message_is_pushed_to_live_subscribers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let routes = "\n[[routes]]\nname = \"normalise\"\nfrom = \"hl7.inbound\"\ntransform = \"fhir\"\nto = [\"fhir.bundles\", \"fhir.{resourceType}\"]\n";
    let b = Broker::start(&config(routes), &tmp.path().join("data"));
    let client = connect(&b).await;
    let mut raw = client
        .subscribe(SubscribeOptions::new("hl7.inbound"))
        .await
        .expect("subscribe hl7");
    let mut patients = client
        .subscribe(SubscribeOptions::new("fhir.Patient"))
        .await
        .expect("subscribe fhir");
    let mllp = b.mllp("in");
    let ack = tokio::task::spawn_blocking(move || {
        MllpClient::connect(mllp).request(&adt_a01("LIVE1", "PUSHPATIENT"))
    })
    .await
    .expect("join");
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));

    let d = next(&mut raw).await;
    assert_eq!(d.topic, "hl7.inbound");
    assert!(text(&d).contains("LIVE1"));
    assert!(d
        .record
        .headers
        .contains(&("hl7.control_id".into(), "LIVE1".into())));
    raw.ack(d.offset).await.expect("ack");

    let p = next(&mut patients).await;
    let json: serde_json::Value = serde_json::from_slice(&p.record.payload).expect("FHIR JSON");
    assert_eq!(json["resourceType"], "Patient");
    assert!(json.to_string().contains("PUSHPATIENT"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_resumes_after_reconnect_and_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let b = Broker::start(&config(""), &data);
    let publisher = connect(&b).await;
    let batch: Vec<PublishRecord> = (0..10).map(|i| rec(&format!("r{i}"))).collect();
    publisher
        .publish_batch("g.topic", batch)
        .await
        .expect("publish");
    let group = || {
        SubscribeOptions::new("g.topic")
            .group("billing")
            .start(StartAt::Earliest)
            .credits(4)
    };

    let first = connect(&b).await;
    let mut sub = first.subscribe(group()).await.expect("subscribe");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut sub).await.offset);
    }
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert!(
        quiet(&mut sub).await,
        "more than the credit window delivered"
    );
    sub.ack_many(got).await.expect("ack");
    first.close().await;
    drop(sub);
    drop(first);

    // Reconnect: the group goes on after the committed offset.
    let second = connect(&b).await;
    let mut sub = tokio::time::timeout(WAIT, async {
        loop {
            // The old member's leave may still be in flight.
            let s = second.subscribe(group()).await.expect("subscribe");
            if s.start_offset() == 4 {
                break s;
            }
        }
    })
    .await
    .expect("resubscribe");
    for want in 4..=6 {
        let d = next(&mut sub).await;
        assert_eq!(d.offset, want);
        sub.ack(d.offset).await.expect("ack");
    }
    b.kill9();

    // Crash and restart: the committed offset (7) is durable.
    let b = Broker::start(&config(""), &data);
    let third = connect(&b).await;
    let mut sub = third.subscribe(group()).await.expect("subscribe");
    assert_eq!(sub.start_offset(), 7);
    let d = next(&mut sub).await;
    assert_eq!((d.offset, text(&d).as_str()), (7, "r7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_records_and_lose_none_when_one_drops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(&config(""), &tmp.path().join("data"));
    let publisher = connect(&b).await;
    let a = connect(&b).await;
    let bb = connect(&b).await;
    let opts = || {
        SubscribeOptions::new("s.topic")
            .group("share")
            .start(StartAt::Earliest)
            .credits(5)
    };
    let mut sa = a.subscribe(opts()).await.expect("a");
    let mut sb = bb.subscribe(opts()).await.expect("b");

    // Both healthy: every record to exactly one of them.
    let batch: Vec<PublishRecord> = (0..40).map(|i| rec(&format!("s{i}"))).collect();
    publisher
        .publish_batch("s.topic", batch)
        .await
        .expect("publish");
    let (mut got_a, mut got_b) = (BTreeSet::new(), BTreeSet::new());
    while got_a.len() + got_b.len() < 40 {
        tokio::select! {
            d = next(&mut sa) => {
                assert!(got_a.insert(d.offset), "offset {} delivered twice to a", d.offset);
                sa.ack(d.offset).await.expect("ack a");
            }
            d = next(&mut sb) => {
                assert!(got_b.insert(d.offset), "offset {} delivered twice to b", d.offset);
                sb.ack(d.offset).await.expect("ack b");
            }
        }
    }
    assert!(
        got_a.is_disjoint(&got_b),
        "delivered to both: {:?}",
        got_a.intersection(&got_b).collect::<Vec<_>>()
    );
    let all: BTreeSet<u64> = got_a.union(&got_b).copied().collect();
    assert_eq!(all, (0..40).collect());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "a: {got_a:?} b: {got_b:?}"
    );

    // a takes records and never acks them, then drops: b gets them all.
    let batch: Vec<PublishRecord> = (40..60).map(|i| rec(&format!("s{i}"))).collect();
    publisher
        .publish_batch("s.topic", batch)
        .await
        .expect("publish");
    let mut held = BTreeSet::new();
    let mut acked_b = BTreeSet::new();
    while held.len() < 5 {
        tokio::select! {
            d = next(&mut sa) => { held.insert(d.offset); }
            d = next(&mut sb) => {
                acked_b.insert(d.offset);
                sb.ack(d.offset).await.expect("ack b");
            }
        }
    }
    a.close().await;
    drop(sa);
    while acked_b.len() < 20 {
        let d = next(&mut sb).await;
        acked_b.insert(d.offset);
        sb.ack(d.offset).await.expect("ack b");
    }
    assert_eq!(acked_b, (40..60).collect::<BTreeSet<u64>>());
    assert!(held.is_subset(&acked_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_and_credits_bound_deliveries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(&config(""), &tmp.path().join("data"));
    let client = connect(&b).await;
    let batch: Vec<PublishRecord> = (0..10).map(|i| rec(&format!("c{i}"))).collect();
    client
        .publish_batch("c.topic", batch)
        .await
        .expect("publish");

    let mut sub = client
        .subscribe(
            SubscribeOptions::new("c.topic")
                .start(StartAt::Earliest)
                .credits(3),
        )
        .await
        .expect("subscribe");
    let got: Vec<u64> = vec![
        next(&mut sub).await.offset,
        next(&mut sub).await.offset,
        next(&mut sub).await.offset,
    ];
    assert_eq!(got, vec![0, 1, 2]);
    assert!(
        quiet(&mut sub).await,
        "a subscriber that does not ack got more than its credits"
    );

    sub.nack(1).await.expect("nack");
    let again = next(&mut sub).await;
    assert_eq!((again.offset, text(&again).as_str()), (1, "c1"));
    assert!(quiet(&mut sub).await);

    sub.ack_many(vec![0, 1]).await.expect("ack");
    assert_eq!(next(&mut sub).await.offset, 3);
    assert_eq!(next(&mut sub).await.offset, 4);
    assert!(quiet(&mut sub).await);

    // Other subscriptions are not held back by this slow one.
    let mut fast = client
        .subscribe(
            SubscribeOptions::new("c.topic")
                .start(StartAt::Earliest)
                .credits(100),
        )
        .await
        .expect("subscribe");
    for want in 0..10 {
        assert_eq!(next(&mut fast).await.offset, want);
    }
    // Start positions: an offset and a time.
    let mut from5 = client
        .subscribe(SubscribeOptions::new("c.topic").start(StartAt::Offset(5)))
        .await
        .expect("subscribe");
    assert_eq!(next(&mut from5).await.offset, 5);
    let mut by_time = client
        .subscribe(SubscribeOptions::new("c.topic").start(StartAt::Timestamp(0)))
        .await
        .expect("subscribe");
    assert_eq!(next(&mut by_time).await.offset, 0);
    let mut future = client
        .subscribe(SubscribeOptions::new("c.topic").start(StartAt::Timestamp(u64::MAX)))
        .await
        .expect("subscribe");
    assert_eq!(future.start_offset(), 10);
    assert!(quiet(&mut future).await);
}

/// Send raw bytes, then read everything until the broker closes; returns
/// the first frame it sent.
fn raw_exchange(addr: &str, bytes: &[u8], half_close: bool) -> ServerFrame {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(bytes).expect("write");
    if half_close {
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }
    let mut buf = Vec::new();
    // read_to_end returns only once the broker closes the connection.
    s.read_to_end(&mut buf)
        .expect("the broker closes the connection");
    let (frame, _) = frame::parse::<ServerFrame>(&buf, MAX_FRAME).expect("an error frame");
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_frame_then_close() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(&config(""), &tmp.path().join("data"));
    let addr = b.protocol();
    let hello = |version: u16| {
        frame::to_bytes(
            &ClientFrame::Hello {
                version,
                client_name: "raw".into(),
                token: String::new(),
            },
            MAX_FRAME,
        )
        .expect("encode")
    };
    let ping = frame::to_bytes(&ClientFrame::Ping { request_id: 1 }, MAX_FRAME).expect("encode");
    let mut after_hello = hello(1);
    after_hello.extend([0xff, 0xff, 0xff, 0xff]);
    let cases: Vec<(&str, Vec<u8>, bool, ErrorCode)> = vec![
        (
            "oversized length",
            vec![0xff, 0xff, 0xff, 0xff],
            false,
            ErrorCode::FrameTooLarge,
        ),
        (
            "garbage version byte",
            vec![0, 0, 0, 1, 9],
            false,
            ErrorCode::UnsupportedVersion,
        ),
        (
            "undecodable body",
            vec![0, 0, 0, 5, 1, 200, 0, 0, 0],
            false,
            ErrorCode::BadFrame,
        ),
        (
            "request before Hello",
            ping,
            false,
            ErrorCode::NotAuthenticated,
        ),
        (
            "unknown protocol version",
            hello(99),
            false,
            ErrorCode::UnsupportedVersion,
        ),
        (
            "frame cut short",
            vec![0, 0, 0, 50, 1, 0, 0],
            true,
            ErrorCode::BadFrame,
        ),
    ];
    let addr2 = addr.clone();
    tokio::task::spawn_blocking(move || {
        for (what, bytes, half_close, code) in cases {
            match raw_exchange(&addr2, &bytes, half_close) {
                ServerFrame::Error { request_id: 0, code: got, message } => {
                    assert_eq!(got, code.as_u16(), "{what}: {message}");
                }
                other => panic!("{what}: expected an error frame, got {other:?}"),
            }
        }
        // After a Welcome, an oversized frame still gets its error.
        let mut s = std::net::TcpStream::connect(&addr2).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(&after_hello).expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("closed");
        let (welcome, used) = frame::parse::<ServerFrame>(&buf, MAX_FRAME).expect("welcome");
        assert!(matches!(welcome, ServerFrame::Welcome { .. }), "{welcome:?}");
        let (err, _) = frame::parse::<ServerFrame>(&buf[used..], MAX_FRAME).expect("error");
        assert!(
            matches!(err, ServerFrame::Error { code, .. } if code == ErrorCode::FrameTooLarge.as_u16()),
            "{err:?}"
        );
    })
    .await
    .expect("raw cases");

    // Nothing else is disturbed, and every case was counted.
    let client = connect(&b).await;
    client.ping().await.expect("ping");
    let (_, metrics) = http_get(b.http.expect("http"), "/metrics").expect("metrics");
    for (kind, n) in [
        ("frame_too_large", 2),
        ("bad_version", 1),
        ("undecodable", 1),
        ("not_authenticated", 1),
        ("unsupported_version", 1),
        ("truncated", 1),
    ] {
        let line = format!("medbus_protocol_errors_total{{kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }
    assert!(metrics.contains("medbus_client_connections 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_topic_patterns_are_enforced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let clients = format!(
        "\n[[clients]]\nname = \"portal\"\ntoken_sha256 = \"{TEST_TOKEN_SHA256}\"\nsubscribe = [\"fhir.*\", \"app.*\"]\npublish = [\"app.*\"]\n"
    );
    let b = Broker::start(&config(&clients), &tmp.path().join("data"));
    let with = |token: &str| ClientOptions {
        token: token.into(),
        ..ClientOptions::default()
    };
    for bad in ["wrong", ""] {
        match Client::connect(&b.protocol(), with(bad)).await {
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::AuthenticationFailed), "{e}"),
            Ok(_) => panic!("token {bad:?} accepted"),
        }
    }
    let client = Client::connect(&b.protocol(), with("test"))
        .await
        .expect("connect");
    assert_eq!(client.welcome().client, "portal");
    client
        .publish("app.x", rec("ok"))
        .await
        .expect("allowed publish");
    let denied = client.publish("fhir.Patient", rec("no")).await;
    assert!(
        matches!(&denied, Err(e) if e.code() == Some(ErrorCode::Forbidden)),
        "{denied:?}"
    );
    let denied = client.subscribe(SubscribeOptions::new("hl7.inbound")).await;
    assert!(
        matches!(&denied, Err(e) if e.code() == Some(ErrorCode::Forbidden)),
        "{:?}",
        denied.err()
    );
    let invalid = client.publish("bad topic", rec("no")).await;
    assert!(matches!(&invalid, Err(e) if e.code() == Some(ErrorCode::InvalidRequest)));
    let too_many = client
        .subscribe(SubscribeOptions::new("app.x").credits(1_000_000))
        .await;
    assert!(matches!(&too_many, Err(e) if e.code() == Some(ErrorCode::InvalidRequest)));
    // The connection stays after refused requests.
    client.ping().await.expect("ping after refusals");
    let mut sub = client
        .subscribe(SubscribeOptions::new("app.x").start(StartAt::Earliest))
        .await
        .expect("allowed subscribe");
    assert_eq!(text(&next(&mut sub).await), "ok");
    let topics = client.list_topics().await.expect("topics");
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["app.x"],
        "only topics the client may use are listed"
    );
    assert!(matches!(
        client.ack(999, vec![1]).await,
        Err(ClientError::Server { code, .. }) if code == ErrorCode::UnknownSubscription.as_u16()
    ));
}

#[test]
fn cli_publish_topics_and_tail_over_the_protocol() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let b = Broker::start(&config(""), &data);
    let server = b.protocol();
    let hl7 = tmp.path().join("m.hl7");
    std::fs::write(&hl7, adt_a01("CLI-P1", "DOE")).expect("write");
    let json = tmp.path().join("m.json");
    std::fs::write(&json, br#"{"resourceType":"Patient","id":"p1"}"#).expect("write");
    let (code, out, err) = medbus(&[
        "publish",
        "cli.t",
        &hl7.to_string_lossy(),
        "--server",
        &server,
    ]);
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
    let (code, out, err) = medbus(&[
        "publish",
        "cli.t",
        &json.to_string_lossy(),
        "--server",
        &server,
    ]);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");

    let (code, out, err) = medbus(&["topics", "--server", &server]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("cli.t"))
        .expect("cli.t listed");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        vec!["cli.t", "0", "1", "2"]
    );

    let (code, tailed, err) = medbus(&[
        "tail", "cli.t", "--from", "earliest", "--count", "2", "--server", &server,
    ]);
    assert_eq!(code, 0, "{err}");
    // A group tail resumes after what it printed.
    let (_, first, _) = medbus(&[
        "tail", "cli.t", "--from", "earliest", "--group", "ops", "--count", "1", "--server",
        &server,
    ]);
    let (_, second, _) = medbus(&[
        "tail", "cli.t", "--from", "earliest", "--group", "ops", "--count", "1", "--server",
        &server,
    ]);
    let (code, _, err) = medbus(&["tail", "cli.t", "--from", "bogus", "--server", &server]);
    assert_eq!(code, 2, "{err}");
    // A tail that follows (no --count) fails when the broker goes away:
    // exit 1 and a message, not a silent success.
    let mut follower = std::process::Command::new(medbus_bin())
        .args(["tail", "cli.t", "--from", "earliest", "--server", &server])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tail");
    {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(follower.stdout.take().expect("stdout")).lines();
        for _ in 0..2 {
            lines.next().expect("a record").expect("read");
        }
    }
    assert_eq!(b.stop(), Some(0));
    wait_for("the tail to end", || {
        follower.try_wait().ok().flatten().is_some()
    });
    let ended = follower.wait_with_output().expect("tail output");
    let said = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(1), "{said}");
    assert!(said.contains("closed the connection"), "{said}");

    // Exactly what `dump` prints.
    let (code, dumped, err) = medbus(&["dump", "cli.t", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tailed, dumped);
    let lines: Vec<&str> = dumped.lines().collect();
    assert_eq!(first.trim_end(), lines[0]);
    assert_eq!(second.trim_end(), lines[1]);
    let v: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
    assert_eq!(v["content_type"], "application/fhir+json");
    assert_eq!(v["payload"]["resourceType"], "Patient");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(v["content_type"], "application/hl7-v2+er7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_certificate_made_by_the_test() {
    use std::sync::Arc;
    let tmp = tempfile::tempdir().expect("tmp");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = tmp.path().join("server.pem");
    let key = tmp.path().join("server.key");
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write");

    // A missing key file is a config error with its position, at check time.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[protocol]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {:?}, key = \"/nonexistent/k.pem\" }}\n", cert.display().to_string()),
    )
    .expect("write");
    let (code, _, err) = medbus(&["check-config", &bad.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":3:") && err.contains("protocol.tls.key"),
        "{err}"
    );

    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = format!("{}{}", listener_config("in", ""), protocol_config(&tls));
    let b = Broker::start(&config, &tmp.path().join("data"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let tcp = tokio::net::TcpStream::connect(b.protocol())
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let client = Client::handshake(stream, ClientOptions::default())
        .await
        .expect("hello over TLS");
    let offset = client
        .publish("tls.t", rec("secret"))
        .await
        .expect("publish");
    let mut sub = client
        .subscribe(SubscribeOptions::new("tls.t").start(StartAt::Offset(offset)))
        .await
        .expect("subscribe");
    assert_eq!(text(&next(&mut sub).await), "secret");

    // Plain TCP to a TLS listener gets no protocol answer.
    let plain = Client::connect(
        &b.protocol(),
        ClientOptions {
            connect_timeout: Duration::from_secs(15),
            ..ClientOptions::default()
        },
    )
    .await;
    assert!(plain.is_err());
}

/// The value of `series` in the broker's `/metrics`.
fn metric(b: &Broker, series: &str) -> Option<f64> {
    let (_, body) = http_get(b.http?, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A consumer group behind forced retention: with no member connected its
/// lag still shows, counting only records that still exist; when it comes
/// back, the records it never saw are counted and logged as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_behind_forced_retention_shows_its_lag_and_what_it_skipped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let retention = "[retention]\ninterval = \"100ms\"\n\n[[retention.topics]]\ntopic = \"r.topic\"\nmax_records = 5\nforce = true\n";
    let b = Broker::start(&config(retention), &data);
    let publisher = connect(&b).await;
    let group = || {
        SubscribeOptions::new("r.topic")
            .group("slow")
            .start(StartAt::Earliest)
            .credits(10)
    };
    let batch: Vec<PublishRecord> = (0..3).map(|i| rec(&format!("a{i}"))).collect();
    publisher
        .publish_batch("r.topic", batch)
        .await
        .expect("publish");
    let member = connect(&b).await;
    let mut sub = member.subscribe(group()).await.expect("subscribe");
    let got: Vec<u64> = [
        next(&mut sub).await,
        next(&mut sub).await,
        next(&mut sub).await,
    ]
    .iter()
    .map(|d| d.offset)
    .collect();
    sub.ack_many(got).await.expect("ack");
    member.close().await;
    drop(sub);

    // 50 more while the group is away; retention keeps the newest 5.
    let batch: Vec<PublishRecord> = (0..50).map(|i| rec(&format!("b{i}"))).collect();
    publisher
        .publish_batch("r.topic", batch)
        .await
        .expect("publish");
    publisher.close().await;
    // After a restart, before any member connects, the group's lag shows.
    assert_eq!(b.stop(), Some(0));
    let b = Broker::start(&config(retention), &data);
    let lag = "medbus_consumer_lag_records{group=\"slow\",topic=\"r.topic\"}";
    tokio::task::block_in_place(|| {
        wait_for("the lag of a group with no member", || {
            metric(&b, lag) == Some(5.0)
        })
    });

    let member = connect(&b).await;
    let mut sub = member.subscribe(group()).await.expect("subscribe");
    assert_eq!(next(&mut sub).await.offset, 48);
    let skipped = "medbus_consumer_skipped_records_total{group=\"slow\",topic=\"r.topic\"}";
    tokio::task::block_in_place(|| {
        wait_for("the skipped count", || metric(&b, skipped) == Some(45.0))
    });
    assert!(b
        .log()
        .lines()
        .any(|l| l.contains("skipped records removed before it read them")));
}

/// A one-off `tail --group` leaves a durable group behind that holds
/// retention back; `medbus delete-group` forgets it (refused while a member
/// is connected), and retention goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_group_releases_what_a_forgotten_group_held() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let retention = "[retention]\ninterval = \"100ms\"\nmax_records = 5\n";
    let b = Broker::start(&config(retention), &data);
    let server = b.protocol();
    let publisher = connect(&b).await;
    let batch: Vec<PublishRecord> = (0..3).map(|i| rec(&format!("a{i}"))).collect();
    publisher
        .publish_batch("d.topic", batch)
        .await
        .expect("publish");
    let cli = |args: &[&str]| tokio::task::block_in_place(|| medbus(args));
    let (code, _, err) = cli(&[
        "tail", "d.topic", "--group", "oneoff", "--from", "earliest", "--count", "1", "--server",
        &server,
    ]);
    assert_eq!(code, 0, "{err}");
    let batch: Vec<PublishRecord> = (0..20).map(|i| rec(&format!("b{i}"))).collect();
    publisher
        .publish_batch("d.topic", batch)
        .await
        .expect("publish");
    tokio::task::block_in_place(|| {
        wait_for("retention held back by the group", || {
            b.log()
                .lines()
                .any(|l| l.contains("retention held back") && l.contains("group/oneoff"))
        })
    });
    assert_eq!(
        status_topic(&b, "d.topic").map(|t| t["first_offset"].clone()),
        Some(serde_json::json!(1))
    );

    // Refused while a member is connected.
    let member = connect(&b).await;
    let sub = member
        .subscribe(SubscribeOptions::new("d.topic").group("oneoff").credits(1))
        .await
        .expect("subscribe");
    let delete = [
        "delete-group",
        "oneoff",
        "--topic",
        "d.topic",
        "--server",
        &server,
    ];
    let (code, _, err) = cli(&delete);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connected"), "{err}");
    member.close().await;
    drop(sub);
    // Once it has left (its leave may still be in flight), deleted.
    tokio::task::block_in_place(|| wait_for("the delete", || cli(&delete).0 == 0));
    tokio::task::block_in_place(|| {
        wait_for("retention past the group", || {
            status_topic(&b, "d.topic").is_some_and(|t| t["first_offset"] == 18)
        })
    });
    assert_eq!(
        metric(
            &b,
            "medbus_consumer_lag_records{group=\"oneoff\",topic=\"d.topic\"}"
        ),
        None
    );
}

/// Groups that no member uses any more free their place in the broker's
/// table of groups: one client creating and leaving more groups than the
/// table holds does not lock every other client out of groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_left_empty_do_not_fill_the_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(&config(""), &tmp.path().join("data"));
    let client = connect(&b).await;
    for i in 0..1100 {
        let sub = client
            .subscribe(SubscribeOptions::new("t.groups").group(format!("g{i}")))
            .await
            .expect("a group while the others are empty");
        client.unsubscribe(sub.id()).await.expect("unsubscribe");
    }
    let other = connect(&b).await;
    other
        .subscribe(SubscribeOptions::new("t.groups").group("late"))
        .await
        .expect("another client's group");
    // Unsubscribe and subscribe again back to back: the new subscription
    // is served (its Join may queue behind the Leave that emptied the group).
    client
        .publish_batch("t.groups", (0..50).map(|i| rec(&format!("r{i}"))).collect())
        .await
        .expect("publish");
    for round in 0..20 {
        let first = client
            .subscribe(SubscribeOptions::new("t.groups").group("again").credits(1))
            .await
            .expect("subscribe");
        let (unsub, second) = tokio::join!(
            client.unsubscribe(first.id()),
            client.subscribe(
                SubscribeOptions::new("t.groups")
                    .group("again")
                    .start(StartAt::Earliest)
                    .credits(1)
            )
        );
        unsub.expect("unsubscribe");
        let mut second = second.expect("subscribe again");
        let d = next(&mut second).await;
        second.ack(d.offset).await.expect("ack");
        client.unsubscribe(second.id()).await.expect("unsubscribe");
        assert!(
            d.offset <= round as u64 + 1,
            "round {round}: offset {}",
            d.offset
        );
    }
}

/// A client that sends requests without reading the answers is closed as a
/// slow consumer once `max_pending` bytes wait for it: the broker does not
/// hold an unbounded queue of answers.
#[test]
fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(
        &format!(
            "{}{}",
            listener_config("in", ""),
            protocol_config("max_pending = \"64KiB\"\n")
        ),
        &tmp.path().join("data"),
    );
    // A client that reads its answers is never closed, however much it
    // has been sent (here several times max_pending, in small answers).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let reader = connect(&b).await;
            for _ in 0..20_000 {
                reader
                    .ping()
                    .await
                    .expect("a reading client stays connected");
            }
        });
    let mut s = std::net::TcpStream::connect(b.protocol()).expect("connect");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    let hello = ClientFrame::Hello {
        version: 1,
        client_name: "slow".into(),
        token: String::new(),
    };
    s.write_all(&frame::to_bytes(&hello, MAX_FRAME).expect("encode"))
        .expect("hello");
    // Lists of topics, never read: once the kernel's buffers are full
    // (tens of MB on loopback), their answers pile up at the broker.
    let list =
        frame::to_bytes(&ClientFrame::ListTopics { request_id: 7 }, MAX_FRAME).expect("encode");
    let burst = list.repeat(1000);
    let counted = || {
        http_get(b.http.expect("http"), "/metrics").is_some_and(|(_, m)| {
            m.lines()
                .any(|l| l.starts_with("medbus_protocol_errors_total{kind=\"slow_consumer\"} 1"))
        })
    };
    let mut closed = false;
    for i in 0..20_000 {
        if s.write_all(&burst).is_err() {
            closed = true;
            break;
        }
        if i % 500 == 499 && counted() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the broker never closed the connection");
    wait_for("the slow-consumer count", counted);
}

/// Topics the broker owns are not writable by clients, whatever their
/// patterns: dead letters (forged ones would mislead operators) and the
/// FHIR gateway's Subscriptions (each a rest-hook the broker would call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_topics_the_broker_owns() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = Broker::start(&config(""), &tmp.path().join("data"));
    let client = connect(&b).await;
    for topic in ["dlq.in", "fhir.Subscription"] {
        match client.publish(topic, rec("forged")).await {
            Err(ClientError::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::Forbidden.as_u16(), "{topic}")
            }
            other => panic!("{topic}: {other:?}"),
        }
    }
    client
        .publish("app.events", rec("fine"))
        .await
        .expect("a topic of its own");
}
