//! `medbus bench destination`: how fast a broker delivers to a legacy
//! system over MLLP, next to how fast a bare MLLP client talks to the same
//! system.
//!
//! The system is a built-in receiver on loopback: a thread per connection
//! that answers every frame with `AA` naming its MSH-10 at once, so the
//! receiver is never the bottleneck. Two phases, each `--duration` long:
//! 1. **bare**: one MLLP connection, send → ACK → send, straight to the
//!    receiver (what the destination does, one message in flight, without
//!    a broker);
//! 2. **through the broker**: a spawned broker with one `[[destinations]]`
//!    from its listener's topic to the receiver; C MLLP connections feed the
//!    listener (closed loop, or `--rate` open loop), and the receiver counts
//!    what arrives while they send. Delivery latency runs from the moment a
//!    message was sent to the listener to the moment the receiver has it.
//!
//! The result is the delivered rate, the bare rate and their ratio (issue
//! 6's target: at least 0.8); the broker's ingest rate and ACK latency are
//! reported next to them, since ingest and delivery share the machine.

use super::corpus::{check_ack, control_id, run_id, Mix, CONTROL_ID_LEN, MAX_CONNECTIONS};
use super::e2e::{start_senders, Senders};
use super::mllp::{ack_kind, Conn};
use super::proto::{self, Gate, Pending, SharedLatencies};
use super::report::{Live, LoadReport, Totals};
use super::spawn::{SpawnOptions, SpawnedBroker};
use super::{BenchError, DurabilityArg};
use bytes::BytesMut;
use medbus_config::{ByteSize, HumanDuration};
use medbus_mllp::{Decoded, MllpCodec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder as _;

/// Largest frame the receiver accepts.
const MAX_FRAME: usize = 16 << 20;
/// How often a receiver thread looks whether the run is over.
const POLL: Duration = Duration::from_millis(100);

/// `medbus bench destination` arguments (the broker is always spawned).
#[derive(Debug, Clone, clap::Args)]
pub struct DestinationArgs {
    /// MLLP connections feeding the broker's listener.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub connections: usize,
    /// Open loop: feed the listener this many messages per second in all (default: closed loop).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// How long each phase runs (e.g. 10s).
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: HumanDuration,
    /// Pad each message to this many bytes with an NTE segment.
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// How long to wait for each ACK.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Data directory of the spawned broker (default: a fresh temp dir, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Durability of the spawned broker.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl DestinationArgs {
    /// Every default.
    pub fn new() -> DestinationArgs {
        DestinationArgs {
            connections: 8,
            rate: None,
            duration: HumanDuration(Duration::from_secs(10)),
            size: ByteSize(1024),
            timeout: HumanDuration(Duration::from_secs(10)),
            data_dir: None,
            durability: DurabilityArg::Fsync,
            json: false,
        }
    }
}

impl Default for DestinationArgs {
    fn default() -> Self {
        Self::new()
    }
}

/// The fast MLLP receiver.
pub struct Receiver {
    /// Where it listens.
    addr: SocketAddr,
    /// Frames answered.
    received: Arc<AtomicU64>,
    /// Frames that were not HL7 with an MSH-10.
    bad: Arc<AtomicU64>,
    /// Set to stop every thread.
    stop: Arc<AtomicBool>,
    /// Messages in flight through the broker, for the delivery latency.
    pending: Arc<Pending>,
    /// Delivery latencies.
    latencies: Arc<SharedLatencies>,
}

/// MSH-10 of an HL7 message (the tenth field of its first segment).
fn msh10(msg: &[u8]) -> Option<&[u8]> {
    if !msg.starts_with(b"MSH") {
        return None;
    }
    let sep = *msg.get(3)?;
    let end = msg
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(msg.len());
    // Field 1 is the separator itself: MSH-10 is piece 9 after the split.
    msg.get(..end)?.split(|&b| b == sep).nth(9)
}

impl Receiver {
    /// Listen on loopback and answer in background threads.
    pub fn start() -> Result<Receiver, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
            what: "cannot bind the receiver".into(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| BenchError::Io {
            what: "cannot bind the receiver".into(),
            source,
        })?;
        let r = Receiver {
            addr,
            received: Arc::default(),
            bad: Arc::default(),
            stop: Arc::default(),
            pending: Arc::default(),
            latencies: Arc::default(),
        };
        let (received, bad, stop, pending, latencies) = (
            r.received.clone(),
            r.bad.clone(),
            r.stop.clone(),
            r.pending.clone(),
            r.latencies.clone(),
        );
        proto::thread("bench-receiver".into(), move || {
            for s in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                let (received, bad, stop, pending, latencies) = (
                    received.clone(),
                    bad.clone(),
                    stop.clone(),
                    pending.clone(),
                    latencies.clone(),
                );
                let _ = std::thread::Builder::new()
                    .name("bench-receiver-conn".into())
                    .spawn(move || {
                        let _ = answer(s, &received, &bad, &stop, &pending, &latencies);
                    });
            }
        })?;
        Ok(r)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frames answered so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Answer every frame of one connection with `AA` at once.
fn answer(
    mut s: TcpStream,
    received: &AtomicU64,
    bad: &AtomicU64,
    stop: &AtomicBool,
    pending: &Pending,
    latencies: &SharedLatencies,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(POLL))?;
    let mut codec = MllpCodec::new(MAX_FRAME);
    let mut buf = BytesMut::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(256);
    let ts = crate::ack::hl7_now();
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => {
                    let Some(id) = msh10(&f) else {
                        bad.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if let Some(age) = pending.arrived(id) {
                        latencies.record(age);
                    }
                    let mut ack = Vec::with_capacity(96 + 2 * id.len());
                    ack.extend_from_slice(b"MSH|^~\\&|BENCH-RECEIVER|BENCH|MEDBUS|MEDBUS|");
                    ack.extend_from_slice(ts.as_bytes());
                    ack.extend_from_slice(b"||ACK|");
                    ack.extend_from_slice(id);
                    ack.extend_from_slice(b"|P|2.5\rMSA|AA|");
                    ack.extend_from_slice(id);
                    ack.push(b'\r');
                    out.extend_from_slice(&MllpCodec::frame(&ack));
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) | Err(_) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => break,
            }
        }
        if !out.is_empty() {
            s.write_all(&out)?;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Phase 1: one bare MLLP client against the receiver; messages/s.
fn bare(
    receiver: &Receiver,
    mix: &Mix,
    duration: Duration,
    timeout: Duration,
) -> Result<f64, BenchError> {
    let mut conn = Conn::open_for_run(receiver.addr(), timeout)?;
    let live = Live::default();
    let mut progress = super::report::Progress::new(duration.as_millis() as u64);
    let run = run_id();
    let mut frame = Vec::new();
    let started = Instant::now();
    let mut last_tick = started;
    let mut ok = 0u64;
    let mut seq = 0u64;
    while started.elapsed() < duration {
        let id: [u8; CONTROL_ID_LEN] = control_id(run, 0, seq);
        mix.frame(seq, &id, &mut frame);
        seq += 1;
        let answer = conn
            .exchange(&frame)
            .and_then(|ack| check_ack(&ack, &id).map_err(ack_kind));
        match answer {
            Ok(()) => {
                ok += 1;
                live.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                return Err(BenchError::Io {
                    what: "the bare client against the built-in receiver failed".into(),
                    source: std::io::Error::other(kind),
                })
            }
        }
        if last_tick.elapsed() >= super::mllp::TICK {
            last_tick = Instant::now();
            progress.tick(
                started.elapsed().as_millis() as u64,
                &live,
                "  (bare client)",
            );
        }
    }
    progress.finish();
    Ok(ok as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Run the `destination` mode.
pub fn run(args: &DestinationArgs) -> Result<LoadReport, BenchError> {
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(BenchError::Usage(format!(
            "--connections must be between 1 and {MAX_CONNECTIONS}"
        )));
    }
    if args.duration.0.is_zero() || args.timeout.0.is_zero() {
        return Err(BenchError::Usage(
            "--duration and --timeout must be above zero".into(),
        ));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(BenchError::Usage("--rate must be above zero".into()));
        }
    }
    let size = usize::try_from(args.size.0).unwrap_or(usize::MAX);
    let mix = Mix::builtin(size);
    let message_bytes = mix.mean_size();
    let receiver = Receiver::start()?;
    let bare_rate = bare(&receiver, &mix, args.duration.0, args.timeout.0)?;

    let mut opts = SpawnOptions::new(args.durability.as_str(), (args.connections + 16).max(256));
    opts.data_dir = args.data_dir.clone();
    opts.destination = Some(receiver.addr());
    let mut broker = SpawnedBroker::start(&opts)?;
    let shared = Arc::new(Senders {
        mix,
        run_id: run_id(),
        addr: broker.addr(),
        connections: args.connections,
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.connections as f64 / r)),
        timeout: args.timeout.0,
        pending: receiver.pending.clone(),
        done: Arc::new(AtomicBool::new(false)),
        start: Arc::default(),
        warmup: Duration::ZERO,
        warmup_errors: Arc::default(),
        acked: Arc::new(Live::default()),
    });
    let gate = Arc::new(Gate::new(args.connections));
    let senders = start_senders(&shared, &gate)?;
    gate.open()?;
    let before = receiver.received();
    let started = Instant::now();
    // The progress line shows deliveries; a small watcher copies the count
    // and notes it the moment the run's time is up.
    let live = Live::default();
    let done = shared.done.clone();
    let received = receiver.received.clone();
    let watched = AtomicBool::new(false);
    let mut at_end = None;
    std::thread::scope(|scope| {
        let copier = scope.spawn(|| {
            let mut at_end = None;
            while !watched.load(Ordering::Relaxed) {
                let n = received.load(Ordering::Relaxed).saturating_sub(before);
                if at_end.is_none() && done.load(Ordering::Relaxed) {
                    at_end = Some((n, started.elapsed()));
                }
                live.ok.store(n, Ordering::Relaxed);
                live.errors.store(
                    shared.acked.errors.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            at_end
        });
        proto::watch(args.duration.0, &done, &live, Some(&mut broker), || {
            senders.iter().all(|t| t.is_finished())
        });
        watched.store(true, Ordering::Relaxed);
        at_end = copier.join().ok().flatten();
    });
    // Deliveries within the run's time (the senders stop at its end).
    let (delivered, window) = at_end.unwrap_or_else(|| {
        (
            receiver.received().saturating_sub(before),
            started.elapsed(),
        )
    });
    let acks = super::publish::join(senders);
    let peak = broker.peak_rss_bytes();
    if let Err(e) = broker.stop() {
        eprintln!("medbus bench: warning: spawned broker: {e}");
    }
    let latencies = receiver.latencies.snapshot();
    let bad = receiver.bad.load(Ordering::Relaxed);
    let mut totals = Totals {
        ok: delivered,
        bytes: delivered * message_bytes as u64,
        errors: acks.errors.clone(),
        latencies,
        elapsed: window.max(Duration::from_nanos(1)),
    };
    if bad > 0 {
        *totals
            .errors
            .entry("receiver_bad_frame".into())
            .or_default() += bad;
    }
    let mut report = LoadReport::new(
        "destination",
        receiver.addr().to_string(),
        args.connections,
        &totals,
    );
    report.message_bytes = message_bytes;
    report.rate = args.rate;
    report.durability = Some(args.durability.as_str().to_string());
    report.peak_rss_bytes = Some(peak);
    report.ingested = Some(acks.ok);
    report.ingest_per_sec = Some(acks.ok as f64 / window.as_secs_f64().max(1e-9));
    report.ack_latency = Some(acks.latencies.summary());
    report.bare_msgs_per_sec = Some(bare_rate);
    report.ratio_to_bare = Some(report.msgs_per_sec / bare_rate.max(1e-9));
    report.latency_of =
        Some("sent to the broker's MLLP listener → received by the destination's receiver".into());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_msh_10() {
        assert_eq!(
            msh10(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|ID42|P|2.5\rPID|1"),
            Some(&b"ID42"[..])
        );
        assert_eq!(msh10(b"PID|1"), None);
        assert_eq!(msh10(b"MSH|^~\\&|A"), None);
    }

    #[test]
    fn receiver_answers_aa() {
        let r = Receiver::start().expect("receiver");
        let mix = Mix::builtin(512);
        let rate = bare(&r, &mix, Duration::from_millis(200), Duration::from_secs(5))
            .expect("bare client");
        assert!(rate > 0.0);
        assert!(r.received() > 0);
    }
}
