//! Starting a configured broker inside an actix system: the HTTP endpoint
//! first (live, not ready), then the store, then every listener; readiness
//! only once all of them run. Binding happens before any listener actor runs,
//! so that a port in use stops start-up with a clear error instead of a
//! half-started broker.

use crate::destination::delivery::Settings;
use crate::destination::{Destination, DestinationHandle};
use crate::events::CommitFinished;
use crate::http::{BrokerView, Health, HttpState};
use crate::metrics::Metrics;
use crate::mllp::{ListenerContext, MllpListener};
use crate::retention::{live_cursors, LiveCursors};
use crate::route::{Router, RouterHandle};
use crate::storage::{StorageError, Store, StoreOptions};
use actix::Actor;
use medbus_config::route::compile_route;
use medbus_config::Config;
use medbus_fhir::ConvertOptions;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often a locked data directory is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(250);
/// How often the wait for a locked data directory is logged.
const LOCK_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// A socket could not be bound.
    #[error("{what} cannot listen on {addr}: {source}")]
    Bind {
        /// What was binding (`listener "lab"`, `the HTTP endpoint`).
        what: String,
        /// Configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS settings could not be turned into a configuration.
    #[error("{what}: TLS: {error}")]
    Tls {
        /// Which component.
        what: String,
        /// Why.
        error: String,
    },
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The running configuration, shared by the components that act on it
/// after start-up (replay); replaced on a SIGHUP reload.
pub type SharedConfig = Arc<std::sync::RwLock<Arc<Config>>>;

/// A listener as bound.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// Listener name.
    pub name: String,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Topic it writes to.
    pub topic: String,
}

/// The HTTP endpoint, started before anything else.
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it.
    pub handle: actix_web::dev::ServerHandle,
    /// Shared with it.
    pub state: HttpState,
}

/// Start the HTTP endpoint (live, not ready). Must run inside an actix system.
pub fn start_endpoint(config: &Config) -> Result<Endpoint, ServerError> {
    let state = HttpState {
        metrics: Arc::new(Metrics::new()?),
        health: Arc::new(Health::default()),
        broker: Arc::new(OnceLock::new()),
    };
    let listen = config.http.listen.get_ref();
    let (addr, handle) =
        crate::http::start(listen, state.clone()).map_err(|source| ServerError::Bind {
            what: "the HTTP endpoint".into(),
            addr: listen.clone(),
            source,
        })?;
    Ok(Endpoint {
        addr,
        handle,
        state,
    })
}

/// A running broker.
pub struct Server {
    /// The message store.
    pub store: Store,
    /// Every MLLP listener, bound.
    pub listeners: Vec<BoundListener>,
    /// Every MLLP listener's shared state (to drain them at shutdown).
    sessions: Vec<Arc<ListenerContext>>,
    /// The binary protocol listener's address, when `[protocol]` is set.
    pub protocol: Option<SocketAddr>,
    /// The FHIR gateway's address, when `[fhir]` is set.
    pub fhir: Option<SocketAddr>,
    /// The FHIR gateway, stopped before the routes.
    gateway: Option<crate::gateway::Gateway>,
    /// The running routes.
    routes: Vec<RouterHandle>,
    /// The running destinations.
    destinations: Vec<DestinationHandle>,
    /// The thread routes run on (FHIR conversion stays off the MLLP thread).
    route_arbiter: actix::Arbiter,
    /// The threads routes convert a backlog on (`[mapping] threads`).
    workers: Arc<crate::route::Workers>,
    /// Cursors of the configured routes and destinations, which retention
    /// keeps records for.
    live: LiveCursors,
    /// Shared with the routes.
    metrics: Arc<Metrics>,
}

/// FHIR mapping options from the config.
pub fn convert_options(config: &Config) -> ConvertOptions {
    ConvertOptions {
        id_namespace: config.mapping.id_namespace.clone(),
        time_zone: config
            .mapping
            .time_zone
            .as_ref()
            .map(|t| t.get_ref().clone()),
        patient_identifier_type: config.mapping.patient_identifier_type.clone(),
        ..ConvertOptions::default()
    }
}

impl Server {
    /// Start every route of `config` (after validation, compilation cannot
    /// fail; a route that still does is logged and skipped).
    fn start_routes(&mut self, config: &Config) {
        let fhir = Arc::new(convert_options(config));
        for (i, r) in config.routes.iter().enumerate() {
            match compile_route(r, &format!("routes[{i}]")) {
                Ok(route) => self.routes.push(Router::spawn(
                    route,
                    self.store.clone(),
                    self.metrics.clone(),
                    fhir.clone(),
                    self.workers.clone(),
                    &self.route_arbiter.handle(),
                )),
                Err(problems) => tracing::error!(route = %r.name(), ?problems, "route not started"),
            }
        }
    }

    /// Names of the running routes.
    pub fn route_names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }

    /// Replace the running routes by those of `config` (already validated).
    /// Each old route finishes its batch first; the new ones resume from the
    /// durable cursors, so nothing is skipped or repeated.
    pub async fn reload_routes(&mut self, config: &Config) {
        // Retention keeps what the new routes and destinations have to read
        // from before they start (and no longer keeps it for those that
        // go); a pass under way finishes first.
        let shared = self.live.clone();
        let mut live = shared.lock().await;
        *live = live_cursors(config);
        for r in self.routes.drain(..) {
            if !config.routes.iter().any(|c| c.name() == r.name) {
                self.metrics.forget_route(&r.name);
            }
            r.stop().await;
        }
        for d in self.destinations.drain(..) {
            if !config.destinations.iter().any(|c| c.name() == d.name) {
                self.metrics.forget_destination(&d.name);
            }
            d.stop().await;
        }
        // `[mapping] threads` changed: a pool of the new size (the old one
        // ends with the routes that held it).
        if config.mapping.threads() != self.workers.threads() {
            self.workers = Arc::new(crate::route::Workers::new(config.mapping.threads()));
        }
        self.start_routes(config);
        self.start_destinations(config);
        drop(live);
        tracing::info!(routes = ?self.route_names(), conversion_threads = self.workers.threads(), "routes reloaded");
    }

    /// Start every destination of `config`; one whose TLS settings cannot
    /// be used is logged and not started (validation catches bad files
    /// first, so this is a file changed since).
    fn start_destinations(&mut self, config: &Config) {
        for d in &config.destinations {
            match Settings::from_config(d, config) {
                Ok(settings) => self.destinations.push(Destination::spawn(
                    settings,
                    self.store.clone(),
                    self.metrics.clone(),
                    &self.route_arbiter.handle(),
                )),
                Err(e) => {
                    tracing::error!(destination = %d.name(), error = %e, "destination not started")
                }
            }
        }
    }

    /// Names of the running destinations.
    pub fn destination_names(&self) -> Vec<String> {
        self.destinations.iter().map(|d| d.name.clone()).collect()
    }

    /// Stop accepting MLLP connections and close every open one once the
    /// message it is handling is answered; waits for them up to `within`
    /// (a message waits for its commit at most `storage.commit_timeout`).
    pub async fn drain_listeners(&self, within: Duration) {
        for l in &self.sessions {
            l.start_draining();
        }
        let deadline = Instant::now() + within;
        let open = || {
            self.sessions
                .iter()
                .map(|l| l.connections.load(Ordering::Acquire))
                .sum::<usize>()
        };
        while open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if open() > 0 {
            tracing::warn!(
                connections = open(),
                "MLLP connections still open after the drain; closing them"
            );
        }
    }

    /// Stop every route and destination (before shutdown): each finishes
    /// what it is writing first.
    pub async fn stop_routes(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop().await;
        }
        for r in self.routes.drain(..) {
            r.stop().await;
        }
        for d in self.destinations.drain(..) {
            d.stop().await;
        }
        self.route_arbiter.stop();
    }
}

/// Open the store, waiting while another process (an old broker in a
/// rolling restart) still holds the data directory.
async fn open_store(
    data_dir: &Path,
    config: &Config,
    endpoint: &Endpoint,
) -> Result<Store, ServerError> {
    let mut waiting_since: Option<Instant> = None;
    let mut last_log = Instant::now();
    loop {
        let metrics = endpoint.state.metrics.clone();
        let health = endpoint.state.health.clone();
        let options = StoreOptions {
            durability: config.storage.durability,
            max_batch: *config.storage.max_batch_records.get_ref(),
            cache_bytes: config.storage.cache.0,
            min_free: config.storage.min_free.0,
            max_topics: *config.storage.max_topics.get_ref(),
            commit_timeout: config.storage.commit_timeout.0,
            segment_bytes: config.storage.segment_size.0,
            observer: Some(Box::new(move |stats| {
                health.storage_ok.store(stats.ok, Ordering::Release);
                CommitFinished(stats).emit(&metrics);
            })),
        };
        match Store::open(data_dir, options) {
            Ok(store) => return Ok(store),
            Err(StorageError::Locked(dir)) => {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < LOCK_RETRY || last_log.elapsed() >= LOCK_LOG_EVERY {
                    tracing::warn!(%dir, "data directory is held by another medbus process: waiting for it to stop");
                    last_log = Instant::now();
                }
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Start everything `config` describes behind an already running endpoint.
/// Must run inside an `actix::System`.
pub async fn start(
    config: &Config,
    data_dir: &Path,
    endpoint: &Endpoint,
) -> Result<Server, ServerError> {
    let store = open_store(data_dir, config, endpoint).await?;
    let metrics = &endpoint.state.metrics;
    // Gauges of existing topics start from the stored state.
    if let Ok(topics) = store.topics() {
        for t in topics {
            if let Some(last) = t.last {
                metrics
                    .topic_last_offset
                    .with_label_values(&[&t.name])
                    .set(i64::try_from(last).unwrap_or(i64::MAX));
            }
            metrics
                .topic_bytes
                .with_label_values(&[&t.name])
                .set(i64::try_from(t.bytes).unwrap_or(i64::MAX));
        }
    }
    let mut bound = Vec::new();
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let addr = l.listen.get_ref().clone();
        let bind_error = |source| ServerError::Bind {
            what: format!("listener {:?}", l.name()),
            addr: addr.clone(),
            source,
        };
        let socket = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        bound.push(BoundListener {
            name: l.name().to_string(),
            addr: local,
            topic: l.topic().to_string(),
        });
        metrics.init_listener(l.name());
        let tls = match &l.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(|e| ServerError::Tls {
                what: format!("listener {:?}", l.name()),
                error: e,
            })?),
            None => None,
        };
        let ctx = Arc::new(ListenerContext {
            name: l.name().to_string(),
            topic: l.topic().to_string(),
            dead_letter_topic: l.dead_letter_topic(),
            store: store.clone(),
            max_frame: l.max_frame_bytes(),
            max_connections: *l.max_connections.get_ref(),
            idle_timeout: l.idle_timeout.get_ref().0,
            dedup_window: l.dedup_window.0,
            log_payloads: config.log_payloads,
            connections: AtomicUsize::new(0),
            metrics: metrics.clone(),
            listen: local,
            allow: l.allowlist(),
            tls,
            acknowledgments: l.acknowledgments,
            drain: tokio::sync::watch::channel(false).0,
        });
        sockets.push((ctx, socket));
    }
    let contexts: Vec<Arc<ListenerContext>> = sockets.iter().map(|(c, _)| c.clone()).collect();
    for (ctx, socket) in sockets {
        MllpListener::new(ctx, socket).start();
    }
    let shared_config: SharedConfig = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let protocol = match &config.protocol {
        Some(p) => Some(start_protocol(config, p, &store, metrics, &shared_config).await?),
        None => None,
    };
    let gateway = match &config.fhir {
        Some(f) => Some(
            crate::gateway::start(f, store.clone(), metrics.clone()).map_err(|e| {
                ServerError::Bind {
                    what: "the FHIR gateway".into(),
                    addr: f.listen.get_ref().clone(),
                    source: std::io::Error::other(e),
                }
            })?,
        ),
        None => None,
    };
    let _ = endpoint.state.broker.set(BrokerView {
        store: store.clone(),
        listeners: contexts.clone(),
        durability: config.storage.durability.as_str(),
        config: shared_config.clone(),
    });
    let mut server = Server {
        store,
        listeners: bound,
        sessions: contexts,
        protocol,
        fhir: gateway.as_ref().map(|g| g.addr),
        gateway,
        routes: Vec::new(),
        destinations: Vec::new(),
        route_arbiter: actix::Arbiter::new(),
        workers: Arc::new(crate::route::Workers::new(config.mapping.threads())),
        live: Arc::new(tokio::sync::Mutex::new(live_cursors(config))),
        metrics: metrics.clone(),
    };
    server.start_routes(config);
    server.start_destinations(config);
    let retention = crate::retention::Retention::new(
        config.retention.clone(),
        server.store.clone(),
        metrics.clone(),
        server.live.clone(),
    );
    actix::Actor::start_in_arbiter(&server.route_arbiter.handle(), move |_| retention);
    endpoint.state.health.started.store(true, Ordering::Release);
    Ok(server)
}

/// Bind the binary protocol listener and start it.
async fn start_protocol(
    config: &Config,
    p: &medbus_config::protocol::ProtocolConfig,
    store: &Store,
    metrics: &Arc<Metrics>,
    shared_config: &SharedConfig,
) -> Result<SocketAddr, ServerError> {
    let addr = p.listen.get_ref().clone();
    let bind_error = |source| ServerError::Bind {
        what: "the protocol listener".into(),
        addr: addr.clone(),
        source,
    };
    let tls =
        match &p.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(|e| {
                bind_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?),
            None => None,
        };
    let socket = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(bind_error)?;
    let local = socket.local_addr().map_err(bind_error)?;
    let ctx = Arc::new(crate::client::ProtocolContext {
        store: store.clone(),
        metrics: metrics.clone(),
        auth: crate::client::Auth::from_config(&config.clients),
        groups: crate::client::Groups::default(),
        max_frame: p.max_frame_bytes(),
        max_connections: *p.max_connections.get_ref(),
        max_credits: *p.max_credits.get_ref(),
        max_pending: p.max_pending.0,
        connections: AtomicUsize::new(0),
        tls,
        config: shared_config.clone(),
    });
    crate::client::ClientListener::new(ctx, socket).start();
    Ok(local)
}
