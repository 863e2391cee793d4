//! `medbus bench route`: how fast one route drains a topic that is already
//! full, against how fast the FHIR converter alone handles the same
//! messages.
//!
//! Why: issue 4 sets two targets for routing, pass-through (`transform =
//! "none"`) at 100,000 records/s or more and `fhir` within 20 % of the raw
//! converter's speed, and they used to be measured with a throw-away script.
//! This mode is that script, reproducible:
//!
//! 1. **fill**: a spawned broker with no route takes `--count` messages of
//!    the built-in mix (padded to `--size`, unique MSH-10s) over 32 MLLP
//!    connections into `hl7.bench`, every ACK checked; then it stops.
//! 2. **reference**: the stored payloads are read back from that data
//!    directory and converted in this process, on one thread, by
//!    [`medbus_fhir::convert_bytes`] with the mapping options the brokers
//!    run with (only the conversion calls are timed).
//! 3. **route**, per `--transform`: a broker starts on a copy of the filled
//!    data directory with exactly one route from `hl7.bench` to one topic
//!    (`bench.routed`, or `fhir.bundles` for `fhir`). Once its `/readyz`
//!    answers 200 its `/metrics` is read every 20 ms until
//!    `medbus_route_records_total{outcome="matched"}` reaches the count.
//!    records/s counts what was matched after readiness over the time from
//!    then to completion (the route starts before readiness, so what it did
//!    by then is left out of both); the rate from the broker's spawn,
//!    start-up included (the script's old figure), is reported beside it.
//!
//! Every data directory is a fresh one under the temp dir, removed
//! afterwards. Records the route filtered or dead-lettered, or that were
//! never routed ([`STALL`] without progress), are errors of the run.

use super::corpus::Mix;
use super::mllp::{self, MllpArgs};
use super::report::{render_rows, Live, Machine, Progress, MB, MIB};
use super::spawn::{config_text, RouteSpec, SpawnOptions, SpawnedBroker, TempDir, TOPIC};
use super::{proto, BenchError, DurabilityArg};
use crate::http1::{Client, Http1Error};
use medbus_config::ByteSize;
use medbus_fhir::ConvertOptions;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Name of the route under test (its `route` metric label).
const ROUTE: &str = "bench-route";
/// Target of the pass-through route.
const PASS_THROUGH_TARGET: &str = "bench.routed";
/// Target of the `fhir` route.
const FHIR_TARGET: &str = "fhir.bundles";
/// MLLP connections that fill the source topic.
const FILL_CONNECTIONS: usize = 32;
/// How often `/metrics` (and `/readyz` before it) is read.
const POLL: Duration = Duration::from_millis(20);
/// A route whose counts do not move for this long has stopped: the records
/// it has not routed are errors (`not_routed`).
pub const STALL: Duration = Duration::from_secs(60);
/// Largest `/metrics` body accepted.
const MAX_METRICS: usize = 16 << 20;
/// Records read from the filled data directory per storage call.
const PAGE: usize = 1024;
/// Issue 4's pass-through target, records/s.
const PASS_THROUGH_GOAL: f64 = 100_000.0;
/// Issue 4's `fhir` target: at least this share of the converter's rate.
const FHIR_GOAL: f64 = 0.8;

/// Which route(s) to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransformArg {
    /// `transform = "none"` to `bench.routed` (pass-through).
    None,
    /// `transform = "fhir"` to `fhir.bundles`.
    Fhir,
    /// `none`, then `fhir`, each on its own copy of the filled topic.
    Both,
}

impl TransformArg {
    /// The route transforms to time, in order.
    fn transforms(self) -> &'static [&'static str] {
        match self {
            TransformArg::None => &["none"],
            TransformArg::Fhir => &["fhir"],
            TransformArg::Both => &["none", "fhir"],
        }
    }
}

/// `medbus bench route` arguments (the brokers are always spawned).
#[derive(Debug, Clone, clap::Args)]
pub struct RouteArgs {
    /// The route to time: `none` (pass-through to bench.routed), `fhir` (to fhir.bundles), or both in turn.
    #[arg(long, value_enum, default_value_t = TransformArg::Both)]
    pub transform: TransformArg,
    /// Records in the source topic (filled over MLLP before the clock starts).
    #[arg(long, short = 'n', default_value_t = 50_000)]
    pub count: u64,
    /// Pad each HL7 message to this many bytes with an NTE segment.
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// Durability of the spawned brokers.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// `[mapping] threads` of the spawned brokers (default: one per core;
    /// 1: the route converts on its own thread, as the converter alone does).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl RouteArgs {
    /// Every default.
    pub fn new() -> RouteArgs {
        RouteArgs {
            transform: TransformArg::Both,
            count: 50_000,
            size: ByteSize(1024),
            durability: DurabilityArg::Fsync,
            threads: None,
            json: false,
        }
    }

    fn validate(&self) -> Result<usize, BenchError> {
        if self.count == 0 || self.count > 10_000_000 {
            return Err(BenchError::Usage(
                "--count must be between 1 and 10000000".into(),
            ));
        }
        if self.size.0 > 1 << 20 {
            return Err(BenchError::Usage("--size must be at most 1MiB".into()));
        }
        if self
            .threads
            .is_some_and(|t| !(1..=medbus_config::schema::MAX_MAPPING_THREADS).contains(&t))
        {
            return Err(BenchError::Usage(format!(
                "--threads must be between 1 and {}",
                medbus_config::schema::MAX_MAPPING_THREADS
            )));
        }
        Ok(usize::try_from(self.size.0).unwrap_or(usize::MAX))
    }
}

impl Default for RouteArgs {
    fn default() -> Self {
        Self::new()
    }
}

/// One route timed on its own broker.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteRun {
    /// `none` or `fhir`.
    pub transform: String,
    /// The route's one target topic.
    pub target_topic: String,
    /// Records matched (routed) in all.
    pub records: u64,
    /// Of those, matched before `/readyz` answered 200 (left out of the rate).
    pub routed_before_ready: u64,
    /// `ready` (the rate counts from readiness) or `spawn` (everything was
    /// routed before readiness, so the rate counts from the spawn).
    pub measured_from: String,
    /// Readiness (or spawn) → all records matched.
    pub duration_s: f64,
    /// Records matched per second over `duration_s`.
    pub msgs_per_sec: f64,
    /// Source payload megabytes (10^6 bytes) routed per second.
    pub mb_per_sec: f64,
    /// Broker spawn → all records matched (start-up included).
    pub since_spawn_s: f64,
    /// `records` ÷ `since_spawn_s`.
    pub per_sec_since_spawn: f64,
    /// `msgs_per_sec` ÷ the converter's rate (`fhir` only).
    pub ratio_to_converter: Option<f64>,
    /// Records filtered, dead-lettered or not routed.
    pub errors: u64,
    /// Those by kind (`filtered`, `dead_lettered`, `not_routed`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Peak resident memory of the broker (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// The broker's threads that used 5 % of a core or more over the
    /// measured window: (thread name, percent of one core), busiest first.
    /// Shows whether the router, the committer or both were the limit.
    #[serde(default)]
    pub thread_cpu_percent: Vec<(String, f64)>,
}

/// The result of `medbus bench route`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteReport {
    /// `route`.
    pub mode: String,
    /// The filled topic every route reads.
    pub source_topic: String,
    /// Records in it.
    pub count: u64,
    /// Mean stored message size in bytes.
    pub message_bytes: usize,
    /// Durability of the spawned brokers.
    pub durability: String,
    /// Threads the spawned brokers convert on (`[mapping] threads`).
    pub conversion_threads: usize,
    /// Messages/s at which the source topic was filled over MLLP.
    pub fill_msgs_per_sec: f64,
    /// [`medbus_fhir::convert_bytes`] on the stored payloads, one thread,
    /// conversions/s (when `fhir` is timed).
    pub converter_per_sec: Option<f64>,
    /// Payloads the converter refused.
    pub converter_failed: u64,
    /// One entry per route timed.
    pub runs: Vec<RouteRun>,
    /// Errors of every run plus the converter's failures.
    pub errors: u64,
    /// Where it ran.
    pub machine: Machine,
}

impl RouteReport {
    /// The plain-text table: a row per route, then the reference and the
    /// targets.
    pub fn table(&self) -> String {
        let mut out = format!(
            "medbus bench route: {} records of {} B in {} (filled over MLLP at {:.0} msg/s), spawned brokers (durability {}, conversion threads {}), on {}\n",
            self.count,
            self.message_bytes,
            self.source_topic,
            self.fill_msgs_per_sec,
            self.durability,
            self.conversion_threads,
            self.machine.describe()
        );
        let rows: Vec<Vec<(&str, String)>> = self
            .runs
            .iter()
            .map(|r| {
                vec![
                    ("transform", r.transform.clone()),
                    (
                        "route",
                        format!("{} -> {}", self.source_topic, r.target_topic),
                    ),
                    ("records", r.records.to_string()),
                    ("before ready", r.routed_before_ready.to_string()),
                    ("duration", format!("{:.2}s", r.duration_s)),
                    ("records/s", format!("{:.0}", r.msgs_per_sec)),
                    ("MB/s", format!("{:.2}", r.mb_per_sec)),
                    ("from spawn", format!("{:.0}/s", r.per_sec_since_spawn)),
                    (
                        "vs converter",
                        r.ratio_to_converter
                            .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                    ),
                    ("errors", r.errors.to_string()),
                    (
                        "peak RSS",
                        r.peak_rss_bytes
                            .map_or_else(|| "-".into(), |b| format!("{:.1} MiB", b as f64 / MIB)),
                    ),
                ]
            })
            .collect();
        out.push_str(&render_rows(&rows));
        let _ = writeln!(
            out,
            "  records/s: records matched after /readyz answered 200, over the time from then until matched = {} (/metrics read every {} ms); from spawn: all of them over the time from starting the broker",
            self.count,
            POLL.as_millis()
        );
        if let Some(c) = self.converter_per_sec {
            let _ = writeln!(
                out,
                "  converter: medbus_fhir::convert_bytes on the same {} payloads, in-process, one thread: {c:.0} records/s{}",
                self.count,
                if self.converter_failed > 0 {
                    format!(" ({} refused)", self.converter_failed)
                } else {
                    String::new()
                }
            );
        }
        for r in &self.runs {
            match (r.transform.as_str(), r.ratio_to_converter) {
                ("none", _) => {
                    let _ = writeln!(
                        out,
                        "  issue 4: none >= {PASS_THROUGH_GOAL:.0} records/s; measured ÷ target = {:.2}",
                        r.msgs_per_sec / PASS_THROUGH_GOAL
                    );
                }
                ("fhir", Some(x)) => {
                    let _ = writeln!(
                        out,
                        "  issue 4: fhir within 20 % of the converter (vs converter >= {FHIR_GOAL:.2}); measured {x:.2}"
                    );
                }
                _ => {}
            }
            for (kind, n) in &r.errors_by_kind {
                let _ = writeln!(out, "  errors ({}): {n} {kind}", r.transform);
            }
            if !r.thread_cpu_percent.is_empty() {
                let threads: Vec<String> = r
                    .thread_cpu_percent
                    .iter()
                    .map(|(name, pct)| format!("{name} {pct:.0} %"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  broker threads ({}), share of one core over the window: {}",
                    r.transform,
                    threads.join(", ")
                );
            }
        }
        out
    }
}

/// A route's counts in one `/metrics` reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RouteCounts {
    /// `outcome="matched"`.
    matched: u64,
    /// `outcome="filtered"`.
    filtered: u64,
    /// `outcome="dead_lettered"`.
    dead_lettered: u64,
}

impl RouteCounts {
    /// Every record the route has read.
    fn seen(&self) -> u64 {
        self.matched + self.filtered + self.dead_lettered
    }
}

/// The value of `label` in a `{a="x",b="y"}` label set.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"'))
    })
}

/// `medbus_route_records_total` of `route` in a Prometheus text exposition.
fn route_counts(text: &str, route: &str) -> RouteCounts {
    let mut c = RouteCounts::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("medbus_route_records_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if label(labels, "route") != Some(route) {
            continue;
        }
        // Counters print as integers or floats (`1e+06`).
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let v = v as u64;
        match label(labels, "outcome") {
            Some("matched") => c.matched = v,
            Some("filtered") => c.filtered = v,
            Some("dead_lettered") => c.dead_lettered = v,
            _ => {}
        }
    }
    c
}

/// Keep-alive HTTP to one broker's endpoint, reconnecting after a failure.
struct Endpoint {
    /// Where.
    addr: SocketAddr,
    /// The connection, when open.
    client: Option<Client>,
}

impl Endpoint {
    /// `GET path`: status and body.
    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), Http1Error> {
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => self.client.insert(
                Client::connect(&self.addr.ip().to_string(), self.addr.port(), POLL * 50).await?,
            ),
        };
        let answer = client.request("GET", path, None, b"", MAX_METRICS).await;
        if answer.is_err() {
            self.client = None;
        }
        answer
    }

    /// The route's counts now; `None` if the endpoint did not answer 200.
    async fn counts(&mut self) -> Option<RouteCounts> {
        match self.get("/metrics").await {
            Ok((200, body)) => Some(route_counts(&String::from_utf8_lossy(&body), ROUTE)),
            _ => None,
        }
    }
}

/// Copy a directory tree (a stopped broker's data directory).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// Fill `hl7.bench` of a broker on `data_dir` with `count` messages over
/// MLLP; the messages/s it took them at.
fn fill(args: &RouteArgs, size: usize, data_dir: &Path) -> Result<f64, BenchError> {
    let mut opts = SpawnOptions::new(args.durability.as_str(), 256);
    opts.data_dir = Some(data_dir.to_path_buf());
    let mut broker = SpawnedBroker::start(&opts)?;
    let mut load = MllpArgs::new(Some(broker.addr().to_string()));
    load.count = Some(args.count);
    load.connections = FILL_CONNECTIONS.min(usize::try_from(args.count).unwrap_or(1));
    let totals = mllp::drive(&load, Mix::builtin(size), broker.addr(), Some(&mut broker));
    // Stopped cleanly, or the copies would start from an unfinished state.
    broker.stop()?;
    let totals = totals?;
    if totals.ok != args.count {
        let kinds: Vec<String> = totals
            .errors
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        return Err(BenchError::setup(
            "filling the source topic".into(),
            format!(
                "{} of {} messages were acknowledged ({})",
                totals.ok,
                args.count,
                kinds.join(", ")
            ),
        ));
    }
    Ok(totals.ok as f64 / totals.elapsed.as_secs_f64().max(1e-9))
}

/// What the filled topic holds, and the converter's rate on it.
struct Source {
    /// Payload bytes of every record.
    bytes: u64,
    /// Conversions/s (when asked for).
    converter_per_sec: Option<f64>,
    /// Payloads the converter refused.
    converter_failed: u64,
}

/// Read every record of `hl7.bench` in the stopped broker's `data_dir`
/// (there must be `count`), converting each payload when `opts` is given;
/// only the conversion calls are timed.
fn read_source(
    data_dir: &Path,
    count: u64,
    opts: Option<&ConvertOptions>,
) -> Result<Source, BenchError> {
    let store = crate::cli::dump::open_offline(data_dir)
        .map_err(|e| BenchError::setup(format!("cannot open {}", data_dir.display()), e))?;
    let mut source = Source {
        bytes: 0,
        converter_per_sec: None,
        converter_failed: 0,
    };
    let mut converted = 0u64;
    let mut converting = Duration::ZERO;
    let mut records = 0u64;
    let read = (|| {
        let mut next = 0;
        loop {
            let page = store.read(TOPIC, next, PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            next = last + 1;
            records += page.len() as u64;
            source.bytes += page
                .iter()
                .map(|(_, r)| r.payload.len() as u64)
                .sum::<u64>();
            if let Some(opts) = opts {
                let started = Instant::now();
                for (_, r) in &page {
                    match medbus_fhir::convert_bytes(&r.payload, opts) {
                        Ok(c) => {
                            converted += 1;
                            std::hint::black_box(c);
                        }
                        Err(_) => source.converter_failed += 1,
                    }
                }
                converting += started.elapsed();
            }
        }
        Ok::<_, crate::storage::StorageError>(())
    })();
    store.close();
    read.map_err(|e| BenchError::setup(format!("cannot read {TOPIC}"), e))?;
    if records != count {
        return Err(BenchError::setup(
            "filling the source topic".into(),
            format!("{TOPIC} holds {records} records, not {count}"),
        ));
    }
    if opts.is_some() {
        source.converter_per_sec = Some(converted as f64 / converting.as_secs_f64().max(1e-9));
    }
    Ok(source)
}

/// The spawn options of a broker running the route `transform`.
fn route_options(args: &RouteArgs, transform: &str) -> SpawnOptions {
    let mut opts = SpawnOptions::new(args.durability.as_str(), 16);
    opts.conversion_threads = args.threads;
    opts.route = Some(RouteSpec {
        name: ROUTE.into(),
        from: TOPIC.into(),
        transform: transform.into(),
        to: vec![if transform == "fhir" {
            FHIR_TARGET
        } else {
            PASS_THROUGH_TARGET
        }
        .into()],
    });
    opts
}

/// The mapping the brokers convert with (the generated config's): its
/// options and how many threads convert.
fn mapping(args: &RouteArgs) -> Result<(ConvertOptions, usize), BenchError> {
    let text = config_text(&route_options(args, "fhir"));
    let config = medbus_config::parse(&text, "generated config")
        .map_err(|e| BenchError::setup("the generated config is invalid".into(), e))?;
    Ok((
        crate::server::convert_options(&config),
        config.mapping.threads(),
    ))
}

/// Time one route on a broker started on `data_dir`.
fn time_route(
    args: &RouteArgs,
    transform: &str,
    data_dir: &Path,
    mean_bytes: f64,
) -> Result<RouteRun, BenchError> {
    let mut opts = route_options(args, transform);
    opts.data_dir = Some(data_dir.to_path_buf());
    let target = opts
        .route
        .as_ref()
        .and_then(|r| r.to.first().cloned())
        .unwrap_or_default();
    let spawned = Instant::now();
    let mut broker = SpawnedBroker::start(&opts)?;
    let outcome = match broker.http_addr() {
        Some(addr) => watch_route(args.count, addr, &mut broker),
        None => Err(BenchError::Spawn {
            reason: "printed `ready` but no HTTP endpoint address".into(),
            log_tail: String::new(),
        }),
    };
    let peak = proto::stop_broker(Some(broker));
    let w = outcome?;
    let count = args.count;
    let mut errors_by_kind = BTreeMap::new();
    for (kind, n) in [
        ("filtered", w.last.filtered),
        ("dead_lettered", w.last.dead_lettered),
        ("not_routed", count.saturating_sub(w.last.seen())),
    ] {
        if n > 0 {
            errors_by_kind.insert(kind.to_string(), n);
        }
    }
    let since_spawn = w.done.saturating_duration_since(spawned);
    // Nothing left to time after readiness: count from the spawn instead.
    let (measured_from, window, in_window) = if w.before_ready < w.last.matched {
        (
            "ready",
            w.done.saturating_duration_since(w.ready),
            w.last.matched - w.before_ready,
        )
    } else {
        ("spawn", since_spawn, w.last.matched)
    };
    let secs = window.as_secs_f64().max(1e-9);
    Ok(RouteRun {
        transform: transform.to_string(),
        target_topic: target,
        records: w.last.matched,
        routed_before_ready: w.before_ready,
        measured_from: measured_from.to_string(),
        duration_s: window.as_secs_f64(),
        msgs_per_sec: in_window as f64 / secs,
        mb_per_sec: in_window as f64 * mean_bytes / MB / secs,
        since_spawn_s: since_spawn.as_secs_f64(),
        per_sec_since_spawn: w.last.matched as f64 / since_spawn.as_secs_f64().max(1e-9),
        ratio_to_converter: None,
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        peak_rss_bytes: peak,
        thread_cpu_percent: if measured_from == "ready" {
            busy_threads(&w.cpu, w.done.saturating_duration_since(w.ready))
        } else {
            Vec::new()
        },
    })
}

/// What watching a route saw.
struct Watched {
    /// When the first `/metrics` request after readiness was sent.
    ready: Instant,
    /// Matched records in that reading.
    before_ready: u64,
    /// When the reading that showed every record read came in (or the
    /// last reading, after a stall).
    done: Instant,
    /// The last reading.
    last: RouteCounts,
    /// The broker's CPU time by thread name at `ready` and at `done`.
    cpu: (BTreeMap<String, Duration>, BTreeMap<String, Duration>),
}

/// Threads that used at least 5 % of a core between two samples over
/// `window`: (name, percent of one core), busiest first.
fn busy_threads(
    (start, end): &(BTreeMap<String, Duration>, BTreeMap<String, Duration>),
    window: Duration,
) -> Vec<(String, f64)> {
    let secs = window.as_secs_f64().max(1e-9);
    let mut busy: Vec<(String, f64)> = end
        .iter()
        .map(|(name, t)| {
            let before = start.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                t.saturating_sub(before).as_secs_f64() / secs * 100.0,
            )
        })
        .filter(|(_, pct)| *pct >= 5.0)
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    busy
}

/// Wait for `/readyz`, then read `/metrics` every [`POLL`] until the route
/// has read `count` records or stalls.
fn watch_route(
    count: u64,
    addr: SocketAddr,
    broker: &mut SpawnedBroker,
) -> Result<Watched, BenchError> {
    let rt = proto::runtime()?;
    let mut endpoint = Endpoint { addr, client: None };
    let unreachable = |what: &str| BenchError::Spawn {
        reason: format!("{what} within {}s", STALL.as_secs()),
        log_tail: String::new(),
    };
    rt.block_on(async {
        let deadline = Instant::now() + STALL;
        while !matches!(endpoint.get("/readyz").await, Ok((200, _))) {
            if Instant::now() >= deadline {
                return Err(unreachable("did not answer 200 on /readyz"));
            }
            tokio::time::sleep(POLL).await;
        }
        let ready = Instant::now();
        let cpu_at_ready = broker.thread_cpu();
        let first = endpoint
            .counts()
            .await
            .ok_or_else(|| unreachable("did not answer on /metrics"))?;
        let mut w = Watched {
            ready,
            before_ready: first.matched,
            done: Instant::now(),
            last: first,
            cpu: (cpu_at_ready, BTreeMap::new()),
        };
        let live = Live::default();
        let mut progress = Progress::new(count);
        let mut moved = Instant::now();
        let mut next = ready;
        while w.last.seen() < count && moved.elapsed() < STALL {
            next += POLL;
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
            let Some(c) = endpoint.counts().await else {
                continue;
            };
            w.done = Instant::now();
            if c != w.last {
                moved = w.done;
            }
            w.last = c;
            broker.sample_rss();
            live.ok.store(c.matched, Ordering::Relaxed);
            live.errors
                .store(c.filtered + c.dead_lettered, Ordering::Relaxed);
            progress.tick(c.seen(), &live, "");
        }
        w.cpu.1 = broker.thread_cpu();
        progress.finish();
        Ok(w)
    })
}

/// Run the `route` mode.
pub fn run(args: &RouteArgs) -> Result<RouteReport, BenchError> {
    let size = args.validate()?;
    let transforms = args.transform.transforms();
    let filled = TempDir::new("route-source")?;
    let fill_rate = fill(args, size, filled.path())?;
    let (convert, conversion_threads) = mapping(args)?;
    let opts = transforms.contains(&"fhir").then_some(convert);
    let source = read_source(filled.path(), args.count, opts.as_ref())?;
    let mean_bytes = source.bytes as f64 / args.count as f64;
    let mut runs = Vec::with_capacity(transforms.len());
    for transform in transforms {
        let copy = TempDir::new("route-data")?;
        copy_dir(filled.path(), copy.path()).map_err(|source| BenchError::Io {
            what: format!(
                "cannot copy {} to {}",
                filled.path().display(),
                copy.path().display()
            ),
            source,
        })?;
        let mut run = time_route(args, transform, copy.path(), mean_bytes)?;
        if *transform == "fhir" {
            run.ratio_to_converter = source
                .converter_per_sec
                .map(|c| run.msgs_per_sec / c.max(1e-9));
        }
        runs.push(run);
    }
    let errors = runs.iter().map(|r| r.errors).sum::<u64>() + source.converter_failed;
    Ok(RouteReport {
        mode: "route".into(),
        source_topic: TOPIC.into(),
        count: args.count,
        message_bytes: mean_bytes.round() as usize,
        durability: args.durability.as_str().into(),
        conversion_threads,
        fill_msgs_per_sec: fill_rate,
        converter_per_sec: source.converter_per_sec,
        converter_failed: source.converter_failed,
        runs,
        errors,
        machine: Machine::detect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_route_counters() {
        let text = "# HELP medbus_route_records_total Source records a route read, by outcome\n\
            # TYPE medbus_route_records_total counter\n\
            medbus_route_records_total{outcome=\"dead_lettered\",route=\"bench-route\"} 2\n\
            medbus_route_records_total{outcome=\"filtered\",route=\"bench-route\"} 0\n\
            medbus_route_records_total{outcome=\"matched\",route=\"bench-route\"} 49998\n\
            medbus_route_records_total{outcome=\"matched\",route=\"other\"} 7\n\
            medbus_route_records_totally{outcome=\"matched\",route=\"bench-route\"} 9\n";
        let c = route_counts(text, ROUTE);
        assert_eq!(
            c,
            RouteCounts {
                matched: 49_998,
                filtered: 0,
                dead_lettered: 2
            }
        );
        assert_eq!(c.seen(), 50_000);
        assert_eq!(route_counts("", ROUTE), RouteCounts::default());
    }

    #[test]
    fn generated_route_configs_are_valid() {
        let args = RouteArgs::new();
        for t in ["none", "fhir"] {
            let text = config_text(&route_options(&args, t));
            let c = medbus_config::parse(&text, "t").expect("valid config");
            assert_eq!(c.routes.len(), 1);
            assert_eq!(c.routes[0].name(), ROUTE);
            assert_eq!(c.routes[0].sources(), [TOPIC]);
        }
        assert!(mapping(&args).is_ok());
        let one = RouteArgs {
            threads: Some(1),
            ..RouteArgs::new()
        };
        assert_eq!(mapping(&one).map(|(_, t)| t).ok(), Some(1));
    }

    #[test]
    fn busy_threads_are_the_ones_over_five_percent_busiest_first() {
        let ms = Duration::from_millis;
        let start = BTreeMap::from([
            ("router".to_string(), ms(1000)),
            ("committer".into(), ms(0)),
        ]);
        let end = BTreeMap::from([
            ("router".to_string(), ms(2000)),
            ("committer".into(), ms(500)),
            ("idle".into(), ms(10)),
        ]);
        let busy = busy_threads(&(start, end), Duration::from_secs(1));
        assert_eq!(
            busy,
            [("router".to_string(), 100.0), ("committer".into(), 50.0)]
        );
    }

    #[test]
    fn table_has_a_row_per_route() {
        let run = |t: &str, ratio| RouteRun {
            transform: t.into(),
            target_topic: "x".into(),
            records: 10,
            routed_before_ready: 1,
            measured_from: "ready".into(),
            duration_s: 0.5,
            msgs_per_sec: 18.0,
            mb_per_sec: 0.01,
            since_spawn_s: 1.0,
            per_sec_since_spawn: 10.0,
            ratio_to_converter: ratio,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            peak_rss_bytes: Some(1 << 20),
            thread_cpu_percent: vec![("actix-rt|system".into(), 99.5)],
        };
        let r = RouteReport {
            mode: "route".into(),
            source_topic: TOPIC.into(),
            count: 10,
            message_bytes: 1024,
            durability: "fsync".into(),
            conversion_threads: 2,
            fill_msgs_per_sec: 100.0,
            converter_per_sec: Some(36.0),
            converter_failed: 0,
            runs: vec![run("none", None), run("fhir", Some(0.5))],
            errors: 0,
            machine: Machine::detect(),
        };
        let t = r.table();
        assert!(t.contains("records/s"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("none ")), "{t}");
        assert!(t.lines().any(|l| l.starts_with("fhir ")), "{t}");
        assert!(t.contains("converter: medbus_fhir::convert_bytes"), "{t}");
        assert!(
            t.contains("share of one core over the window: actix-rt|system 100 %"),
            "{t}"
        );
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["runs"][1]["ratio_to_converter"], 0.5);
    }
}
