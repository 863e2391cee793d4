//! `medbus bench publish`: P binary-protocol publishers, each sending
//! batches of B records of S bytes and waiting for `Published`, which the
//! broker sends only once the records are durable; records/s and the ack
//! latency of each batch.
//!
//! Why a thread and a connection per publisher: a publisher here is one
//! client application, and the batches of several connections are what the
//! broker's group commit can merge. `--inflight` lets one publisher pipeline
//! several batches, as a client that does not wait would.
//!
//! The publishing loop is shared with `fanout`, which feeds its subscribers
//! with it (optionally at a fixed rate, open loop).

use super::proto::{self, Gate, ProtocolTarget, SENT_HEADER};
use super::report::{Live, LoadReport, Totals};
use super::BenchError;
use medbus_config::{ByteSize, HumanDuration};
use medbus_protocol::{Client, PublishRecord};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Content type of the published records.
const CONTENT_TYPE: &str = "application/octet-stream";
/// Bytes a record adds to a publish frame besides its payload (lengths,
/// the timestamp header, the content type), rounded up.
const RECORD_OVERHEAD: usize = 96;
/// Most publishers (threads and connections).
pub const MAX_PUBLISHERS: usize = 512;

/// `medbus bench publish` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub target: ProtocolTarget,
    /// Concurrent publishers, one connection each.
    #[arg(long, short = 'p', default_value_t = 4)]
    pub publishers: usize,
    /// Records per publish.
    #[arg(long, short = 'b', default_value_t = 100)]
    pub batch: usize,
    /// Payload bytes per record (e.g. 1024, 4KiB).
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// Publishes each publisher keeps in flight (1: wait for each `Published`).
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Topic to publish to.
    #[arg(long, default_value = "bench.publish")]
    pub topic: String,
    /// How long to publish (e.g. 10s, 500ms).
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: HumanDuration,
    /// How long to wait for each `Published` before counting a timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl PublishArgs {
    /// Every default, against a spawned broker.
    pub fn spawned() -> PublishArgs {
        PublishArgs {
            target: ProtocolTarget::spawned(),
            publishers: 4,
            batch: 100,
            size: ByteSize(1024),
            inflight: 1,
            topic: "bench.publish".into(),
            duration: HumanDuration(Duration::from_secs(10)),
            timeout: HumanDuration(Duration::from_secs(10)),
            json: false,
        }
    }
}

/// What every publisher of a run does.
pub struct PublishPlan {
    /// Topic.
    pub topic: String,
    /// Records per publish.
    pub batch: usize,
    /// Payload of every record.
    pub payload: Vec<u8>,
    /// Publishes in flight per publisher.
    pub inflight: usize,
    /// Open loop: time between two batches of one publisher.
    pub interval: Option<Duration>,
    /// Wait for `Published` at most this long.
    pub timeout: Duration,
}

/// Check the shape of a publish load.
pub fn validate(
    publishers: usize,
    batch: usize,
    size: ByteSize,
    inflight: usize,
) -> Result<usize, BenchError> {
    if publishers == 0 || publishers > MAX_PUBLISHERS {
        return Err(BenchError::Usage(format!(
            "--publishers must be between 1 and {MAX_PUBLISHERS}"
        )));
    }
    if batch == 0 || batch > medbus_protocol::message::MAX_BATCH_RECORDS {
        return Err(BenchError::Usage(format!(
            "--batch must be between 1 and {}",
            medbus_protocol::message::MAX_BATCH_RECORDS
        )));
    }
    if inflight == 0 || inflight > 64 {
        return Err(BenchError::Usage(
            "--inflight must be between 1 and 64".into(),
        ));
    }
    let size = usize::try_from(size.0).unwrap_or(usize::MAX);
    if size > 64 << 20 {
        return Err(BenchError::Usage("--size must be at most 64MiB".into()));
    }
    Ok(size)
}

/// The payload of every record: printable filler of `size` bytes.
pub fn payload(size: usize) -> Vec<u8> {
    b"medbus bench record "
        .iter()
        .cycle()
        .take(size)
        .copied()
        .collect()
}

/// Refuse a batch the broker would refuse as too large a frame.
pub fn check_frame(client: &Client, plan: &PublishPlan) -> Result<(), BenchError> {
    let need = plan
        .batch
        .saturating_mul(plan.payload.len() + RECORD_OVERHEAD + plan.topic.len());
    let max = client.welcome().max_frame as usize;
    if need > max {
        return Err(BenchError::Usage(format!(
            "a batch of {} records of {} bytes needs about {need} bytes per frame, above the broker's frame cap of {max} bytes: lower --batch or --size",
            plan.batch,
            plan.payload.len()
        )));
    }
    Ok(())
}

/// One publisher: `plan.inflight` lanes publishing on `client` until `done`.
/// `offset` spreads the open-loop schedules of the publishers.
pub async fn publish_loop(
    client: Client,
    plan: &PublishPlan,
    offset: Duration,
    done: &AtomicBool,
    live: &Live,
) -> Totals {
    let start = Instant::now();
    let lanes = plan.inflight.max(1);
    let runs = (0..lanes).map(|lane| {
        let client = client.clone();
        let offset = offset
            + plan
                .interval
                .map_or(Duration::ZERO, |iv| iv.mul_f64(lane as f64 / lanes as f64));
        let interval = plan
            .interval
            .map(|iv| iv.saturating_mul(u32::try_from(lanes).unwrap_or(u32::MAX)));
        async move {
            let mut totals = Totals::default();
            let mut seq: u32 = 0;
            while !done.load(Ordering::Relaxed) {
                let due = match interval {
                    Some(iv) => {
                        let due = start + offset + iv.saturating_mul(seq);
                        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        due
                    }
                    None => Instant::now(),
                };
                seq = seq.saturating_add(1);
                let sent = proto::stamp(due).to_string();
                let records: Vec<PublishRecord> = (0..plan.batch)
                    .map(|_| PublishRecord {
                        headers: vec![(SENT_HEADER.to_string(), sent.clone())],
                        content_type: CONTENT_TYPE.to_string(),
                        payload: plan.payload.clone(),
                    })
                    .collect();
                let n = plan.batch as u64;
                let reply =
                    tokio::time::timeout(plan.timeout, client.publish_batch(&plan.topic, records))
                        .await;
                match reply {
                    Ok(Ok(_)) => {
                        totals.latencies.record_since(due);
                        totals.ok += n;
                        totals.bytes += n * plan.payload.len() as u64;
                        live.ok.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        *totals
                            .errors
                            .entry(proto::error_kind(&e).to_string())
                            .or_default() += n;
                        live.errors.fetch_add(n, Ordering::Relaxed);
                        if proto::is_fatal(&e) {
                            break;
                        }
                    }
                    Err(_) => {
                        // A late Published names its request id: harmless.
                        *totals.errors.entry("timeout".to_string()).or_default() += n;
                        live.errors.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            totals.elapsed = start.elapsed();
            totals
        }
    });
    let mut totals = Totals::default();
    for part in futures_util::future::join_all(runs).await {
        totals.merge(&part);
    }
    totals
}

/// Start `n` publisher threads behind `gate`.
pub fn start_publishers(
    n: usize,
    addr: &str,
    token: &str,
    plan: &Arc<PublishPlan>,
    gate: &Arc<Gate>,
    done: &Arc<AtomicBool>,
    live: &Arc<Live>,
) -> Result<Vec<std::thread::JoinHandle<Totals>>, BenchError> {
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (addr, token) = (addr.to_string(), token.to_string());
        let (plan, gate, done, live) = (plan.clone(), gate.clone(), done.clone(), live.clone());
        let offset = plan
            .interval
            .map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n as f64));
        threads.push(proto::thread(format!("bench-pub-{i}"), move || {
            let rt = match proto::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    gate.ready(Err(e));
                    return Totals::default();
                }
            };
            rt.block_on(async {
                let client = match proto::connect(&addr, &format!("bench-pub-{i}"), &token)
                    .await
                    .and_then(|c| check_frame(&c, &plan).map(|()| c))
                {
                    Ok(c) => c,
                    Err(e) => {
                        gate.ready(Err(e));
                        return Totals::default();
                    }
                };
                if !gate.ready(Ok(())) {
                    return Totals::default();
                }
                publish_loop(client, &plan, offset, &done, &live).await
            })
        })?);
    }
    Ok(threads)
}

/// Join load threads and merge what they counted.
pub fn join(threads: Vec<std::thread::JoinHandle<Totals>>) -> Totals {
    let mut totals = Totals::default();
    for t in threads {
        match t.join() {
            Ok(part) => totals.merge(&part),
            Err(_) => totals.error("thread_panicked"),
        }
    }
    totals
}

/// Run the `publish` mode.
pub fn run(args: &PublishArgs) -> Result<LoadReport, BenchError> {
    let size = validate(args.publishers, args.batch, args.size, args.inflight)?;
    if args.duration.0.is_zero() {
        return Err(BenchError::Usage("--duration must be above zero".into()));
    }
    let (mut broker, addr) = args.target.open(false)?;
    let plan = Arc::new(PublishPlan {
        topic: args.topic.clone(),
        batch: args.batch,
        payload: payload(size),
        inflight: args.inflight,
        interval: None,
        timeout: args.timeout.0,
    });
    let gate = Arc::new(Gate::new(args.publishers));
    let done = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let threads = start_publishers(
        args.publishers,
        &addr,
        &args.target.token,
        &plan,
        &gate,
        &done,
        &live,
    )?;
    if let Err(e) = gate.open() {
        done.store(true, Ordering::Relaxed);
        let _ = join(threads);
        proto::stop_broker(broker);
        return Err(e);
    }
    proto::watch(args.duration.0, &done, &live, broker.as_mut(), || {
        threads.iter().all(|t| t.is_finished())
    });
    let mut totals = join(threads);
    totals.elapsed = totals.elapsed.max(Duration::from_nanos(1));
    let peak = proto::stop_broker(broker);
    let mut report = LoadReport::new("publish", addr, args.publishers, &totals);
    report.message_bytes = size;
    report.publishers = Some(args.publishers);
    report.batch = Some(args.batch);
    report.latency_of = Some(format!(
        "publish of a batch of {} → Published (records durable){}",
        args.batch,
        if args.inflight > 1 {
            format!(", {} in flight per publisher", args.inflight)
        } else {
            String::new()
        }
    ));
    if args.target.spawn {
        report.durability = Some(args.target.durability.as_str().to_string());
        report.peak_rss_bytes = peak;
    }
    Ok(report)
}
