//! `MllpSession`: one connected system.
//!
//! Frames are handled strictly one at a time, in arrival order: a frame is
//! parsed, appended to the listener's topic, and answered only when the
//! append is durable (AA), or refused (AR with ERR, raw bytes to
//! `dlq.<listener>`), or failed in storage (AE with ERR, never AA). While a
//! frame waits for its commit the session reads nothing more, so a peer that
//! pipelines frames is held back by TCP flow control and the session's memory
//! stays bounded by the frame cap. Throughput comes from the group commit
//! across connections, not from pipelining within one.

use super::ack_mode::AckMode;
use super::listener::ListenerContext;
use crate::events::{BytesDiscarded, ConnectionClosed, DeadLettered, MessageAnswered, Outcome};
use crate::headers;
use crate::storage::{
    fingerprint, now_ms, AppendOutcome, AppendRequest, DedupKey, Record, StorageError,
};
use crate::tls::Io;
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use bytes::Bytes;
use medbus_hl7::ack::{build_ack, build_ack_for_unparsed, AckCode, AckError};
use medbus_hl7::{ErrorCode, Message};
use medbus_mllp::{Decoded, MllpCodec, MllpError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::WriteHalf;
use tokio_util::codec::FramedRead;

/// How long a connection being closed (after an oversized frame) may stay
/// open for its peer to read the AR and close first.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a session closed by the shutdown drain keeps reading (and
/// dropping) after its last ACK is flushed, unless the peer closes first.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// One connection from a sending system.
pub struct MllpSession {
    /// The listener's settings and the store.
    ctx: Arc<ListenerContext>,
    /// Who is connected: logged and stored with every record.
    peer: SocketAddr,
    /// Buffered, backpressured writer for ACK frames.
    writer: FramedWrite<Bytes, WriteHalf<Box<dyn Io>>, MllpCodec>,
    /// Last time a byte was seen arriving, for the idle timeout.
    last_activity: Instant,
    /// Bytes read from the connection so far (counted as they arrive, so
    /// a large frame trickling in is activity before it is complete).
    bytes_read: Arc<AtomicU64>,
    /// `bytes_read` when the idle timer last looked.
    bytes_seen: u64,
    /// `bytes_read` when the last frame was handled: more than that (and
    /// more than a trailing CR) when idle means a frame was left unfinished.
    bytes_at_frame: u64,
    /// Closing after an oversized frame, or draining at shutdown: further
    /// input is dropped.
    closing: bool,
    /// Draining at shutdown: the session stops once its ACKs are flushed.
    draining: bool,
    /// Bytes the reader's codec discarded outside frames, not yet counted.
    discarded: Arc<AtomicU64>,
}

impl MllpSession {
    /// Start a session actor for an accepted connection.
    pub fn start_for(ctx: Arc<ListenerContext>, stream: Box<dyn Io>, peer: SocketAddr) {
        let (read, write) = tokio::io::split(stream);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let read = crate::counted::Counted::new(read, bytes_read.clone());
        let max_frame = ctx.max_frame;
        let discarded = Arc::new(AtomicU64::new(0));
        let codec = MllpCodec::with_discard_counter(max_frame, discarded.clone());
        MllpSession::create(move |actor_ctx| {
            actor_ctx.add_stream(FramedRead::new(read, codec));
            MllpSession {
                writer: FramedWrite::new(write, MllpCodec::new(max_frame), actor_ctx),
                ctx,
                peer,
                last_activity: Instant::now(),
                bytes_read,
                bytes_seen: 0,
                bytes_at_frame: 0,
                closing: false,
                draining: false,
                discarded,
            }
        });
    }

    /// Queue the ACK (unless the sender's MSH-15 asks for none) and record
    /// how the message ended.
    fn answer(
        &mut self,
        mode: AckMode,
        ack: impl FnOnce(AckCode) -> Vec<u8>,
        outcome: Outcome,
        received: Instant,
        stored_at: Option<(&str, u64)>,
        reason: Option<&str>,
    ) {
        let code = mode.code(outcome);
        let sent = mode.sends(outcome);
        if sent {
            self.writer.write(Bytes::from(ack(code)));
        }
        MessageAnswered {
            listener: &self.ctx.name,
            outcome,
            ack_code: sent.then_some(code.as_str()),
            latency: received.elapsed(),
            stored_at,
            reason,
        }
        .emit(&self.ctx.metrics);
    }

    /// Flush, then shut down the write side. actix's `FramedWrite::close`
    /// only sets a flag; waking the context makes it act on it now rather
    /// than at the next unrelated event.
    fn close_writer(&mut self, ctx: &mut Context<Self>) {
        self.writer.close();
        ctx.run_later(Duration::ZERO, |_, _| {});
    }

    fn count_discarded(&self) {
        BytesDiscarded {
            listener: &self.ctx.name,
            bytes: self.discarded.swap(0, Ordering::Relaxed),
        }
        .emit(&self.ctx.metrics);
    }

    /// Handle one complete frame.
    fn on_frame(&mut self, payload: Bytes, ctx: &mut Context<Self>) {
        let received = Instant::now();
        self.count_discarded();
        let parsed = Message::parse(&payload);
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                let err = AckError::from(&e);
                self.reject(payload, err, received, ctx);
                return;
            }
        };
        let h = msg.header();
        let message_type = h.message_type();
        let control_id = h.control_id.as_deref().unwrap_or("").to_string();
        let mut hdrs = vec![
            (headers::LISTENER.to_string(), self.ctx.name.clone()),
            (headers::PEER.to_string(), self.peer.to_string()),
            (headers::MESSAGE_TYPE.to_string(), message_type.clone()),
            (headers::CONTROL_ID.to_string(), control_id.clone()),
        ];
        for (name, value) in [
            (headers::SENDING_APPLICATION, &h.sending_application),
            (headers::SENDING_FACILITY, &h.sending_facility),
            (headers::RECEIVING_APPLICATION, &h.receiving_application),
            (headers::RECEIVING_FACILITY, &h.receiving_facility),
            (headers::VERSION, &h.version),
        ] {
            if let Some(v) = value {
                hdrs.push((name.to_string(), v.to_string()));
            }
        }
        let dedup = (!self.ctx.dedup_window.is_zero() && !control_id.is_empty()).then(|| {
            let mut key = Vec::with_capacity(64);
            for part in [
                self.ctx.name.as_str(),
                h.sending_application.as_deref().unwrap_or(""),
                h.sending_facility.as_deref().unwrap_or(""),
                control_id.as_str(),
            ] {
                key.extend_from_slice(part.as_bytes());
                key.push(0);
            }
            DedupKey {
                key,
                window: self.ctx.dedup_window,
                fingerprint: fingerprint(&payload),
            }
        });
        let mode = AckMode::of(Some(&msg), self.ctx.acknowledgments);
        let accepted = build_ack(
            &msg,
            mode.code(Outcome::Stored),
            None,
            &crate::ack::next_control_id(),
            &crate::ack::hl7_now(),
        );
        let request = AppendRequest {
            topic: self.ctx.topic.clone(),
            record: Record {
                timestamp_ms: now_ms(),
                headers: hdrs,
                content_type: headers::CONTENT_TYPE_HL7.to_string(),
                payload: payload.to_vec(),
            },
            dedup,
        };
        if self.ctx.log_payloads {
            tracing::debug!(payload = %String::from_utf8_lossy(&payload), "message content");
        }
        let fut = self.ctx.store.append(request);
        ctx.wait(fut.into_actor(self).map(move |result, act, _ctx| {
            let span = tracing::debug_span!(
                "mllp.message",
                listener = %act.ctx.name, control_id = %control_id, message_type = %message_type
            );
            let _enter = span.enter();
            match result {
                Ok(AppendOutcome::Stored { topic, offset }) => {
                    act.answer(
                        mode,
                        |_| accepted,
                        Outcome::Stored,
                        received,
                        Some((&topic, offset)),
                        None,
                    );
                }
                Ok(AppendOutcome::Duplicate { topic, offset }) => {
                    act.answer(
                        mode,
                        |_| accepted,
                        Outcome::Duplicate,
                        received,
                        Some((&topic, offset)),
                        None,
                    );
                }
                Err(e) => {
                    let reason = e.to_string();
                    act.answer(
                        mode,
                        |code| storage_nak(&payload, code, &e),
                        Outcome::Failed,
                        received,
                        None,
                        Some(&reason),
                    );
                }
            }
        }));
    }

    /// Refuse a frame: its raw bytes go to the dead-letter topic (durably),
    /// then an AR with ERR goes back.
    fn reject(
        &mut self,
        payload: Bytes,
        err: AckError,
        received: Instant,
        ctx: &mut Context<Self>,
    ) {
        let request = AppendRequest {
            topic: self.ctx.dead_letter_topic.clone(),
            record: Record {
                timestamp_ms: now_ms(),
                headers: vec![
                    (headers::LISTENER.to_string(), self.ctx.name.clone()),
                    (
                        headers::SOURCE.to_string(),
                        format!("listener/{}", self.ctx.name),
                    ),
                    (headers::PEER.to_string(), self.peer.to_string()),
                    (headers::ERROR.to_string(), err.text.clone()),
                ],
                content_type: headers::CONTENT_TYPE_RAW.to_string(),
                payload: payload.to_vec(),
            },
            dedup: None,
        };
        let fut = self.ctx.store.append(request);
        ctx.wait(fut.into_actor(self).map(move |result, act, _ctx| {
            let span =
                tracing::debug_span!("mllp.message", listener = %act.ctx.name, peer = %act.peer);
            let _enter = span.enter();
            DeadLettered {
                source: &format!("listener/{}", act.ctx.name),
                topic: &act.ctx.dead_letter_topic,
                stored: result.is_ok(),
            }
            .emit(&act.ctx.metrics);
            let header = Message::parse_header_only(&payload).ok();
            let mode = AckMode::of(header.as_ref(), act.ctx.acknowledgments);
            act.answer(
                mode,
                |code| nak_for(&payload, code, &err),
                Outcome::Rejected,
                received,
                None,
                Some(&err.text),
            );
        }));
    }
}

/// A NAK addressed as well as the bytes allow: from the whole message when it
/// parses, from its MSH segment alone when only that parses, else generic.
fn nak_for(payload: &[u8], code: AckCode, err: &AckError) -> Vec<u8> {
    let id = crate::ack::next_control_id();
    let now = crate::ack::hl7_now();
    let parsed = Message::parse(payload).or_else(|_| Message::parse_header_only(payload));
    if let Ok(msg) = parsed {
        return build_ack(&msg, code, Some(err), &id, &now);
    }
    build_ack_for_unparsed(code, err, &id, &now)
}

fn storage_nak(payload: &[u8], code: AckCode, e: &StorageError) -> Vec<u8> {
    let err = AckError {
        code: ErrorCode::ApplicationInternalError,
        location: None,
        text: format!("message not stored, send it again later: {e}"),
    };
    nak_for(payload, code, &err)
}

impl Actor for MllpSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // At shutdown: runs once the message in hand (if any) is answered,
        // as the actor handles nothing else while a message waits for its
        // commit. The ACKs queued are flushed, the write side closed, and
        // anything the peer sends after that is not read.
        let drain = super::listener::drained(self.ctx.drain.subscribe());
        ctx.spawn(drain.into_actor(self).map(|(), act, ctx| {
            act.closing = true;
            act.draining = true;
            act.close_writer(ctx);
        }));
        let tick =
            (self.ctx.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(tick, |act, ctx| {
            let read = act.bytes_read.load(Ordering::Relaxed);
            if read != act.bytes_seen {
                act.bytes_seen = read;
                act.last_activity = Instant::now();
            }
            if act.last_activity.elapsed() >= act.ctx.idle_timeout && !act.closing {
                tracing::info!(listener = %act.ctx.name, peer = %act.peer, "closing idle connection");
                if read.saturating_sub(act.bytes_at_frame) > 2 {
                    // Idle in the middle of a frame: say so before closing
                    // (nothing of it was stored; the sender must resend).
                    let err = AckError {
                        code: ErrorCode::SegmentSequenceError,
                        location: None,
                        text: format!(
                            "the connection was idle for {:?} in the middle of an MLLP frame: it was not received whole and is not stored",
                            act.ctx.idle_timeout
                        ),
                    };
                    let ack = build_ack_for_unparsed(
                        AckCode::AR,
                        &err,
                        &crate::ack::next_control_id(),
                        &crate::ack::hl7_now(),
                    );
                    act.writer.write(Bytes::from(ack));
                    act.closing = true;
                    act.close_writer(ctx);
                    ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
                } else {
                    ctx.stop();
                }
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.count_discarded();
        self.ctx.connections.fetch_sub(1, Ordering::Relaxed);
        ConnectionClosed {
            listener: &self.ctx.name,
            peer: self.peer,
        }
        .emit(&self.ctx.metrics);
    }
}

impl StreamHandler<Result<Decoded, MllpError>> for MllpSession {
    fn handle(&mut self, item: Result<Decoded, MllpError>, ctx: &mut Context<Self>) {
        self.last_activity = Instant::now();
        self.bytes_at_frame = self.bytes_read.load(Ordering::Relaxed);
        match item {
            Ok(Decoded::Frame(_) | Decoded::Truncated(_)) if self.closing => {}
            Ok(Decoded::Frame(payload)) => self.on_frame(payload, ctx),
            Ok(Decoded::Truncated(partial)) => {
                let received = Instant::now();
                let err = AckError {
                    code: ErrorCode::SegmentSequenceError,
                    location: None,
                    text: "MLLP frame cut short: a new start block (0x0B) or the end of the connection came before the end block (0x1C 0x0D)".into(),
                };
                self.reject(partial, err, received, ctx);
            }
            Ok(Decoded::Oversized { limit, head }) => {
                if self.closing {
                    return;
                }
                let received = Instant::now();
                let err = AckError {
                    code: ErrorCode::ApplicationInternalError,
                    location: None,
                    text: format!(
                        "message exceeds the listener's max_frame of {limit} bytes; only its first {} bytes were kept",
                        head.len()
                    ),
                };
                self.reject(head, err, received, ctx);
                // The sender is broken or hostile: close once the AR is out.
                // Until the peer closes, what it sends is read and dropped
                // (closing with unread data would reset the connection and
                // could destroy the AR before the peer reads it).
                self.closing = true;
                ctx.wait(actix::fut::ready(()).map(|_, act: &mut Self, ctx| act.close_writer(ctx)));
                ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
            }
            Err(MllpError::Io(e)) => {
                tracing::info!(listener = %self.ctx.name, peer = %self.peer, error = %e, "read failed");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            // Already shut after an oversized frame; the peer is done too.
            ctx.stop();
            return;
        }
        // The peer closed its side: flush what is still queued, then stop
        // (WriteHandler::finished stops the actor once the writer is closed).
        self.close_writer(ctx);
    }
}

impl WriteHandler<MllpError> for MllpSession {
    fn error(&mut self, err: MllpError, _ctx: &mut Context<Self>) -> Running {
        tracing::info!(listener = %self.ctx.name, peer = %self.peer, error = %err, "write failed");
        Running::Stop
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // After an oversized frame the write side is shut (the peer has its
        // AR and a FIN); keep reading and dropping until the peer closes or
        // the grace period ends, so no unread data turns the close into a
        // reset. Otherwise the session is done.
        if !self.closing {
            ctx.stop();
        } else if self.draining {
            // As after an oversized frame: what the peer still sends is
            // read and dropped for a moment, so that closing with unread
            // input does not reset the connection and destroy the last ACK.
            ctx.run_later(DRAIN_LINGER, |_, ctx| ctx.stop());
        }
    }
}
