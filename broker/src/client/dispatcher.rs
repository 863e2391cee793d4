//! `Dispatcher`: feeds one topic to its subscribers — one dispatcher per
//! private subscription, and one per (consumer group, topic) shared by the
//! group's members.
//!
//! It wakes on every group commit (no polling), reads the topic from its
//! position, and hands each record to one member that has credit left
//! (round robin), so a member never has more than its credit window of
//! unacknowledged deliveries. A slow member only stops receiving; the topic,
//! the publishers and the other subscribers are never held back, and memory
//! is bounded by the credit windows.
//!
//! Per offset the dispatcher knows: delivered and unacknowledged (and to
//! whom), to be delivered again (nacked, or its member left), or
//! acknowledged. The group's committed offset is the first offset not yet
//! acknowledged; an ack that moves it is answered only after the new value
//! is durable (cursor `group/<group>/<topic>`), so a group resumes there
//! after a reconnect or a broker restart. Acks above a gap are kept in
//! memory only: after a broker restart those records are delivered again
//! (at-least-once).

use crate::events::{ConsumerLagChanged, ConsumerSkipped};
use crate::metrics::Metrics;
use crate::storage::{cursor_key, AtomicWrite, RawRecord, StorageError, Store};
use actix::prelude::*;
use medbus_protocol::StartAt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// Cursor kind of consumer groups in the cursor tree.
pub const CURSOR_KIND: &str = "group";

/// Most consumer groups (× topics) with a committed offset in the store:
/// each holds retention back and has a lag series until deleted.
pub const MAX_DURABLE_GROUPS: usize = 4096;

/// Records read from the topic per storage call: amortises the read while
/// keeping one wake-up's work small.
const READ_BATCH: u64 = 256;

/// Most offsets between a group's committed offset and its read position:
/// one stuck record cannot make the set of acknowledged offsets above it
/// grow without bound.
pub const MAX_GROUP_SPAN: u64 = 100_000;

/// Most consumer groups (× topics) with a member connected at once: each is
/// an actor, and group names come from clients.
pub const MAX_GROUPS: usize = 1024;

/// Records a group has not acknowledged: from its committed offset to the
/// end of the topic, not counting records retention removed (they are not
/// behind: they are gone; `first` is the topic's oldest offset).
pub fn group_lag(after_last: u64, committed: u64, first: Option<u64>) -> u64 {
    after_last.saturating_sub(committed.max(first.unwrap_or(0)))
}

/// A record for a member, pushed to its session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The member's subscription id on its connection.
    pub subscription: u64,
    /// The record's offset.
    pub offset: u64,
    /// The record, as stored: sent on without decoding.
    pub record: RawRecord,
}

/// A subscriber joins; answered with the first offset it will be given.
#[derive(Message)]
#[rtype(result = "Result<u64, StorageError>")]
pub struct Join {
    /// Unique member id (see [`next_member_id`]).
    pub member: u64,
    /// Its subscription id, named in deliveries.
    pub subscription: u64,
    /// Most unacknowledged deliveries.
    pub credits: u32,
    /// Where deliveries go.
    pub recipient: Recipient<Deliver>,
    /// Start position when the group has no committed offset (always, for
    /// a private subscription).
    pub start: StartAt,
}

/// The member's Subscribed reply is written: deliveries may follow.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Start {
    /// Which member.
    pub member: u64,
}

/// Acknowledge deliveries; resolves once the group's offset is durable.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Ack {
    /// Which member.
    pub member: u64,
    /// Offsets it was delivered.
    pub offsets: Vec<u64>,
}

/// Give deliveries back for redelivery.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Nack {
    /// Which member.
    pub member: u64,
    /// Offsets it was delivered.
    pub offsets: Vec<u64>,
}

/// A member is gone: its unacknowledged deliveries go back to the pool.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// Which member.
    pub member: u64,
}

/// A fresh member id, unique in this process.
pub fn next_member_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One subscriber.
struct Member {
    /// Its subscription id on its connection.
    subscription: u64,
    /// Its credit window.
    credits: u32,
    /// Deliveries it has not acknowledged.
    inflight: u32,
    /// Its session.
    recipient: Recipient<Deliver>,
    /// Whether its Subscribed reply is out (deliveries may follow).
    started: bool,
}

impl Member {
    fn has_room(&self) -> bool {
        self.started && self.inflight < self.credits
    }
}

/// Feeds one topic to one private subscriber or one consumer group.
pub struct Dispatcher {
    /// The topic read.
    topic: String,
    /// The consumer group, or `None` for a private subscription.
    group: Option<String>,
    /// The group's durable cursor key.
    cursor: Option<Vec<u8>>,
    /// Where records are read and the group's offset is written.
    store: Store,
    /// Lag gauge.
    metrics: Arc<Metrics>,
    /// Whether the start position has been resolved (on the first Join).
    positioned: bool,
    /// Every offset below is acknowledged (durably, for a group).
    committed: u64,
    /// The next offset to read from the topic.
    next: u64,
    /// Delivered and unacknowledged: offset → member.
    inflight: BTreeMap<u64, u64>,
    /// To be delivered again before new records.
    redeliver: BTreeSet<u64>,
    /// Acknowledged offsets at or above `committed`.
    acked: BTreeSet<u64>,
    /// The subscribers, by member id.
    members: BTreeMap<u64, Member>,
    /// The member that got the last record (round robin).
    last_member: u64,
    /// The store closed (the broker stops): stop whatever the members.
    store_closed: bool,
}

impl Dispatcher {
    /// A dispatcher for `topic`, for `group` or a private subscription.
    pub fn new(topic: &str, group: Option<&str>, store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            topic: topic.to_string(),
            group: group.map(str::to_string),
            cursor: group.map(|g| cursor_key(CURSOR_KIND, g, topic)),
            store,
            metrics,
            positioned: false,
            committed: 0,
            next: 0,
            inflight: BTreeMap::new(),
            redeliver: BTreeSet::new(),
            acked: BTreeSet::new(),
            members: BTreeMap::new(),
            last_member: 0,
            store_closed: false,
        }
    }

    /// The offset `start` names in this topic now.
    fn resolve(&self, start: StartAt) -> Result<u64, StorageError> {
        let after_last = self.store.last_offset(&self.topic)?.map_or(0, |l| l + 1);
        Ok(match start {
            StartAt::Earliest => self
                .store
                .read(&self.topic, 0, 1)?
                .first()
                .map_or(after_last, |(o, _)| *o),
            StartAt::Latest => after_last,
            StartAt::Offset(n) => n,
            StartAt::Timestamp(t) => {
                // First record received at or after t: receive times grow
                // with offsets, so a binary search over offsets finds it.
                let mut lo = self
                    .store
                    .read(&self.topic, 0, 1)?
                    .first()
                    .map_or(after_last, |(o, _)| *o);
                let mut hi = after_last;
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match self.store.read(&self.topic, mid, 1)?.first() {
                        Some((o, r)) if *o < hi && r.timestamp_ms < t => lo = o + 1,
                        _ => hi = mid,
                    }
                }
                lo
            }
        })
    }

    /// Hand out records while some member has room.
    fn pump(&mut self) {
        loop {
            let room: u64 = self
                .members
                .values()
                .filter(|m| m.has_room())
                .map(|m| u64::from(m.credits - m.inflight))
                .sum();
            if room == 0 {
                break;
            }
            if let Some(offset) = self.redeliver.pop_first() {
                match self
                    .store
                    .read_raw(&self.topic, offset, 1)
                    .and_then(readable)
                {
                    Ok(found) => {
                        if let Some((o, record)) = found.into_iter().next() {
                            if o == offset {
                                self.assign(offset, record);
                            }
                        }
                    }
                    Err(e) => {
                        self.redeliver.insert(offset);
                        tracing::warn!(topic = %self.topic, error = %e, "subscription read failed; retried on the next commit");
                        break;
                    }
                }
                continue;
            }
            let span_left = MAX_GROUP_SPAN.saturating_sub(self.next.saturating_sub(self.committed));
            let want = room.min(READ_BATCH).min(span_left);
            if want == 0 {
                break;
            }
            let batch = match self
                .store
                .read_raw(&self.topic, self.next, want as usize)
                .and_then(readable)
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "subscription read failed; retried on the next commit");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (offset, record) in batch {
                if offset > self.next {
                    if let Some(group) = &self.group {
                        ConsumerSkipped {
                            topic: &self.topic,
                            group,
                            from: self.next,
                            to: offset,
                        }
                        .emit(&self.metrics);
                    }
                }
                self.next = offset + 1;
                if !self.acked.contains(&offset) {
                    self.assign(offset, record);
                }
            }
        }
        self.advance();
        self.report_lag();
    }

    /// Give `record` to the next member with room (there is one: `pump`
    /// only reads as many records as there is room).
    fn assign(&mut self, offset: u64, record: RawRecord) {
        let after = (Bound::Excluded(self.last_member), Bound::Unbounded);
        let id = self
            .members
            .range(after)
            .chain(self.members.range(..=self.last_member))
            .find(|(_, m)| m.has_room())
            .map(|(id, _)| *id);
        let Some(id) = id else {
            self.redeliver.insert(offset);
            return;
        };
        if let Some(m) = self.members.get_mut(&id) {
            m.inflight += 1;
            m.recipient.do_send(Deliver {
                subscription: m.subscription,
                offset,
                record,
            });
        }
        self.inflight.insert(offset, id);
        self.last_member = id;
    }

    /// Move `committed` past every offset that is acknowledged (or was
    /// never there).
    fn advance(&mut self) {
        while self.committed < self.next
            && !self.inflight.contains_key(&self.committed)
            && !self.redeliver.contains(&self.committed)
        {
            self.acked.remove(&self.committed);
            self.committed += 1;
        }
    }

    fn report_lag(&self) {
        if let Some(group) = &self.group {
            let after_last = self
                .store
                .last_offset(&self.topic)
                .ok()
                .flatten()
                .map_or(0, |l| l + 1);
            let first = self.store.first_offset(&self.topic).ok().flatten();
            ConsumerLagChanged {
                topic: &self.topic,
                group,
                lag: group_lag(after_last, self.committed, first),
            }
            .emit(&self.metrics);
        }
    }

    /// Take `offsets` back from `member`; returns those it really had.
    fn take_back(&mut self, member: u64, offsets: &[u64]) -> Vec<u64> {
        let mut taken = Vec::new();
        for &o in offsets {
            if self.inflight.get(&o) == Some(&member) {
                self.inflight.remove(&o);
                taken.push(o);
            }
        }
        if let Some(m) = self.members.get_mut(&member) {
            m.inflight = m.inflight.saturating_sub(taken.len() as u32);
        }
        taken
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let commits = futures_util::stream::unfold(self.store.commits(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
        ctx.add_stream(commits);
    }

    /// A group's dispatcher told to stop (its last member left) goes on
    /// when a member joined meanwhile: a Join queued behind that Leave (an
    /// unsubscribe and subscribe back to back) must not land on a
    /// dispatcher that then stops under it.
    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if self.group.is_some() && !self.members.is_empty() && !self.store_closed {
            Running::Continue
        } else {
            Running::Stop
        }
    }
}

impl StreamHandler<()> for Dispatcher {
    fn handle(&mut self, _: (), _ctx: &mut Context<Self>) {
        self.pump();
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The store closed: the broker is stopping.
        self.store_closed = true;
        ctx.stop();
    }
}

impl Handler<Join> for Dispatcher {
    type Result = Result<u64, StorageError>;

    fn handle(&mut self, msg: Join, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.positioned {
            let committed = match &self.cursor {
                Some(key) => self.store.cursor(key)?,
                None => 0,
            };
            // A group that has committed nothing yet starts where asked.
            let start = if committed == 0 {
                self.resolve(msg.start)?
            } else {
                committed
            };
            self.committed = start;
            self.next = start;
            self.positioned = true;
        }
        self.members.insert(
            msg.member,
            Member {
                subscription: msg.subscription,
                credits: msg.credits.max(1),
                inflight: 0,
                recipient: msg.recipient,
                started: false,
            },
        );
        Ok(self
            .redeliver
            .first()
            .copied()
            .unwrap_or(self.next)
            .min(self.next))
    }
}

impl Handler<Start> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Start, _ctx: &mut Context<Self>) {
        if let Some(m) = self.members.get_mut(&msg.member) {
            m.started = true;
        }
        self.pump();
    }
}

impl Handler<Ack> for Dispatcher {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: Ack, _ctx: &mut Context<Self>) -> Self::Result {
        let before = self.committed;
        let taken = self.take_back(msg.member, &msg.offsets);
        self.acked.extend(taken);
        self.pump();
        match &self.cursor {
            Some(key) if self.committed > before => {
                let write = self.store.write_atomic(AtomicWrite {
                    records: Vec::new(),
                    cursors: vec![(key.clone(), self.committed)],
                    released: Vec::new(),
                });
                Box::pin(async move { write.await.map(|_| ()) })
            }
            _ => Box::pin(async { Ok(()) }),
        }
    }
}

impl Handler<Nack> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Nack, _ctx: &mut Context<Self>) {
        let taken = self.take_back(msg.member, &msg.offsets);
        self.redeliver.extend(taken);
        self.pump();
    }
}

impl Handler<Leave> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        let Some(_) = self.members.remove(&msg.member) else {
            return;
        };
        let orphans: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, m)| **m == msg.member)
            .map(|(o, _)| *o)
            .collect();
        for o in orphans {
            self.inflight.remove(&o);
            self.redeliver.insert(o);
        }
        // A private subscription ends with its member; a group's
        // dispatcher with its last member (its position is durable; acks
        // above a gap, kept in memory, are delivered again, as after a
        // restart), so idle groups never fill the table of groups.
        if self.group.is_none() || self.members.is_empty() {
            ctx.stop();
        } else {
            self.pump();
        }
    }
}

/// Admin: forget the group. With no member connected the dispatcher
/// stops and answers with the group's cursor key, for the caller to remove;
/// otherwise `Err` with the number of members connected.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, usize>")]
pub struct Forget;

impl Handler<Forget> for Dispatcher {
    type Result = Result<Option<Vec<u8>>, usize>;

    fn handle(&mut self, _: Forget, ctx: &mut Context<Self>) -> Self::Result {
        if !self.members.is_empty() {
            return Err(self.members.len());
        }
        ctx.stop();
        Ok(self.cursor.clone())
    }
}

/// The running group dispatchers, by (group, topic).
#[derive(Default)]
pub struct Groups {
    /// Each lives while the group has a member (at most [`MAX_GROUPS`]).
    map: Mutex<HashMap<(String, String), Addr<Dispatcher>>>,
}

impl Groups {
    /// The dispatcher of `group` on `topic`, started on first use; `None`
    /// when [`MAX_GROUPS`] are already tracked.
    pub fn get(
        &self,
        group: &str,
        topic: &str,
        store: &Store,
        metrics: &Arc<Metrics>,
    ) -> Option<Addr<Dispatcher>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (group.to_string(), topic.to_string());
        if let Some(addr) = map.get(&key) {
            if addr.connected() {
                return Some(addr.clone());
            }
        }
        // Groups whose last member left have stopped: they free their place.
        map.retain(|_, addr| addr.connected());
        if map.len() >= MAX_GROUPS && !map.contains_key(&key) {
            return None;
        }
        // A group new to the store adds a durable cursor (and a lag series):
        // their number is capped too; `medbus delete-group` frees one.
        let cursor = cursor_key(CURSOR_KIND, group, topic);
        if !matches!(store.cursor(&cursor), Ok(n) if n > 0) {
            let prefix = format!("{CURSOR_KIND}/");
            let durable = store
                .cursors()
                .map(|c| c.iter().filter(|(k, _)| k.starts_with(&prefix)).count())
                .unwrap_or(0);
            if durable >= MAX_DURABLE_GROUPS {
                return None;
            }
        }
        let addr = Dispatcher::new(topic, Some(group), store.clone(), metrics.clone()).start();
        map.insert(key, addr.clone());
        Some(addr)
    }

    /// The dispatcher of `group` on `topic` if one runs (none is started).
    pub fn running(&self, group: &str, topic: &str) -> Option<Addr<Dispatcher>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(group.to_string(), topic.to_string()))
            .filter(|a| a.connected())
            .cloned()
    }

    /// Drop `addr` as the dispatcher of `group` on `topic` (if it still is).
    pub fn remove(&self, group: &str, topic: &str, addr: &Addr<Dispatcher>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (group.to_string(), topic.to_string());
        if map.get(&key) == Some(addr) {
            map.remove(&key);
        }
    }
}

/// A batch whose every envelope this build can read: a subscriber is sent
/// the stored body as it is, so one it could not decode is an error here,
/// as a read failure is.
fn readable(batch: Vec<(u64, RawRecord)>) -> Result<Vec<(u64, RawRecord)>, StorageError> {
    for (offset, r) in &batch {
        r.check()
            .map_err(|e| StorageError::Record(format!("@{offset}: {e}")))?;
    }
    Ok(batch)
}
