//! `Destination`: one legacy receiver, fed in order.
//!
//! The loop reads the source topic at the durable cursor, sends one message,
//! and waits for the ACK that names it:
//! - AA/CA: the cursor advances (durably) and the next message goes.
//! - AE/CE, an ACK timeout, or the connection lost after sending: the same
//!   message is retried after an exponential, jittered, bounded delay; each
//!   counts against `retry.max_attempts`.
//! - AR/CR, or the budget spent: `on_failure = "dead-letter"` writes it to
//!   `dlq.<name>` with the reason and advances (atomically), so the rest keep
//!   flowing; `"block"` keeps retrying it at the longest delay, in order.
//! - The receiver unreachable: reconnect with the same backoff, forever, and
//!   without spending the message's budget — a downstream outage is not the
//!   message's fault.
//!
//! After a crash the loop resumes at the durable cursor: the message that was
//! in flight may be sent again (at-least-once), none is skipped.

use super::link::{Link, LinkError};
use super::prepare::prepare;
use super::progress::Progress;
use crate::events::{DestinationAttempt, DestinationDone, DestinationLink, DoneOutcome};
use crate::headers;
use crate::metrics::Metrics;
use crate::storage::{cursor_key, now_ms, AtomicWrite, Record, StorageError, Store};
use crate::task::LoopHandle;
use medbus_config::destination::{DestinationConfig, OnFailure};
use medbus_config::route::{compile, Condition};
use medbus_config::{Config, Subject};
use medbus_hl7::{Message, Path};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Cursor kind of destinations in the cursor tree.
pub const CURSOR_KIND: &str = "destination";

/// Records read per storage call.
const READ_BATCH: usize = 64;

/// A destination's settings, resolved from the config.
pub struct Settings {
    /// Name.
    pub name: String,
    /// Source topic.
    pub from: String,
    /// `host:port`.
    pub connect: String,
    /// Filter.
    pub when: Condition,
    /// Field rewrites.
    pub set: Vec<(Path, String)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// ACK timeout.
    pub ack_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before `on_failure`.
    pub max_attempts: u32,
    /// Dead-letter or block.
    pub on_failure: OnFailure,
    /// Largest ACK accepted.
    pub max_ack: usize,
    /// `dlq.<name>`.
    pub dead_letter_topic: String,
    /// TLS to the receiver.
    pub tls: Option<super::link::LinkTls>,
    /// `log_payloads`: the receiver's error text (which may quote the
    /// message) is logged only then.
    pub log_payloads: bool,
}

impl Settings {
    /// From a validated config entry of `config`.
    pub fn from_config(d: &DestinationConfig, config: &Config) -> Result<Settings, String> {
        let mut problems = Vec::new();
        let when = d
            .when
            .as_ref()
            .map(|w| compile(w, "when", &mut problems))
            .unwrap_or(Condition::Always);
        Ok(Settings {
            name: d.name().to_string(),
            from: d.from.get_ref().clone(),
            connect: d.connect.get_ref().clone(),
            when,
            set: d
                .set
                .iter()
                .filter_map(|(k, v)| k.parse().ok().map(|p| (p, v.clone())))
                .collect(),
            connect_timeout: d.connect_timeout.0,
            ack_timeout: d.ack_timeout.0,
            retry_initial: d.retry.initial.0,
            retry_max: d.retry.max.0,
            max_attempts: *d.retry.max_attempts.get_ref(),
            on_failure: d.on_failure,
            max_ack: usize::try_from(d.max_ack.0).unwrap_or(usize::MAX),
            dead_letter_topic: d.dead_letter_topic(),
            tls: match &d.tls {
                Some(t) => Some(crate::tls::connector(t, d.connect.get_ref())?),
                None => None,
            },
            log_payloads: config.log_payloads,
        })
    }
}

/// Why a message was not delivered. `receiver` is the receiver's own text
/// (MSA-3, ERR), which may quote the message (receivers often echo a
/// patient's name in "cannot file …"): the dead letter's `medbus.error`
/// header keeps it whole, logs show it only with `log_payloads`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    what: String,
    receiver: String,
}

impl Failure {
    /// A failure with nothing from the receiver.
    fn plain(what: String) -> Failure {
        Failure {
            what,
            receiver: String::new(),
        }
    }

    /// `what: receiver text`, or `what` alone without the receiver's text
    /// (or when it sent none).
    fn text(&self, with_receiver: bool) -> String {
        if with_receiver && !self.receiver.is_empty() {
            format!("{}: {}", self.what, self.receiver)
        } else {
            self.what.clone()
        }
    }
}

/// One running destination: a [`crate::task`] loop on the pipeline arbiter.
pub struct Destination;

/// Stops a running destination (after the message in flight is settled).
pub type DestinationHandle = LoopHandle;

impl Destination {
    /// Start a destination on `arbiter`.
    pub fn spawn(
        settings: Settings,
        store: Store,
        metrics: Arc<Metrics>,
        arbiter: &actix::ArbiterHandle,
    ) -> DestinationHandle {
        let name = settings.name.clone();
        crate::task::spawn(name, arbiter, move |stop| {
            metrics.init_destination(&settings.name);
            let progress = Some(Progress::open(store.dir(), &settings.name, &settings.from));
            Worker {
                s: Arc::new(settings),
                store,
                metrics,
                stop,
                link: None,
                seed: crate::task::Jitter::new(),
                progress,
                durable: (std::time::Instant::now(), 0),
            }
            .run()
        })
    }
}

/// What became of one message.
enum Delivery {
    /// Positively acknowledged.
    Delivered,
    /// To be dead-lettered for this.
    Failed(Failure),
    /// Asked to stop first.
    Stopped,
}

struct Worker {
    s: Arc<Settings>,
    store: Store,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    link: Option<Link>,
    /// Jitter for retry delays.
    seed: crate::task::Jitter,
    /// Progress between durable cursor commits (None: replay, which moves
    /// no cursor).
    progress: Option<Progress>,
    /// When the durable cursor was last committed, and to what.
    durable: (std::time::Instant, u64),
}

impl Worker {
    fn cursor_key(&self) -> Vec<u8> {
        cursor_key(CURSOR_KIND, &self.s.name, &self.s.from)
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
        let mut next = loop {
            match self.store.cursor(&self.cursor_key()) {
                Ok(n) => {
                    self.durable = (std::time::Instant::now(), n);
                    let recorded = self.progress.as_ref().and_then(Progress::read).unwrap_or(0);
                    break n.max(recorded);
                }
                Err(e) => {
                    tracing::error!(destination = %self.s.name, error = %e, "cannot read the cursor");
                    if !self.pause(self.s.retry_initial).await {
                        return;
                    }
                }
            }
        };
        tracing::info!(destination = %self.s.name, from = %self.s.from, connect = %self.s.connect, next, "destination started");
        loop {
            if *self.stop.borrow() {
                break;
            }
            commits.borrow_and_update();
            let batch = match self.store.read(&self.s.from, next, READ_BATCH) {
                Ok(b) => b,
                Err(StorageError::Closed) => break,
                // The next record is damaged on disk: dead-lettered with its
                // bytes as they are on disk, like a message the peer
                // rejects, rather than stall the destination for ever.
                Err(StorageError::Damaged { offset, what, .. }) if offset >= next => {
                    let record = Record {
                        timestamp_ms: now_ms(),
                        headers: Vec::new(),
                        content_type: headers::CONTENT_TYPE_RAW.to_string(),
                        payload: self
                            .store
                            .read_damaged(&self.s.from, offset)
                            .unwrap_or_default(),
                    };
                    let reason = Failure::plain(Store::damaged_reason(what));
                    match self
                        .settle(offset, &record, DoneOutcome::DeadLettered, Some(reason))
                        .await
                    {
                        Some(n) => next = n,
                        None => break,
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(destination = %self.s.name, error = %e, "cannot read the source topic");
                    if !self.pause(self.s.retry_initial).await {
                        break;
                    }
                    continue;
                }
            };
            self.report_lag(next);
            if batch.is_empty() {
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { break },
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            for (offset, record) in batch {
                match self.handle(offset, &record).await {
                    Some(n) => next = n,
                    None => {
                        self.commit_cursor(next).await;
                        self.finish();
                        return;
                    }
                }
            }
            self.report_lag(next);
            // Caught up with what was read: make the position durable now
            // rather than at the next tick.
            if next > self.durable.1 && self.durable.0.elapsed() >= super::progress::DURABLE_EVERY {
                self.commit_cursor(next).await;
            }
        }
        self.commit_cursor(next).await;
        self.finish();
    }

    /// Commit the durable cursor (awaited; retried while it fails, unless
    /// stopping).
    async fn commit_cursor(&mut self, next: u64) {
        if next <= self.durable.1 {
            return;
        }
        let write = AtomicWrite {
            records: Vec::new(),
            cursors: vec![(self.cursor_key(), next)],
            released: Vec::new(),
        };
        match self.store.write_atomic(write).await {
            Ok(_) => self.durable = (std::time::Instant::now(), next),
            Err(e) => {
                tracing::warn!(destination = %self.s.name, error = %e, "cannot commit the cursor; will try again")
            }
        }
    }

    fn finish(&mut self) {
        self.link = None;
        DestinationLink {
            destination: &self.s.name,
            connected: false,
        }
        .emit(&self.metrics);
        tracing::info!(destination = %self.s.name, "destination stopped");
    }

    fn report_lag(&self, next: u64) {
        let lag = self
            .store
            .last_offset(&self.s.from)
            .ok()
            .flatten()
            .map(|last| (last + 1).saturating_sub(next))
            .unwrap_or(0);
        self.metrics.set_destination_lag(&self.s.name, lag);
    }

    /// Deliver (or skip, or dead-letter) one record and advance the cursor;
    /// returns the next offset, or `None` when stopping.
    async fn handle(&mut self, offset: u64, record: &Record) -> Option<u64> {
        let wanted = matches!(self.s.when, Condition::Always) || {
            let hl7 = Message::parse(&record.payload).ok();
            self.s.when.matches(&Subject {
                message: hl7.as_ref(),
                resource_type: record.header(headers::FHIR_RESOURCE_TYPE),
            })
        };
        let (outcome, dead_letter) = if !wanted {
            (DoneOutcome::Filtered, None)
        } else {
            match prepare(record, &self.s.set) {
                Err(reason) => (DoneOutcome::DeadLettered, Some(Failure::plain(reason))),
                Ok(p) => {
                    self.metrics
                        .set_destination_inflight(&self.s.name, now_ms());
                    let d = self.deliver(offset, &p.payload, &p.control_id).await;
                    self.metrics.set_destination_inflight(&self.s.name, 0);
                    match d {
                        Delivery::Delivered => (DoneOutcome::Delivered, None),
                        Delivery::Failed(reason) => (DoneOutcome::DeadLettered, Some(reason)),
                        Delivery::Stopped => return None,
                    }
                }
            }
        };
        // Delivered or filtered: record progress cheaply; the durable cursor
        // follows every DURABLE_EVERY.
        if dead_letter.is_none() {
            if let Some(p) = self.progress.as_mut().filter(|p| p.available()) {
                p.write(offset + 1);
                if self.durable.0.elapsed() >= super::progress::DURABLE_EVERY {
                    self.commit_cursor(offset + 1).await;
                }
                DestinationDone {
                    destination: &self.s.name,
                    outcome,
                    offset,
                    reason: None,
                }
                .emit(&self.metrics);
                return Some(offset + 1);
            }
        }
        self.settle(offset, record, outcome, dead_letter).await
    }

    /// Write the dead letter (if any) and the cursor past `offset` in one
    /// atomic step, retrying until it lands; returns the next offset, or
    /// `None` when stopping.
    async fn settle(
        &mut self,
        offset: u64,
        record: &Record,
        outcome: DoneOutcome,
        dead_letter: Option<Failure>,
    ) -> Option<u64> {
        let mut write = AtomicWrite::default();
        if let Some(failure) = &dead_letter {
            let mut h = record.headers.clone();
            h.push((headers::ERROR.to_string(), failure.text(true)));
            h.push((
                headers::SOURCE.to_string(),
                format!("destination/{}", self.s.name),
            ));
            h.push((headers::SOURCE_TOPIC.to_string(), self.s.from.clone()));
            h.push((headers::SOURCE_OFFSET.to_string(), offset.to_string()));
            write.records.push((
                self.s.dead_letter_topic.clone(),
                Record {
                    timestamp_ms: record.timestamp_ms,
                    headers: h,
                    content_type: record.content_type.clone(),
                    payload: record.payload.clone(),
                },
            ));
        }
        write.cursors.push((self.cursor_key(), offset + 1));
        // The cursor must move, or the message would be sent again: retry
        // the write until it lands (or we are asked to stop).
        loop {
            match self.store.write_atomic(write.clone()).await {
                Ok(_) => {
                    self.durable = (std::time::Instant::now(), offset + 1);
                    if let Some(p) = self.progress.as_mut() {
                        p.write(offset + 1);
                    }
                    break;
                }
                Err(StorageError::Closed) => return None,
                Err(e) => {
                    tracing::error!(destination = %self.s.name, error = %e, "cannot advance the cursor; retrying");
                    if !self.pause(self.s.retry_initial).await {
                        return None;
                    }
                }
            }
        }
        let logged = dead_letter.map(|f| f.text(self.s.log_payloads));
        DestinationDone {
            destination: &self.s.name,
            outcome,
            offset,
            reason: logged.as_deref(),
        }
        .emit(&self.metrics);
        Some(offset + 1)
    }

    /// Send one message until it is positively acknowledged, rejected, out
    /// of attempts, or we are asked to stop.
    async fn deliver(&mut self, offset: u64, payload: &[u8], control_id: &str) -> Delivery {
        let mut attempts = 0u32;
        let mut delay = self.s.retry_initial;
        let mut first_try = true;
        loop {
            if *self.stop.borrow() {
                return Delivery::Stopped;
            }
            // Keep the lag current while a message is stuck (not on the
            // first try: the loop above reports it once per batch).
            if !first_try {
                self.report_lag(offset);
            }
            first_try = false;
            if self.link.is_none() {
                match Link::connect(
                    &self.s.connect,
                    self.s.connect_timeout,
                    self.s.max_ack,
                    self.s.tls.as_ref(),
                )
                .await
                {
                    Ok(l) => {
                        self.link = Some(l);
                        DestinationLink {
                            destination: &self.s.name,
                            connected: true,
                        }
                        .emit(&self.metrics);
                        delay = self.s.retry_initial;
                    }
                    Err(e) => {
                        DestinationAttempt::unreachable(&self.s.name, &e).emit(&self.metrics);
                        let wait = self.jitter(delay);
                        delay = (delay * 2).min(self.s.retry_max);
                        if !self.pause(wait).await {
                            return Delivery::Stopped;
                        }
                        continue;
                    }
                }
            }
            let Some(link) = self.link.as_mut() else {
                continue;
            };
            let metrics = self.metrics.clone();
            let name = self.s.name.clone();
            let result = link
                .exchange(payload, control_id, self.s.ack_timeout, || {
                    metrics
                        .destination_acks
                        .with_label_values(&[&name, "wrong"])
                        .inc();
                })
                .await;
            attempts += 1;
            // What failed, and the retry reason it counts under if retried.
            let (failure, retry_reason) = match result {
                Ok(ack) if ack.code == "AA" || ack.code == "CA" => {
                    DestinationAttempt::acked(&self.s.name, &ack.code).emit(&self.metrics);
                    return Delivery::Delivered;
                }
                Ok(ack) if ack.code == "AR" || ack.code == "CR" => {
                    DestinationAttempt::acked(&self.s.name, &ack.code).emit(&self.metrics);
                    let reason = Failure {
                        what: format!("rejected by the receiver ({})", ack.code),
                        receiver: ack.text,
                    };
                    match self.s.on_failure {
                        OnFailure::DeadLetter => return Delivery::Failed(reason),
                        OnFailure::Block => (reason, "rejected"),
                    }
                }
                Ok(ack) => {
                    DestinationAttempt::acked(&self.s.name, &ack.code).emit(&self.metrics);
                    let nak = Failure {
                        what: format!("negative ACK {}", ack.code),
                        receiver: ack.text,
                    };
                    (nak, "nak")
                }
                Err(e) => {
                    // Drop the link: a late ACK must never be read as the
                    // answer to what is sent next.
                    self.link = None;
                    DestinationLink {
                        destination: &self.s.name,
                        connected: false,
                    }
                    .emit(&self.metrics);
                    let kind = match e {
                        LinkError::Timeout { .. } => "timeout",
                        _ => "connection",
                    };
                    DestinationAttempt::failed(&self.s.name, kind).emit(&self.metrics);
                    (Failure::plain(e.to_string()), kind)
                }
            };
            let retried = |metrics: &Metrics| {
                metrics
                    .destination_retries
                    .with_label_values(&[&self.s.name, retry_reason])
                    .inc();
            };
            let blocked = attempts >= self.s.max_attempts || retry_reason == "rejected";
            let logged = failure.text(self.s.log_payloads);
            if blocked {
                match self.s.on_failure {
                    OnFailure::DeadLetter => {
                        return Delivery::Failed(Failure {
                            what: format!(
                                "no positive ACK after {attempts} attempts; last: {}",
                                failure.what
                            ),
                            receiver: failure.receiver,
                        })
                    }
                    OnFailure::Block => {
                        self.metrics.set_destination_blocked(&self.s.name, true);
                        tracing::error!(
                            destination = %self.s.name, control_id, attempts, reason = %logged,
                            "delivery blocked: retrying this message at the longest delay; later messages wait"
                        );
                        retried(&self.metrics);
                        let wait = self.s.retry_max;
                        if !self.pause(wait).await {
                            self.metrics.set_destination_blocked(&self.s.name, false);
                            return Delivery::Stopped;
                        }
                        continue;
                    }
                }
            }
            self.metrics.set_destination_blocked(&self.s.name, false);
            retried(&self.metrics);
            tracing::warn!(destination = %self.s.name, control_id, attempts, reason = %logged, "delivery failed; retrying");
            let wait = self.jitter(delay);
            delay = (delay * 2).min(self.s.retry_max);
            if !self.pause(wait).await {
                return Delivery::Stopped;
            }
        }
    }
}

/// Send offsets `from..=to` of the destination's source topic to its
/// receiver again, in order, with the usual ACK checks and retries; a
/// message that fails goes to the dead-letter topic marked as replayed. The
/// live destination's cursor is not touched.
pub async fn replay_range(
    settings: Settings,
    store: Store,
    metrics: Arc<Metrics>,
    from: u64,
    to: u64,
) -> Result<crate::replay::ReplaySummary, StorageError> {
    // Kept alive for the whole replay: a dropped sender would read as "stop".
    let (_stop_tx, stop_rx) = watch::channel(false);
    let mut w = Worker {
        s: Arc::new(settings),
        store: store.clone(),
        metrics,
        stop: stop_rx,
        link: None,
        seed: crate::task::Jitter::new(),
        progress: None,
        durable: (std::time::Instant::now(), 0),
    };
    let mut summary = crate::replay::ReplaySummary::default();
    let mut next = from;
    while next <= to {
        let batch = store.read(&w.s.from, next, READ_BATCH)?;
        let Some(&(last, _)) = batch.last() else {
            break;
        };
        for (offset, record) in batch.into_iter().filter(|(o, _)| *o <= to) {
            summary.read += 1;
            let hl7 = Message::parse(&record.payload).ok();
            let wanted = w.s.when.matches(&Subject {
                message: hl7.as_ref(),
                resource_type: record.header(headers::FHIR_RESOURCE_TYPE),
            });
            drop(hl7);
            if !wanted {
                summary.filtered += 1;
                continue;
            }
            let failure = match prepare(&record, &w.s.set) {
                Err(reason) => Some(Failure::plain(reason)),
                Ok(p) => match w.deliver(offset, &p.payload, &p.control_id).await {
                    Delivery::Delivered => None,
                    Delivery::Failed(reason) => Some(reason),
                    Delivery::Stopped => return Ok(summary),
                },
            };
            match failure {
                None => summary.written += 1,
                Some(failure) => {
                    let mut h = record.headers.clone();
                    h.push((headers::ERROR.to_string(), failure.text(true)));
                    h.push((
                        headers::SOURCE.to_string(),
                        format!("destination/{}", w.s.name),
                    ));
                    h.push((headers::REPLAYED.to_string(), "true".into()));
                    let write = AtomicWrite {
                        records: vec![(
                            w.s.dead_letter_topic.clone(),
                            Record {
                                timestamp_ms: record.timestamp_ms,
                                headers: h,
                                content_type: record.content_type.clone(),
                                payload: record.payload.clone(),
                            },
                        )],
                        ..AtomicWrite::default()
                    };
                    store.write_atomic(write).await?;
                    summary.dead_lettered += 1;
                }
            }
        }
        next = last + 1;
    }
    Ok(summary)
}
