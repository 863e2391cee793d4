//! Shared helpers for the end-to-end tests: start a real `medbus` child
//! process on a real data directory, talk MLLP over real sockets, find the
//! corpus and the third-party peers that `scripts/test` installs.
//!
//! Nothing here fakes the broker: every helper drives the built binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The built `medbus` binary (`MEDBUS_BIN` overrides).
pub fn medbus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MEDBUS_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/medbus
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = profile_dir.join("medbus");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`, as scripts/test does)",
        bin.display()
    );
    bin
}

/// The shared HL7 corpus (`MEDBUS_CORPUS` overrides).
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("MEDBUS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"));
    assert!(
        dir.is_dir(),
        "HL7 corpus not found at {}: set MEDBUS_CORPUS",
        dir.display()
    );
    dir
}

/// Every `.hl7` file under `dir`, sorted.
pub fn hl7_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "hl7") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Every `.hl7` file of the corpus, sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    let out = hl7_files(&corpus_dir());
    assert!(
        out.len() >= 100,
        "corpus looks incomplete: {} files",
        out.len()
    );
    out
}

/// A program from a peer venv that `scripts/test` sets up
/// (`target/peers/<venv>/bin/<program>`; `MEDBUS_PEERS` overrides the root).
pub fn peer(venv: &str, program: &str) -> PathBuf {
    let root = std::env::var_os("MEDBUS_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers"));
    let p = root.join(venv).join("bin").join(program);
    assert!(
        p.exists(),
        "{} not found: run scripts/test, which installs the third-party peers",
        p.display()
    );
    p
}

/// A python script shipped in `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// The port a started peer (`mllp_peer.py`) listens on, from its first
/// line of output (`listening <port>`).
pub fn peer_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("the peer's stdout is piped"))
        .read_line(&mut line)
        .expect("peer output");
    line.trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("peer did not start: {line:?}"))
}

/// A `medbus serve` child process; killed when dropped.
pub struct Broker {
    /// The child.
    pub child: Child,
    /// The data directory it uses.
    pub data_dir: PathBuf,
    /// MLLP listener addresses by name, as the broker printed them.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The HTTP endpoint's address, as the broker printed it.
    pub http: Option<SocketAddr>,
    /// The binary protocol listener's address, as the broker printed it.
    pub protocol: Option<SocketAddr>,
    /// The FHIR gateway's address, as the broker printed it.
    pub fhir: Option<SocketAddr>,
    /// Where its stderr (the logs) goes.
    pub log_path: PathBuf,
}

/// A minimal config: the HTTP endpoint and one listener on ephemeral
/// loopback ports, plus `extra` TOML appended to the `[[listeners]]` table.
pub fn listener_config(name: &str, extra: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"0s\"\n\n[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n"
    )
}

/// A `[protocol]` section on an ephemeral loopback port, to append to a
/// config (after its `[[listeners]]` entries, `extra` first: e.g. `tls`).
pub fn protocol_config(extra: &str) -> String {
    format!("\n[protocol]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// A plain HTTP/1.0 GET; returns (status, body), or `None` when nothing
/// answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, None)
}

/// A plain HTTP/1.0 request with an optional `(content type, body)`, the
/// bytes sent as they are; returns (status, body), or `None` when nothing
/// answers.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Option<(u16, String)> {
    http_exchange(addr, method, path, &[], body).map(|r| (r.status, r.body))
}

/// An HTTP answer: status, headers (names lowercase), body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`http_request`] with extra request headers, and the answer's headers.
pub fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Option<HttpAnswer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body.map_or(&[][..], |(_, b)| b));
    s.write_all(&out).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

impl Broker {
    /// Start `medbus serve` with `config` (TOML text) on `data_dir`.
    pub fn start(config: &str, data_dir: &Path) -> Broker {
        Self::start_with(config, data_dir, |c| c)
    }

    /// Like [`Broker::start`], letting the caller adjust the command (e.g.
    /// to wrap it in a shell that sets resource limits). The closure gets a
    /// `medbus serve …` command and returns the one to run.
    pub fn start_with(
        config: &str,
        data_dir: &Path,
        wrap: impl FnOnce(Command) -> Command,
    ) -> Broker {
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut cmd = Command::new(medbus_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir);
        let mut cmd = wrap(cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn medbus");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the child never blocks on stdout.
                    continue;
                }
            }
        });
        let mut listeners = Vec::new();
        let mut http = None;
        let mut protocol = None;
        let mut fhir = None;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!("medbus did not become ready; log:\n{log}");
                }
            };
            if line == "ready" {
                break;
            }
            if let Some(addr) = line.strip_prefix("http endpoint on ") {
                http = addr.trim().parse().ok();
            }
            if let Some(addr) = line.strip_prefix("protocol listener on ") {
                protocol = addr.trim().parse().ok();
            }
            if let Some(addr) = line.strip_prefix("fhir gateway on ") {
                fhir = addr.trim().parse().ok();
            }
            // mllp listener "name" on 127.0.0.1:1234 -> topic hl7.inbound
            if let Some(rest) = line.strip_prefix("mllp listener ") {
                let mut parts = rest.split_whitespace();
                let name = parts.next().unwrap_or("").trim_matches('"').to_string();
                let addr = parts
                    .nth(1)
                    .and_then(|a| a.parse().ok())
                    .expect("listener address");
                listeners.push((name, addr));
            }
        }
        Broker {
            child,
            data_dir: data_dir.to_path_buf(),
            listeners,
            http,
            protocol,
            fhir,
            log_path,
        }
    }

    /// The address of listener `name`.
    pub fn mllp(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// The binary protocol address (the config needs a `[protocol]`).
    pub fn protocol(&self) -> String {
        self.protocol
            .expect("no protocol listener: add protocol_config() to the config")
            .to_string()
    }

    /// SIGKILL the broker, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM the broker and wait for a clean exit; returns its status code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait for medbus");
        status.code()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `medbus` with `args`; returns (exit code, stdout, stderr).
pub fn medbus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(medbus_bin())
        .args(args)
        .output()
        .expect("run medbus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `medbus dump TOPIC --data-dir D` of a stopped broker, parsed.
pub fn dump(data_dir: &Path, topic: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = medbus(&["dump", topic, "--data-dir", &data_dir.to_string_lossy()]);
    assert_eq!(code, 0, "dump failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("dump line is JSON"))
        .collect()
}

/// A plain synchronous MLLP client.
pub struct MllpClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl MllpClient {
    /// Connect with a read timeout, so a missing answer fails the test
    /// instead of hanging it.
    pub fn connect(addr: SocketAddr) -> MllpClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        MllpClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send raw bytes (already framed or deliberately broken).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Send one message framed.
    pub fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut f = vec![0x0b];
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0x1c, 0x0d]);
        self.send_raw(&f)
    }

    /// Read the next frame's payload; `None` when the peer closed first.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == 0x0b) {
                if let Some(end) = self.buf[start..].windows(2).position(|w| w == [0x1c, 0x0d]) {
                    let payload = self.buf[start + 1..start + end].to_vec();
                    self.buf.drain(..start + end + 2);
                    return Some(payload);
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no MLLP answer: {e}"),
            }
        }
    }

    /// Send and wait for the answer; `None` on any connection failure (for
    /// load that is expected to be cut off by a crash).
    pub fn try_request(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.send(payload).ok()?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == 0x0b) {
                if let Some(end) = self.buf[start..].windows(2).position(|w| w == [0x1c, 0x0d]) {
                    let payload = self.buf[start + 1..start + end].to_vec();
                    self.buf.drain(..start + end + 2);
                    return Some(payload);
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Send and wait for the answer.
    pub fn request(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(payload).expect("send");
        self.read_frame().expect("connection closed before the ACK")
    }
}

/// Field `n` (HL7 numbering) of the first segment `seg` of an ER7 message,
/// split naively on `|` — for checking ACKs without using our own parser.
pub fn field(msg: &[u8], seg: &str, n: usize) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let line = text
        .split(['\r', '\n'])
        .find(|l| l.starts_with(seg))?
        .to_string();
    let parts: Vec<&str> = line.split('|').collect();
    let idx = if seg == "MSH" { n - 1 } else { n };
    parts.get(idx).map(|s| s.to_string())
}

/// A small, valid v2.5 ADT^A01 with the given control id and patient name.
pub fn adt_a01(control_id: &str, family: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|GENHOSP|MEDBUS|HUB|20261124101500||ADT^A01^ADT_A01|{control_id}|P|2.5\r\
         EVN|A01|20261124101500\r\
         PID|1||MRN{control_id}^^^GENHOSP^MR||{family}^JOHN^Q||19800101|M\r\
         PV1|1|I|WARD1^101^A\r"
    )
    .into_bytes()
}

/// [`adt_a01`] sent by `facility` (MSH-4) instead of GENHOSP.
pub fn adt_a01_from(control_id: &str, family: &str, facility: &str) -> Vec<u8> {
    String::from_utf8_lossy(&adt_a01(control_id, family))
        .replacen("|GENHOSP|", &format!("|{facility}|"), 1)
        .into_bytes()
}

/// Wait (bounded, 60 s) until `cond` holds; panics naming `what` otherwise.
/// A bound, not a timing assertion: it only turns a hang into a failure.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The `hl7.control_id` header of every record of `topic` in a stopped
/// broker's data directory, in offset order.
pub fn dumped_control_ids(data_dir: &Path, topic: &str) -> Vec<String> {
    dump(data_dir, topic)
        .iter()
        .map(|r| {
            r["headers"]["hl7.control_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// One topic as the running broker's `/api/status` reports it.
pub fn status_topic(broker: &Broker, name: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(broker.http?, "/api/status")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

/// Records of a topic on the running broker (0 when it does not exist yet).
pub fn topic_records(broker: &Broker, name: &str) -> u64 {
    status_topic(broker, name)
        .and_then(|t| t["records"].as_u64())
        .unwrap_or(0)
}
