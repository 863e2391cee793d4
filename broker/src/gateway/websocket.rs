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
//! A binding token binds once, expires after `token_lifetime`, and at most
//! [`MAX_TOKENS_PER_SUBSCRIPTION`] are outstanding per Subscription. A
//! connection may bind several Subscriptions (up to
//! [`MAX_BINDS_PER_CONNECTION`]); connections are capped in all and per
//! client address (`max_connections`, `max_per_peer`), so one source
//! cannot take every slot. The server pings every `heartbeat`; a
//! connection that answered none of the last two pings is closed, as is one
//! that binds nothing within `bind_timeout`. A text frame the server does
//! not understand is answered with an OperationOutcome and the connection
//! stays, up to [`MAX_BAD_COMMANDS`]; a frame over [`MAX_CLIENT_FRAME`]
//! bytes or a binary frame closes it. When a Subscription changes, is
//! turned off or deleted, its connections are closed (to bind again, and be
//! checked again, after a change).
//!
//! Delivery stays with the Subscription's own loop ([`super::notifier`])
//! and its durable cursor: a notification counts as delivered once it is
//! queued on at least one bound connection (one queued on a connection that
//! then drops is not sent again); while none is bound the loop waits
//! (nothing is skipped) and goes on as soon as a client binds. Each
//! connection's queue is small and bounded, and every write to it is bounded
//! in time: a client that stops reading is cut off (after the delivery
//! timeout, or [`WRITE_WAIT`] for the server's own frames) instead of
//! holding memory, a delivery loop or a connection slot.

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
/// Most binding tokens outstanding for one Subscription.
pub const MAX_TOKENS_PER_SUBSCRIPTION: usize = 64;
/// Commands the server does not understand before it closes the connection.
pub const MAX_BAD_COMMANDS: u32 = 8;
/// Longest wait to queue a frame on a connection (its queue is small and
/// drains only as the client reads): a client that does not read is cut off.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait to queue a close frame before giving up on the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
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
    /// Ends the connection's own task (which owns its reading side).
    pub cancel: Arc<Cancel>,
}

/// Tells a connection's task to close, and why.
#[derive(Default)]
pub struct Cancel {
    notify: tokio::sync::Notify,
    reason: Mutex<Option<CloseReason>>,
}

impl Bound {
    /// Give up on the connection: its task closes it (never waited for by
    /// the caller).
    fn drop_connection(self, reason: CloseReason) {
        if let Ok(mut r) = self.cancel.reason.lock() {
            r.get_or_insert(reason);
        }
        self.cancel.notify.notify_one();
    }
}

struct Token {
    subscription: String,
    expires_ms: u64,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Token>,
    bound: HashMap<String, Vec<Bound>>,
    /// Open connections per peer address.
    peers: HashMap<std::net::IpAddr, usize>,
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
    /// outstanding (in all, or for this Subscription) or there is no
    /// randomness to make one from.
    fn issue(&self, subscription: &str) -> Option<(String, u64)> {
        let now = now_ms();
        let lifetime =
            u64::try_from(self.settings.token_lifetime.get_ref().0.as_millis()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        let for_this = |inner: &Inner| {
            inner
                .tokens
                .values()
                .filter(|t| t.subscription == subscription)
                .count()
        };
        if inner.tokens.len() >= MAX_TOKENS || for_this(&inner) >= MAX_TOKENS_PER_SUBSCRIPTION {
            inner.tokens.retain(|_, t| t.expires_ms > now);
            if inner.tokens.len() >= MAX_TOKENS || for_this(&inner) >= MAX_TOKENS_PER_SUBSCRIPTION {
                return None;
            }
        }
        let token = random_token()?;
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

    /// The Subscription a token binds, while it is valid. A token binds
    /// once: redeeming it uses it up.
    fn redeem(&self, token: &str) -> Option<String> {
        self.lock()
            .tokens
            .remove(token)
            .filter(|t| t.expires_ms > now_ms())
            .map(|t| t.subscription)
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

    /// The Subscription is gone or changed: close its connections (a
    /// changed one is bound again, and checked again) and void its tokens.
    /// Never waits for a client.
    pub fn forget(&self, subscription: &str) {
        let gone = {
            let mut inner = self.lock();
            inner.tokens.retain(|_, t| t.subscription != subscription);
            inner.bound.remove(subscription).unwrap_or_default()
        };
        for b in gone {
            b.drop_connection(CloseReason {
                code: CloseCode::Normal,
                description: Some(format!("Subscription/{subscription} ended or changed")),
            });
        }
    }

    /// Take a connection slot for a client at `peer`; why not, when a cap
    /// (in all, or from that address) is reached.
    fn admit(self: &Arc<Self>, peer: std::net::IpAddr) -> Result<Open, String> {
        let max = *self.settings.max_connections.get_ref();
        let per_peer = *self.settings.max_per_peer.get_ref();
        let mut inner = self.lock();
        if self.open.load(Ordering::Relaxed) >= max {
            return Err(format!("too many websocket connections (at most {max})"));
        }
        let n = inner.peers.entry(peer).or_default();
        if *n >= per_peer {
            return Err(format!(
                "too many websocket connections from this address (at most {per_peer})"
            ));
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Open {
            bindings: self.clone(),
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
            peer,
        })
    }
}

/// A binding token: 256 random bits, hex; `None` without system randomness.
fn random_token() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Counts a connection as open until dropped, and unbinds it.
struct Open {
    bindings: Arc<Bindings>,
    connection: u64,
    peer: std::net::IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.bindings.unbind(self.connection);
        let mut inner = self.bindings.lock();
        if let Some(n) = inner.peers.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.peers.remove(&self.peer);
            }
        }
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
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let open = match ctx.websockets.admit(peer) {
        Ok(o) => o,
        Err(why) => {
            return tagged(
                "websocket",
                FhirError::new(StatusCode::SERVICE_UNAVAILABLE, "throttled", why).response(),
            )
        }
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

/// Queue a frame on a connection, waiting at most [`WRITE_WAIT`] for
/// room; `false` when the connection is closed or does not read.
async fn put(session: &mut Session, frame: Message) -> bool {
    let sent = match frame {
        Message::Text(t) => tokio::time::timeout(WRITE_WAIT, session.text(t)).await,
        Message::Ping(b) => tokio::time::timeout(WRITE_WAIT, session.ping(&b)).await,
        Message::Pong(b) => tokio::time::timeout(WRITE_WAIT, session.pong(&b)).await,
        _ => return true,
    };
    matches!(sent, Ok(Ok(())))
}

/// One connection: read commands, answer pings, ping, close when idle.
/// Every write is bounded in time, so a client that stops reading cannot
/// hold the task (or its slot) for longer than [`WRITE_WAIT`].
async fn serve(
    ctx: web::Data<Ctx>,
    open: Open,
    mut session: Session,
    mut stream: actix_ws::MessageStream,
) {
    let settings = open.bindings.settings.clone();
    let bind_deadline = tokio::time::Instant::now() + settings.bind_timeout.get_ref().0;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat.get_ref().0,
        settings.heartbeat.get_ref().0,
    );
    let cancel = Arc::new(Cancel::default());
    let mut unanswered = 0u32;
    let mut bad = 0u32;
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
                            None => Err(outcome_frame("security", "the binding token is unknown, used or expired: get one from Subscription/{id}/$get-ws-binding-token")),
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
                            if !put(&mut session, Message::Text(frame.into())).await {
                                break None;
                            }
                            ctx.websockets.bind(&id, Bound {
                                connection: open.connection,
                                session: session.clone(),
                                style,
                                cancel: cancel.clone(),
                            });
                            bound.push(id);
                        }
                        Err(frame) => {
                            bad += 1;
                            if !put(&mut session, Message::Text(frame.into())).await {
                                break None;
                            }
                            if bad >= MAX_BAD_COMMANDS {
                                break Some(CloseReason {
                                    code: CloseCode::Policy,
                                    description: Some(format!("{MAX_BAD_COMMANDS} commands refused")),
                                });
                            }
                        }
                    }
                }
                Some(Ok(Message::Ping(b))) => {
                    if !put(&mut session, Message::Pong(b)).await {
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
                if !put(&mut session, Message::Ping(actix_web::web::Bytes::from_static(b"medbus"))).await {
                    break None;
                }
            }
            _ = tokio::time::sleep_until(bind_deadline), if bound.is_empty() => {
                break Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some(format!("no Subscription bound within {:?}", settings.bind_timeout.get_ref().0)),
                });
            }
            // A delivery gave up on this connection, or its Subscription
            // ended or changed.
            _ = cancel.notify.notified() => {
                break cancel.reason.lock().ok().and_then(|mut r| r.take());
            }
        }
    };
    drop(open);
    let _ = tokio::time::timeout(CLOSE_WAIT, session.close(close)).await;
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

/// Send one notification to every connection bound to a Subscription;
/// `true` when at least one took it (queued on the connection), `false`
/// when none is bound. A connection that cannot take it within `timeout`
/// (it does not read) is given up on, without waiting for it.
pub async fn send(
    bindings: &Bindings,
    subscription: &str,
    bundle: &[u8],
    timeout: Duration,
) -> bool {
    let targets = bindings.bound(subscription);
    if targets.is_empty() {
        return false;
    }
    // Each frame built once, not once per connection.
    let bundle = String::from_utf8_lossy(bundle).into_owned();
    let ping = format!("ping {subscription}");
    let mut delivered = false;
    for mut b in targets {
        let frame = match b.style {
            Style::Bundles => &bundle,
            Style::Pings => &ping,
        };
        match tokio::time::timeout(timeout, b.session.text(frame.clone())).await {
            Ok(Ok(())) => delivered = true,
            _ => {
                bindings.unbind(b.connection);
                b.drop_connection(CloseReason {
                    code: CloseCode::Away,
                    description: Some("the connection does not keep up".into()),
                });
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
    fn connections_are_capped_in_all_and_per_address() {
        let b = Arc::new(Bindings::new(WebsocketSettings {
            max_connections: medbus_config::Spanned::new(0..0, 3),
            max_per_peer: medbus_config::Spanned::new(0..0, 2),
            ..WebsocketSettings::default()
        }));
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let c: std::net::IpAddr = [10, 0, 0, 2].into();
        let a1 = b.admit(a).expect("first from a");
        let _a2 = b.admit(a).expect("second from a");
        assert!(b.admit(a).is_err(), "third from one address");
        let _c1 = b.admit(c).expect("another address");
        assert!(b.admit(c).is_err(), "the global cap");
        assert_eq!(b.open.load(Ordering::Relaxed), 3);
        drop(a1);
        assert_eq!(b.open.load(Ordering::Relaxed), 2);
        b.admit(a).expect("a slot freed");
    }

    #[test]
    fn tokens_expire_and_are_capped() {
        let b = Bindings::new(WebsocketSettings::default());
        let (t, exp) = b.issue("s1").expect("issued");
        assert!(exp > now_ms());
        assert_eq!(b.redeem(&t).as_deref(), Some("s1"));
        assert_eq!(b.redeem("nope"), None);
        let short = Bindings::new(WebsocketSettings {
            token_lifetime: medbus_config::Spanned::new(
                0..0,
                medbus_config::HumanDuration(Duration::from_millis(1)),
            ),
            ..WebsocketSettings::default()
        });
        let (t, _) = short.issue("s1").expect("issued");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.redeem(&t), None);
    }
}
