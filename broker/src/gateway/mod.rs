//! # The FHIR API gateway
//!
//! Modern systems speak FHIR REST, not MLLP or the binary protocol: the
//! gateway is their door into the same event bus. It serves FHIR R4 JSON
//! under a base path (default `/fhir`) on its own actix-web workers, so a
//! burst of reads never delays an MLLP ACK.
//!
//! Data moves forward only, as everywhere in medbus: writes become records
//! in `fhir.inbound` (durable before the answer), the [`view`] indexer
//! follows the `fhir.*` topics into a current-state index that reads answer
//! from, and each Subscription follows the topics through its own cursor.
//!
//! # Layout
//! - [`outcome`]: errors as status + OperationOutcome.
//! - [`resource`]: resource types, the id rule, identifiers, compartments.
//! - [`capability`]: `GET [base]/metadata`.
//! - [`ingress`]: create, update, delete, transaction and batch.
//! - [`read`]: read and search from the view, with paging.
//! - [`view`]: the current-state view and its indexer actor.
//! - [`subscription`]: R4 Subscription resources: checks, criteria,
//!   notification Bundles.
//! - [`notifier`]: the subscription manager and one delivery loop per
//!   active Subscription (rest-hook or websocket, retries, dead letters).
//! - [`hook`]: the small HTTP/1.1 client rest-hooks are posted with.
//! - [`websocket`]: the websocket channel (binding tokens, connections).
//! - [`auth`]: SMART on FHIR bearer tokens (JWKS, RS256/ES256, scopes).

pub mod auth;
pub mod capability;
pub mod hook;
pub mod ingress;
pub mod notifier;
pub mod outcome;
pub mod read;
pub mod resource;
pub mod subscription;
pub mod view;
pub mod websocket;

use crate::events::FhirRequestServed;
use crate::metrics::Metrics;
use crate::storage::Store;
use actix_web::dev::Service as _;
use actix_web::{web, App, HttpRequest, HttpServer};
use medbus_config::fhir::FhirConfig;
use outcome::FhirError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Worker threads of the gateway's HTTP server: reads are cheap index
/// lookups, so a few threads saturate a small machine without starving the
/// MLLP arbiter.
pub const GATEWAY_WORKERS: usize = 2;
/// How long a write waits for the view to index it before answering, so a
/// client reading its own write right after sees it (read-your-writes).
pub const VIEW_WAIT: Duration = Duration::from_secs(2);
/// How long the next gateway write may wait for the view to show the last
/// one (past [`VIEW_WAIT`], the answer has gone but the write lock is kept).
pub const VIEW_WAIT_MAX: Duration = Duration::from_secs(60);
/// Topic every resource written through the gateway goes to (except
/// Subscriptions), to be routed like any other event.
pub const INBOUND_TOPIC: &str = "fhir.inbound";

/// Request bodies read and parsed at once. Writes are applied one at a
/// time anyway (the write lock); more bodies in hand would only hold parsed
/// JSON — tens of times its size — in memory while they queue. Others wait
/// in their sockets.
pub const BODY_SLOTS: usize = 4;

/// What the handlers share.
pub struct Ctx {
    /// Where records are written and the view lives.
    pub store: Store,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
    /// The current-state view.
    pub view: view::View,
    /// Base path without a trailing `/`.
    pub base: String,
    /// Largest request body.
    pub max_body: usize,
    /// Request bodies read and parsed at once ([`BODY_SLOTS`]).
    pub bodies: Arc<tokio::sync::Semaphore>,
    /// Longest a client may take to send a body.
    pub request_timeout: Duration,
    /// Entries per page without `_count`.
    pub page_size: usize,
    /// Largest `_count` honoured.
    pub max_page_size: usize,
    /// Most active Subscriptions.
    pub max_subscriptions: usize,
    /// Token checks; `None`: no authorization (loopback only).
    pub auth: Option<auth::Auth>,
    /// Active Subscriptions, as the manager sees them (for the cap).
    pub subscriptions: Arc<notifier::Registry>,
    /// Websocket binding tokens and bound connections.
    pub websockets: Arc<websocket::Bindings>,
    /// Held by each write from its version check until the view shows it,
    /// so that an `If-Match` version cannot change in between.
    pub writes: Arc<tokio::sync::Mutex<()>>,
}

impl Ctx {
    /// The absolute base URL as this request reached us.
    pub fn base_url(&self, req: &HttpRequest) -> String {
        let info = req.connection_info();
        format!("{}://{}{}", info.scheme(), info.host(), self.base)
    }

    /// Check that the request carries a valid bearer token (when the
    /// gateway runs with authorization).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<(), FhirError> {
        let Some(a) = &self.auth else {
            return Ok(());
        };
        let header = req
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok());
        a.verify_header(header, crate::storage::now_ms() / 1000)
            .map(|_| ())
    }

    /// Check the bearer token for an access to `resource_type`; `None`
    /// when the gateway runs without authorization.
    pub fn authorize(
        &self,
        req: &HttpRequest,
        resource_type: &str,
        write: bool,
    ) -> Result<auth::Access, FhirError> {
        let Some(a) = &self.auth else {
            return Ok(auth::Access::All);
        };
        let header = req
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok());
        a.authorize(
            header,
            resource_type,
            write,
            crate::storage::now_ms() / 1000,
        )
    }
}

/// Which FHIR interaction a response answered (the metrics label).
#[derive(Debug, Clone, Copy)]
pub struct Interaction(pub &'static str);

/// Every interaction label, so the series exist from start-up.
pub const INTERACTIONS: [&str; 12] = [
    "capabilities",
    "read",
    "vread",
    "search-type",
    "create",
    "update",
    "delete",
    "transaction",
    "batch",
    "operation",
    "websocket",
    "unknown",
];

/// The running gateway.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops the HTTP server.
    http: actix_web::dev::ServerHandle,
    /// Stops the view indexer.
    indexer: view::IndexerHandle,
    /// Stops the subscription manager and its deliveries.
    notifier: notifier::NotifierHandle,
    /// The thread the indexer runs on (its storage calls block it).
    arbiter: actix::Arbiter,
    /// The thread the deliveries run on: apart from the indexer, so a
    /// notification never waits behind a batch being indexed.
    deliveries: actix::Arbiter,
}

impl Gateway {
    /// Stop serving, then stop the indexer and the deliveries (each
    /// finishes what it is writing first).
    pub async fn stop(self) {
        self.http.stop(true).await;
        self.notifier.stop().await;
        self.indexer.stop().await;
        self.arbiter.stop();
        self.deliveries.stop();
    }
}

/// Bind and start the gateway. Must run inside an actix system.
pub fn start(config: &FhirConfig, store: Store, metrics: Arc<Metrics>) -> Result<Gateway, String> {
    let auth = match &config.auth {
        Some(a) => Some(auth::Auth::from_config(a)?),
        None => None,
    };
    metrics.init_fhir(&INTERACTIONS);
    let arbiter = actix::Arbiter::new();
    let deliveries = actix::Arbiter::new();
    let (view, indexer) = view::Indexer::spawn(store.clone(), metrics.clone(), &arbiter.handle());
    let registry = Arc::new(notifier::Registry::default());
    let websockets = Arc::new(websocket::Bindings::new(
        config.subscriptions.websocket.clone(),
    ));
    let notifier = notifier::Notifier::spawn(
        notifier::Settings::from_config(&config.subscriptions),
        store.clone(),
        metrics.clone(),
        registry.clone(),
        websockets.clone(),
        &deliveries.handle(),
    );
    let ctx = web::Data::new(Ctx {
        store,
        metrics: metrics.clone(),
        view,
        base: config.base().to_string(),
        max_body: config.max_body_bytes(),
        bodies: Arc::new(tokio::sync::Semaphore::new(BODY_SLOTS)),
        request_timeout: config.request_timeout.get_ref().0,
        page_size: *config.page_size.get_ref(),
        max_page_size: *config.max_page_size.get_ref(),
        max_subscriptions: *config.subscriptions.max.get_ref(),
        auth,
        subscriptions: registry,
        websockets,
        writes: Arc::new(tokio::sync::Mutex::new(())),
    });
    let base = config.base().to_string();
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        App::new()
            .app_data(ctx.clone())
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let metrics = metrics.clone();
                // A client that takes XML only is told so, not sent JSON.
                let fut = match wants_xml_only(req.request()) {
                    Some(asked) => futures_util::future::Either::Left(std::future::ready(Ok(req
                        .into_response(
                            tagged(
                                "unknown",
                                FhirError::new(
                                    actix_web::http::StatusCode::NOT_ACCEPTABLE,
                                    "not-supported",
                                    format!(
                                        "{asked}: this server answers application/fhir+json only"
                                    ),
                                )
                                .response(),
                            )
                            .map_into_boxed_body(),
                        )))),
                    None => futures_util::future::Either::Right(srv.call(req)),
                };
                async move {
                    let res = fut.await?;
                    let interaction = res
                        .response()
                        .extensions()
                        .get::<Interaction>()
                        .map(|i| i.0)
                        .unwrap_or("unknown");
                    FhirRequestServed {
                        interaction,
                        status: res.status().as_u16(),
                        took: started.elapsed(),
                    }
                    .emit(&metrics);
                    Ok(res)
                }
            })
            .service(
                web::scope(&base)
                    .route("/metadata", web::get().to(capability::metadata))
                    .route(websocket::PATH, web::get().to(websocket::connect))
                    .route(
                        "/Subscription/{id}/$get-ws-binding-token",
                        web::route()
                            .guard(
                                actix_web::guard::Any(actix_web::guard::Get())
                                    .or(actix_web::guard::Post()),
                            )
                            .to(websocket::binding_token),
                    )
                    .route("", web::post().to(ingress::bundle))
                    .route("/", web::post().to(ingress::bundle))
                    .route("/{type}", web::get().to(read::search))
                    .route("/{type}", web::post().to(ingress::create))
                    .route("/{type}/{id}", web::get().to(read::read))
                    .route("/{type}/{id}", web::head().to(read::read))
                    .route("/{type}/{id}/_history/{vid}", web::get().to(read::vread))
                    .route("/{type}/{id}/_history/{vid}", web::head().to(read::vread))
                    .route("/{type}/{id}", web::put().to(ingress::update))
                    .route("/{type}/{id}", web::delete().to(ingress::delete))
                    .default_service(web::to(unknown)),
            )
            .default_service(web::to(unknown))
    })
    .workers(GATEWAY_WORKERS)
    .max_connections(
        (*config.max_connections.get_ref())
            .div_ceil(GATEWAY_WORKERS)
            .max(1),
    )
    .client_request_timeout(config.request_timeout.get_ref().0)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(config.listen.get_ref())
    .map_err(|e| format!("cannot listen on {}: {e}", config.listen.get_ref()))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| "the FHIR gateway bound no address".to_string())?;
    let server = server.run();
    let http = server.handle();
    actix_rt::spawn(server);
    Ok(Gateway {
        addr,
        http,
        indexer,
        notifier,
        arbiter,
        deliveries,
    })
}

/// Anything the gateway does not serve.
/// What a request asks for when it takes XML and not JSON: `_format=xml`
/// (or an XML media type), or an `Accept` naming XML types only.
fn wants_xml_only(req: &HttpRequest) -> Option<String> {
    let xml = |v: &str| v.contains("xml");
    let json = |v: &str| v.contains("json") || v.contains("*/*") || v.contains("application/*");
    let format = req
        .query_string()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("_format="))
        .find(|v| xml(v) && !json(v));
    if let Some(f) = format {
        return Some(format!("_format={}", resource::truncate(f, 60)));
    }
    let accept = req.headers().get("accept")?.to_str().ok()?;
    (xml(accept) && !json(accept)).then(|| format!("Accept: {}", resource::truncate(accept, 60)))
}

async fn unknown(req: HttpRequest) -> actix_web::HttpResponse {
    FhirError::not_found(format!(
        "{} {} is not a FHIR interaction this server supports (see [base]/metadata)",
        req.method(),
        resource::truncate(req.path(), 200)
    ))
    .response()
}

/// Tag a response with its interaction for the metrics.
pub fn tagged(
    interaction: &'static str,
    mut response: actix_web::HttpResponse,
) -> actix_web::HttpResponse {
    response.extensions_mut().insert(Interaction(interaction));
    response
}
