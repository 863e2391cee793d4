//! `medbus bench fhir`: the FHIR gateway under load, in two phases (one per
//! run, named on the command line).
//!
//! Why: the gateway answers modern systems beside the MLLP ingest on the
//! same small machine, and issue 10 puts numbers on both of its paths: reads
//! of what HL7 feeds built, and Subscriptions notified as messages arrive.
//!
//! **read**: some messages of the built-in mix, each with its control id
//! also in PID-3.1 (a new patient per message), go in over MLLP; their
//! Patients are looked up by identifier until the view has them all. Then C
//! keep-alive HTTP/1.1 connections (default 32) each send `GET
//! [base]/Patient/{id}` over those ids, the next request when the whole
//! response is in (closed loop), for `--duration`. Latency runs from writing
//! the request to the end of the response body; any status but 200 is an
//! error (`status_NNN`). All connections run as tasks of one current-thread
//! tokio runtime on one OS thread, so the load generator takes as little of
//! the two cores from the broker as it can.
//!
//! **hook**: the bench listens on `127.0.0.1:0` as a rest-hook endpoint (an
//! HTTP/1.1 server answering 200 to every POST, keep-alive), stores a
//! `Subscription` on `Patient` with `payload` `application/fhir+json` whose
//! channel points there (`PUT [base]/Subscription/{id}`), waits for the
//! notification of one warm-up message, then sends MLLP messages on a fixed
//! open-loop schedule (`--rate`, default 1,000/s, over C connections,
//! default 8). Each message's patient carries its control id as an
//! identifier, so the notification's Patient names the message; latency runs
//! from the moment the message was due to the moment its notification is
//! read at the endpoint (no coordinated omission). A message ACKed but not
//! notified within `--timeout` after the load is an error
//! (`no_notification`). The Subscription is set `off` afterwards.
//!
//! Either phase runs against `--spawn` (a broker with the MLLP listener, the
//! `normalise` route and the gateway) or a running broker (`--target` base
//! URL and `--mllp` listener, whose route must normalise to `fhir.*`).

use super::corpus::{check_ack, control_id, run_id, Mix, CONTROL_ID_LEN, MAX_CONNECTIONS};
use super::e2e::{start_senders, Senders};
use super::mllp::{ack_kind, resolve, Conn};
use super::proto::{self, Gate, Pending, SharedLatencies};
use super::report::{Live, LoadReport, Totals};
use super::spawn::{SpawnOptions, SpawnedBroker};
use super::{BenchError, DurabilityArg};
use crate::gateway::hook::{parse_url, Endpoint};
use crate::http1::{self, Client, Http1Error, Reader};
use medbus_config::{ByteSize, HumanDuration};
use serde_json::Value;
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest read response accepted (a Patient is a few KiB).
const MAX_RESPONSE: usize = 4 << 20;
/// Largest notification accepted by the hook endpoint.
const MAX_NOTIFICATION: usize = 16 << 20;
/// Pause between two looks at the view while seeding, and after a failed
/// reconnect.
const PAUSE: Duration = Duration::from_millis(50);
/// Path of the bench's rest-hook endpoint.
const HOOK_PATH: &str = "/medbus-bench-hook";

/// Which path of the gateway to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Closed-loop `GET [base]/Patient/{id}` on C keep-alive connections; requests/s and latency.
    Read,
    /// MLLP in at a fixed rate → rest-hook notification received; notifications/s and latency.
    Hook,
}

/// `medbus bench fhir` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FhirArgs {
    /// `read`: GET Patient by id, closed loop; `hook`: MLLP in at `--rate` → rest-hook notification.
    #[arg(value_enum)]
    pub phase: Phase,
    /// FHIR base URL of a running broker's gateway (e.g. http://127.0.0.1:8575/fhir).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "spawn",
        required_unless_present = "spawn",
        requires = "mllp"
    )]
    pub target: Option<String>,
    /// MLLP listener of that broker; its route must normalise HL7 into `fhir.*` topics.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "spawn")]
    pub mllp: Option<String>,
    /// Start a broker (`medbus serve`: MLLP listener, normalise route, FHIR gateway) for this run, and report its peak RSS.
    #[arg(long)]
    pub spawn: bool,
    /// Connections: keep-alive HTTP for `read` (default 32), MLLP for `hook` (default 8).
    #[arg(long, short = 'c')]
    pub connections: Option<usize>,
    /// `hook`: messages per second in all, on a fixed schedule.
    #[arg(long, default_value_t = 1000.0, value_name = "MSGS_PER_SEC")]
    pub rate: f64,
    /// How long to load (e.g. 10s).
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: HumanDuration,
    /// `read`: Patients created before the load and read in turn.
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Pad each HL7 message to this many bytes with an NTE segment.
    #[arg(long, default_value = "1024")]
    pub size: ByteSize,
    /// How long to wait for each answer, for the view while seeding, and for the last notifications.
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

impl FhirArgs {
    /// Every default, against a spawned broker.
    pub fn spawned(phase: Phase) -> FhirArgs {
        FhirArgs {
            phase,
            target: None,
            mllp: None,
            spawn: true,
            connections: None,
            rate: 1000.0,
            duration: HumanDuration(Duration::from_secs(10)),
            patients: 100,
            size: ByteSize(1024),
            timeout: HumanDuration(Duration::from_secs(10)),
            data_dir: None,
            durability: DurabilityArg::Fsync,
            json: false,
        }
    }

    fn connections(&self) -> usize {
        self.connections.unwrap_or(match self.phase {
            Phase::Read => 32,
            Phase::Hook => 8,
        })
    }

    fn validate(&self) -> Result<(), BenchError> {
        let c = self.connections();
        if c == 0 || c > MAX_CONNECTIONS - 1 {
            return Err(BenchError::Usage(format!(
                "--connections must be between 1 and {}",
                MAX_CONNECTIONS - 1
            )));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(BenchError::Usage("--rate must be above zero".into()));
        }
        if self.duration.0.is_zero() || self.timeout.0.is_zero() {
            return Err(BenchError::Usage(
                "--duration and --timeout must be above zero".into(),
            ));
        }
        if self.patients == 0 || self.patients > 100_000 {
            return Err(BenchError::Usage(
                "--patients must be between 1 and 100000".into(),
            ));
        }
        if self.size.0 > 1 << 20 {
            return Err(BenchError::Usage("--size must be at most 1MiB".into()));
        }
        Ok(())
    }
}

/// Where the gateway and the MLLP listener are.
struct Target {
    /// The gateway's base URL, parsed (path = base path, no trailing `/`).
    gateway: Endpoint,
    /// The MLLP listener.
    mllp: SocketAddr,
}

impl Target {
    /// `[base]/rest` as a request target.
    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.gateway.path.trim_end_matches('/'))
    }

    /// The base URL, for the report.
    fn url(&self) -> String {
        format!(
            "http://{}{}",
            http1::host_header(&self.gateway.host, self.gateway.port),
            self.gateway.path.trim_end_matches('/')
        )
    }

    /// One HTTP connection to the gateway; an error of the run if none.
    async fn connect(&self, timeout: Duration) -> Result<Client, BenchError> {
        Client::connect(&self.gateway.host, self.gateway.port, timeout)
            .await
            .map_err(|source| BenchError::Unreachable {
                addr: self.url(),
                source,
            })
    }
}

/// Start the broker if asked; where to drive.
fn open(args: &FhirArgs) -> Result<(Option<SpawnedBroker>, Target), BenchError> {
    if args.spawn {
        let mut opts = SpawnOptions::new(args.durability.as_str(), 256);
        opts.data_dir = args.data_dir.clone();
        opts.normalise = true;
        opts.fhir = true;
        let broker = SpawnedBroker::start(&opts)?;
        let fhir = broker.fhir_addr().ok_or_else(|| BenchError::Spawn {
            reason: "has no FHIR gateway".into(),
            log_tail: String::new(),
        })?;
        let target = Target {
            gateway: Endpoint {
                host: fhir.ip().to_string(),
                port: fhir.port(),
                path: "/fhir".into(),
            },
            mllp: broker.addr(),
        };
        return Ok((Some(broker), target));
    }
    let (Some(url), Some(mllp)) = (&args.target, &args.mllp) else {
        return Err(BenchError::Usage(
            "give --target URL and --mllp HOST:PORT, or --spawn".into(),
        ));
    };
    let gateway = parse_url(url).map_err(|e| BenchError::Usage(format!("--target: {e}")))?;
    Ok((
        None,
        Target {
            gateway,
            mllp: resolve(mllp)?,
        },
    ))
}

/// Run the `fhir` mode.
pub fn run(args: &FhirArgs) -> Result<LoadReport, BenchError> {
    args.validate()?;
    let (mut broker, target) = open(args)?;
    let outcome = match args.phase {
        Phase::Read => read(args, &target, broker.as_mut()),
        Phase::Hook => hook(args, &target, broker.as_mut()),
    };
    let peak = proto::stop_broker(broker);
    let mut report = outcome?;
    if args.spawn {
        report.durability = Some(args.durability.as_str().to_string());
        report.peak_rss_bytes = peak;
    }
    Ok(report)
}

/// An HTTP failure's kind, for the error table.
fn http_kind(e: &Http1Error) -> &'static str {
    match e {
        Http1Error::Io(e) => super::mllp::io_kind("read")(std::io::Error::from(e.kind())),
        Http1Error::Closed => "closed",
        Http1Error::Malformed(_) | Http1Error::TooLarge { .. } => "bad_response",
    }
}

/// Send `n` messages of the patient mix over one MLLP connection, each
/// checked ACKed; their control ids.
fn seed(
    target: &Target,
    mix: &Mix,
    run: u32,
    n: usize,
    timeout: Duration,
) -> Result<Vec<String>, BenchError> {
    let mut conn = Conn::open_for_run(target.mllp, timeout)?;
    let mut frame = Vec::new();
    let mut ids = Vec::with_capacity(n);
    // Connection number 9999 is never a sender's.
    for seq in 0..n as u64 {
        let id: [u8; CONTROL_ID_LEN] = control_id(run, MAX_CONNECTIONS, seq);
        mix.frame(seq, &id, &mut frame);
        conn.exchange(&frame)
            .and_then(|ack| check_ack(&ack, &id).map_err(ack_kind))
            .map_err(|kind| BenchError::setup("a seeding message was not accepted".into(), kind))?;
        ids.push(String::from_utf8_lossy(&id).into_owned());
    }
    Ok(ids)
}

/// `GET path` during set-up: the body of a 200, anything else an error.
async fn get_ok(client: &mut Client, path: &str) -> Result<Vec<u8>, BenchError> {
    let (status, body) = client
        .request("GET", path, None, b"", MAX_RESPONSE)
        .await
        .map_err(|e| BenchError::setup(format!("GET {path}"), e))?;
    if status != 200 {
        return Err(BenchError::setup(
            format!("GET {path}"),
            format!("answered {status}: {}", String::from_utf8_lossy(&body)),
        ));
    }
    Ok(body)
}

/// The id of the Patient with identifier `value`, once the view has it.
async fn patient_id(
    client: &mut Client,
    target: &Target,
    value: &str,
    deadline: Instant,
) -> Result<String, BenchError> {
    let path = target.path(&format!("Patient?identifier={value}"));
    loop {
        let body = get_ok(client, &path).await?;
        let found = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
            b.get("entry")?
                .get(0)?
                .get("resource")?
                .get("id")?
                .as_str()
                .map(str::to_string)
        });
        if let Some(id) = found {
            return Ok(id);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::setup(
                "seeding".into(),
                format!("no Patient with identifier {value} in the view within the timeout (does the broker's route normalise into fhir.Patient?)"),
            ));
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// The `read` phase.
fn read(
    args: &FhirArgs,
    target: &Target,
    broker: Option<&mut SpawnedBroker>,
) -> Result<LoadReport, BenchError> {
    let connections = args.connections();
    let timeout = args.timeout.0;
    let mix = Mix::builtin_patients(usize::try_from(args.size.0).unwrap_or(usize::MAX));
    let values = seed(target, &mix, run_id(), args.patients, timeout)?;
    let rt = proto::runtime()?;
    let deadline = Instant::now() + timeout;
    // Each id once, then every connection opened, before the clock starts.
    let (requests, clients) = rt.block_on(async {
        let mut client = target.connect(timeout).await?;
        let mut requests = Vec::with_capacity(values.len());
        for v in &values {
            let id = patient_id(&mut client, target, v, deadline).await?;
            let path = target.path(&format!("Patient/{id}"));
            get_ok(&mut client, &path).await?;
            requests.push(http1::request_head(
                "GET",
                &path,
                client.host(),
                &[],
                None,
                0,
                false,
            ));
        }
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            clients.push(target.connect(timeout).await?);
        }
        Ok::<_, BenchError>((requests, clients))
    })?;
    let requests = Arc::new(requests);
    let done = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let gate = Arc::new(Gate::new(1));
    let load = {
        let (done, live, gate, requests) =
            (done.clone(), live.clone(), gate.clone(), requests.clone());
        let gateway = target.gateway.clone();
        proto::thread("bench-fhir-read".into(), move || {
            if !gate.ready(Ok(())) {
                return Totals::default();
            }
            rt.block_on(async move {
                let tasks: Vec<_> = clients
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        tokio::spawn(reader(
                            c,
                            gateway.clone(),
                            requests.clone(),
                            i,
                            done.clone(),
                            live.clone(),
                            timeout,
                        ))
                    })
                    .collect();
                let mut totals = Totals::default();
                for t in tasks {
                    match t.await {
                        Ok(part) => totals.merge(&part),
                        Err(_) => totals.error("task_panicked"),
                    }
                }
                totals
            })
        })?
    };
    gate.open()?;
    proto::watch(args.duration.0, &done, &live, broker, || load.is_finished());
    let mut totals = load.join().unwrap_or_else(|_| {
        let mut t = Totals::default();
        t.error("thread_panicked");
        t
    });
    totals.elapsed = totals.elapsed.max(Duration::from_nanos(1));
    let mut report = LoadReport::new("fhir-read", target.url(), connections, &totals);
    report.message_bytes = usize::try_from(totals.bytes / totals.ok.max(1)).unwrap_or(0);
    report.latency_of = Some(format!(
        "GET [base]/Patient/{{id}} over {} Patients → whole 200 response (closed loop, keep-alive, one client thread)",
        requests.len()
    ));
    Ok(report)
}

/// One keep-alive connection reading Patients in turn until `done`.
async fn reader(
    client: Client,
    gateway: Endpoint,
    requests: Arc<Vec<Vec<u8>>>,
    index: usize,
    done: Arc<AtomicBool>,
    live: Arc<Live>,
    timeout: Duration,
) -> Totals {
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut client = Some(client);
    let mut body = Vec::with_capacity(8192);
    let mut next = index;
    while !done.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect(&gateway.host, gateway.port, timeout).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    totals.error("connect");
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            },
        };
        let Some(request) = requests.get(next % requests.len().max(1)) else {
            break;
        };
        next += 1;
        let sent = Instant::now();
        let exchange = async {
            c.send(request, b"").await?;
            c.response(MAX_RESPONSE, &mut body).await
        };
        let (kind, keep) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(head)) if head.status() == Some(200) => {
                totals.latencies.record_since(sent);
                totals.ok += 1;
                totals.bytes += body.len() as u64;
                live.ok.fetch_add(1, Ordering::Relaxed);
                (None, !head.close)
            }
            Ok(Ok(head)) => (
                Some(format!("status_{}", head.status().unwrap_or(0))),
                !head.close,
            ),
            Ok(Err(e)) => (Some(http_kind(&e).to_string()), false),
            Err(_) => (Some("timeout".to_string()), false),
        };
        if let Some(kind) = kind {
            totals.error(&kind);
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !keep {
            // The stream's state is unknown (or the server ends it).
            client = None;
        }
    }
    totals.elapsed = start.elapsed();
    totals
}

/// What the rest-hook endpoint shares with the run.
#[derive(Default)]
struct Hook {
    /// Messages sent and not yet notified, by control id.
    pending: Arc<Pending>,
    /// The warm-up message.
    warmup: Pending,
    /// Notification latencies.
    latencies: SharedLatencies,
    /// Notifications matched so far (for the progress line).
    live: Arc<Live>,
    /// Notifications naming no pending message (repeats after a retry, or
    /// another writer's Patients).
    unmatched: AtomicU64,
    /// Requests that were not a readable notification.
    bad: AtomicU64,
    /// When the last matched notification came ([`proto::stamp`]).
    last: AtomicU64,
}

/// Identifier values of the Patients in a notification Bundle.
fn patient_identifiers(body: &[u8]) -> Vec<String> {
    let Ok(bundle) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let entries = bundle.get("entry").and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        .filter_map(|r| r.get("identifier").and_then(Value::as_array))
        .flatten()
        .filter_map(|i| i.get("value").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

impl Hook {
    /// One notification arrived.
    fn notified(&self, body: &[u8]) {
        let values = patient_identifiers(body);
        if values.is_empty() {
            self.bad.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for v in &values {
            if let Some(age) = self.pending.arrived(v.as_bytes()) {
                self.latencies.record(age);
                self.live.ok.fetch_add(1, Ordering::Relaxed);
                self.last
                    .fetch_max(proto::stamp(Instant::now()), Ordering::Relaxed);
                return;
            }
            if self.warmup.arrived(v.as_bytes()).is_some() {
                return;
            }
        }
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection to the endpoint: answer 200 to every request.
async fn answer(stream: tokio::net::TcpStream, hook: Arc<Hook>) {
    let _ = stream.set_nodelay(true);
    let mut reader = Reader::new(stream);
    let mut body = Vec::with_capacity(8192);
    loop {
        let head = match reader.head().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(_) => {
                hook.bad.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if reader
            .body(&head, MAX_NOTIFICATION, &mut body)
            .await
            .is_err()
        {
            hook.bad.fetch_add(1, Ordering::Relaxed);
            let _ =
                http1::write_empty_response(reader.get_mut(), "413 Payload Too Large", true).await;
            return;
        }
        let is_post =
            matches!(&head.start, http1::StartLine::Request { method, .. } if method == "POST");
        if is_post {
            hook.notified(&body);
        }
        let status = if is_post {
            "200 OK"
        } else {
            "405 Method Not Allowed"
        };
        if http1::write_empty_response(reader.get_mut(), status, head.close)
            .await
            .is_err()
            || head.close
        {
            return;
        }
    }
}

/// The endpoint: a thread with its own runtime, until `stop` is set.
fn start_endpoint(
    hook: Arc<Hook>,
    stop: Arc<AtomicBool>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), BenchError> {
    let io = |source| BenchError::Io {
        what: "cannot listen for rest-hook notifications".into(),
        source,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let rt = proto::runtime()?;
    let thread = proto::thread("bench-fhir-hook".into(), move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok((s, _))) = tokio::time::timeout(PAUSE, listener.accept()).await {
                    tokio::spawn(answer(s, hook.clone()));
                }
            }
        });
    })?;
    Ok((addr, thread))
}

/// The Subscription resource the bench stores.
fn subscription(id: &str, endpoint: SocketAddr, status: &str) -> Vec<u8> {
    serde_json::json!({
        "resourceType": "Subscription",
        "id": id,
        "status": status,
        "reason": "medbus bench fhir hook",
        "criteria": "Patient",
        "channel": {
            "type": "rest-hook",
            "endpoint": format!("http://{endpoint}{HOOK_PATH}"),
            "payload": "application/fhir+json"
        }
    })
    .to_string()
    .into_bytes()
}

/// `PUT [base]/Subscription/{id}`.
async fn put_subscription(
    target: &Target,
    id: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(), BenchError> {
    let path = target.path(&format!("Subscription/{id}"));
    let mut c = target.connect(timeout).await?;
    let put = c.request(
        "PUT",
        &path,
        Some("application/fhir+json"),
        body,
        MAX_RESPONSE,
    );
    match tokio::time::timeout(timeout, put).await {
        Ok(Ok((200 | 201, _))) => Ok(()),
        Ok(Ok((status, answer))) => Err(BenchError::setup(
            format!("PUT {path}"),
            format!("answered {status}: {}", String::from_utf8_lossy(&answer)),
        )),
        Ok(Err(e)) => Err(BenchError::setup(format!("PUT {path}"), e)),
        Err(_) => Err(BenchError::setup(
            format!("PUT {path}"),
            "no answer within the timeout",
        )),
    }
}

/// The `hook` phase.
fn hook(
    args: &FhirArgs,
    target: &Target,
    broker: Option<&mut SpawnedBroker>,
) -> Result<LoadReport, BenchError> {
    let connections = args.connections();
    let timeout = args.timeout.0;
    let run = run_id();
    let mix = Mix::builtin_patients(usize::try_from(args.size.0).unwrap_or(usize::MAX));
    let message_bytes = mix.mean_size();
    let hook = Arc::new(Hook::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (endpoint, server) = start_endpoint(hook.clone(), stop.clone())?;
    let sid = format!("medbus-bench-{run:08x}");
    let rt = proto::runtime()?;
    let result = (|| {
        rt.block_on(put_subscription(
            target,
            &sid,
            &subscription(&sid, endpoint, "requested"),
            timeout,
        ))?;
        // Warm-up: the delivery loop runs and reaches the endpoint.
        let mut conn = Conn::open_for_run(target.mllp, timeout)?;
        let id: [u8; CONTROL_ID_LEN] = control_id(run, MAX_CONNECTIONS, 0);
        let mut frame = Vec::new();
        mix.frame(0, &id, &mut frame);
        hook.warmup.insert(&id, Instant::now());
        conn.exchange(&frame)
            .and_then(|ack| check_ack(&ack, &id).map_err(ack_kind))
            .map_err(|kind| {
                BenchError::setup("the warm-up message was not accepted".into(), kind)
            })?;
        let deadline = Instant::now() + timeout;
        while !hook.warmup.is_empty() {
            if Instant::now() >= deadline {
                return Err(BenchError::setup(
                    "warm-up".into(),
                    format!("no notification at {endpoint} within {timeout:?} of the warm-up message (does the broker's route write fhir.Patient?)"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drive_hook(args, target, broker, &hook, &mix, run, connections)
    })();
    // Deliveries stop; the endpoint closes.
    let _ = rt.block_on(put_subscription(
        target,
        &sid,
        &subscription(&sid, endpoint, "off"),
        timeout,
    ));
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let (acks, window, through) = result?;
    let mut report = super::e2e::arrivals_report(
        "fhir-hook",
        format!(
            "{} → {} → http://{endpoint}{HOOK_PATH}",
            target.mllp,
            target.url()
        ),
        connections,
        &acks,
        super::e2e::Arrivals {
            latencies: hook.latencies.snapshot(),
            through,
            window,
            lost: vec![
                ("no_notification", hook.pending.len() as u64),
                ("bad_notification", hook.bad.load(Ordering::Relaxed)),
            ],
        },
        message_bytes,
        args.rate,
    );
    report.latency_of = Some(format!(
        "scheduled MLLP send → rest-hook notification with its Patient received (open loop; Subscription on Patient; {} repeated or foreign notifications ignored)",
        hook.unmatched.load(Ordering::Relaxed)
    ));
    Ok(report)
}

/// The hook load: senders on their schedule, then the wait for the last
/// notifications; the senders' totals, the sending window, and the time
/// from the first send to the last notification (or the end of the wait).
fn drive_hook(
    args: &FhirArgs,
    target: &Target,
    broker: Option<&mut SpawnedBroker>,
    hook: &Hook,
    mix: &Mix,
    run: u32,
    connections: usize,
) -> Result<(Totals, Duration, Duration), BenchError> {
    let shared = Arc::new(Senders {
        mix: mix.clone(),
        run_id: run,
        addr: target.mllp,
        connections,
        interval: Some(Duration::from_secs_f64(connections as f64 / args.rate)),
        timeout: args.timeout.0,
        pending: hook.pending.clone(),
        done: Arc::new(AtomicBool::new(false)),
        start: Arc::default(),
        warmup: Duration::ZERO,
        warmup_errors: Arc::default(),
        acked: Arc::new(Live::default()),
    });
    let gate = Arc::new(Gate::new(connections));
    let senders = start_senders(&shared, &gate)?;
    gate.open()?;
    let started = Instant::now();
    let drain_until = Cell::new(None);
    proto::watch(args.duration.0, &shared.done, &hook.live, broker, || {
        if !senders.iter().all(|t| t.is_finished()) {
            return false;
        }
        let until = drain_until
            .get()
            .unwrap_or_else(|| Instant::now() + args.timeout.0);
        drain_until.set(Some(until));
        hook.pending.is_empty() || Instant::now() >= until
    });
    let last = hook.last.load(Ordering::Relaxed);
    let through = if hook.pending.is_empty() && last > 0 {
        Duration::from_nanos(last.saturating_sub(proto::stamp(started)))
    } else {
        started.elapsed()
    };
    let window = started.elapsed().min(args.duration.0);
    Ok((super::publish::join(senders), window, through))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_their_patients() {
        let body = br#"{"resourceType":"Bundle","type":"history","entry":[
            {"resource":{"resourceType":"Parameters"}},
            {"resource":{"resourceType":"Patient","id":"p","identifier":[{"value":"ABC"},{"system":"s","value":"112"}]}}]}"#;
        assert_eq!(patient_identifiers(body), ["ABC", "112"]);
        assert!(patient_identifiers(b"not json").is_empty());
        let hook = Hook::default();
        hook.pending.insert(b"ABC", Instant::now());
        hook.notified(body);
        hook.notified(body);
        hook.notified(b"{}");
        assert_eq!(hook.latencies.snapshot().count(), 1);
        assert_eq!(hook.unmatched.load(Ordering::Relaxed), 1);
        assert_eq!(hook.bad.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn subscriptions_are_accepted_by_the_gateway_rules() {
        let body = subscription(
            "medbus-bench-1",
            SocketAddr::from(([127, 0, 0, 1], 9)),
            "requested",
        );
        let mut r: serde_json::Map<String, Value> = serde_json::from_slice(&body).expect("json");
        crate::gateway::subscription::check(&mut r).expect("valid Subscription");
        let spec = crate::gateway::subscription::spec(&r).expect("spec");
        assert!(spec.full_resource && spec.active);
        assert_eq!(spec.criteria.resource_type, "Patient");
    }
}
