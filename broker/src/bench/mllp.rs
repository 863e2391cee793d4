//! `medbus bench mllp`: C concurrent MLLP connections, each sending a
//! message and waiting for its ACK before the next, as sending systems do.
//!
//! Why plain threads and blocking sockets: the load generator must not add
//! its own scheduling noise to the latencies it measures, and a thread per
//! connection blocked in `read` is the simplest honest client. Each thread
//! keeps its own histogram and counters; the coordinator only reads two
//! atomic counters for the progress line and merges everything at the end.
//!
//! Closed loop by default (the next message goes when the ACK is back).
//! With `--rate` the run is open loop: every connection follows a fixed
//! schedule and each latency is measured from the moment its message was
//! due, so a stall counts against every message it held back.

use super::corpus::{
    check_ack, control_id, run_id, AckProblem, Mix, CONTROL_ID_LEN, MAX_CONNECTIONS,
};
use super::report::{Live, LoadReport, Progress, Totals};
use super::spawn::{SpawnOptions, SpawnedBroker};
use super::{BenchError, DurabilityArg};
use crate::mllp::client::{BlockingClient, ExchangeError};
use medbus_config::{ByteSize, HumanDuration};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest ACK frame accepted.
const MAX_ACK: usize = 1 << 20;
/// How often the progress line and the RSS sample are refreshed.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Pause after a failed reconnect, so a dead broker is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// `medbus bench mllp` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MllpArgs {
    /// MLLP listener to drive.
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub to: Option<String>,
    /// Start a broker (`medbus serve`) for this run on 127.0.0.1, and report its peak RSS.
    #[arg(long)]
    pub spawn: bool,
    /// Concurrent connections, each waiting for its ACK before the next message.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// How long to send (e.g. 10s, 500ms, 2m).
    #[arg(long, short = 'd', default_value = "10s", conflicts_with = "count")]
    pub duration: HumanDuration,
    /// Send this many messages in all instead of running for a duration.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Messages to send (framed or not, any segment separator), in turn; default the built-in ADT^A01/ORU^R01/SIU^S12 mix.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Pad each message to this many bytes with an NTE segment (e.g. 1024, 4KiB).
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// Open loop: send this many messages per second in all, on a fixed schedule, latency counted from when each was due.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// How long to wait for each ACK before counting a timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Data directory of the spawned broker (default: a fresh temp dir, removed afterwards).
    #[arg(long, requires = "spawn")]
    pub data_dir: Option<PathBuf>,
    /// Durability of the spawned broker.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync, requires = "spawn")]
    pub durability: DurabilityArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl MllpArgs {
    /// Arguments with every default, driving `to` (for tests and callers).
    pub fn new(to: Option<String>) -> MllpArgs {
        MllpArgs {
            spawn: to.is_none(),
            to,
            connections: 32,
            duration: HumanDuration(Duration::from_secs(10)),
            count: None,
            files: Vec::new(),
            size: ByteSize(1024),
            rate: None,
            timeout: HumanDuration(Duration::from_secs(10)),
            data_dir: None,
            durability: DurabilityArg::Fsync,
            json: false,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(BenchError::Usage(format!(
                "--connections must be between 1 and {MAX_CONNECTIONS}"
            )));
        }
        if self.count.is_none() && self.duration.0.is_zero() {
            return Err(BenchError::Usage("--duration must be above zero".into()));
        }
        if self.count == Some(0) {
            return Err(BenchError::Usage("--count must be above zero".into()));
        }
        if self.size.0 > 64 << 20 {
            return Err(BenchError::Usage("--size must be at most 64MiB".into()));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(BenchError::Usage("--rate must be above zero".into()));
            }
        }
        if self.timeout.0.is_zero() {
            return Err(BenchError::Usage("--timeout must be above zero".into()));
        }
        Ok(())
    }
}

/// When the load stops.
#[derive(Clone, Copy)]
enum Stop {
    /// At this instant (set once every connection is up).
    Duration(Duration),
    /// After this many messages in all (claimed from a shared counter).
    Count(u64),
}

/// What every load thread shares.
struct Shared {
    mix: Mix,
    run_id: u32,
    addr: SocketAddr,
    connections: usize,
    stop: Stop,
    /// Messages claimed so far (count mode).
    claimed: AtomicU64,
    /// Set when a duration run is over.
    done: AtomicBool,
    /// Open-loop interval per connection.
    interval: Option<Duration>,
    timeout: Duration,
    live: Live,
}

/// One MLLP connection, its errors named for the bench's error table.
pub(super) struct Conn(BlockingClient);

impl Conn {
    pub(super) fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        BlockingClient::connect(addr, CONNECT_TIMEOUT, timeout, MAX_ACK).map(Conn)
    }

    /// Open a connection before any load: an unreachable target is an
    /// error of the run, not a line in its error table.
    pub(super) fn open_for_run(addr: SocketAddr, timeout: Duration) -> Result<Conn, BenchError> {
        Conn::open(addr, timeout).map_err(|source| BenchError::Unreachable {
            addr: addr.to_string(),
            source,
        })
    }

    /// [`Conn::open_for_run`] `n` times.
    pub(super) fn open_all(
        addr: SocketAddr,
        timeout: Duration,
        n: usize,
    ) -> Result<Vec<Conn>, BenchError> {
        (0..n).map(|_| Conn::open_for_run(addr, timeout)).collect()
    }

    /// Send one framed message and read one ACK frame.
    pub(super) fn exchange(&mut self, frame: &[u8]) -> Result<bytes::Bytes, &'static str> {
        self.0.exchange_framed(frame).map_err(|e| match e {
            ExchangeError::Write(e) => io_kind("write")(e),
            ExchangeError::Read(e) => io_kind("read")(e),
            ExchangeError::Closed => "closed",
            ExchangeError::Truncated | ExchangeError::TooLarge(_) => "bad_frame",
        })
    }
}

/// After one of these errors the stream's state is unknown: a late ACK
/// must never be matched to the next message, so the connection is dropped.
pub(super) fn loses_stream(kind: &str) -> bool {
    matches!(kind, "timeout" | "closed" | "write" | "read" | "bad_frame")
}

/// The open-loop schedule of one connection: the rate divided among the
/// connections, their offsets spread over one interval.
pub(super) struct Schedule {
    start: Instant,
    slots: Option<(Duration, Duration)>,
}

impl Schedule {
    /// Connection `index` of `connections`, one message per `interval`
    /// (none: closed loop).
    pub(super) fn new(
        start: Instant,
        interval: Option<Duration>,
        index: usize,
        connections: usize,
    ) -> Schedule {
        let slots = interval.map(|iv| (iv, iv.mul_f64(index as f64 / connections.max(1) as f64)));
        Schedule { start, slots }
    }

    /// Sleep until message `seq` is due and return its due time; `None` in
    /// a closed loop, where a message is due when the last ACK is back.
    pub(super) fn wait(&self, seq: u64) -> Option<Instant> {
        let (iv, off) = self.slots?;
        let due = self.start + off + iv.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        Some(due)
    }
}

/// An I/O error's kind, for the error table.
pub(super) fn io_kind(op: &'static str) -> impl Fn(std::io::Error) -> &'static str {
    move |e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout",
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::UnexpectedEof => "closed",
        _ if op == "write" => "write",
        _ => "read",
    }
}

pub(super) fn ack_kind(p: AckProblem) -> &'static str {
    match p {
        AckProblem::Unparseable => "bad_ack",
        AckProblem::WrongMessage => "wrong_ack",
        AckProblem::Error => "nak_ae",
        AckProblem::Reject => "nak_ar",
        AckProblem::OtherCode => "nak_other",
    }
}

/// Resolve `to` to one address.
pub(super) fn resolve(to: &str) -> Result<SocketAddr, BenchError> {
    to.to_socket_addrs()
        .map_err(|source| BenchError::Unreachable {
            addr: to.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| BenchError::Unreachable {
            addr: to.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to no address"),
        })
}

/// Run the `mllp` mode.
pub fn run(args: &MllpArgs) -> Result<LoadReport, BenchError> {
    args.validate()?;
    let size = usize::try_from(args.size.0).unwrap_or(usize::MAX);
    let mix = if args.files.is_empty() {
        Mix::builtin(size)
    } else {
        Mix::from_files(&args.files, size)?
    };
    let mut broker = if args.spawn {
        let mut opts =
            SpawnOptions::new(args.durability.as_str(), (args.connections + 16).max(256));
        opts.data_dir = args.data_dir.clone();
        Some(SpawnedBroker::start(&opts)?)
    } else {
        None
    };
    let (addr, target) = match (&broker, &args.to) {
        (Some(b), _) => (b.addr(), b.addr().to_string()),
        (None, Some(to)) => (resolve(to)?, to.clone()),
        (None, None) => return Err(BenchError::Usage("give --to HOST:PORT or --spawn".into())),
    };
    let message_bytes = mix.mean_size();
    let mut totals = drive(args, mix, addr, broker.as_mut())?;
    let mut report_peak = None;
    if let Some(b) = broker.take() {
        report_peak = Some(b.peak_rss_bytes());
        if let Err(e) = b.stop() {
            // The numbers stand; say the broker did not stop cleanly.
            eprintln!("medbus bench: warning: spawned broker: {e}");
        }
    }
    totals.elapsed = totals.elapsed.max(Duration::from_nanos(1));
    let mut report = LoadReport::new("mllp", target, args.connections, &totals);
    report.message_bytes = message_bytes;
    report.rate = args.rate;
    if args.spawn {
        report.durability = Some(args.durability.as_str().to_string());
        report.peak_rss_bytes = report_peak;
    }
    Ok(report)
}

/// Connect every connection, run the load, merge the counts.
pub(super) fn drive(
    args: &MllpArgs,
    mix: Mix,
    addr: SocketAddr,
    mut broker: Option<&mut SpawnedBroker>,
) -> Result<Totals, BenchError> {
    let timeout = args.timeout.0;
    // Connect everything first: an unreachable broker is an error before
    // any load, and the clock starts with every connection up.
    let conns = Conn::open_all(addr, timeout, args.connections)?;
    let stop = match args.count {
        Some(n) => Stop::Count(n),
        None => Stop::Duration(args.duration.0),
    };
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let run_id = run_id();
    let shared = Arc::new(Shared {
        mix,
        run_id,
        addr,
        connections: args.connections,
        stop,
        claimed: AtomicU64::new(0),
        done: AtomicBool::new(false),
        interval,
        timeout,
        live: Live::default(),
    });
    let barrier = Arc::new(Barrier::new(args.connections + 1));
    let mut threads = Vec::with_capacity(args.connections);
    for (i, conn) in conns.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let barrier = Arc::clone(&barrier);
        let t = std::thread::Builder::new()
            .name(format!("bench-mllp-{i}"))
            .spawn(move || {
                barrier.wait();
                connection_loop(&shared, i, conn, Instant::now())
            })
            .map_err(|source| BenchError::Io {
                what: "cannot start a load thread".into(),
                source,
            })?;
        threads.push(t);
    }
    barrier.wait();
    let started = Instant::now();
    let total_units = match stop {
        Stop::Duration(d) => d.as_millis() as u64,
        Stop::Count(n) => n,
    };
    let mut progress = Progress::new(total_units);
    loop {
        std::thread::sleep(TICK);
        let elapsed = started.elapsed();
        if let Stop::Duration(d) = stop {
            if elapsed >= d {
                shared.done.store(true, Ordering::Relaxed);
            }
        }
        let mut extra = String::new();
        if let Some(b) = broker.as_deref_mut() {
            b.sample_rss();
            extra = format!(
                "  broker RSS {:.0} MiB",
                b.peak_rss_bytes() as f64 / super::report::MIB
            );
        }
        let position = match stop {
            Stop::Duration(_) => elapsed.as_millis() as u64,
            Stop::Count(_) => {
                shared.live.ok.load(Ordering::Relaxed) + shared.live.errors.load(Ordering::Relaxed)
            }
        };
        progress.tick(position, &shared.live, &extra);
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut totals = Totals::default();
    for t in threads {
        match t.join() {
            Ok(part) => totals.merge(&part),
            Err(_) => totals.error("thread_panicked"),
        }
    }
    if totals.elapsed.is_zero() {
        totals.elapsed = started.elapsed();
    }
    progress.finish();
    if let Some(b) = broker {
        b.sample_rss();
    }
    Ok(totals)
}

/// The load of one connection until the run stops.
fn connection_loop(shared: &Shared, index: usize, conn: Conn, start: Instant) -> Totals {
    let mut totals = Totals::default();
    let mut conn = Some(conn);
    let mut frame = Vec::with_capacity(shared.mix.mean_size() + 64);
    let deadline = match shared.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Count(_) => None,
    };
    let schedule = Schedule::new(start, shared.interval, index, shared.connections);
    let mut seq: u64 = 0;
    loop {
        match shared.stop {
            Stop::Duration(_) => {
                if shared.done.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
            }
            Stop::Count(n) => {
                if shared.claimed.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
        }
        // When this message counts from: its due time (open loop) or now.
        let due = match schedule.wait(seq) {
            Some(due) if deadline.is_some_and(|d| due >= d) => break,
            Some(due) => due,
            None => Instant::now(),
        };
        let id: [u8; CONTROL_ID_LEN] = control_id(shared.run_id, index, seq);
        let len = shared.mix.frame(seq, &id, &mut frame);
        seq += 1;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(shared.addr, shared.timeout) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    totals.error("connect");
                    shared.live.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            },
        };
        let sent = if shared.interval.is_some() {
            due
        } else {
            Instant::now()
        };
        let outcome = c
            .exchange(&frame)
            .and_then(|ack| check_ack(&ack, &id).map_err(ack_kind));
        match outcome {
            Ok(()) => {
                totals.latencies.record_since(sent);
                totals.ok += 1;
                totals.bytes += len as u64;
                shared.live.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                totals.error(kind);
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
                if loses_stream(kind) {
                    conn = None;
                }
            }
        }
    }
    // The run ends when the last connection got its last answer.
    totals.elapsed = start.elapsed();
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use medbus_mllp::{Decoded, MllpCodec};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use tokio_util::codec::Decoder as _;

    /// A tiny MLLP peer answering every frame with `code`.
    fn peer(code: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut codec = MllpCodec::new(1 << 20);
                    let mut buf = BytesMut::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Ok(Some(Decoded::Frame(f))) = codec.decode(&mut buf) {
                            let m = medbus_hl7::Message::parse(&f).expect("valid message");
                            let id = m
                                .header()
                                .control_id
                                .map(|c| c.to_string())
                                .unwrap_or_default();
                            let ack = format!(
                                "MSH|^~\\&|P|P|B|B|20240101||ACK|A1|P|2.5\rMSA|{code}|{id}\r"
                            );
                            if s.write_all(&MllpCodec::frame(ack.as_bytes())).is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    fn args(addr: SocketAddr) -> MllpArgs {
        let mut a = MllpArgs::new(Some(addr.to_string()));
        a.connections = 3;
        a.duration = HumanDuration(Duration::from_millis(300));
        a
    }

    #[test]
    fn counts_acks() {
        let r = run(&args(peer("AA"))).expect("run");
        assert!(r.messages > 0);
        assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);
        assert!(r.latency.p50_ms > 0.0);
    }

    #[test]
    fn count_mode_sends_exactly_n() {
        let mut a = args(peer("AA"));
        a.count = Some(100);
        let r = run(&a).expect("run");
        assert_eq!(r.messages, 100);
    }

    #[test]
    fn open_loop_keeps_the_rate() {
        let mut a = args(peer("AA"));
        a.rate = Some(300.0);
        a.duration = HumanDuration(Duration::from_millis(500));
        let r = run(&a).expect("run");
        assert!((100..=200).contains(&r.messages), "{}", r.messages);
    }

    #[test]
    fn naks_are_errors_by_kind() {
        let mut a = args(peer("AE"));
        a.count = Some(10);
        let r = run(&a).expect("run");
        assert_eq!(r.messages, 0);
        assert_eq!(r.errors_by_kind.get("nak_ae"), Some(&10));
    }

    #[test]
    fn unreachable_is_an_error() {
        // Bind then drop to find a port nothing listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let started = Instant::now();
        let e = run(&args(addr)).expect_err("nothing listens");
        assert!(matches!(e, BenchError::Unreachable { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
