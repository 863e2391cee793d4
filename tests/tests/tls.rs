//! TLS with certificates the test makes (rcgen): a TLS listener answered to
//! Python's `ssl` client, mutual TLS refusing a client without a certificate,
//! a TLS destination delivering to python-hl7's MLLP server over `ssl` with
//! client certificates, and bad PEM files refused as config errors.

use medbus_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PEM files of a throwaway PKI: a CA, a server certificate for
/// localhost/127.0.0.1 and a client certificate, all signed by the CA.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "medbus test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.clone()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, names[0].clone());
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["sender.example".into()]);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}

/// Send one MLLP message over TLS with Python's `ssl`; returns the ACK, or
/// `Err` with Python's error text when the handshake or exchange fails.
fn python_tls_send(
    port: u16,
    pki: &Pki,
    with_client_cert: bool,
    msg: &[u8],
) -> Result<String, String> {
    let script = r#"
import socket, ssl, sys
port, ca, cert, key, msg = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.stdin.buffer.read()
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"\x0b" + msg + b"\x1c\x0d")
        buf = b""
        while not buf.endswith(b"\x1c\x0d"):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("closed before the ACK")
            buf += chunk
        sys.stdout.write(buf[1:-2].decode())
"#;
    let (cert, key) = if with_client_cert {
        (
            pki.client_cert.to_string_lossy().into_owned(),
            pki.client_key.to_string_lossy().into_owned(),
        )
    } else {
        (String::new(), String::new())
    };
    let mut child = Command::new(peer("hl7", "python"))
        .args([
            "-c",
            script,
            &port.to_string(),
            &pki.ca.to_string_lossy(),
            &cert,
            &key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), msg).expect("write");
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn tls_listener(pki: &Pki, mtls: bool) -> String {
    let client_ca = if mtls {
        format!(", client_ca = \"{}\"", pki.ca.display())
    } else {
        String::new()
    };
    listener_config(
        "secure",
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\"{client_ca} }}",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
}

#[test]
fn tls_and_mutual_tls_listeners() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = make_pki(tmp.path());
    let broker = Broker::start(&tls_listener(&pki, false), &tmp.path().join("d1"));
    let port = broker.mllp("secure").port();
    let ack = python_tls_send(port, &pki, false, &adt_a01("TLS1", "DOE")).expect("TLS exchange");
    assert!(ack.contains("\rMSA|AA|TLS1"), "{ack}");
    // Plain MLLP to a TLS listener gets no ACK.
    let mut plain = MllpClient::connect(broker.mllp("secure"));
    assert!(plain.try_request(&adt_a01("PLAIN1", "DOE")).is_none());
    drop(broker);

    let broker = Broker::start(&tls_listener(&pki, true), &tmp.path().join("d2"));
    let port = broker.mllp("secure").port();
    let refused = python_tls_send(port, &pki, false, &adt_a01("MTLS0", "DOE"));
    assert!(
        refused.is_err(),
        "a client without a certificate must be refused: {refused:?}"
    );
    let ack = python_tls_send(port, &pki, true, &adt_a01("MTLS1", "DOE")).expect("mTLS exchange");
    assert!(ack.contains("\rMSA|AA|MTLS1"), "{ack}");
    let (_, body) = http_get(broker.http.expect("http"), "/metrics").expect("metrics");
    assert!(
        body.contains(
            "medbus_mllp_connections_refused_total{listener=\"secure\",reason=\"tls\"} 1"
        ),
        "{body}"
    );
}

#[test]
fn a_tls_destination_delivers_with_a_client_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = make_pki(tmp.path());
    let log = tmp.path().join("peer.jsonl");
    let mut peer_proc = Command::new(peer("hl7", "python"))
        .arg(peer_script("mllp_peer.py"))
        .args(["--log", &log.to_string_lossy()])
        .args([
            "--cert",
            &pki.server_cert.to_string_lossy(),
            "--key",
            &pki.server_key.to_string_lossy(),
        ])
        .args(["--client-ca", &pki.ca.to_string_lossy()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer");
    let port = peer_port(&mut peer_proc);
    let config = format!(
        "{}\n[[destinations]]\nname = \"lab\"\nfrom = \"hl7.in\"\nconnect = \"127.0.0.1:{port}\"\n\
         tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"localhost\" }}\n",
        listener_config("in", "topic = \"hl7.in\""),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let broker = Broker::start(&config, &tmp.path().join("data"));
    MllpClient::connect(broker.mllp("in")).request(&adt_a01("TLSDEST1", "DOE"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivered = false;
    while Instant::now() < deadline {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("TLSDEST1")
        {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = peer_proc.kill();
    let _ = peer_proc.wait();
    assert!(delivered, "not delivered over mTLS; log:\n{}", broker.log());
}

#[test]
fn bad_certificate_files_are_config_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").expect("write");
    let cfg = tmp.path().join("tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listeners]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"/nonexistent.key\" }}\n",
            bad.display()
        ),
    )
    .expect("write");
    let path = cfg.to_string_lossy().into_owned();
    let (code, _, err) = medbus(&["check-config", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{path}:4:16: listeners[0].tls.cert:"))
            && err.contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(
        err.contains("listeners[0].tls.key:") && err.contains("cannot read"),
        "{err}"
    );
    let (code, _, _) = medbus(&[
        "serve",
        "--config",
        &path,
        "--data-dir",
        &tmp.path().join("d").to_string_lossy(),
    ]);
    assert_eq!(code, 2);
}
