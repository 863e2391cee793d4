//! Subscription deliveries: a manager that follows `fhir.Subscription` and
//! one delivery loop per active Subscription.
//!
//! Each delivery loop reads its sources (`fhir.<Type>` and `fhir.inbound`)
//! through its own durable cursors (`subscription/<id>/<topic>`), placed at
//! the topics' ends when the Subscription was stored. On a websocket
//! channel a matching record is sent to the bound connections, waiting
//! (without skipping) while none is bound (see [`super::websocket`]). On a
//! rest-hook a matching record is posted until the endpoint answers 2xx; a non-2xx answer
//! or a timeout spends one of `max_attempts`, after which the notification
//! goes to `dlq.subscription.<id>` (atomically with the cursor advance) and
//! the next one goes. An endpoint that cannot be reached is retried forever
//! with the same bounded backoff without spending attempts: while it is
//! down nothing is lost, and it gets everything once back. After a crash a
//! loop resumes at its cursor, written once per batch: the notifications of
//! the last batch or two may be sent again (at-least-once), none is
//! skipped. Cursors are placed, kept and released by the writes of the
//! Subscription itself ([`super::subscription::cursor_changes`]).

use super::hook;
use super::resource;
use super::subscription::{self, Channel, Spec, CURSOR_KIND, TOPIC};
use super::websocket::{self, Bindings};
use crate::events::{SubscriptionDelivery, SubscriptionOutcome, SubscriptionsChanged};
use crate::headers;
use crate::metrics::Metrics;
use crate::storage::{cursor_key, now_ms, AtomicWrite, Record, StorageError, Store};
use medbus_config::fhir::SubscriptionSettings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Records read per storage call.
const READ_BATCH: usize = 256;

/// Delivery settings from `[fhir.subscriptions]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// First retry delay.
    pub initial: Duration,
    /// Longest retry delay.
    pub max: Duration,
    /// Attempts per notification before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait for the endpoint's status line.
    pub timeout: Duration,
}

impl Settings {
    /// From the config.
    pub fn from_config(s: &SubscriptionSettings) -> Settings {
        Settings {
            initial: s.retry.initial.0,
            max: s.retry.max.0,
            max_attempts: *s.retry.max_attempts.get_ref(),
            timeout: s.timeout.0,
        }
    }
}

/// The active Subscriptions and their lag, shared with the gateway.
#[derive(Default)]
pub struct Registry {
    lag: Mutex<HashMap<String, u64>>,
}

impl Registry {
    /// Whether `id` is active.
    pub fn contains(&self, id: &str) -> bool {
        self.lag.lock().map(|m| m.contains_key(id)).unwrap_or(false)
    }
    /// Active Subscriptions.
    pub fn len(&self) -> usize {
        self.lag.lock().map(|m| m.len()).unwrap_or(0)
    }
    /// Whether none is active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn set(&self, id: &str, lag: u64, metrics: &Metrics) {
        if let Ok(mut m) = self.lag.lock() {
            m.insert(id.to_string(), lag);
            let total: u64 = m.values().sum();
            metrics
                .fhir_subscription_lag_records
                .set(i64::try_from(total).unwrap_or(i64::MAX));
        }
    }
    fn remove(&self, id: &str) {
        if let Ok(mut m) = self.lag.lock() {
            m.remove(id);
        }
    }
}

/// The subscription manager: a [`crate::task`] loop.
pub struct Notifier;

/// Stops the manager and every delivery loop.
pub type NotifierHandle = crate::task::LoopHandle;

impl Notifier {
    /// Start the manager on `arbiter`.
    pub fn spawn(
        settings: Settings,
        store: Store,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        bindings: Arc<Bindings>,
        arbiter: &actix::ArbiterHandle,
    ) -> NotifierHandle {
        crate::task::spawn("fhir-subscriptions".into(), arbiter, move |stop| {
            manage(Arc::new(settings), store, metrics, registry, bindings, stop)
        })
    }
}

/// A running delivery loop.
struct Running {
    /// The stored resource's fingerprint: a changed Subscription restarts.
    version: u64,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Follow `fhir.Subscription` (from its start: it holds every change) and
/// keep one delivery loop per active Subscription.
async fn manage(
    settings: Arc<Settings>,
    store: Store,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    bindings: Arc<Bindings>,
    mut stop: watch::Receiver<bool>,
) {
    let mut commits = store.commits();
    let mut next = 0u64;
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        commits.borrow_and_update();
        // Everything there is to read, before acting: only each
        // Subscription's latest state counts (at start, a long history
        // must not start and stop loops for states long gone).
        let mut latest: HashMap<String, Option<(u64, Spec)>> = HashMap::new();
        let mut failed = None;
        loop {
            let (batch, after) = match store.read_sound(TOPIC, next, READ_BATCH) {
                Ok(read) => read,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // A read may stop short of READ_BATCH: done only when it
            // moved nothing on.
            let full = after > next;
            next = after;
            for (_, record) in &batch {
                let Some(id) = record.header(headers::FHIR_ID) else {
                    continue;
                };
                let spec = (record.header(headers::FHIR_DELETED) != Some("true"))
                    .then(|| resource::parse_resource(&record.payload).ok())
                    .flatten()
                    .and_then(|m| subscription::spec(&m).ok())
                    .filter(|s| s.active);
                latest.insert(
                    id.to_string(),
                    spec.map(|s| (crate::storage::fingerprint(&record.payload), s)),
                );
            }
            if !full {
                break;
            }
        }
        match failed {
            Some(StorageError::Closed) => break,
            Some(e) if latest.is_empty() => {
                tracing::error!(error = %e, "subscriptions: cannot read; retrying");
                tokio::time::sleep(settings.initial).await;
                continue;
            }
            _ => {}
        }
        if latest.is_empty() {
            tokio::select! {
                c = commits.changed() => if c.is_err() { break },
                _ = stop.changed() => {}
            }
            continue;
        }
        for (id, spec) in latest {
            let same = match (&spec, running.get(&id)) {
                (Some((v, _)), Some(r)) => r.version == *v,
                _ => false,
            };
            if same {
                continue;
            }
            // Changed, off or gone: its websockets bind again (and are
            // checked again against what it now watches).
            bindings.forget(&id);
            if let Some(r) = running.remove(&id) {
                r.stop().await;
                registry.remove(&id);
            }
            if let Some((version, spec)) = spec {
                registry.set(&id, 0, &metrics);
                let (tx, rx) = watch::channel(false);
                let worker = Worker {
                    spec: Arc::new(spec),
                    settings: settings.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                    registry: registry.clone(),
                    bindings: bindings.clone(),
                    poster: None,
                    in_flight: None,
                    stop: rx,
                    seed: crate::task::Jitter::new(),
                };
                let done = actix_rt::spawn(worker.run());
                running.insert(
                    id,
                    Running {
                        version,
                        stop: tx,
                        done,
                    },
                );
            }
        }
        SubscriptionsChanged {
            active: running.len(),
        }
        .emit(&metrics);
    }
    for (id, r) in running.drain() {
        r.stop().await;
        registry.remove(&id);
        bindings.forget(&id);
    }
}

/// A storage write's answer, awaited later.
type PendingWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<(String, u64)>, StorageError>>>>;

/// A batch's write on its way to durable storage, with what it settles.
struct InFlight {
    write: AtomicWrite,
    done: PendingWrite,
    /// (outcome, record timestamp) of each notification of the batch,
    /// counted once the write is durable.
    outcomes: Vec<(SubscriptionOutcome, u64)>,
}

/// What became of one notification.
enum Delivery {
    Delivered,
    Failed(String),
    Stopped,
}

struct Worker {
    spec: Arc<Spec>,
    settings: Arc<Settings>,
    store: Store,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    /// Websocket connections bound to Subscriptions.
    bindings: Arc<Bindings>,
    /// The rest-hook's kept-alive connection.
    poster: Option<hook::Poster>,
    /// The last batch's write (cursor and dead letters), still in flight:
    /// the next batch is delivered while it is made durable.
    in_flight: Option<InFlight>,
    stop: watch::Receiver<bool>,
    /// Jitter for retry delays.
    seed: crate::task::Jitter,
}

impl Worker {
    fn key(&self, topic: &str) -> Vec<u8> {
        cursor_key(CURSOR_KIND, &self.spec.id, topic)
    }

    /// Sleep `d` unless asked to stop; `false` when stopping.
    async fn pause(&mut self, d: Duration) -> bool {
        crate::task::pause(&mut self.stop, d).await
    }

    /// `d` with full jitter in [d/2, d].
    fn jitter(&mut self, d: Duration) -> Duration {
        self.seed.apply(d)
    }

    async fn run(mut self) {
        let mut commits = self.store.commits();
        let sources = self.spec.criteria.sources();
        let mut next: Vec<u64> = Vec::new();
        for t in &sources {
            // Cursors are placed when the Subscription is stored; one that
            // is missing (a store from before that, or a failed write)
            // starts at the topic's end rather than replaying its history.
            let at = match self.store.cursor_if_set(&self.key(t)) {
                Ok(Some(n)) => n,
                Err(e) => {
                    tracing::error!(subscription = %self.spec.id, topic = %t, error = %e, "cannot read the cursor: starting at the topic's start");
                    0
                }
                Ok(None) => {
                    let end = self
                        .store
                        .last_offset(t)
                        .ok()
                        .flatten()
                        .map_or(0, |l| l + 1);
                    tracing::warn!(subscription = %self.spec.id, topic = %t, offset = end, "no cursor for this topic: starting at its end");
                    end
                }
            };
            next.push(at);
        }
        tracing::info!(subscription = %self.spec.id, "subscription deliveries started");
        'outer: loop {
            if *self.stop.borrow() {
                break;
            }
            commits.borrow_and_update();
            let mut progressed = false;
            let mut lag = 0u64;
            for (i, topic) in sources.iter().enumerate() {
                let from = next.get(i).copied().unwrap_or(0);
                let (batch, after) = match self.store.read_sound(topic, from, READ_BATCH) {
                    Ok(read) => read,
                    Err(StorageError::Closed) => break 'outer,
                    Err(e) => {
                        tracing::error!(subscription = %self.spec.id, error = %e, "cannot read a source topic");
                        if !self.pause(self.settings.initial).await {
                            break 'outer;
                        }
                        continue;
                    }
                };
                if after > from {
                    progressed = true;
                    match self.handle_batch(topic, &batch, after).await {
                        Some(()) => {
                            if let Some(n) = next.get_mut(i) {
                                *n = after;
                            }
                        }
                        None => break 'outer,
                    }
                }
                let n = next.get(i).copied().unwrap_or(0);
                lag += self
                    .store
                    .last_offset(topic)
                    .ok()
                    .flatten()
                    .map(|l| (l + 1).saturating_sub(n))
                    .unwrap_or(0);
            }
            self.registry.set(&self.spec.id, lag, &self.metrics);
            if !progressed {
                if !self.settle().await {
                    break;
                }
                tokio::select! {
                    c = commits.changed() => if c.is_err() { break },
                    _ = self.stop.changed() => {}
                }
            }
        }
        self.settle().await;
        tracing::info!(subscription = %self.spec.id, "subscription deliveries stopped");
    }

    /// Deliver every match of a batch, then hand over the cursor (after the
    /// batch's last record) and the batch's dead letters as one atomic
    /// write, made durable while the next batch is delivered. One durable
    /// write per batch, not per notification: after a crash the
    /// notifications of the last batch or two may be sent again
    /// (at-least-once), none is skipped. `None` when stopping.
    async fn handle_batch(
        &mut self,
        topic: &str,
        batch: &[(u64, Record)],
        after: u64,
    ) -> Option<()> {
        let want = self.spec.criteria.resource_type.clone();
        let mut write = AtomicWrite::default();
        let mut outcomes = Vec::new();
        // Set when a delivery was cut short, whatever the reason (a stop, or
        // the channel to the subscriber's socket closing): the cursor then
        // stays after the last record handled, not past the batch.
        let mut interrupted = false;
        for (offset, record) in batch {
            // The type is in the headers: the JSON is parsed only when the
            // criteria has parameters to check.
            let matched = record.header(headers::FHIR_RESOURCE_TYPE) == Some(want.as_str())
                && record.header(headers::FHIR_DELETED) != Some("true")
                && (self.spec.criteria.params.is_empty()
                    || resource::parse_resource(&record.payload)
                        .map(|m| self.spec.criteria.matches(&m))
                        .unwrap_or(false));
            if !matched {
                continue;
            }
            let id = record
                .header(headers::FHIR_ID)
                .unwrap_or_default()
                .to_string();
            let body = subscription::notification(
                &self.spec,
                &want,
                &id,
                Some(&record.payload),
                &resource::instant(now_ms()),
            );
            let result = match self.deliver(&body).await {
                // What was delivered before the stop still moves the cursor.
                Delivery::Stopped => {
                    interrupted = true;
                    break;
                }
                Delivery::Delivered => SubscriptionOutcome::Delivered,
                Delivery::Failed(reason) => {
                    let mut h = vec![
                        (headers::ERROR.to_string(), reason),
                        (
                            headers::SOURCE.to_string(),
                            format!("subscription/{}", self.spec.id),
                        ),
                        (headers::SOURCE_TOPIC.to_string(), topic.to_string()),
                        (headers::SOURCE_OFFSET.to_string(), offset.to_string()),
                    ];
                    h.extend(
                        record
                            .headers
                            .iter()
                            .filter(|(k, _)| k.starts_with("fhir."))
                            .cloned(),
                    );
                    write.records.push((
                        format!("dlq.subscription.{}", self.spec.id),
                        Record {
                            timestamp_ms: record.timestamp_ms,
                            headers: h,
                            content_type: headers::CONTENT_TYPE_FHIR.to_string(),
                            payload: body,
                        },
                    ));
                    SubscriptionOutcome::DeadLettered
                }
            };
            write.cursors = vec![(self.key(topic), offset + 1)];
            outcomes.push((result, record.timestamp_ms));
        }
        let stopped = interrupted || *self.stop.borrow();
        if !stopped {
            // Past the batch, and past a damaged record the read passed over.
            write.cursors = vec![(self.key(topic), after)];
        }
        // One write in flight at a time, in order: the previous batch's
        // lands before this one is handed over.
        if !self.settle().await || write.cursors.is_empty() {
            return None;
        }
        self.in_flight = Some(InFlight {
            done: Box::pin(self.store.write_atomic(write.clone())),
            write,
            outcomes,
        });
        if stopped {
            self.settle().await;
            return None;
        }
        Some(())
    }

    /// Wait for the write in flight (writing it again until it lands),
    /// then count its notifications. `false` when stopping or closed.
    async fn settle(&mut self) -> bool {
        let Some(f) = self.in_flight.take() else {
            return true;
        };
        let landed = match f.done.await {
            Ok(_) => true,
            Err(StorageError::Closed) => false,
            Err(e) => {
                tracing::error!(subscription = %self.spec.id, error = %e, "cannot advance the cursor; retrying");
                self.pause(self.settings.initial).await && self.write(f.write).await
            }
        };
        if !landed {
            return false;
        }
        for (outcome, timestamp_ms) in f.outcomes {
            SubscriptionDelivery {
                subscription: &self.spec.id,
                outcome,
                latency: Duration::from_millis(now_ms().saturating_sub(timestamp_ms)),
            }
            .emit(&self.metrics);
        }
        true
    }

    /// Write until it lands (the cursor must move) or we are stopping.
    async fn write(&mut self, w: AtomicWrite) -> bool {
        loop {
            match self.store.write_atomic(w.clone()).await {
                Ok(_) => return true,
                Err(StorageError::Closed) => return false,
                Err(e) => {
                    tracing::error!(subscription = %self.spec.id, error = %e, "cannot advance the cursor; retrying");
                    if !self.pause(self.settings.initial).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Hand one notification to its channel.
    async fn deliver(&mut self, body: &[u8]) -> Delivery {
        let spec = self.spec.clone();
        match &spec.channel {
            Channel::RestHook { endpoint, headers } => self.post(endpoint, headers, body).await,
            Channel::Websocket => self.send(body).await,
        }
    }

    /// Send one notification to the bound websockets, waiting while none
    /// is bound.
    async fn send(&mut self, body: &[u8]) -> Delivery {
        let mut binds = self.bindings.watch_binds();
        let mut counted = false;
        loop {
            if *self.stop.borrow() {
                return Delivery::Stopped;
            }
            binds.borrow_and_update();
            if websocket::send(&self.bindings, &self.spec.id, body, self.settings.timeout).await {
                return Delivery::Delivered;
            }
            // Counted once per notification that has to wait for a client.
            if !counted {
                counted = true;
                SubscriptionDelivery {
                    subscription: &self.spec.id,
                    outcome: SubscriptionOutcome::Unreachable,
                    latency: Duration::ZERO,
                }
                .emit(&self.metrics);
            }
            tokio::select! {
                c = binds.changed() => if c.is_err() { return Delivery::Stopped },
                _ = self.stop.changed() => {}
            }
        }
    }

    /// Post one notification until it is accepted, out of attempts, or we
    /// are stopping.
    async fn post(
        &mut self,
        endpoint: &hook::Endpoint,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Delivery {
        let mut attempts = 0u32;
        let mut delay = self.settings.initial;
        loop {
            if *self.stop.borrow() {
                return Delivery::Stopped;
            }
            let poster = self
                .poster
                .get_or_insert_with(|| hook::Poster::new(endpoint.clone()));
            let result = poster
                .post(
                    headers,
                    Some("application/fhir+json"),
                    body,
                    self.settings.timeout,
                )
                .await;
            let failure = match result {
                Ok(code) if (200..300).contains(&code) => return Delivery::Delivered,
                Ok(code) => {
                    attempts += 1;
                    format!("the endpoint answered {code}")
                }
                Err(hook::HookError::Unreachable(e)) => {
                    SubscriptionDelivery {
                        subscription: &self.spec.id,
                        outcome: SubscriptionOutcome::Unreachable,
                        latency: Duration::ZERO,
                    }
                    .emit(&self.metrics);
                    tracing::debug!(subscription = %self.spec.id, error = %e, "endpoint unreachable; retrying");
                    let wait = self.jitter(delay);
                    delay = (delay * 2).min(self.settings.max);
                    if !self.pause(wait).await {
                        return Delivery::Stopped;
                    }
                    continue;
                }
                Err(e) => {
                    attempts += 1;
                    e.to_string()
                }
            };
            if attempts >= self.settings.max_attempts {
                return Delivery::Failed(format!(
                    "not accepted after {attempts} attempts; last: {failure}"
                ));
            }
            SubscriptionDelivery {
                subscription: &self.spec.id,
                outcome: SubscriptionOutcome::Retried,
                latency: Duration::ZERO,
            }
            .emit(&self.metrics);
            let wait = self.jitter(delay);
            delay = (delay * 2).min(self.settings.max);
            if !self.pause(wait).await {
                return Delivery::Stopped;
            }
        }
    }
}
