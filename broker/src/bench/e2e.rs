//! `medbus bench e2e`: HL7 v2 in over MLLP at a fixed rate, FHIR out to a
//! binary-protocol subscriber of `fhir.bundles`; the end-to-end latency from
//! the moment each message was due to be sent to the moment its Bundle is in
//! the subscriber's hands.
//!
//! Why open loop: a real sending system does not slow down because the
//! broker is slow; it sends on its own schedule. Each of the C connections
//! follows a fixed schedule (the rate divided among them, offsets spread
//! over one interval), and latency is counted from the scheduled time, so a
//! stall shows in every message it held back (no coordinated omission).
//!
//! Bundles/s counts over the time from the first send to the last Bundle
//! received (at least the sending window), so a pipeline that falls behind
//! and drains after the load does not look faster than it is.
//!
//! A fresh broker creates its topics, and grows its buffers, on the first
//! messages; that happens once in its life. So the load first runs for
//! `--warmup` at the same rate, and only messages due after it are in the
//! figures; the warm-up's own latency is printed beside them.
//!
//! How a Bundle is matched to its message: the route copies the inbound
//! record's headers, so the Bundle carries `hl7.control_id`, the MSH-10 the
//! sender made unique. A message that was acknowledged but whose Bundle did
//! not come within `--timeout` after the load is an error (`no_bundle`).

use super::corpus::{check_ack, control_id, run_id, Mix, CONTROL_ID_LEN, MAX_CONNECTIONS};
use super::histogram::Latencies;
use super::mllp::{ack_kind, loses_stream, resolve, Conn, Schedule};
use super::proto::{self, Gate, Pending, ProtocolTarget};
use super::report::{Live, LoadReport, Totals, Warmup};
use super::spawn::SpawnedBroker;
use super::BenchError;
use medbus_config::{ByteSize, HumanDuration};
use medbus_protocol::{StartAt, SubscribeOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The topic the `normalise` route writes one Bundle per message to.
const BUNDLES: &str = "fhir.bundles";
/// The header the route carries over from the inbound message.
const CONTROL_ID_HEADER: &str = "hl7.control_id";
/// Credit window of the Bundle subscriber.
const CREDITS: u32 = 1024;

/// `medbus bench e2e` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// Where the broker's protocol listener is (`--server`), or `--spawn`.
    #[command(flatten)]
    pub target: ProtocolTarget,
    /// MLLP listener of a running broker whose route writes `fhir.bundles` (with `--server`).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "spawn")]
    pub mllp: Option<String>,
    /// Messages per second in all, on a fixed schedule.
    #[arg(long, default_value_t = 5000.0, value_name = "MSGS_PER_SEC")]
    pub rate: f64,
    /// MLLP connections the rate is divided among.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// How long to send (e.g. 10s), after the warm-up.
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: HumanDuration,
    /// Send at the same rate for this long first, outside the figures (0s: none).
    #[arg(long, default_value = "2s")]
    pub warmup: HumanDuration,
    /// Pad each message to this many bytes with an NTE segment.
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// How long to wait for each ACK, and for the last Bundles after the load.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl E2eArgs {
    /// Every default, against a spawned broker.
    pub fn spawned() -> E2eArgs {
        E2eArgs {
            target: ProtocolTarget::spawned(),
            mllp: None,
            rate: 5000.0,
            connections: 16,
            duration: HumanDuration(Duration::from_secs(10)),
            warmup: HumanDuration(Duration::from_secs(2)),
            size: ByteSize(1024),
            timeout: HumanDuration(Duration::from_secs(10)),
            json: false,
        }
    }
}

/// What the MLLP senders share.
pub struct Senders {
    /// The messages.
    pub mix: Mix,
    /// For unique control ids.
    pub run_id: u32,
    /// The MLLP listener.
    pub addr: SocketAddr,
    /// Connections.
    pub connections: usize,
    /// Open loop: time between two messages of one connection.
    pub interval: Option<Duration>,
    /// ACK timeout.
    pub timeout: Duration,
    /// Messages sent and not yet seen at the far end.
    pub pending: Arc<Pending>,
    /// Set when the run is over.
    pub done: Arc<AtomicBool>,
    /// When the load starts: every sender's schedule counts from it. Set as
    /// the gate opens ([`Gate::open_with`]); unset, each sender starts
    /// when it is released.
    pub start: Arc<OnceLock<Instant>>,
    /// Messages due in the first `warmup` after `start` are warm-up: in
    /// none of the figures, reported apart.
    pub warmup: Duration,
    /// Warm-up messages that failed (NAK, timeout, …).
    pub warmup_errors: Arc<AtomicU64>,
    /// ACKed messages so far (for the progress line when it shows arrivals).
    pub acked: Arc<Live>,
}

impl Senders {
    /// Messages due from then on are in the figures (`None`: all are).
    pub fn measure_from(&self) -> Option<Instant> {
        self.start
            .get()
            .filter(|_| !self.warmup.is_zero())
            .map(|s| *s + self.warmup)
    }
}

/// One MLLP connection on its schedule until `done`; ACK latency (from the
/// due time) in the totals.
pub(super) fn sender(shared: &Senders, index: usize, mut conn: Conn) -> Totals {
    let start = shared.start.get().copied().unwrap_or_else(Instant::now);
    let measure_from = shared.measure_from();
    let mut totals = Totals::default();
    let mut frame = Vec::with_capacity(shared.mix.mean_size() + 64);
    let schedule = Schedule::new(start, shared.interval, index, shared.connections);
    let mut seq: u64 = 0;
    while !shared.done.load(Ordering::Relaxed) {
        let due = match schedule.wait(seq) {
            Some(_) if shared.done.load(Ordering::Relaxed) => break,
            Some(due) => due,
            None => Instant::now(),
        };
        let id: [u8; CONTROL_ID_LEN] = control_id(shared.run_id, index, seq);
        let len = shared.mix.frame(seq, &id, &mut frame);
        seq += 1;
        shared.pending.insert(&id, due);
        let outcome = conn
            .exchange(&frame)
            .and_then(|ack| check_ack(&ack, &id).map_err(ack_kind));
        let measured = measure_from.is_none_or(|m| due >= m);
        match outcome {
            Ok(()) if !measured => {}
            Err(kind) if !measured => {
                shared.pending.remove(&id);
                shared.warmup_errors.fetch_add(1, Ordering::Relaxed);
                if loses_stream(kind) {
                    break;
                }
            }
            Ok(()) => {
                totals.latencies.record_since(due);
                totals.ok += 1;
                totals.bytes += len as u64;
                shared.acked.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                shared.pending.remove(&id);
                totals.error(kind);
                shared.acked.errors.fetch_add(1, Ordering::Relaxed);
                if loses_stream(kind) {
                    break;
                }
            }
        }
    }
    totals.elapsed = start.elapsed();
    totals
}

/// Open every MLLP connection and start the senders behind `gate`.
pub(super) fn start_senders(
    shared: &Arc<Senders>,
    gate: &Arc<Gate>,
) -> Result<Vec<std::thread::JoinHandle<Totals>>, BenchError> {
    let conns = Conn::open_all(shared.addr, shared.timeout, shared.connections)?;
    let mut threads = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let (shared, gate) = (shared.clone(), gate.clone());
        threads.push(proto::thread(format!("bench-mllp-{i}"), move || {
            if !gate.ready(Ok(())) {
                return Totals::default();
            }
            sender(&shared, i, conn)
        })?);
    }
    Ok(threads)
}

/// The MLLP address: the spawned broker's, or `--mllp`.
fn mllp_addr(broker: Option<&SpawnedBroker>, mllp: Option<&str>) -> Result<SocketAddr, BenchError> {
    match (broker, mllp) {
        (Some(b), _) => Ok(b.addr()),
        (None, Some(m)) => resolve(m),
        (None, None) => Err(BenchError::Usage("give --mllp HOST:PORT or --spawn".into())),
    }
}

/// Run the `e2e` mode.
pub fn run(args: &E2eArgs) -> Result<LoadReport, BenchError> {
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(BenchError::Usage(format!(
            "--connections must be between 1 and {MAX_CONNECTIONS}"
        )));
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(BenchError::Usage("--rate must be above zero".into()));
    }
    if args.duration.0.is_zero() || args.timeout.0.is_zero() {
        return Err(BenchError::Usage(
            "--duration and --timeout must be above zero".into(),
        ));
    }
    let size = usize::try_from(args.size.0).unwrap_or(usize::MAX);
    let (mut broker, proto_addr) = args.target.open(true)?;
    let addr = mllp_addr(broker.as_ref(), args.mllp.as_deref())?;
    let mix = Mix::builtin(size);
    let message_bytes = mix.mean_size();
    let shared = Arc::new(Senders {
        mix,
        run_id: run_id(),
        addr,
        connections: args.connections,
        interval: Some(Duration::from_secs_f64(args.connections as f64 / args.rate)),
        timeout: args.timeout.0,
        pending: Arc::new(Pending::default()),
        done: Arc::new(AtomicBool::new(false)),
        start: Arc::default(),
        warmup: args.warmup.0,
        warmup_errors: Arc::default(),
        acked: Arc::new(Live::default()),
    });
    let senders_done = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate::new(args.connections + 1));
    let live = Arc::new(Live::default());
    let receiver = {
        let (gate, pending, live, senders_done, shared) = (
            gate.clone(),
            shared.pending.clone(),
            live.clone(),
            senders_done.clone(),
            shared.clone(),
        );
        let (token, drain) = (args.target.token.clone(), args.timeout.0);
        let proto_addr = proto_addr.clone();
        proto::thread("bench-bundles".into(), move || {
            let rt = match proto::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    gate.ready(Err(e));
                    return Received::default();
                }
            };
            rt.block_on(async {
                let opened = async {
                    let client = proto::connect(&proto_addr, "bench-bundles", &token).await?;
                    client
                        .subscribe(
                            SubscribeOptions::new(BUNDLES)
                                .start(StartAt::Latest)
                                .credits(CREDITS),
                        )
                        .await
                        .map_err(|e| {
                            BenchError::Usage(format!("cannot subscribe to {BUNDLES}: {e}"))
                        })
                };
                let mut sub = match opened.await {
                    Ok(s) => s,
                    Err(e) => {
                        gate.ready(Err(e));
                        return Received::default();
                    }
                };
                let mut got = Received::default();
                if !gate.ready(Ok(())) {
                    return got;
                }
                // Set before the gate let this thread go.
                let measure_from = shared.measure_from();
                let mut unacked = Vec::new();
                let mut drain_deadline = None;
                loop {
                    if senders_done.load(Ordering::Relaxed) {
                        let deadline =
                            *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
                        if pending.is_empty() || Instant::now() >= deadline {
                            break;
                        }
                    }
                    let next = tokio::time::timeout(Duration::from_millis(20), sub.next()).await;
                    match next {
                        Ok(Some(Ok(d))) => {
                            let id = d
                                .record
                                .headers
                                .iter()
                                .find(|(k, _)| k == CONTROL_ID_HEADER)
                                .map(|(_, v)| v.as_bytes());
                            if let Some(due) = id.and_then(|id| pending.arrived_due(id)) {
                                if measure_from.is_none_or(|m| due >= m) {
                                    got.latencies.record_since(due);
                                    got.last = Some(Instant::now());
                                    live.ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    got.warmup.record_since(due);
                                }
                            }
                            unacked.push(d.offset);
                            if unacked.len() >= (CREDITS / 4) as usize
                                && sub.ack_many(std::mem::take(&mut unacked)).await.is_err()
                            {
                                break;
                            }
                        }
                        Ok(Some(Err(_)) | None) => break,
                        Err(_) => {
                            if !unacked.is_empty()
                                && sub.ack_many(std::mem::take(&mut unacked)).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                got
            })
        })?
    };
    let senders = match start_senders(&shared, &gate) {
        Ok(t) => t,
        Err(e) => {
            gate.ready(Err(BenchError::Usage(String::new())));
            let _ = gate.open();
            let _ = receiver.join();
            proto::stop_broker(broker);
            return Err(e);
        }
    };
    if let Err(e) = gate.open_with(|| {
        let _ = shared.start.set(Instant::now());
    }) {
        shared.done.store(true, Ordering::Relaxed);
        senders_done.store(true, Ordering::Relaxed);
        let _ = publish_join(senders);
        let _ = receiver.join();
        proto::stop_broker(broker);
        return Err(e);
    }
    let started = shared.start.get().copied().unwrap_or_else(Instant::now);
    let measure_from = shared.measure_from().unwrap_or(started);
    proto::watch(
        args.warmup.0 + args.duration.0,
        &shared.done,
        &live,
        broker.as_mut(),
        || {
            let over = senders.iter().all(|t| t.is_finished());
            if over {
                senders_done.store(true, Ordering::Relaxed);
            }
            over && receiver.is_finished()
        },
    );
    let window = measure_from.elapsed().min(args.duration.0);
    let acks = publish_join(senders);
    let got = receiver.join().unwrap_or_default();
    // First measured send → last Bundle, at least the sending window.
    let through = got
        .last
        .map(|l| l.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .max(window);
    let peak = proto::stop_broker(broker);
    let (warm_lost, lost) = shared.pending.split_at(measure_from);
    let mut report = arrivals_report(
        "e2e",
        format!("{addr} → {proto_addr}"),
        args.connections,
        &acks,
        Arrivals {
            latencies: got.latencies,
            through,
            window,
            lost: vec![("no_bundle", lost)],
        },
        message_bytes,
        args.rate,
    );
    report.latency_of = Some(
        "scheduled MLLP send → FHIR Bundle received by a fhir.bundles subscriber (open loop)"
            .into(),
    );
    if !args.warmup.0.is_zero() {
        report.warmup = Some(Warmup {
            seconds: measure_from
                .saturating_duration_since(started)
                .as_secs_f64(),
            messages: got.warmup.count(),
            errors: shared.warmup_errors.load(Ordering::Relaxed) + warm_lost,
            latency: got.warmup.summary(),
        });
    }
    if args.target.spawn {
        report.durability = Some(args.target.durability.as_str().to_string());
        report.peak_rss_bytes = peak;
    }
    Ok(report)
}

/// What the Bundle subscriber saw.
#[derive(Default)]
struct Received {
    /// Latency of the measured messages.
    latencies: Latencies,
    /// Latency of the warm-up's messages.
    warmup: Latencies,
    /// When the last measured Bundle came.
    last: Option<Instant>,
}

/// What reached the far end of an open-loop MLLP load (Bundles at a
/// subscriber, notifications at a rest-hook).
pub(super) struct Arrivals {
    /// Scheduled send → arrival, of each message that arrived.
    pub latencies: Latencies,
    /// First send → last arrival: the rate counts over it, not over the
    /// sending window, so a pipeline that falls behind and drains
    /// afterwards shows it.
    pub through: Duration,
    /// The sending window.
    pub window: Duration,
    /// Errors counted at the far end, by kind (e.g. `no_bundle`).
    pub lost: Vec<(&'static str, u64)>,
}

/// The report of an open-loop MLLP load measured at its far end, with the
/// senders' ACK figures (`acks`) beside the arrivals.
pub(super) fn arrivals_report(
    mode: &str,
    target: String,
    connections: usize,
    acks: &Totals,
    arrivals: Arrivals,
    message_bytes: usize,
    rate: f64,
) -> LoadReport {
    let mut totals = Totals {
        ok: arrivals.latencies.count(),
        bytes: arrivals.latencies.count() * message_bytes as u64,
        errors: acks.errors.clone(),
        latencies: arrivals.latencies,
        elapsed: arrivals.through.max(Duration::from_nanos(1)),
    };
    for (kind, n) in arrivals.lost {
        if n > 0 {
            *totals.errors.entry(kind.into()).or_default() += n;
        }
    }
    let mut report = LoadReport::new(mode, target, connections, &totals);
    report.message_bytes = message_bytes;
    report.rate = Some(rate);
    report.ingested = Some(acks.ok);
    report.ingest_per_sec = Some(acks.ok as f64 / arrivals.window.as_secs_f64().max(1e-9));
    report.ack_latency = Some(acks.latencies.summary());
    report
}

fn publish_join(threads: Vec<std::thread::JoinHandle<Totals>>) -> Totals {
    super::publish::join(threads)
}
