//! `ClientSession`: one binary-protocol connection.
//!
//! The first frame must be Hello with a known token (else an error frame and
//! close). Then requests are handled as they arrive and answered by request
//! id: a publish once its records are durable, an ack once the group's
//! offset is durable. Deliveries are pushed by the dispatchers of the
//! connection's subscriptions. A frame that cannot be read (over the cap,
//! unknown version, undecodable) is answered with an error frame and the
//! connection is closed: the stream cannot be trusted past it. A bad request
//! in a well-formed frame (forbidden topic, bad name) fails that request
//! only. At most [`MAX_PENDING_REQUESTS`] requests wait for storage at once;
//! beyond that the session stops reading until one finishes, so a client
//! cannot queue unbounded work.

use super::dispatcher::{self, Deliver, Dispatcher, Join, Leave, Nack, Start};
use super::listener::ProtocolContext;
use super::Principal;
use crate::counted::Counted;
use crate::events::{ClientAuthenticated, ClientDisconnected, ProtocolErrorSent};
use crate::headers;
use crate::storage::{
    is_dead_letter_topic, is_valid_topic, now_ms, AppendOutcome, AppendRequest, AtomicWrite,
    RawRecord, Record,
};
use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use medbus_protocol::client::Io;
use medbus_protocol::connection::{ConnectionError, FrameCodec};
use medbus_protocol::frame::{FrameError, MAX_FRAME};
use medbus_protocol::message::{
    CONNECTION, MAX_ACK_OFFSETS, MAX_BATCH_RECORDS, MAX_NAME_BYTES, MAX_SUBSCRIPTIONS,
    MAX_TOKEN_BYTES, PROTOCOL_VERSION,
};
use medbus_protocol::{
    ClientFrame, ErrorCode, PublishRecord, ReplayTarget, ServerFrame, ServerOut, StartAt,
    TopicSummary,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::WriteHalf;
use tokio_util::codec::{FramedRead, FramedWrite};

/// A connection must say Hello this soon: unauthenticated connections
/// cannot sit on the connection cap.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// After an error frame, how long the peer gets to read it before the
/// connection is dropped regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Most requests of one connection waiting for storage or a dispatcher:
/// pipelining without letting one client queue unbounded work.
pub const MAX_PENDING_REQUESTS: usize = 64;

type BoxIo = Box<dyn Io>;
type Codec = FrameCodec<ClientFrame, ServerFrame>;
/// Frames written: deliveries go out as the stored bytes.
type WriteCodec = FrameCodec<ClientFrame, ServerOut<RawRecord>>;

/// Queues frames for the socket. `actix::io::SinkWrite` rather than
/// `actix::io::FramedWrite`: its `close` wakes the writer, so a close with
/// nothing left to write still completes.
///
/// It also knows how far the peer lags behind: frames queued and not yet
/// encoded (each counted at an estimate of its size, taken back exactly
/// when it is encoded, so estimates never add up), plus encoded bytes the
/// socket has not taken.
struct Writer {
    sink: SinkWrite<ServerOut<RawRecord>, FramedWrite<Counted<WriteHalf<BoxIo>>, CountingCodec>>,
    counts: Arc<Backlog>,
}

/// Shared between the writer, its codec and its socket wrapper.
#[derive(Default)]
struct Backlog {
    /// Estimated bytes of frames queued, not yet encoded.
    queued: std::sync::atomic::AtomicU64,
    /// Exact bytes encoded.
    encoded: std::sync::atomic::AtomicU64,
    /// Exact bytes the socket took (counted by [`Counted`]).
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl Backlog {
    fn bytes(&self) -> u64 {
        (self.queued.load(Ordering::Relaxed) + self.encoded.load(Ordering::Relaxed))
            .saturating_sub(self.written.load(Ordering::Relaxed))
    }
}

/// The frame codec, counting what it encodes (see [`Backlog`]).
struct CountingCodec {
    inner: WriteCodec,
    counts: Arc<Backlog>,
}

impl tokio_util::codec::Encoder<ServerOut<RawRecord>> for CountingCodec {
    type Error = <WriteCodec as tokio_util::codec::Encoder<ServerOut<RawRecord>>>::Error;

    fn encode(
        &mut self,
        item: ServerOut<RawRecord>,
        dst: &mut bytes::BytesMut,
    ) -> Result<(), Self::Error> {
        let estimate = wire_estimate(&item);
        let before = dst.len();
        let encoded = self.inner.encode(item, dst);
        let c = &self.counts;
        c.queued.fetch_sub(estimate, Ordering::Relaxed);
        c.encoded
            .fetch_add(dst.len().saturating_sub(before) as u64, Ordering::Relaxed);
        encoded
    }
}

/// About the bytes a frame takes on the wire (a delivery: its stored
/// record plus 48; another frame: 48 plus its variable parts). Only a
/// placeholder until the frame is encoded (see [`Backlog`]).
fn wire_estimate(out: &ServerOut<RawRecord>) -> u64 {
    48 + match out {
        ServerOut::Deliver { record, .. } => record.stored().len() as u64,
        ServerOut::Frame(ServerFrame::Topics { topics, .. }) => {
            topics.iter().map(|t| t.name.len() as u64 + 48).sum()
        }
        ServerOut::Frame(ServerFrame::Error { message, .. }) => message.len() as u64,
        ServerOut::Frame(ServerFrame::Published { offsets, .. }) => 8 * offsets.len() as u64,
        ServerOut::Frame(_) => 0,
    }
}

impl Writer {
    fn queue(&mut self, out: ServerOut<RawRecord>) {
        self.counts
            .queued
            .fetch_add(wire_estimate(&out), Ordering::Relaxed);
        // Refused only once closing: nothing more is owed to the peer then
        // (what was counted for it no longer matters either).
        let _ = self.sink.write(out);
    }

    fn write(&mut self, frame: ServerFrame) {
        self.queue(ServerOut::Frame(frame));
    }

    /// A delivery, sent as the record is stored.
    fn deliver(&mut self, subscription: u64, offset: u64, record: RawRecord) {
        self.queue(ServerOut::Deliver {
            subscription,
            offset,
            record,
        });
    }

    /// Bytes queued that the socket has not taken yet.
    fn backlog(&self) -> u64 {
        self.counts.bytes()
    }

    fn close(&mut self) {
        self.sink.close();
    }
}

/// One open subscription of this connection.
struct Sub {
    /// Its dispatcher (private, or the group's).
    dispatcher: Addr<Dispatcher>,
    /// This connection's member id there.
    member: u64,
}

/// One binary-protocol connection.
pub struct ClientSession {
    /// Listener settings, the store, auth.
    ctx: Arc<ProtocolContext>,
    /// Who is connected: logged with every event.
    peer: SocketAddr,
    /// Buffered writer of frames (its queue is bounded by the credit
    /// windows and [`MAX_PENDING_REQUESTS`]).
    writer: Writer,
    /// Set by Hello.
    principal: Option<Arc<Principal>>,
    /// Open subscriptions by id.
    subs: HashMap<u64, Sub>,
    /// Next subscription id.
    next_sub: u64,
    /// Requests waiting for storage or a dispatcher.
    pending: usize,
    /// An error frame was sent; nothing more is read.
    closing: bool,
}

impl ClientSession {
    /// Start a session actor for an accepted connection.
    pub fn start_for(ctx: Arc<ProtocolContext>, io: BoxIo, peer: SocketAddr) {
        let (read, write) = tokio::io::split(io);
        let max_frame = ctx.max_frame;
        let counts = Arc::new(Backlog::default());
        ClientSession::create(move |actor_ctx| {
            actor_ctx.add_stream(FramedRead::new(read, Codec::new(max_frame, MAX_FRAME)));
            ClientSession {
                writer: Writer {
                    sink: SinkWrite::new(
                        FramedWrite::new(
                            Counted::new(write, counts.written.clone()),
                            CountingCodec {
                                inner: WriteCodec::new(max_frame, MAX_FRAME),
                                counts: counts.clone(),
                            },
                        ),
                        actor_ctx,
                    ),
                    counts,
                },
                ctx,
                peer,
                principal: None,
                subs: HashMap::new(),
                next_sub: 1,
                pending: 0,
                closing: false,
            }
        });
    }

    /// Answer a request with an error; the connection stays.
    fn refuse(&mut self, request_id: u64, kind: &'static str, code: ErrorCode, message: String) {
        ProtocolErrorSent {
            peer: self.peer,
            kind,
            request_id,
            message: &message,
        }
        .emit(&self.ctx.metrics);
        self.writer.write(ServerFrame::Error {
            request_id,
            code: code.as_u16(),
            message,
        });
    }

    /// Close the connection when the peer has left more than
    /// `max_pending` bytes unread (it sends requests, or deliveries come,
    /// faster than it reads): what is queued for it is memory the broker
    /// holds. Its unacknowledged group records go back to the group.
    fn slow_consumer(&mut self, ctx: &mut Context<Self>) -> bool {
        let backlog = self.writer.backlog();
        if backlog <= self.ctx.max_pending {
            return false;
        }
        tracing::warn!(peer = %self.peer, backlog, "slow consumer: closing the connection");
        self.fail(
            "slow_consumer",
            ErrorCode::LimitReached,
            format!(
                "slow consumer: {backlog} bytes not read, over the broker's max_pending of {} bytes",
                self.ctx.max_pending
            ),
            ctx,
        );
        true
    }

    /// Send an error about the connection, then close it.
    fn fail(
        &mut self,
        kind: &'static str,
        code: ErrorCode,
        message: String,
        ctx: &mut Context<Self>,
    ) {
        if self.closing {
            return;
        }
        self.refuse(CONNECTION, kind, code, message);
        self.closing = true;
        self.writer.close();
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    fn hello(&mut self, version: u16, client_name: String, token: String, ctx: &mut Context<Self>) {
        if version != PROTOCOL_VERSION {
            return self.fail(
                "unsupported_version",
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported (this broker speaks {PROTOCOL_VERSION})"),
                ctx,
            );
        }
        if client_name.len() > MAX_NAME_BYTES || token.len() > MAX_TOKEN_BYTES {
            return self.fail(
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!("client name (at most {MAX_NAME_BYTES} bytes) or token (at most {MAX_TOKEN_BYTES}) too long"),
                ctx,
            );
        }
        match self.ctx.auth.authenticate(&token, self.peer) {
            Ok(p) => {
                ClientAuthenticated {
                    peer: self.peer,
                    client: &p.name,
                }
                .emit(&self.ctx.metrics);
                self.writer.write(ServerFrame::Welcome {
                    version: PROTOCOL_VERSION,
                    server: format!("medbus {}", env!("CARGO_PKG_VERSION")),
                    client: p.name.clone(),
                    max_frame: u32::try_from(self.ctx.max_frame).unwrap_or(u32::MAX),
                    max_batch: MAX_BATCH_RECORDS as u32,
                    max_credits: self.ctx.max_credits,
                });
                self.principal = Some(p);
            }
            Err(reason) => self.fail("auth_failed", ErrorCode::AuthenticationFailed, reason, ctx),
        }
    }

    /// Run a future answering a request: pipelined up to the cap, then the
    /// session waits (and stops reading) until it resolves.
    fn track<F>(&mut self, fut: F, ctx: &mut Context<Self>)
    where
        F: ActorFuture<Self, Output = ()> + 'static,
    {
        self.pending += 1;
        let fut = fut.map(|_, act: &mut Self, _| act.pending -= 1);
        if self.pending > MAX_PENDING_REQUESTS {
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
    }

    /// Refuse a request whose topic name is malformed or not granted to
    /// the client; true when it was refused.
    fn refuse_topic(
        &mut self,
        request_id: u64,
        topic: &str,
        client: &str,
        verb: &str,
        granted: bool,
    ) -> bool {
        if !is_valid_topic(topic) {
            self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!(
                    "invalid topic name {:?}: use 1 to 200 of A-Z a-z 0-9 . _ -",
                    shown(topic)
                ),
            );
        } else if !granted {
            self.refuse(
                request_id,
                "forbidden",
                ErrorCode::Forbidden,
                format!("client {client:?} may not {verb} to {topic:?}"),
            );
        } else {
            return false;
        }
        true
    }

    fn publish(
        &mut self,
        principal: &Principal,
        request_id: u64,
        topic: String,
        records: Vec<PublishRecord>,
        ctx: &mut Context<Self>,
    ) {
        // Dead-letter topics (exempt from the topic cap) and the FHIR
        // gateway's Subscriptions (each a rest-hook the broker calls) are
        // the broker's own: no client writes them.
        let owned = is_dead_letter_topic(&topic) || topic == crate::gateway::subscription::TOPIC;
        let granted = principal.may_publish(&topic) && !owned;
        if self.refuse_topic(request_id, &topic, &principal.name, "publish", granted) {
            return;
        }
        if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
            return self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!(
                    "a publish carries 1 to {MAX_BATCH_RECORDS} records, not {}",
                    records.len()
                ),
            );
        }
        let now = now_ms();
        let client = principal.name.clone();
        let mut stored: Vec<(String, Record)> = records
            .into_iter()
            .map(|r| {
                let mut headers = r.headers;
                headers.push((headers::CLIENT.to_string(), client.clone()));
                (
                    topic.clone(),
                    Record {
                        timestamp_ms: now,
                        headers,
                        content_type: r.content_type,
                        payload: r.payload,
                    },
                )
            })
            .collect();
        let write: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = if stored.len() == 1 {
            let (topic, record) = stored.remove(0);
            let append = self.ctx.store.append(AppendRequest {
                topic,
                record,
                dedup: None,
            });
            Box::pin(async move {
                append.await.map(|outcome| match outcome {
                    AppendOutcome::Stored { offset, .. }
                    | AppendOutcome::Duplicate { offset, .. } => {
                        vec![offset]
                    }
                })
            })
        } else {
            let atomic = self.ctx.store.write_atomic(AtomicWrite {
                records: stored,
                cursors: Vec::new(),
                released: Vec::new(),
            });
            Box::pin(async move {
                atomic
                    .await
                    .map(|v| v.into_iter().map(|(_, o)| o).collect())
            })
        };
        let fut = write
            .into_actor(self)
            .map(move |result, act, _| match result {
                Ok(offsets) => act.writer.write(ServerFrame::Published {
                    request_id,
                    offsets,
                }),
                Err(e) => act.refuse(
                    request_id,
                    "storage_failed",
                    ErrorCode::StorageFailed,
                    format!("not stored, publish again later: {e}"),
                ),
            });
        self.track(fut, ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        principal: &Principal,
        request_id: u64,
        topic: String,
        group: Option<String>,
        start: StartAt,
        credits: u32,
        ctx: &mut Context<Self>,
    ) {
        let granted = principal.may_subscribe(&topic);
        if self.refuse_topic(request_id, &topic, &principal.name, "subscribe", granted) {
            return;
        }
        if let Some(g) = &group {
            if !valid_group(g) {
                return self.refuse_group_name(request_id, g);
            }
        }
        if credits == 0 || credits > self.ctx.max_credits {
            return self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!(
                    "credits must be 1 to {}, not {credits}",
                    self.ctx.max_credits
                ),
            );
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return self.refuse(
                request_id,
                "limit_reached",
                ErrorCode::LimitReached,
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
            );
        }
        let dispatcher = match &group {
            Some(g) => match self
                .ctx
                .groups
                .get(g, &topic, &self.ctx.store, &self.ctx.metrics)
            {
                Some(d) => d,
                None => {
                    return self.refuse(
                        request_id,
                        "limit_reached",
                        ErrorCode::LimitReached,
                        format!(
                            "the broker tracks at most {} consumer groups with a member connected and {} with a committed offset (medbus delete-group removes unused ones)",
                            dispatcher::MAX_GROUPS,
                            dispatcher::MAX_DURABLE_GROUPS
                        ),
                    );
                }
            },
            None => Dispatcher::new(
                &topic,
                None,
                self.ctx.store.clone(),
                self.ctx.metrics.clone(),
            )
            .start(),
        };
        let subscription = self.next_sub;
        self.next_sub += 1;
        let member = dispatcher::next_member_id();
        let recipient = ctx.address().recipient();
        let shared = self.ctx.clone();
        let join = async move {
            let mut dispatcher = dispatcher;
            let mut attempts = 0;
            loop {
                let joined = dispatcher
                    .send(Join {
                        member,
                        subscription,
                        credits,
                        recipient: recipient.clone(),
                        start,
                    })
                    .await;
                attempts += 1;
                // A group's dispatcher stops with its last member: one that
                // stopped between the lookup and the Join is replaced.
                let stale = joined.is_err() && attempts < 3;
                match (stale, &group) {
                    (true, Some(g)) => {
                        shared.groups.remove(g, &topic, &dispatcher);
                        match shared.groups.get(g, &topic, &shared.store, &shared.metrics) {
                            Some(d) => dispatcher = d,
                            None => return (dispatcher, joined),
                        }
                    }
                    _ => return (dispatcher, joined),
                }
            }
        };
        // Wait: the Subscribed reply must be written before any delivery.
        ctx.wait(
            join.into_actor(self)
                .map(move |(dispatcher, result), act, _| match result {
                    Ok(Ok(start_offset)) => {
                        act.writer.write(ServerFrame::Subscribed {
                            request_id,
                            subscription,
                            start_offset,
                        });
                        dispatcher.do_send(Start { member });
                        act.subs.insert(subscription, Sub { dispatcher, member });
                    }
                    Ok(Err(e)) => {
                        dispatcher.do_send(Leave { member });
                        act.refuse(
                            request_id,
                            "storage_failed",
                            ErrorCode::StorageFailed,
                            format!("cannot read topic: {e}"),
                        );
                    }
                    Err(_) => act.refuse(
                        request_id,
                        "limit_reached",
                        ErrorCode::Unavailable,
                        "the broker is shutting down".into(),
                    ),
                }),
        );
    }

    fn ack_or_nack(
        &mut self,
        ack: bool,
        request_id: u64,
        subscription: u64,
        offsets: Vec<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(sub) = self.subs.get(&subscription) else {
            return self.refuse(
                request_id,
                "unknown_subscription",
                ErrorCode::UnknownSubscription,
                format!("no subscription {subscription} on this connection"),
            );
        };
        if offsets.len() > MAX_ACK_OFFSETS {
            return self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!("at most {MAX_ACK_OFFSETS} offsets per ack or nack"),
            );
        }
        let member = sub.member;
        if !ack {
            sub.dispatcher.do_send(Nack { member, offsets });
            self.writer.write(ServerFrame::Done { request_id });
            return;
        }
        let fut = sub
            .dispatcher
            .send(dispatcher::Ack { member, offsets })
            .into_actor(self)
            .map(move |result, act, _| match result {
                Ok(Ok(())) => act.writer.write(ServerFrame::Done { request_id }),
                Ok(Err(e)) => act.refuse(
                    request_id,
                    "storage_failed",
                    ErrorCode::StorageFailed,
                    format!("group offset not stored, ack again: {e}"),
                ),
                Err(_) => act.refuse(
                    request_id,
                    "limit_reached",
                    ErrorCode::Unavailable,
                    "the broker is shutting down".into(),
                ),
            });
        self.track(fut, ctx);
    }

    fn list_topics(&mut self, principal: &Principal, request_id: u64) {
        match self.ctx.store.topics() {
            Ok(all) => {
                let topics = all
                    .into_iter()
                    .filter(|t| principal.may_subscribe(&t.name) || principal.may_publish(&t.name))
                    .map(|t| TopicSummary {
                        name: t.name,
                        first: t.first,
                        last: t.last,
                        count: t.count,
                        bytes: t.bytes,
                    })
                    .collect();
                self.writer
                    .write(ServerFrame::Topics { request_id, topics });
            }
            Err(e) => self.refuse(
                request_id,
                "storage_failed",
                ErrorCode::StorageFailed,
                format!("cannot list topics: {e}"),
            ),
        }
    }

    /// Admin: replay a route or a destination; answered when done. The
    /// session goes on serving other requests meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn replay(
        &mut self,
        principal: &Principal,
        request_id: u64,
        target: ReplayTarget,
        name: String,
        from: u64,
        to: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        if !principal.admin {
            self.refuse(
                request_id,
                "forbidden",
                ErrorCode::Forbidden,
                "replay is an admin request: this client has no admin = true".into(),
            );
            return;
        }
        let config = match self.ctx.config.read() {
            Ok(c) => c.clone(),
            Err(_) => return,
        };
        let target = match target {
            ReplayTarget::Route => crate::replay::Target::Route(name),
            ReplayTarget::Destination => crate::replay::Target::Destination(name),
        };
        tracing::info!(client = %principal.name, ?target, from, ?to, "replay requested");
        let store = self.ctx.store.clone();
        let metrics = self.ctx.metrics.clone();
        let job = async move {
            crate::replay::replay(&config, &store, &metrics, &target, from, to).await
        };
        ctx.spawn(
            job.into_actor(self)
                .map(move |result, act, _ctx| match result {
                    Ok(s) => act.writer.write(ServerFrame::Replayed {
                        request_id,
                        read: s.read,
                        written: s.written,
                        dead_lettered: s.dead_lettered,
                        filtered: s.filtered,
                    }),
                    Err(
                        e @ (crate::replay::ReplayError::Unknown(..)
                        | crate::replay::ReplayError::Range(_)),
                    ) => act.refuse(
                        request_id,
                        "invalid_request",
                        ErrorCode::InvalidRequest,
                        e.to_string(),
                    ),
                    Err(e) => act.refuse(
                        request_id,
                        "storage_failed",
                        ErrorCode::StorageFailed,
                        e.to_string(),
                    ),
                }),
        );
    }

    fn on_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        let principal = match (&self.principal, frame) {
            (
                None,
                ClientFrame::Hello {
                    version,
                    client_name,
                    token,
                },
            ) => return self.hello(version, client_name, token, ctx),
            (None, _) => {
                return self.fail(
                    "not_authenticated",
                    ErrorCode::NotAuthenticated,
                    "the first frame must be Hello".into(),
                    ctx,
                )
            }
            (Some(_), ClientFrame::Hello { .. }) => {
                return self.fail(
                    "not_authenticated",
                    ErrorCode::NotAuthenticated,
                    "Hello was already said on this connection".into(),
                    ctx,
                )
            }
            (Some(p), frame) => (p.clone(), frame),
        };
        let (principal, frame) = principal;
        let request_id = frame.request_id();
        if request_id == CONNECTION {
            return self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                "request id 0 is reserved".into(),
            );
        }
        match frame {
            ClientFrame::Hello { .. } => {}
            ClientFrame::Publish {
                request_id,
                topic,
                records,
            } => self.publish(&principal, request_id, topic, records, ctx),
            ClientFrame::Subscribe {
                request_id,
                topic,
                group,
                start,
                credits,
            } => self.subscribe(&principal, request_id, topic, group, start, credits, ctx),
            ClientFrame::Unsubscribe {
                request_id,
                subscription,
            } => match self.subs.remove(&subscription) {
                Some(sub) => {
                    sub.dispatcher.do_send(Leave { member: sub.member });
                    self.writer.write(ServerFrame::Done { request_id });
                }
                None => self.refuse(
                    request_id,
                    "unknown_subscription",
                    ErrorCode::UnknownSubscription,
                    format!("no subscription {subscription} on this connection"),
                ),
            },
            ClientFrame::Ack {
                request_id,
                subscription,
                offsets,
            } => self.ack_or_nack(true, request_id, subscription, offsets, ctx),
            ClientFrame::Nack {
                request_id,
                subscription,
                offsets,
            } => self.ack_or_nack(false, request_id, subscription, offsets, ctx),
            ClientFrame::ListTopics { request_id } => self.list_topics(&principal, request_id),
            ClientFrame::Ping { request_id } => self.writer.write(ServerFrame::Pong { request_id }),
            ClientFrame::Replay {
                request_id,
                target,
                name,
                from,
                to,
            } => self.replay(&principal, request_id, target, name, from, to, ctx),
            ClientFrame::DeleteGroup {
                request_id,
                group,
                topic,
            } => self.delete_group(&principal, request_id, group, topic, ctx),
        }
    }
}

/// At most the first 64 characters of a name a client sent, for an error
/// text (which is also logged): a refused name may be a MiB long.
fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_string(),
    }
}

/// Whether `g` is a valid consumer group name.
fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= MAX_NAME_BYTES
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl ClientSession {
    fn refuse_group_name(&mut self, request_id: u64, g: &str) {
        self.refuse(
            request_id,
            "invalid_request",
            ErrorCode::InvalidRequest,
            format!(
                "invalid group name {:?}: use 1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 . _ -",
                shown(g)
            ),
        );
    }

    /// Admin: forget consumer `group` on `topic` (see
    /// [`ClientFrame::DeleteGroup`]).
    fn delete_group(
        &mut self,
        principal: &Principal,
        request_id: u64,
        group: String,
        topic: String,
        ctx: &mut Context<Self>,
    ) {
        if !principal.admin {
            return self.refuse(
                request_id,
                "forbidden",
                ErrorCode::Forbidden,
                "deleting a group is an admin request: this client has no admin = true".into(),
            );
        }
        if !valid_group(&group) {
            return self.refuse_group_name(request_id, &group);
        }
        if !crate::storage::is_valid_topic(&topic) {
            return self.refuse(
                request_id,
                "invalid_request",
                ErrorCode::InvalidRequest,
                format!("invalid topic name {:?}", shown(&topic)),
            );
        }
        let shared = self.ctx.clone();
        let client = principal.name.clone();
        let job = async move {
            let key = crate::storage::cursor_key(dispatcher::CURSOR_KIND, &group, &topic);
            if let Some(d) = shared.groups.running(&group, &topic) {
                match d.send(dispatcher::Forget).await {
                    Ok(Err(members)) => return Err(Err(members)),
                    Ok(Ok(_)) | Err(_) => shared.groups.remove(&group, &topic, &d),
                }
            }
            shared
                .store
                .write_atomic(crate::storage::AtomicWrite {
                    released: vec![key],
                    ..Default::default()
                })
                .await
                .map_err(Ok)?;
            let _ = shared
                .metrics
                .consumer_lag_records
                .remove_label_values(&[&topic, &group]);
            tracing::info!(%client, %group, %topic, "consumer group deleted");
            Ok(())
        };
        ctx.spawn(
            job.into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(()) => act.writer.write(ServerFrame::Done { request_id }),
                    Err(Err(members)) => act.refuse(
                        request_id,
                        "invalid_request",
                        ErrorCode::InvalidRequest,
                        format!(
                            "the group has {members} member(s) connected: they must leave first"
                        ),
                    ),
                    Err(Ok(e)) => act.refuse(
                        request_id,
                        "storage_failed",
                        ErrorCode::StorageFailed,
                        e.to_string(),
                    ),
                }),
        );
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(HELLO_TIMEOUT, |act, ctx| {
            if act.principal.is_none() {
                act.fail(
                    "hello_timeout",
                    ErrorCode::NotAuthenticated,
                    format!("no Hello within {}s", HELLO_TIMEOUT.as_secs()),
                    ctx,
                );
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, sub) in self.subs.drain() {
            sub.dispatcher.do_send(Leave { member: sub.member });
        }
        self.ctx.connections.fetch_sub(1, Ordering::Relaxed);
        ClientDisconnected {
            peer: self.peer,
            client: self.principal.as_ref().map(|p| p.name.as_str()),
        }
        .emit(&self.ctx.metrics);
    }
}

impl StreamHandler<Result<ClientFrame, ConnectionError>> for ClientSession {
    fn handle(&mut self, item: Result<ClientFrame, ConnectionError>, ctx: &mut Context<Self>) {
        if self.closing || self.slow_consumer(ctx) {
            return;
        }
        match item {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(ConnectionError::Frame(e)) => {
                let code = match e {
                    FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    FrameError::Version(_) => ErrorCode::UnsupportedVersion,
                    _ => ErrorCode::BadFrame,
                };
                self.fail(e.kind(), code, e.to_string(), ctx);
            }
            Err(ConnectionError::Truncated) => {
                self.fail(
                    "truncated",
                    ErrorCode::BadFrame,
                    "connection closed in the middle of a frame".into(),
                    ctx,
                );
            }
            Err(ConnectionError::Io(e)) => {
                tracing::info!(peer = %self.peer, error = %e, "protocol read failed");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The peer closed its side (or a read error ended the stream): flush
        // what is queued, then stop once the writer is closed.
        self.writer.close();
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }
}

impl WriteHandler<ConnectionError> for ClientSession {
    fn error(&mut self, err: ConnectionError, _ctx: &mut Context<Self>) -> Running {
        tracing::info!(peer = %self.peer, error = %err, "protocol write failed");
        Running::Stop
    }
}

impl Handler<Deliver> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if self.closing || !self.subs.contains_key(&msg.subscription) {
            return;
        }
        self.writer
            .deliver(msg.subscription, msg.offset, msg.record);
        self.slow_consumer(ctx);
    }
}
