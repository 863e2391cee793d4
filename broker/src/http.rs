//! The operations endpoint: `/metrics` (Prometheus text format 0.0.4),
//! `/healthz` (the process is alive), `/readyz` (storage open and healthy,
//! every listener bound, not shutting down; 503 otherwise) and `/api/status`
//! (the same picture as JSON).
//!
//! It runs on actix-web with one worker thread of its own, so a slow scrape
//! never delays an ACK. It starts before the store is opened, so that
//! orchestrators see a live-but-not-ready process during start-up.

use crate::metrics::Metrics;
use crate::mllp::ListenerContext;
use crate::storage::Store;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Liveness and readiness, shared by the server and the endpoint.
pub struct Health {
    /// Set once every component has started; cleared when shutdown begins.
    pub started: AtomicBool,
    /// Cleared while group commits fail (disk full, I/O error).
    pub storage_ok: AtomicBool,
    /// Process start, for uptime.
    pub since: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            started: AtomicBool::new(false),
            storage_ok: AtomicBool::new(true),
            since: Instant::now(),
        }
    }
}

impl Health {
    /// Whether traffic should be sent here.
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.storage_ok.load(Ordering::Acquire)
    }
}

/// What the status API reports about the running broker; set once it runs.
pub struct BrokerView {
    /// The message store.
    pub store: Store,
    /// Every MLLP listener.
    pub listeners: Vec<Arc<ListenerContext>>,
    /// Configured durability.
    pub durability: &'static str,
    /// The running configuration (for replay); replaced on SIGHUP reload.
    pub config: crate::server::SharedConfig,
}

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct HttpState {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// The broker, once started.
    pub broker: Arc<OnceLock<BrokerView>>,
}

/// Bind and start the endpoint; returns the bound address and a handle to
/// stop it. Must run inside an actix system.
pub fn start(
    listen: &str,
    state: HttpState,
) -> std::io::Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/api/status", web::get().to(status))
            .route("/api/backup", web::get().to(backup))
            .route("/api/replay/{kind}/{name}", web::post().to(replay))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("HTTP endpoint bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((addr, handle))
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    if let Some(b) = state.broker.get() {
        if let Ok(bytes) = b.store.size_on_disk() {
            state
                .metrics
                .storage_disk_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        state
            .metrics
            .storage_damaged_reads
            .inc_by(b.store.take_damaged_reads());
    }
    match state.metrics.render() {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body),
        Err(e) => HttpResponse::InternalServerError().body(format!("cannot render metrics: {e}\n")),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let h = &state.health;
    // Below the reserve every append is refused: not ready, whether or not
    // one has been tried yet.
    if let Some((available, reserve)) = state.broker.get().and_then(|b| b.store.below_reserve()) {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!(
                "not ready: disk below its reserve ({available} bytes free, {reserve} kept in reserve)\n"
            ));
    }
    if h.ready() {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        let why = if !h.started.load(Ordering::Acquire) {
            "not ready: starting or shutting down\n"
        } else {
            "not ready: storage is failing\n"
        };
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(why)
    }
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    ready: bool,
    uptime_seconds: u64,
    storage: Option<StorageStatus>,
    listeners: Vec<ListenerStatus>,
    routes: Vec<RouteStatus>,
    destinations: Vec<DestinationStatus>,
    topics: Vec<TopicStatus>,
}

#[derive(Serialize)]
struct RouteStatus {
    name: String,
    from: Vec<String>,
    to: Vec<String>,
    transform: &'static str,
    lag_records: i64,
    records: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct DestinationStatus {
    name: String,
    from: String,
    connect: String,
    /// `connected`, `disconnected` or `blocked`.
    state: &'static str,
    lag_records: i64,
    messages: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct StorageStatus {
    data_dir: String,
    durability: &'static str,
    healthy: bool,
    disk_bytes: Option<u64>,
}

#[derive(Serialize)]
struct ListenerStatus {
    name: String,
    listen: String,
    topic: String,
    dead_letter_topic: String,
    connections: usize,
    max_connections: usize,
    max_frame_bytes: usize,
    idle_timeout_seconds: u64,
    dedup_window_seconds: u64,
    messages: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct TopicStatus {
    name: String,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    records: u64,
    bytes: u64,
}

async fn status(state: web::Data<HttpState>) -> HttpResponse {
    let mut out = Status {
        version: env!("CARGO_PKG_VERSION"),
        ready: state.health.ready(),
        uptime_seconds: state.health.since.elapsed().as_secs(),
        storage: None,
        listeners: Vec::new(),
        routes: Vec::new(),
        destinations: Vec::new(),
        topics: Vec::new(),
    };
    if let Some(b) = state.broker.get() {
        out.storage = Some(StorageStatus {
            data_dir: b.store.dir().display().to_string(),
            durability: b.durability,
            healthy: state.health.storage_ok.load(Ordering::Acquire),
            disk_bytes: b.store.size_on_disk().ok(),
        });
        for l in &b.listeners {
            let messages = ["stored", "duplicate", "rejected", "failed"]
                .into_iter()
                .map(|o| {
                    (
                        o,
                        state
                            .metrics
                            .mllp_messages
                            .with_label_values(&[&l.name, o])
                            .get(),
                    )
                })
                .collect();
            out.listeners.push(ListenerStatus {
                name: l.name.clone(),
                listen: l.listen.to_string(),
                topic: l.topic.clone(),
                dead_letter_topic: l.dead_letter_topic.clone(),
                connections: l.connections.load(Ordering::Relaxed),
                max_connections: l.max_connections,
                max_frame_bytes: l.max_frame,
                idle_timeout_seconds: l.idle_timeout.as_secs(),
                dedup_window_seconds: l.dedup_window.as_secs(),
                messages,
            });
        }
        if let Ok(config) = b.config.read() {
            let m = &state.metrics;
            for r in &config.routes {
                let name = r.name();
                out.routes.push(RouteStatus {
                    name: name.to_string(),
                    from: r.sources(),
                    to: r.targets(),
                    transform: r.transform.get_ref().as_str(),
                    lag_records: m.route_lag_records.with_label_values(&[name]).get(),
                    records: ["matched", "filtered", "dead_lettered"]
                        .into_iter()
                        .map(|o| (o, m.route_records.with_label_values(&[name, o]).get()))
                        .collect(),
                });
            }
            for d in &config.destinations {
                let name = d.name();
                let state = if m.destination_blocked.with_label_values(&[name]).get() == 1 {
                    "blocked"
                } else if m.destination_connected.with_label_values(&[name]).get() == 1 {
                    "connected"
                } else {
                    "disconnected"
                };
                out.destinations.push(DestinationStatus {
                    name: name.to_string(),
                    from: d.from.get_ref().clone(),
                    connect: d.connect.get_ref().clone(),
                    state,
                    lag_records: m.destination_lag_records.with_label_values(&[name]).get(),
                    messages: ["delivered", "dead_lettered", "filtered"]
                        .into_iter()
                        .map(|o| {
                            (
                                o,
                                m.destination_messages.with_label_values(&[name, o]).get(),
                            )
                        })
                        .collect(),
                });
            }
        }
        if let Ok(topics) = b.store.topics() {
            out.topics = topics
                .into_iter()
                .map(|t| TopicStatus {
                    name: t.name,
                    first_offset: t.first,
                    last_offset: t.last,
                    records: t.count,
                    bytes: t.bytes,
                })
                .collect();
        }
    }
    HttpResponse::Ok().json(out)
}

/// `GET /api/backup`: a consistent snapshot of the store, streamed. The
/// snapshot is written next to the data (so memory stays flat), opened, and
/// unlinked at once; the open handle keeps it readable while it streams.
async fn backup(state: web::Data<HttpState>) -> HttpResponse {
    let Some(b) = state.broker.get() else {
        return HttpResponse::ServiceUnavailable().body("not started yet\n");
    };
    let tmp = b.store.dir().join(format!(
        ".backup-{}-{}.tmp",
        std::process::id(),
        crate::storage::now_ms()
    ));
    let summary = match b.store.backup(&tmp).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return HttpResponse::InternalServerError().body(format!("{e}\n"));
        }
    };
    let file = match std::fs::File::open(&tmp) {
        Ok(f) => f,
        Err(e) => return HttpResponse::InternalServerError().body(format!("{e}\n")),
    };
    let _ = std::fs::remove_file(&tmp);
    tracing::info!(
        entries = summary.entries,
        bytes = summary.bytes,
        damaged = summary.damaged,
        "backup streamed"
    );
    let chunks = futures_util::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-Medbus-Backup-Entries", summary.entries.to_string()))
        .insert_header(("X-Medbus-Backup-Damaged", summary.damaged.to_string()))
        .insert_header(("Content-Length", summary.bytes.to_string()))
        .streaming(chunks)
}

/// Query of `POST /api/replay/{route|destination}/{name}?from=N&to=M`.
#[derive(serde::Deserialize)]
struct ReplayQuery {
    from: u64,
    to: Option<u64>,
}

/// `POST /api/replay/{kind}/{name}`: replay a range; answers when done.
async fn replay(
    state: web::Data<HttpState>,
    path: web::Path<(String, String)>,
    query: web::Query<ReplayQuery>,
) -> HttpResponse {
    let Some(b) = state.broker.get() else {
        return HttpResponse::ServiceUnavailable().body("not started yet\n");
    };
    let (kind, name) = path.into_inner();
    let target = match kind.as_str() {
        "route" => crate::replay::Target::Route(name),
        "destination" => crate::replay::Target::Destination(name),
        other => return HttpResponse::NotFound().body(format!("cannot replay a {other:?}\n")),
    };
    let config = match b.config.read() {
        Ok(c) => c.clone(),
        Err(_) => return HttpResponse::InternalServerError().body("config unavailable\n"),
    };
    match crate::replay::replay(
        &config,
        &b.store,
        &state.metrics,
        &target,
        query.from,
        query.to,
    )
    .await
    {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(
            e @ (crate::replay::ReplayError::Unknown(..) | crate::replay::ReplayError::Range(_)),
        ) => HttpResponse::BadRequest().body(format!("{e}\n")),
        Err(e) => HttpResponse::InternalServerError().body(format!("{e}\n")),
    }
}
