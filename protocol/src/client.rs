//! An async Rust client for the medbus binary protocol.
//!
//! One [`Client`] is one connection. Requests may be issued concurrently
//! from clones of it; a background task reads the connection and hands each
//! reply to its request (by request id) and each delivery to its
//! [`Subscription`] (by subscription id). A subscription is a
//! `futures::Stream` of [`Delivery`]s; the broker sends at most `credits`
//! unacknowledged deliveries, so the stream's buffer is bounded by the
//! credit window.
//!
//! Reconnection is the caller's choice: when the connection ends, every
//! request fails with [`ClientError::Closed`] (or the broker's error) and
//! every subscription stream ends. A consumer group resumes from its last
//! committed offset, so a loop that reconnects and subscribes again loses
//! nothing (records not yet acked are delivered again):
//!
//! ```no_run
//! use medbus_protocol::{Client, ClientOptions, SubscribeOptions, StartAt};
//! # async fn run() {
//! loop {
//!     let Ok(client) = Client::connect("127.0.0.1:7575", ClientOptions::default()).await else {
//!         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!         continue;
//!     };
//!     let options = SubscribeOptions::new("fhir.Observation").group("alerts").start(StartAt::Earliest);
//!     let Ok(mut sub) = client.subscribe(options).await else { continue };
//!     while let Some(Ok(delivery)) = sub.next().await {
//!         // … process delivery.record …
//!         if sub.ack(delivery.offset).await.is_err() { break }
//!     }
//! }
//! # }
//! ```

use crate::connection::{ConnectionError, FrameReader, FrameWriter};
use crate::frame::MAX_FRAME;
use crate::message::{
    ClientFrame, ErrorCode, PublishRecord, Record, ReplayTarget, ServerFrame, StartAt,
    TopicSummary, CONNECTION, DEFAULT_CREDITS, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

/// How long `connect` waits for the TCP connection and the Welcome.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream the client can run over (TCP, TLS, an in-memory pipe).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

type BoxIo = Box<dyn Io>;

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        message: String,
    },
    /// The connection failed (I/O, or bytes that are not frames).
    #[error("connection failed: {0}")]
    Connection(String),
    /// The broker answered with an error frame.
    #[error("broker error {code} ({}): {message}", ErrorCode::from_u16(*code).map(|c| format!("{c:?}")).unwrap_or_else(|| "unknown".into()))]
    Server {
        /// An [`ErrorCode`] number.
        code: u16,
        /// The broker's explanation.
        message: String,
    },
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The broker sent something the protocol does not allow here.
    #[error("protocol violation by the broker: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

impl ClientError {
    /// The broker's error code, when the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }
}

impl From<ConnectionError> for ClientError {
    fn from(e: ConnectionError) -> Self {
        ClientError::Connection(e.to_string())
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name shown in the broker's logs.
    pub name: String,
    /// The token (empty for a development broker without `[[clients]]`).
    pub token: String,
    /// Limit on the TCP connect plus the Hello/Welcome exchange.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            name: "medbus-protocol".into(),
            token: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Topic.
    pub topic: String,
    /// Consumer group (shared records, durable offset), or private.
    pub group: Option<String>,
    /// Where to start (a group with a committed offset resumes there).
    pub start: StartAt,
    /// Most unacknowledged deliveries.
    pub credits: u32,
}

impl SubscribeOptions {
    /// A private subscription to `topic` from the next new record, with the
    /// default credit window.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            group: None,
            start: StartAt::Latest,
            credits: DEFAULT_CREDITS,
        }
    }

    /// Join consumer group `g`.
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.group = Some(g.into());
        self
    }

    /// Start position.
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Credit window.
    pub fn credits(mut self, credits: u32) -> Self {
        self.credits = credits;
        self
    }
}

/// A delivered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription that received it.
    pub subscription: u64,
    /// Its topic.
    pub topic: String,
    /// Its offset (ack or nack this).
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// What the broker said in its Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The broker's name and version.
    pub server: String,
    /// The `[[clients]]` name the token belongs to.
    pub client: String,
    /// The broker's frame cap: larger publishes are refused.
    pub max_frame: u32,
    /// Most records per publish.
    pub max_batch: u32,
    /// Largest credit window.
    pub max_credits: u32,
}

/// A reply as handed to the waiting request.
enum Reply {
    Frame(ServerFrame),
    Subscribed {
        subscription: u64,
        start_offset: u64,
        deliveries: mpsc::UnboundedReceiver<Result<Delivery, ClientError>>,
    },
}

type DeliverySender = mpsc::UnboundedSender<Result<Delivery, ClientError>>;

/// State shared by the client handles and the reader task.
struct Shared {
    /// Writes are serialised: one frame at a time.
    writer: tokio::sync::Mutex<FrameWriter<WriteHalf<BoxIo>, ClientFrame>>,
    /// Requests waiting for their reply, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Open subscriptions: where their deliveries go, and their topic.
    subs: Mutex<HashMap<u64, (String, DeliverySender)>>,
    /// Topics of subscribe requests in flight (the reply does not repeat it).
    subscribing: Mutex<HashMap<u64, String>>,
    /// Next request id (0 is reserved for the connection).
    next_id: AtomicU64,
    /// Why the connection ended, once it has.
    closed: Mutex<Option<ClientError>>,
}

/// Aborts the reader task when the last handle goes.
struct ReaderGuard(tokio::task::AbortHandle);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection to a medbus broker; cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    welcome: Arc<Welcome>,
    _reader: Arc<ReaderGuard>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// Connect over TCP to `addr` (`host:port`) and say Hello.
    pub async fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let timeout = options.connect_timeout;
        let connect = async {
            let stream =
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| ClientError::Connect {
                        addr: addr.to_string(),
                        message: e.to_string(),
                    })?;
            let _ = stream.set_nodelay(true);
            Client::handshake(stream, options).await
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Say Hello over an already connected stream (TLS, a test pipe).
    pub async fn handshake<S: Io>(
        stream: S,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let boxed: BoxIo = Box::new(stream);
        let (read, write) = tokio::io::split(boxed);
        let mut reader = FrameReader::<ReadHalf<BoxIo>, ServerFrame>::new(read, MAX_FRAME);
        let mut writer =
            FrameWriter::<WriteHalf<BoxIo>, ClientFrame>::new(write, DEFAULT_MAX_FRAME);
        writer
            .write_frame(&ClientFrame::Hello {
                version: PROTOCOL_VERSION,
                client_name: options.name.clone(),
                token: options.token.clone(),
            })
            .await?;
        let welcome = match reader.read_frame().await? {
            Some(ServerFrame::Welcome {
                server,
                client,
                max_frame,
                max_batch,
                max_credits,
                ..
            }) => Welcome {
                server,
                client,
                max_frame,
                max_batch,
                max_credits,
            },
            Some(ServerFrame::Error { code, message, .. }) => {
                return Err(ClientError::Server { code, message })
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )))
            }
            None => return Err(ClientError::Closed),
        };
        // Publishes are checked against the broker's cap before sending.
        writer.set_max(welcome.max_frame as usize);
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            subscribing: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: Mutex::new(None),
        });
        let task = tokio::spawn(read_loop(reader, shared.clone()));
        Ok(Client {
            shared,
            welcome: Arc::new(welcome),
            _reader: Arc::new(ReaderGuard(task.abort_handle())),
        })
    }

    /// The broker's Welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    fn closed_error(&self) -> ClientError {
        lock(&self.shared.closed)
            .clone()
            .unwrap_or(ClientError::Closed)
    }

    async fn request(&self, build: impl FnOnce(u64) -> ClientFrame) -> Result<Reply, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = build(id);
        let (tx, rx) = oneshot::channel();
        if let Some(e) = lock(&self.shared.closed).clone() {
            return Err(e);
        }
        if let ClientFrame::Subscribe { topic, .. } = &frame {
            lock(&self.shared.subscribing).insert(id, topic.clone());
        }
        lock(&self.shared.pending).insert(id, tx);
        let written = self.shared.writer.lock().await.write_frame(&frame).await;
        if let Err(e) = written {
            lock(&self.shared.pending).remove(&id);
            lock(&self.shared.subscribing).remove(&id);
            return Err(e.into());
        }
        match rx.await {
            Ok(Reply::Frame(ServerFrame::Error { code, message, .. })) => {
                Err(ClientError::Server { code, message })
            }
            Ok(reply) => Ok(reply),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Publish one record; returns its offset once it is durable.
    pub async fn publish(&self, topic: &str, record: PublishRecord) -> Result<u64, ClientError> {
        let offsets = self.publish_batch(topic, vec![record]).await?;
        offsets
            .first()
            .copied()
            .ok_or_else(|| ClientError::Protocol("Published without an offset".into()))
    }

    /// Publish records atomically; returns their offsets once durable.
    pub async fn publish_batch(
        &self,
        topic: &str,
        records: Vec<PublishRecord>,
    ) -> Result<Vec<u64>, ClientError> {
        let n = records.len();
        let reply = self
            .request(|request_id| ClientFrame::Publish {
                request_id,
                topic: topic.to_string(),
                records,
            })
            .await?;
        match reply {
            Reply::Frame(ServerFrame::Published { offsets, .. }) if offsets.len() == n => {
                Ok(offsets)
            }
            _ => Err(ClientError::Protocol("unexpected reply to Publish".into())),
        }
    }

    /// Open a subscription.
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, ClientError> {
        let topic = options.topic.clone();
        let reply = self
            .request(|request_id| ClientFrame::Subscribe {
                request_id,
                topic: options.topic,
                group: options.group,
                start: options.start,
                credits: options.credits,
            })
            .await?;
        match reply {
            Reply::Subscribed {
                subscription,
                start_offset,
                deliveries,
            } => Ok(Subscription {
                id: subscription,
                topic,
                start_offset,
                deliveries,
                client: self.clone(),
            }),
            _ => Err(ClientError::Protocol(
                "unexpected reply to Subscribe".into(),
            )),
        }
    }

    async fn done(&self, build: impl FnOnce(u64) -> ClientFrame) -> Result<(), ClientError> {
        match self.request(build).await? {
            Reply::Frame(ServerFrame::Done { .. }) => Ok(()),
            _ => Err(ClientError::Protocol("expected Done".into())),
        }
    }

    /// Acknowledge delivered records of `subscription`; in a group, returns
    /// once the group's offset is durable.
    pub async fn ack(&self, subscription: u64, offsets: Vec<u64>) -> Result<(), ClientError> {
        self.done(|request_id| ClientFrame::Ack {
            request_id,
            subscription,
            offsets,
        })
        .await
    }

    /// Hand delivered records back for redelivery.
    pub async fn nack(&self, subscription: u64, offsets: Vec<u64>) -> Result<(), ClientError> {
        self.done(|request_id| ClientFrame::Nack {
            request_id,
            subscription,
            offsets,
        })
        .await
    }

    /// Close a subscription.
    pub async fn unsubscribe(&self, subscription: u64) -> Result<(), ClientError> {
        self.done(|request_id| ClientFrame::Unsubscribe {
            request_id,
            subscription,
        })
        .await?;
        lock(&self.shared.subs).remove(&subscription);
        Ok(())
    }

    /// The topics this client may use.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        match self
            .request(|request_id| ClientFrame::ListTopics { request_id })
            .await?
        {
            Reply::Frame(ServerFrame::Topics { topics, .. }) => Ok(topics),
            _ => Err(ClientError::Protocol("expected Topics".into())),
        }
    }

    /// Round trip to the broker.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self
            .request(|request_id| ClientFrame::Ping { request_id })
            .await?
        {
            Reply::Frame(ServerFrame::Pong { .. }) => Ok(start.elapsed()),
            _ => Err(ClientError::Protocol("expected Pong".into())),
        }
    }

    /// Admin: run a route or a destination again over `from..=to` of its
    /// source topic; resolves when the broker has finished, with
    /// (read, written, dead-lettered, filtered).
    pub async fn replay(
        &self,
        target: ReplayTarget,
        name: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<(u64, u64, u64, u64), ClientError> {
        let name = name.to_string();
        match self
            .request(|request_id| ClientFrame::Replay {
                request_id,
                target,
                name,
                from,
                to,
            })
            .await?
        {
            Reply::Frame(ServerFrame::Replayed {
                read,
                written,
                dead_lettered,
                filtered,
                ..
            }) => Ok((read, written, dead_lettered, filtered)),
            _ => Err(ClientError::Protocol("expected Replayed".into())),
        }
    }

    /// Admin: forget consumer `group` on `topic` (its committed offset is
    /// removed and it no longer holds retention back); refused while a
    /// member of it is connected.
    pub async fn delete_group(&self, group: &str, topic: &str) -> Result<(), ClientError> {
        let (group, topic) = (group.to_string(), topic.to_string());
        match self
            .request(|request_id| ClientFrame::DeleteGroup {
                request_id,
                group,
                topic,
            })
            .await?
        {
            Reply::Frame(ServerFrame::Done { .. }) => Ok(()),
            _ => Err(ClientError::Protocol("expected Done".into())),
        }
    }

    /// Close the connection (the broker returns unacked group records to
    /// the group).
    pub async fn close(&self) {
        let _ = self.shared.writer.lock().await.shutdown().await;
    }
}

/// Reads every frame and routes it; on the way out, fails what waits.
async fn read_loop(mut reader: FrameReader<ReadHalf<BoxIo>, ServerFrame>, shared: Arc<Shared>) {
    let reason = loop {
        let frame = match reader.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => break ClientError::Closed,
            Err(e) => break ClientError::from(e),
        };
        match frame {
            ServerFrame::Deliver {
                subscription,
                offset,
                record,
            } => {
                let subs = lock(&shared.subs);
                if let Some((topic, tx)) = subs.get(&subscription) {
                    let _ = tx.send(Ok(Delivery {
                        subscription,
                        topic: topic.clone(),
                        offset,
                        record,
                    }));
                }
            }
            ServerFrame::Subscribed {
                request_id,
                subscription,
                start_offset,
            } => {
                // Register before reading on: deliveries follow at once.
                let (tx, rx) = mpsc::unbounded_channel();
                let topic = lock(&shared.subscribing)
                    .remove(&request_id)
                    .unwrap_or_default();
                lock(&shared.subs).insert(subscription, (topic, tx));
                if let Some(waiter) = lock(&shared.pending).remove(&request_id) {
                    let _ = waiter.send(Reply::Subscribed {
                        subscription,
                        start_offset,
                        deliveries: rx,
                    });
                }
            }
            ServerFrame::Error {
                request_id: CONNECTION,
                code,
                message,
            } => break ClientError::Server { code, message },
            ServerFrame::Welcome { .. } => {
                break ClientError::Protocol("a second Welcome".into());
            }
            other => {
                let id = match &other {
                    ServerFrame::Published { request_id, .. }
                    | ServerFrame::Done { request_id }
                    | ServerFrame::Topics { request_id, .. }
                    | ServerFrame::Pong { request_id }
                    | ServerFrame::Replayed { request_id, .. }
                    | ServerFrame::Error { request_id, .. } => *request_id,
                    _ => CONNECTION,
                };
                lock(&shared.subscribing).remove(&id);
                if let Some(waiter) = lock(&shared.pending).remove(&id) {
                    let _ = waiter.send(Reply::Frame(other));
                }
            }
        }
    };
    *lock(&shared.closed) = Some(reason.clone());
    lock(&shared.pending).clear();
    for (_, (_, tx)) in lock(&shared.subs).drain() {
        let _ = tx.send(Err(reason.clone()));
    }
}

/// An open subscription: a stream of deliveries.
pub struct Subscription {
    /// The broker's id for it.
    id: u64,
    /// Its topic.
    topic: String,
    /// The first offset the broker said it would deliver.
    start_offset: u64,
    /// Deliveries, routed here by the reader task.
    deliveries: mpsc::UnboundedReceiver<Result<Delivery, ClientError>>,
    /// For acks and nacks.
    client: Client,
}

impl Subscription {
    /// The broker's id for this subscription.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The first offset the broker said it would deliver.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// The next delivery; `None` once the connection has closed and every
    /// delivery was taken (an error first says why it closed).
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        self.deliveries.recv().await
    }

    /// Acknowledge one delivery.
    pub async fn ack(&self, offset: u64) -> Result<(), ClientError> {
        self.client.ack(self.id, vec![offset]).await
    }

    /// Acknowledge several deliveries.
    pub async fn ack_many(&self, offsets: Vec<u64>) -> Result<(), ClientError> {
        self.client.ack(self.id, offsets).await
    }

    /// Ask for a delivery again.
    pub async fn nack(&self, offset: u64) -> Result<(), ClientError> {
        self.client.nack(self.id, vec![offset]).await
    }

    /// Close this subscription.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.client.unsubscribe(self.id).await
    }
}

impl futures_util::Stream for Subscription {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.deliveries.poll_recv(cx)
    }
}
