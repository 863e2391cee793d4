//! What the binary-protocol modes (`publish`, `fanout`, `e2e`) and the
//! `destination` mode share: where the broker is, one tokio runtime per load
//! thread, connecting with a clear error, a start gate, the send timestamp
//! carried in each record, and the coordinator's progress loop.
//!
//! Why one current-thread runtime per load thread: each publisher or group
//! of subscribers then runs on its own OS thread, in parallel, without a
//! work-stealing scheduler adding its own wake-ups to the latencies; and a
//! [`medbus_protocol::Client`] stays on the runtime that created it (its
//! reader task runs there).
//!
//! Why a gate: every connection is made (and every subscription opened)
//! before the clock starts, so an unreachable broker is an error before any
//! load, and the first second does not measure connection set-up.

use super::histogram::Latencies;
use super::report::{Live, Progress, MIB};
use super::spawn::{SpawnOptions, SpawnedBroker};
use super::{BenchError, DurabilityArg};
use medbus_protocol::{Client, ClientError, ClientOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Header carrying when a record was sent (or due), in nanoseconds since
/// this process's bench clock started; read back by subscribers of the same
/// process, so no clock synchronisation is involved.
pub const SENT_HEADER: &str = "medbus-bench.sent_ns";
/// How long to wait for a connection and the protocol handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a binary-protocol bench connects: a running broker or a spawned one.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtocolTarget {
    /// Binary-protocol listener of a running broker.
    #[arg(
        long,
        visible_alias = "to",
        value_name = "HOST:PORT",
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub server: Option<String>,
    /// Start a broker (`medbus serve`) for this run on 127.0.0.1, and report its peak RSS.
    #[arg(long)]
    pub spawn: bool,
    /// Token of a `[[clients]]` entry (empty for a development broker).
    #[arg(long, default_value = "")]
    pub token: String,
    /// Data directory of the spawned broker (default: a fresh temp dir, removed afterwards).
    #[arg(long, requires = "spawn")]
    pub data_dir: Option<PathBuf>,
    /// Durability of the spawned broker.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync, requires = "spawn")]
    pub durability: DurabilityArg,
}

impl ProtocolTarget {
    /// A spawned broker with every default.
    pub fn spawned() -> ProtocolTarget {
        ProtocolTarget {
            server: None,
            spawn: true,
            token: String::new(),
            data_dir: None,
            durability: DurabilityArg::Fsync,
        }
    }

    /// Start the broker if asked; the protocol address to use.
    pub fn open(&self, normalise: bool) -> Result<(Option<SpawnedBroker>, String), BenchError> {
        if self.spawn {
            let mut opts = SpawnOptions::new(self.durability.as_str(), 256);
            opts.data_dir = self.data_dir.clone();
            opts.protocol = true;
            opts.normalise = normalise;
            let broker = SpawnedBroker::start(&opts)?;
            let addr = broker
                .protocol_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            return Ok((Some(broker), addr));
        }
        match &self.server {
            Some(s) => Ok((None, s.clone())),
            None => Err(BenchError::Usage(
                "give --server HOST:PORT or --spawn".into(),
            )),
        }
    }
}

/// The bench clock's origin (the first call).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `at` as nanoseconds on the bench clock (the value of [`SENT_HEADER`]).
pub fn stamp(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}

/// Time since a [`SENT_HEADER`] value, if the headers carry one.
pub fn age(headers: &[(String, String)]) -> Option<Duration> {
    let (_, v) = headers.iter().find(|(k, _)| k == SENT_HEADER)?;
    let sent: u64 = v.parse().ok()?;
    let now = stamp(Instant::now());
    Some(Duration::from_nanos(now.saturating_sub(sent)))
}

/// A runtime for one load thread.
pub fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "cannot start a tokio runtime".into(),
            source,
        })
}

/// Connect and say Hello; an unreachable broker or a refused token is a
/// [`BenchError`] naming the address.
pub async fn connect(addr: &str, name: &str, token: &str) -> Result<Client, BenchError> {
    let options = ClientOptions {
        name: name.to_string(),
        token: token.to_string(),
        connect_timeout: CONNECT_TIMEOUT,
    };
    Client::connect(addr, options)
        .await
        .map_err(|e| BenchError::Unreachable {
            addr: addr.to_string(),
            source: match e {
                ClientError::Timeout => std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no protocol handshake within 5s",
                ),
                ClientError::Connect { message, .. } => std::io::Error::other(message),
                other => std::io::Error::other(other.to_string()),
            },
        })
}

/// A client error's kind, for the error table.
pub fn error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Connect { .. } => "connect",
        ClientError::Connection(_) | ClientError::Closed => "closed",
        ClientError::Server { code, .. } => match medbus_protocol::ErrorCode::from_u16(*code) {
            Some(medbus_protocol::ErrorCode::StorageFailed) => "storage_failed",
            Some(medbus_protocol::ErrorCode::Forbidden) => "forbidden",
            Some(medbus_protocol::ErrorCode::InvalidRequest) => "invalid_request",
            Some(medbus_protocol::ErrorCode::FrameTooLarge) => "frame_too_large",
            Some(medbus_protocol::ErrorCode::Unavailable) => "unavailable",
            _ => "broker_error",
        },
        ClientError::Protocol(_) => "protocol",
        ClientError::Timeout => "timeout",
    }
}

/// Whether the connection is gone after `e` (stop using it).
pub fn is_fatal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connection(_) | ClientError::Closed | ClientError::Protocol(_)
    ) || matches!(e, ClientError::Server { code, .. } if *code <= 5)
}

/// The start gate: every load thread reports whether it is connected; the
/// coordinator opens the gate when all are, or aborts at the first failure.
pub struct Gate {
    /// (threads ready, first failure, decision: Some(true) go, Some(false) abort).
    state: Mutex<(usize, Option<BenchError>, Option<bool>)>,
    /// Wakes both sides.
    cv: Condvar,
    /// Threads expected.
    expected: usize,
}

impl Gate {
    /// A gate for `expected` load threads.
    pub fn new(expected: usize) -> Gate {
        Gate {
            state: Mutex::new((0, None, None)),
            cv: Condvar::new(),
            expected,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<BenchError>, Option<bool>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A load thread is ready (or failed); returns whether to go.
    pub fn ready(&self, outcome: Result<(), BenchError>) -> bool {
        let mut s = self.lock();
        match outcome {
            Ok(()) => s.0 += 1,
            Err(e) => {
                if s.1.is_none() {
                    s.1 = Some(e);
                }
                self.cv.notify_all();
                return false;
            }
        }
        self.cv.notify_all();
        while s.2.is_none() {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.2 == Some(true)
    }

    /// Wait until every thread is ready (go) or one failed (abort, and
    /// return its error).
    pub fn open(&self) -> Result<(), BenchError> {
        self.open_with(|| {})
    }

    /// [`Gate::open`], running `before_go` (e.g. noting the start instant
    /// every thread then reads) after the last thread is ready and before
    /// any is released.
    pub fn open_with(&self, before_go: impl FnOnce()) -> Result<(), BenchError> {
        let mut s = self.lock();
        while s.0 < self.expected && s.1.is_none() {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let failure = s.1.take();
        if failure.is_none() {
            before_go();
        }
        s.2 = Some(failure.is_none());
        self.cv.notify_all();
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Messages sent and not yet seen at the other end, by MSH-10, with the
/// moment each was due: the end-to-end latency is taken when it arrives.
#[derive(Default)]
pub struct Pending {
    /// Control id → due time.
    map: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Instant>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember `id`, due at `due` (before sending it).
    pub fn insert(&self, id: &[u8], due: Instant) {
        self.lock().insert(id.to_vec(), due);
    }

    /// Forget `id` (it was refused, nothing will arrive).
    pub fn remove(&self, id: &[u8]) {
        self.lock().remove(id);
    }

    /// `id` arrived: how long since it was due, if it was pending.
    pub fn arrived(&self, id: &[u8]) -> Option<Duration> {
        self.arrived_due(id).map(|due| due.elapsed())
    }

    /// `id` arrived: when it was due, if it was pending.
    pub fn arrived_due(&self, id: &[u8]) -> Option<Instant> {
        self.lock().remove(id)
    }

    /// Messages still pending.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Messages still pending that were due before `at`, and the others.
    pub fn split_at(&self, at: Instant) -> (u64, u64) {
        let map = self.lock();
        let before = map.values().filter(|due| **due < at).count() as u64;
        (before, map.len() as u64 - before)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A latency histogram several threads record into.
#[derive(Default)]
pub struct SharedLatencies(Mutex<Latencies>);

impl SharedLatencies {
    /// Record one latency.
    pub fn record(&self, d: Duration) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).record(d);
    }

    /// A copy of what was recorded.
    pub fn snapshot(&self) -> Latencies {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The coordinator's loop: refresh the progress line (and the spawned
/// broker's RSS) every tick, set `done` after `duration`, return when
/// `finished()` says every load thread is through.
pub fn watch(
    duration: Duration,
    done: &AtomicBool,
    live: &Live,
    mut broker: Option<&mut SpawnedBroker>,
    finished: impl Fn() -> bool,
) {
    let started = Instant::now();
    let mut progress = Progress::new(duration.as_millis() as u64);
    loop {
        std::thread::sleep(
            super::mllp::TICK
                .min(duration / 4)
                .max(Duration::from_millis(10)),
        );
        let elapsed = started.elapsed();
        if elapsed >= duration {
            done.store(true, Ordering::Relaxed);
        }
        let mut extra = String::new();
        if let Some(b) = broker.as_deref_mut() {
            b.sample_rss();
            extra = format!("  broker RSS {:.0} MiB", b.peak_rss_bytes() as f64 / MIB);
        }
        progress.tick(elapsed.as_millis() as u64, live, &extra);
        if finished() {
            break;
        }
    }
    progress.finish();
    if let Some(b) = broker {
        b.sample_rss();
    }
}

/// Stop a spawned broker; its peak RSS. A broker that did not stop cleanly
/// is a warning: the numbers stand.
pub fn stop_broker(broker: Option<SpawnedBroker>) -> Option<u64> {
    let b = broker?;
    let peak = b.peak_rss_bytes();
    if let Err(e) = b.stop() {
        eprintln!("medbus bench: warning: spawned broker: {e}");
    }
    Some(peak)
}

/// Start a named load thread.
pub fn thread<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, BenchError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|source| BenchError::Io {
            what: "cannot start a load thread".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let h = vec![(SENT_HEADER.to_string(), stamp(Instant::now()).to_string())];
        std::thread::sleep(Duration::from_millis(2));
        let a = age(&h).expect("age");
        assert!(
            a >= Duration::from_millis(2) && a < Duration::from_secs(5),
            "{a:?}"
        );
        assert_eq!(age(&[]), None);
    }

    #[test]
    fn gate_aborts_on_failure() {
        let gate = std::sync::Arc::new(Gate::new(2));
        let g = gate.clone();
        let t = std::thread::spawn(move || g.ready(Ok(())));
        assert!(!gate.ready(Err(BenchError::Usage("x".into()))));
        assert!(gate.open().is_err());
        assert!(!t.join().expect("join"));
    }

    #[test]
    fn pending_measures_from_due() {
        let p = Pending::default();
        p.insert(b"A", Instant::now());
        assert_eq!(p.len(), 1);
        assert!(p.arrived(b"A").is_some());
        assert!(p.arrived(b"A").is_none());
        assert!(p.is_empty());
    }
}
