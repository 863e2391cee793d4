//! The websocket channel of Subscriptions: apps that cannot expose an HTTP
//! endpoint (a browser, a desktop app behind NAT) open a websocket to the
//! gateway and receive their notifications on it.
//!
//! The handshake follows the R4 Subscriptions Backport:
//! 1. `GET|POST [base]/Subscription/{id}/$get-ws-binding-token` (with a
//!    bearer token when the gateway checks them) answers a `Parameters`
//!    with `token`, `expiration`, `subscription` and `websocket-url`.
//! 2. The client connects to `websocket-url` (`[base]/$websocket`) and
//!    sends the text frame `bind-with-token <token>`; the server answers
//!    with a `handshake` notification Bundle, then sends one
//!    `event-notification` Bundle (the same Bundle a rest-hook receives)
//!    per matching event.
//!
//! The plain R4 form is accepted too when the gateway runs without
//! authorization: `bind <id>` is answered `bound <id>`, and each event is
//! announced as `ping <id>` (the client then reads what changed).
//!
//! A connection may bind several Subscriptions (up to
//! [`MAX_BINDS_PER_CONNECTION`]). The server pings every `heartbeat`; a
//! connection that answered none of the last two pings is closed, as is one
//! that binds nothing within `bind_timeout`. A text frame the server does
//! not understand is answered with an OperationOutcome and the connection
//! stays; a frame over [`MAX_CLIENT_FRAME`] bytes or a binary frame closes
//! it.
//!
//! Delivery stays with the Subscription's own loop ([`super::notifier`])
//! and its durable cursor: a notification counts as delivered once it is
//! queued on at least one bound connection; while none is bound the loop
//! waits (nothing is skipped) and goes on as soon as a client binds.
//! Each connection's queue is small and bounded: a client that stops
//! reading is cut off after the delivery timeout instead of holding memory.

use super::outcome::{operation_outcome, FhirError, FHIR_JSON};
use super::resource::{self, check_id};
use super::subscription::{self, Channel, Spec};
use super::{tagged, Ctx};
use crate::storage::now_ms;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use medbus_config::fhir::WebsocketSettings;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Largest frame a client may send: commands are one short line.
pub const MAX_CLIENT_FRAME: usize = 4096;
/// Most Subscriptions one connection may bind.
pub const MAX_BINDS_PER_CONNECTION: usize = 16;
/// Most binding tokens outstanding at once (expired ones are dropped first).
pub const MAX_TOKENS: usize = 10_000;
/// The resource type bindings are about.
const SUBSCRIPTION: &str = "Subscription";
/// Path of the websocket endpoint under the base path.
pub const PATH: &str = "/$websocket";

/// How a connection asked to be told about events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `bind-with-token`: notification Bundles.
    Bundles,
    /// `bind`: `ping <id>` text frames.
    Pings,
}

/// One connection bound to one Subscription.
#[derive(Clone)]
pub struct Bound {
    /// The connection's number.
    pub connection: u64,
    /// Where its frames go.
    pub session: Session,
    /// What it receives.
    pub style: Style,
}

struct Token {
    subscription: String,
    expires_ms: u64,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Token>,
    bound: HashMap<String, Vec<Bound>>,
}

/// Binding tokens and bound connections, shared by the HTTP workers (which
/// own the connections) and the delivery loops (which send on them).
pub struct Bindings {
    settings: WebsocketSettings,
    inner: Mutex<Inner>,
    /// Bumped at every bind: wakes delivery loops waiting for a client.
    binds: watch::Sender<u64>,
    open: AtomicUsize,
    next_connection: AtomicU64,
}

impl Bindings {
    /// Empty, with the configured limits.
    pub fn new(settings: WebsocketSettings) -> Bindings {
        Bindings {
            settings,
            inner: Mutex::new(Inner::default()),
            binds: watch::channel(0).0,
            open: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issue a binding token for `subscription`; `None` when too many are
    /// outstanding.
    fn issue(&self, subscription: &str) -> Option<(String, u64)> {
        let now = now_ms();
        let lifetime =
            u64::try_from(self.settings.token_lifetime.0.as_millis()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        if inner.tokens.len() >= MAX_TOKENS {
            inner.tokens.retain(|_, t| t.expires_ms > now);
            if inner.tokens.len() >= MAX_TOKENS {
                return None;
            }
        }
        let token = format!("{}{}", resource::new_id(), resource::new_id()).replace('-', "");
        let expires_ms = now.saturating_add(lifetime);
        inner.tokens.insert(
            token.clone(),
            Token {
                subscription: subscription.to_string(),
                expires_ms,
            },
        );
        Some((token, expires_ms))
    }

    /// The Subscription a token binds, while it is valid.
    fn redeem(&self, token: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .tokens
            .get(token)
            .filter(|t| t.expires_ms > now_ms())
            .map(|t| t.subscription.clone())
    }

    fn bind(&self, subscription: &str, b: Bound) {
        self.lock()
            .bound
            .entry(subscription.to_string())
            .or_default()
            .push(b);
        self.binds.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Forget one connection (it closed or failed).
    pub fn unbind(&self, connection: u64) {
        let mut inner = self.lock();
        inner.bound.retain(|_, v| {
            v.retain(|b| b.connection != connection);
            !v.is_empty()
        });
    }

    /// The connections bound to `subscription`.
    pub fn bound(&self, subscription: &str) -> Vec<Bound> {
        self.lock()
            .bound
            .get(subscription)
            .cloned()
            .unwrap_or_default()
    }

    /// Wakes when a connection binds.
    pub fn watch_binds(&self) -> watch::Receiver<u64> {
        self.binds.subscribe()
    }

    /// The Subscription is gone or no longer a websocket one: close its
    /// connections' bindings and void its tokens.
    pub async fn forget(&self, subscription: &str) {
        let gone = {
            let mut inner = self.lock();
            inner.tokens.retain(|_, t| t.subscription != subscription);
            inner.bound.remove(subscription).unwrap_or_default()
        };
        for b in gone {
            let _ = b
                .session
                .close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some(format!("Subscription/{subscription} ended")),
                }))
                .await;
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts a connection as open until dropped, and unbinds it.
struct Open {
    bindings: Arc<Bindings>,
    connection: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.bindings.unbind(self.connection);
        self.bindings.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The Subscription `id` if it is active and delivers over websockets.
fn websocket_spec(ctx: &Ctx, id: &str) -> Result<Spec, FhirError> {
    check_id(id)?;
    let stored = ctx
        .view
        .get(SUBSCRIPTION, id)
        .map_err(|e| FhirError::storage(&e))?
        .ok_or_else(|| FhirError::not_found(format!("Subscription/{id} is not known")))?;
    let map = resource::parse_resource(&stored.json)?;
    let spec = subscription::spec(&map).map_err(FhirError::invalid)?;
    if !spec.active {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            format!("Subscription/{id} is off"),
        ));
    }
    if !matches!(spec.channel, Channel::Websocket) {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            format!("Subscription/{id} does not use the websocket channel"),
        ));
    }
    Ok(spec)
}

/// The websocket endpoint's URL for a base URL (`http` → `ws`).
pub fn url(base_url: &str) -> String {
    match base_url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}{PATH}"),
        None => format!("ws://{}{PATH}", base_url.trim_start_matches("http://")),
    }
}

/// `[base]/Subscription/{id}/$get-ws-binding-token`.
pub async fn binding_token(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    tagged(
        "operation",
        binding_token_inner(&ctx, &req, &id).unwrap_or_else(|e| e.response()),
    )
}

fn binding_token_inner(ctx: &Ctx, req: &HttpRequest, id: &str) -> Result<HttpResponse, FhirError> {
    ctx.authorize(req, SUBSCRIPTION, false)?;
    let spec = websocket_spec(ctx, id)?;
    // The token lets its holder see what the Subscription watches.
    let access = ctx.authorize(req, &spec.criteria.resource_type, false)?;
    if let super::auth::Access::Patient(p) = &access {
        let own = spec.criteria.params.iter().any(|(k, v)| {
            matches!(k.as_str(), "patient" | "subject")
                && v.strip_prefix("Patient/").unwrap_or(v) == p
        });
        if !own {
            return Err(super::auth::outside_compartment());
        }
    }
    let (token, expires_ms) = ctx.websockets.issue(id).ok_or_else(|| {
        FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "too many binding tokens outstanding; try again later",
        )
    })?;
    let ws_url = url(&ctx.base_url(req));
    let body = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "token", "valueString": token},
            {"name": "expiration", "valueDateTime": resource::instant(expires_ms)},
            {"name": "subscription", "valueString": format!("Subscription/{id}")},
            {"name": "websocket-url", "valueUrl": ws_url},
        ]
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(body.to_string()))
}

/// `GET [base]/$websocket`: upgrade and serve one connection.
pub async fn connect(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Payload) -> HttpResponse {
    let bindings = ctx.websockets.clone();
    let max = *bindings.settings.max_connections.get_ref();
    if bindings.open.fetch_add(1, Ordering::Relaxed) >= max {
        bindings.open.fetch_sub(1, Ordering::Relaxed);
        return tagged(
            "websocket",
            FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "throttled",
                format!("too many websocket connections (at most {max})"),
            )
            .response(),
        );
    }
    let open = Open {
        connection: bindings.next_connection.fetch_add(1, Ordering::Relaxed),
        bindings,
    };
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(x) => x,
        Err(e) => {
            return tagged(
                "websocket",
                FhirError::invalid(format!(
                    "{} takes websocket connections only: {e}",
                    resource::truncate(req.path(), 200)
                ))
                .response(),
            )
        }
    };
    let stream = stream.max_frame_size(MAX_CLIENT_FRAME);
    actix_rt::spawn(serve(ctx, open, session, stream));
    tagged("websocket", response)
}

/// What a text frame from the client asks.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    BindWithToken(&'a str),
    Bind(&'a str),
    Unknown,
}

fn command(text: &str) -> Command<'_> {
    let text = text.trim();
    match text.split_once(' ') {
        Some(("bind-with-token", t)) => Command::BindWithToken(t.trim()),
        Some(("bind", id)) => Command::Bind(id.trim()),
        _ => Command::Unknown,
    }
}

/// An OperationOutcome text frame.
fn outcome_frame(code: &str, diagnostics: &str) -> String {
    operation_outcome("error", code, diagnostics).to_string()
}

/// One connection: read commands, answer pings, ping, close when idle.
async fn serve(
    ctx: web::Data<Ctx>,
    open: Open,
    mut session: Session,
    mut stream: actix_ws::MessageStream,
) {
    let settings = open.bindings.settings.clone();
    let bind_deadline = tokio::time::Instant::now() + settings.bind_timeout.0;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat.0,
        settings.heartbeat.0,
    );
    let mut unanswered = 0u32;
    let mut bound: Vec<String> = Vec::new();
    let close = loop {
        tokio::select! {
            msg = stream.recv() => match msg {
                None => break None,
                Some(Err(e)) => break Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some(format!("bad frame: {e}")),
                }),
                Some(Ok(Message::Text(text))) => {
                    let asked = match command(&text) {
                        Command::BindWithToken(token) => match ctx.websockets.redeem(token) {
                            Some(id) => Ok((id, Style::Bundles)),
                            None => Err(outcome_frame("security", "the binding token is unknown or expired: get one from Subscription/{id}/$get-ws-binding-token")),
                        },
                        Command::Bind(id) if ctx.auth.is_none() => Ok((id.to_string(), Style::Pings)),
                        Command::Bind(_) => Err(outcome_frame("security", "this server checks tokens: use bind-with-token with a token from Subscription/{id}/$get-ws-binding-token")),
                        Command::Unknown => Err(outcome_frame("not-supported", "send \"bind-with-token <token>\" (or \"bind <subscription id>\")")),
                    };
                    let answer = asked.and_then(|(id, style)| {
                        let frame = check_bind(&ctx, &bound, &id, style)?;
                        Ok((frame, id, style))
                    });
                    match answer {
                        // The answer goes out before the first notification can.
                        Ok((frame, id, style)) => {
                            if session.text(frame).await.is_err() {
                                break None;
                            }
                            ctx.websockets.bind(&id, Bound {
                                connection: open.connection,
                                session: session.clone(),
                                style,
                            });
                            bound.push(id);
                        }
                        Err(frame) => {
                            if session.text(frame).await.is_err() {
                                break None;
                            }
                        }
                    }
                }
                Some(Ok(Message::Ping(b))) => {
                    if session.pong(&b).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Pong(_))) => unanswered = 0,
                Some(Ok(Message::Close(_))) => break None,
                Some(Ok(Message::Nop)) => {}
                Some(Ok(Message::Binary(_) | Message::Continuation(_))) => break Some(CloseReason {
                    code: CloseCode::Unsupported,
                    description: Some("send text frames: bind-with-token <token>".into()),
                }),
            },
            _ = heartbeat.tick() => {
                if unanswered >= 2 {
                    break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("no answer to the last two pings".into()),
                    });
                }
                unanswered += 1;
                if session.ping(b"medbus").await.is_err() {
                    break None;
                }
            }
            _ = tokio::time::sleep_until(bind_deadline), if bound.is_empty() => {
                break Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some(format!("no Subscription bound within {:?}", settings.bind_timeout.0)),
                });
            }
        }
    };
    drop(open);
    let _ = session.close(close).await;
}

/// Whether this connection may bind `id`: the frame to answer with (the
/// handshake Bundle or `bound <id>`), or an OperationOutcome frame.
fn check_bind(ctx: &Ctx, bound: &[String], id: &str, style: Style) -> Result<String, String> {
    if bound.iter().any(|b| b == id) {
        return Err(outcome_frame(
            "duplicate",
            &format!("Subscription/{id} is already bound on this connection"),
        ));
    }
    if bound.len() >= MAX_BINDS_PER_CONNECTION {
        return Err(outcome_frame(
            "too-costly",
            &format!("at most {MAX_BINDS_PER_CONNECTION} Subscriptions per connection"),
        ));
    }
    let spec = websocket_spec(ctx, id).map_err(|e| outcome_frame(e.code, &e.diagnostics))?;
    Ok(match style {
        Style::Bundles => String::from_utf8_lossy(&subscription::handshake(
            &spec,
            &resource::instant(now_ms()),
        ))
        .into_owned(),
        Style::Pings => format!("bound {id}"),
    })
}

/// Send one notification to every connection bound to a Subscription.
/// `Ok(true)` when at least one took it, `Ok(false)` when none is bound.
/// Connections that cannot take it within `timeout` are closed.
pub async fn send(
    bindings: &Bindings,
    subscription: &str,
    bundle: &[u8],
    timeout: Duration,
) -> bool {
    let targets = bindings.bound(subscription);
    let mut delivered = false;
    for mut b in targets {
        let frame = match b.style {
            Style::Bundles => String::from_utf8_lossy(bundle).into_owned(),
            Style::Pings => format!("ping {subscription}"),
        };
        match tokio::time::timeout(timeout, b.session.text(frame)).await {
            Ok(Ok(())) => delivered = true,
            _ => {
                bindings.unbind(b.connection);
                let _ = b
                    .session
                    .close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("the connection does not keep up".into()),
                    }))
                    .await;
            }
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            command("bind-with-token abc"),
            Command::BindWithToken("abc")
        );
        assert_eq!(command(" bind s1 \n"), Command::Bind("s1"));
        assert_eq!(command("bind"), Command::Unknown);
        assert_eq!(command("hello"), Command::Unknown);
    }

    #[test]
    fn tokens_expire_and_are_capped() {
        let b = Bindings::new(WebsocketSettings::default());
        let (t, exp) = b.issue("s1").expect("issued");
        assert!(exp > now_ms());
        assert_eq!(b.redeem(&t).as_deref(), Some("s1"));
        assert_eq!(b.redeem("nope"), None);
        let short = Bindings::new(WebsocketSettings {
            token_lifetime: medbus_config::HumanDuration(Duration::from_millis(1)),
            ..WebsocketSettings::default()
        });
        let (t, _) = short.issue("s1").expect("issued");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.redeem(&t), None);
    }
}
