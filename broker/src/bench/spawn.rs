//! `--spawn`: a broker started for one bench run, as a child process of
//! this very executable, so a bench needs no setup and can also report the
//! broker's memory under load.
//!
//! The child runs `medbus serve` with a generated config (the HTTP endpoint
//! and one MLLP listener on `127.0.0.1:0`; on request also the binary
//! protocol on `127.0.0.1:0`, the `normalise` route from the listener's topic
//! to `fhir.bundles` and `fhir.{resourceType}`, one route of the caller's,
//! the FHIR gateway on `127.0.0.1:0`, and one MLLP destination) on a fresh
//! data directory (or the caller's); we learn its ports from the `http
//! endpoint on ADDR`, `mllp listener "NAME" on ADDR -> topic T`, `protocol
//! listener on ADDR` and `fhir gateway on ADDR` lines it prints before
//! `ready`, sample its RSS from `/proc/<pid>/status` while the load runs,
//! and SIGTERM it at the end (killed outright if it does not stop in time,
//! and on drop).

use super::report::proc_kib;
use super::BenchError;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the broker may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the broker may take to stop after SIGTERM (it syncs what is
/// queued first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the listener in the generated config.
const LISTENER: &str = "bench";
/// Topic the generated listener writes (and the route and destination read).
pub const TOPIC: &str = "hl7.bench";
/// Name of the generated destination.
pub const DESTINATION: &str = "bench-receiver";

/// How to start the broker.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Data directory; `None` = a fresh directory under the temp dir,
    /// removed afterwards.
    pub data_dir: Option<PathBuf>,
    /// `fsync`, `flush` or `none`.
    pub durability: String,
    /// The listener's connection cap (must exceed the bench's connections).
    pub max_connections: usize,
    /// Also listen for the binary protocol (`[protocol]`).
    pub protocol: bool,
    /// Also run the `normalise` route (HL7 v2 → FHIR) from the listener's topic.
    pub normalise: bool,
    /// Also deliver the listener's topic to this MLLP receiver (`[[destinations]]`).
    pub destination: Option<SocketAddr>,
    /// Also serve the FHIR gateway (`[fhir]`).
    pub fhir: bool,
    /// Also run this route (`[[routes]]`).
    pub route: Option<RouteSpec>,
    /// `[mapping] threads`; `None`: the default (one per core).
    pub conversion_threads: Option<usize>,
}

/// One `[[routes]]` entry of the generated config.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Route name (the `route` label of its metrics).
    pub name: String,
    /// Source topic.
    pub from: String,
    /// `none`, `fhir` or `fhir-resources`.
    pub transform: String,
    /// Target topics.
    pub to: Vec<String>,
}

impl SpawnOptions {
    /// A broker with only the MLLP listener.
    pub fn new(durability: &str, max_connections: usize) -> SpawnOptions {
        SpawnOptions {
            data_dir: None,
            durability: durability.to_string(),
            max_connections,
            protocol: false,
            normalise: false,
            destination: None,
            fhir: false,
            route: None,
            conversion_threads: None,
        }
    }
}

/// A running child broker.
pub struct SpawnedBroker {
    /// The child process.
    child: Option<Child>,
    /// The MLLP listener's address.
    addr: SocketAddr,
    /// The binary protocol listener's address, when asked for.
    protocol: Option<SocketAddr>,
    /// The FHIR gateway's address, when asked for.
    fhir: Option<SocketAddr>,
    /// The HTTP endpoint's address (`/metrics`, `/readyz`).
    http: Option<SocketAddr>,
    /// Scratch directory: the config and the child's stderr log.
    scratch: PathBuf,
    /// The data directory, when we created it (removed on drop).
    owned_data_dir: Option<PathBuf>,
    /// Highest RSS seen (bytes).
    peak_rss: u64,
}

/// A fresh, empty directory under the temp dir.
pub fn fresh_temp_dir(what: &str) -> Result<PathBuf, BenchError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let dir = std::env::temp_dir().join(format!(
            "medbus-bench-{what}-{}-{nanos:09}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(BenchError::Io {
                    what: format!("cannot create {}", dir.display()),
                    source,
                })
            }
        }
    }
    Err(BenchError::Io {
        what: "cannot create a temporary directory".into(),
        source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    })
}

/// A directory under the temp dir, removed (with what it holds) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty one (see [`fresh_temp_dir`]).
    pub fn new(what: &str) -> Result<TempDir, BenchError> {
        fresh_temp_dir(what).map(TempDir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The generated config.
pub(super) fn config_text(opts: &SpawnOptions) -> String {
    let mut text = format!(
        "# generated by medbus bench --spawn\n\
         [storage]\n\
         durability = \"{}\"\n\n\
         [http]\n\
         listen = \"127.0.0.1:0\"\n\
         shutdown_grace = \"0s\"\n\n\
         [[listeners]]\n\
         name = \"{LISTENER}\"\n\
         listen = \"127.0.0.1:0\"\n\
         topic = \"{TOPIC}\"\n\
         max_connections = {}\n",
        opts.durability, opts.max_connections
    );
    if let Some(n) = opts.conversion_threads {
        text.push_str(&format!("\n[mapping]\nthreads = {n}\n"));
    }
    if opts.protocol {
        text.push_str(
            "\n[protocol]\n\
             listen = \"127.0.0.1:0\"\n\
             max_connections = 1024\n",
        );
    }
    let normalise = opts.normalise.then(|| RouteSpec {
        name: "normalise".into(),
        from: TOPIC.into(),
        transform: "fhir".into(),
        to: vec!["fhir.bundles".into(), "fhir.{resourceType}".into()],
    });
    for r in normalise.iter().chain(&opts.route) {
        let to: Vec<String> = r.to.iter().map(|t| format!("\"{t}\"")).collect();
        text.push_str(&format!(
            "\n[[routes]]\n\
             name = \"{}\"\n\
             from = \"{}\"\n\
             transform = \"{}\"\n\
             to = [{}]\n",
            r.name,
            r.from,
            r.transform,
            to.join(", ")
        ));
    }
    if opts.fhir {
        text.push_str(
            "\n[fhir]\n\
             listen = \"127.0.0.1:0\"\n",
        );
    }
    if let Some(addr) = opts.destination {
        text.push_str(&format!(
            "\n[[destinations]]\n\
             name = \"{DESTINATION}\"\n\
             from = \"{TOPIC}\"\n\
             connect = \"{addr}\"\n\
             ack_timeout = \"10s\"\n"
        ));
    }
    text
}

/// The address in `protocol listener on 127.0.0.1:4321` (or `fhir gateway
/// on …`, with that `prefix`).
fn addr_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?.trim().parse().ok()
}

/// The address in `mllp listener "bench" on 127.0.0.1:4321 -> topic …`.
fn listener_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("mllp listener ")?;
    let (_, rest) = rest.split_once(" on ")?;
    let (addr, _) = rest.split_once(" -> ")?;
    addr.trim().parse().ok()
}

impl SpawnedBroker {
    /// Start `medbus serve` and wait until it is ready.
    pub fn start(opts: &SpawnOptions) -> Result<SpawnedBroker, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            what: "cannot find the medbus executable".into(),
            source,
        })?;
        let scratch = fresh_temp_dir("broker")?;
        let mut broker = SpawnedBroker {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            protocol: None,
            fhir: None,
            http: None,
            scratch: scratch.clone(),
            owned_data_dir: None,
            peak_rss: 0,
        };
        let data_dir = match &opts.data_dir {
            Some(d) => d.clone(),
            None => {
                let d = fresh_temp_dir("data")?;
                broker.owned_data_dir = Some(d.clone());
                d
            }
        };
        let config = scratch.join("medbus.toml");
        let io = |what: String| move |source| BenchError::Io { what, source };
        std::fs::write(&config, config_text(opts))
            .map_err(io(format!("cannot write {}", config.display())))?;
        let log_path = scratch.join("broker.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("cannot create {}", log_path.display())))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .spawn()
            .map_err(io(format!("cannot start {} serve", exe.display())))?;
        let stdout = child.stdout.take();
        broker.child = Some(child);
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = stdout {
            // Reads every line (so the pipe never fills) until the child exits.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        // Nobody listens any more: keep draining.
                        continue;
                    }
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => break,
                Ok(line) => {
                    if let Some(a) = listener_addr(&line) {
                        addr = Some(a);
                    }
                    if let Some(a) = addr_after(&line, "protocol listener on ") {
                        broker.protocol = Some(a);
                    }
                    if let Some(a) = addr_after(&line, "fhir gateway on ") {
                        broker.fhir = Some(a);
                    }
                    if let Some(a) = addr_after(&line, "http endpoint on ") {
                        broker.http = Some(a);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(broker.failed(&format!(
                        "did not print `ready` within {}s",
                        START_TIMEOUT.as_secs()
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(broker.failed("exited before it was ready"));
                }
            }
        }
        broker.addr =
            addr.ok_or_else(|| broker.failed("printed `ready` but no MLLP listener address"))?;
        if opts.protocol && broker.protocol.is_none() {
            return Err(broker.failed("printed `ready` but no protocol listener address"));
        }
        if opts.fhir && broker.fhir.is_none() {
            return Err(broker.failed("printed `ready` but no FHIR gateway address"));
        }
        broker.sample_rss();
        Ok(broker)
    }

    /// An error carrying the end of the child's log.
    fn failed(&mut self, what: &str) -> BenchError {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        BenchError::Spawn {
            reason: what.to_string(),
            log_tail: self.log_tail(),
        }
    }

    /// The last ~2 KiB of the child's stderr.
    fn log_tail(&self) -> String {
        let Ok(mut f) = std::fs::File::open(self.scratch.join("broker.log")) else {
            return String::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s.trim().to_string()
    }

    /// The MLLP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The binary protocol listener's address (when started with `protocol`).
    pub fn protocol_addr(&self) -> Option<SocketAddr> {
        self.protocol
    }

    /// The FHIR gateway's address (when started with `fhir`).
    pub fn fhir_addr(&self) -> Option<SocketAddr> {
        self.fhir
    }

    /// The HTTP endpoint's address (`/metrics`, `/readyz`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The child's process id (for `perf` and friends), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Read the child's VmHWM (peak) and VmRSS now; keep the highest.
    pub fn sample_rss(&mut self) {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return;
        };
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for key in ["VmHWM:", "VmRSS:"] {
                if let Some(b) = proc_kib(&status, key) {
                    self.peak_rss = self.peak_rss.max(b);
                }
            }
        }
    }

    /// CPU time used so far by each of the child's threads, summed by
    /// thread name (empty when /proc cannot be read).
    pub fn thread_cpu(&self) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        let Some(pid) = self.pid() else {
            return out;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, cpu)) = parse_task_stat(&stat) {
                *out.entry(name).or_default() += cpu;
            }
        }
        out
    }

    /// Peak resident memory seen, in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.peak_rss
    }

    /// SIGTERM the broker and wait for it to stop; killed after a timeout.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.sample_rss();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // `kill` the utility: this crate forbids `unsafe`, and libc::kill is.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(BenchError::Spawn {
                        reason: format!("exited with {status} after SIGTERM"),
                        log_tail: self.log_tail(),
                    })
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::Spawn {
                        reason: format!(
                            "did not stop within {}s of SIGTERM; killed",
                            STOP_TIMEOUT.as_secs()
                        ),
                        log_tail: self.log_tail(),
                    });
                }
            }
        }
    }

    /// The scratch directory (config and log).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some(d) = self.owned_data_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every architecture Linux runs medbus on).
const USER_HZ: u64 = 100;

/// A thread's name and CPU time (user + system) from its
/// `/proc/<pid>/task/<tid>/stat` line. The name sits in parentheses and may
/// hold spaces or parentheses itself, so the fields are counted from the
/// last `)`.
fn parse_task_stat(stat: &str) -> Option<(String, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // After the name: state is field 3; utime and stime are fields 14, 15.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((
        name,
        Duration::from_millis((utime + stime) * 1000 / USER_HZ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listener_line() {
        assert_eq!(
            listener_addr("mllp listener \"bench\" on 127.0.0.1:40123 -> topic hl7.bench"),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(listener_addr("ready"), None);
        assert_eq!(
            addr_after(
                "protocol listener on 127.0.0.1:7001",
                "protocol listener on "
            ),
            Some(SocketAddr::from(([127, 0, 0, 1], 7001)))
        );
        assert_eq!(
            addr_after("fhir gateway on 127.0.0.1:8001", "fhir gateway on "),
            Some(SocketAddr::from(([127, 0, 0, 1], 8001)))
        );
    }

    #[test]
    fn generated_config_is_valid() {
        let dir = fresh_temp_dir("cfgtest").expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(&f, config_text(&SpawnOptions::new("flush", 300))).expect("write");
        let c = medbus_config::load(&f).expect("valid config");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.storage.durability.as_str(), "flush");
        assert!(c.protocol.is_none() && c.routes.is_empty() && c.destinations.is_empty());
        let mut all = SpawnOptions::new("fsync", 300);
        all.protocol = true;
        all.normalise = true;
        all.destination = Some(SocketAddr::from(([127, 0, 0, 1], 9)));
        all.fhir = true;
        all.route = Some(RouteSpec {
            name: "bench-route".into(),
            from: TOPIC.into(),
            transform: "fhir".into(),
            to: vec!["fhir.bundles".into()],
        });
        std::fs::write(&f, config_text(&all)).expect("write");
        let c = medbus_config::load(&f).expect("valid config");
        assert!(c.protocol.is_some());
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.destinations.len(), 1);
        assert!(c.fhir.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn task_stat_lines_give_name_and_cpu_time() {
        let line =
            "4242 (actix-rt|system) S 1 2 3 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            parse_task_stat(line),
            Some(("actix-rt|system".to_string(), Duration::from_secs(3)))
        );
        let odd = "7 (a (b) c) R 1 2 3 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            parse_task_stat(odd),
            Some(("a (b) c".to_string(), Duration::from_millis(30)))
        );
        assert_eq!(parse_task_stat("garbage"), None);
    }
}
