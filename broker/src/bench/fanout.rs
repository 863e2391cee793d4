//! `medbus bench fanout`: K subscribers on one topic, fed by P publishers;
//! deliveries/s (summed over the subscribers) and delivery latency, from the
//! time the publisher put in each record's `medbus-bench.sent_ns` header to
//! the moment a subscriber has it.
//!
//! Why each subscriber has its own connection: K subscribers stand for K
//! client applications, each with its own credit window; the broker reads
//! each record once and sends it K times. Subscribers run as tasks on a few
//! threads (`--subscriber-threads`, default the number of cores) so the load
//! generator does not take more CPU from the broker than decoding needs.
//!
//! Every subscriber checks that it sees each offset once, in order, from
//! its start offset (a gap or a repeat is an error), and acks in batches of
//! a quarter of its credit window so deliveries never stall on credits.
//! Counting stops when the run's time is up; records still on their way
//! then are not counted (the publishers' count is reported next to it).

use super::proto::{self, Gate, ProtocolTarget};
use super::publish::{self, PublishPlan};
use super::report::{Live, LoadReport, Totals};
use super::BenchError;
use medbus_config::{ByteSize, HumanDuration};
use medbus_protocol::{Client, StartAt, SubscribeOptions, Subscription};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a subscriber waits for a delivery before checking whether the
/// run is over (and acking what it holds).
const IDLE: Duration = Duration::from_millis(20);
/// Most subscribers.
const MAX_SUBSCRIBERS: usize = 1024;

/// `medbus bench fanout` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub target: ProtocolTarget,
    /// Subscribers of the topic, one connection each.
    #[arg(long, short = 'k', default_value_t = 16)]
    pub subscribers: usize,
    /// Publishers feeding the topic, one connection each.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,
    /// Records per publish.
    #[arg(long, short = 'b', default_value_t = 100)]
    pub batch: usize,
    /// Payload bytes per record (e.g. 1024, 4KiB).
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// Open loop: publish this many records per second in all (default: as fast as acks come back).
    #[arg(long, value_name = "RECORDS_PER_SEC")]
    pub rate: Option<f64>,
    /// Credit window of each subscriber (at most the broker's `max_credits`).
    #[arg(long, default_value_t = 1024)]
    pub credits: u32,
    /// Threads the subscribers run on (default: the number of cores).
    #[arg(long)]
    pub subscriber_threads: Option<usize>,
    /// Topic.
    #[arg(long, default_value = "bench.fanout")]
    pub topic: String,
    /// How long to run (e.g. 10s, 500ms).
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: HumanDuration,
    /// How long to wait for each `Published` before counting a timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl FanoutArgs {
    /// Every default, against a spawned broker.
    pub fn spawned() -> FanoutArgs {
        FanoutArgs {
            target: ProtocolTarget::spawned(),
            subscribers: 16,
            publishers: 1,
            batch: 100,
            size: ByteSize(1024),
            rate: None,
            credits: 1024,
            subscriber_threads: None,
            topic: "bench.fanout".into(),
            duration: HumanDuration(Duration::from_secs(10)),
            timeout: HumanDuration(Duration::from_secs(10)),
            json: false,
        }
    }
}

/// One subscriber until `done`.
async fn subscriber(mut sub: Subscription, credits: u32, done: &AtomicBool, live: &Live) -> Totals {
    let start = Instant::now();
    let mut totals = Totals::default();
    let ack_every = (credits as usize / 4).max(1);
    let mut unacked: Vec<u64> = Vec::with_capacity(ack_every);
    let mut expected = sub.start_offset();
    loop {
        if done.load(Ordering::Relaxed) {
            break;
        }
        let next = tokio::time::timeout(IDLE, sub.next()).await;
        let delivery = match next {
            Err(_) => {
                if !unacked.is_empty() {
                    if let Err(e) = sub.ack_many(std::mem::take(&mut unacked)).await {
                        totals.error(proto::error_kind(&e));
                        live.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                continue;
            }
            Ok(None) => {
                totals.error("closed");
                live.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Some(Err(e))) => {
                totals.error(proto::error_kind(&e));
                live.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Some(Ok(d))) => d,
        };
        if done.load(Ordering::Relaxed) {
            break;
        }
        if delivery.offset != expected {
            totals.error(if delivery.offset < expected {
                "repeated_offset"
            } else {
                "offset_gap"
            });
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        expected = delivery.offset.max(expected) + 1;
        match proto::age(&delivery.record.headers) {
            Some(age) => {
                totals.latencies.record(age);
                totals.ok += 1;
                totals.bytes += delivery.record.payload.len() as u64;
                live.ok.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // Not ours (someone else publishes to the topic): not counted.
            }
        }
        unacked.push(delivery.offset);
        if unacked.len() >= ack_every {
            if let Err(e) = sub.ack_many(std::mem::take(&mut unacked)).await {
                totals.error(proto::error_kind(&e));
                live.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    totals.elapsed = start.elapsed();
    totals
}

/// Connect and subscribe `count` subscribers on this thread's runtime.
async fn open_subscribers(
    count: usize,
    first: usize,
    addr: &str,
    token: &str,
    topic: &str,
    credits: u32,
) -> Result<Vec<(Client, Subscription)>, BenchError> {
    let mut subs = Vec::with_capacity(count);
    for i in first..first + count {
        let client = proto::connect(addr, &format!("bench-sub-{i}"), token).await?;
        let sub = client
            .subscribe(
                SubscribeOptions::new(topic)
                    .start(StartAt::Latest)
                    .credits(credits),
            )
            .await
            .map_err(|e| BenchError::Usage(format!("cannot subscribe to {topic}: {e}")))?;
        subs.push((client, sub));
    }
    Ok(subs)
}

/// Run the `fanout` mode.
pub fn run(args: &FanoutArgs) -> Result<LoadReport, BenchError> {
    let size = publish::validate(args.publishers, args.batch, args.size, 1)?;
    if args.subscribers == 0 || args.subscribers > MAX_SUBSCRIBERS {
        return Err(BenchError::Usage(format!(
            "--subscribers must be between 1 and {MAX_SUBSCRIBERS}"
        )));
    }
    if args.credits == 0 {
        return Err(BenchError::Usage("--credits must be above zero".into()));
    }
    if args.duration.0.is_zero() {
        return Err(BenchError::Usage("--duration must be above zero".into()));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(BenchError::Usage("--rate must be above zero".into()));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sub_threads = args
        .subscriber_threads
        .unwrap_or(cores)
        .clamp(1, args.subscribers);
    let (mut broker, addr) = args.target.open(false)?;
    let plan = Arc::new(PublishPlan {
        topic: args.topic.clone(),
        batch: args.batch,
        payload: publish::payload(size),
        inflight: 1,
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.batch as f64 * args.publishers as f64 / r)),
        timeout: args.timeout.0,
    });
    let gate = Arc::new(Gate::new(args.publishers + sub_threads));
    let done = Arc::new(AtomicBool::new(false));
    // Deliveries drive the progress line; the publishers count apart.
    let live = Arc::new(Live::default());
    let pub_live = Arc::new(Live::default());
    let mut sub_handles = Vec::with_capacity(sub_threads);
    let mut first = 0;
    for t in 0..sub_threads {
        let count =
            args.subscribers / sub_threads + usize::from(t < args.subscribers % sub_threads);
        let (addr, token, topic) = (addr.clone(), args.target.token.clone(), args.topic.clone());
        let (gate, done, live) = (gate.clone(), done.clone(), live.clone());
        let credits = args.credits;
        let start_index = first;
        first += count;
        sub_handles.push(proto::thread(format!("bench-sub-{t}"), move || {
            let rt = match proto::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    gate.ready(Err(e));
                    return Totals::default();
                }
            };
            rt.block_on(async {
                let subs = match open_subscribers(
                    count,
                    start_index,
                    &addr,
                    &token,
                    &topic,
                    credits,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        gate.ready(Err(e));
                        return Totals::default();
                    }
                };
                if !gate.ready(Ok(())) {
                    return Totals::default();
                }
                let runs = subs
                    .into_iter()
                    .map(|(_client, sub)| subscriber(sub, credits, &done, &live));
                let mut totals = Totals::default();
                for part in futures_util::future::join_all(runs).await {
                    totals.merge(&part);
                }
                totals
            })
        })?);
    }
    let pub_handles = publish::start_publishers(
        args.publishers,
        &addr,
        &args.target.token,
        &plan,
        &gate,
        &done,
        &pub_live,
    )?;
    if let Err(e) = gate.open() {
        done.store(true, Ordering::Relaxed);
        let _ = publish::join(pub_handles);
        let _ = publish::join(sub_handles);
        proto::stop_broker(broker);
        return Err(e);
    }
    proto::watch(args.duration.0, &done, &live, broker.as_mut(), || {
        pub_handles.iter().all(|t| t.is_finished()) && sub_handles.iter().all(|t| t.is_finished())
    });
    let published = publish::join(pub_handles);
    let mut totals = publish::join(sub_handles);
    // Deliveries count within the run's time only.
    totals.elapsed = args.duration.0;
    for (kind, n) in &published.errors {
        *totals.errors.entry(format!("publish_{kind}")).or_default() += n;
    }
    let peak = proto::stop_broker(broker);
    let mut report = LoadReport::new("fanout", addr, args.subscribers + args.publishers, &totals);
    report.message_bytes = size;
    report.rate = args.rate;
    report.publishers = Some(args.publishers);
    report.batch = Some(args.batch);
    report.subscribers = Some(args.subscribers);
    report.ingested = Some(published.ok);
    report.ingest_per_sec = Some(published.ok as f64 / args.duration.0.as_secs_f64());
    report.latency_of = Some(
        "publisher's send time (in the record's header) → a subscriber has the delivery".into(),
    );
    if args.target.spawn {
        report.durability = Some(args.target.durability.as_str().to_string());
        report.peak_rss_bytes = peak;
    }
    Ok(report)
}
