//! `MllpListener`: the accept loop of one configured listener.
//!
//! It owns the listening socket and the listener's settings, enforces the
//! connection cap, and starts an [`MllpSession`] per accepted connection.

use super::session::MllpSession;
use crate::events::{ConnectionOpened, ConnectionRefused, RefusalReason};
use crate::metrics::Metrics;
use crate::storage::Store;
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Everything a session needs to know about its listener; shared, read-only.
pub struct ListenerContext {
    /// Listener name (metrics label, record header, dead-letter topic).
    pub name: String,
    /// Topic accepted messages are appended to.
    pub topic: String,
    /// Topic rejected input goes to (`dlq.<name>`).
    pub dead_letter_topic: String,
    /// The message store.
    pub store: Store,
    /// MLLP frame cap in bytes.
    pub max_frame: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Close a connection silent this long.
    pub idle_timeout: Duration,
    /// Retransmission window (zero: off).
    pub dedup_window: Duration,
    /// Whether message content may appear in logs.
    pub log_payloads: bool,
    /// Connections open right now (enforces `max_connections`).
    pub connections: AtomicUsize,
    /// Where every event of this listener is counted.
    pub metrics: Arc<Metrics>,
    /// The configured address (for the status API).
    pub listen: SocketAddr,
    /// Allowed source addresses; empty: any.
    pub allow: Vec<medbus_config::cidr::Cidr>,
    /// TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether MSH-15 is honoured.
    pub acknowledgments: medbus_config::AckPolicy,
    /// Set when the broker shuts down: the listener stops accepting, and
    /// every session answers the message it is handling, then closes.
    pub drain: tokio::sync::watch::Sender<bool>,
}

impl ListenerContext {
    /// Stop accepting and close every session once its message in hand is
    /// answered (see [`ListenerContext::drain`]).
    pub fn start_draining(&self) {
        self.drain.send_replace(true);
    }
}

/// Resolves once `drain` is set.
pub(super) async fn drained(mut drain: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone: the broker is going away anyway.
    let _ = drain.wait_for(|d| *d).await;
}

/// Accepts connections for one listener.
pub struct MllpListener {
    /// Shared settings handed to every session.
    ctx: Arc<ListenerContext>,
    /// The bound socket, taken by `started`.
    socket: Option<TcpListener>,
}

impl MllpListener {
    /// A listener actor for an already bound socket (binding happens before
    /// start so that a bind error stops start-up with a clear message).
    pub fn new(ctx: Arc<ListenerContext>, socket: TcpListener) -> Self {
        Self {
            ctx,
            socket: Some(socket),
        }
    }
}

/// A TLS handshake failed: its connection is given back and counted.
fn tls_failed(ctx: &ListenerContext, peer: SocketAddr, error: &str) {
    ctx.connections.fetch_sub(1, Ordering::Relaxed);
    ConnectionRefused {
        listener: &ctx.name,
        peer,
        reason: RefusalReason::Tls(error.to_string()),
    }
    .emit(&ctx.metrics);
}

impl Actor for MllpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(socket) = self.socket.take() {
            ctx.add_stream(crate::accept::accepts(socket));
        }
        // Shutting down: stopping drops the accept stream and with it the
        // socket, so new connections are refused.
        let drain = drained(self.ctx.drain.subscribe());
        ctx.spawn(drain.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for MllpListener {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, _ctx: &mut Context<Self>) {
        let (stream, peer) = match item {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: keep listening, the condition may pass.
                tracing::warn!(listener = %self.ctx.name, error = %e, "accept failed");
                return;
            }
        };
        if !self.ctx.allow.is_empty() && !self.ctx.allow.iter().any(|c| c.contains(peer.ip())) {
            ConnectionRefused {
                listener: &self.ctx.name,
                peer,
                reason: RefusalReason::NotAllowed,
            }
            .emit(&self.ctx.metrics);
            drop(stream);
            return;
        }
        let open = self.ctx.connections.load(Ordering::Relaxed);
        if open >= self.ctx.max_connections {
            ConnectionRefused {
                listener: &self.ctx.name,
                peer,
                reason: RefusalReason::MaxConnections(self.ctx.max_connections),
            }
            .emit(&self.ctx.metrics);
            drop(stream);
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        self.ctx.connections.fetch_add(1, Ordering::Relaxed);
        match &self.ctx.tls {
            None => {
                ConnectionOpened {
                    listener: &self.ctx.name,
                    peer,
                }
                .emit(&self.ctx.metrics);
                MllpSession::start_for(self.ctx.clone(), Box::new(stream), peer);
            }
            Some(acceptor) => {
                // The handshake runs beside the accept loop, bounded in
                // time, on its own task: stopping the listener (the drain
                // at shutdown) must not drop it half-way, or the connection
                // it counted would never be given back.
                let acceptor = acceptor.clone();
                let lctx = self.ctx.clone();
                actix::spawn(async move {
                    let handshake = tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            ConnectionOpened {
                                listener: &lctx.name,
                                peer,
                            }
                            .emit(&lctx.metrics);
                            MllpSession::start_for(lctx, Box::new(tls), peer);
                        }
                        Ok(Err(e)) => tls_failed(&lctx, peer, &e.to_string()),
                        Err(_) => tls_failed(&lctx, peer, "handshake timed out"),
                    }
                });
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The accept stream never ends on its own; keep the actor alive.
    }
}
