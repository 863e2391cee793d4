//! `ClientListener`: the accept loop of the binary protocol.
//!
//! It owns the listening socket, enforces the connection cap (a connection
//! over it gets an error frame, then is closed — never a silent drop), and
//! starts a [`ClientSession`] per accepted connection.

use super::auth::Auth;
use super::dispatcher::Groups;
use super::session::ClientSession;
use crate::events::{ClientConnected, ClientDisconnected, ProtocolErrorSent};
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::tls::HANDSHAKE_TIMEOUT;
use actix::prelude::*;
use medbus_protocol::frame::{self, MAX_FRAME};
use medbus_protocol::message::CONNECTION;
use medbus_protocol::{ErrorCode, ServerFrame};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Everything a session needs; shared, read-only apart from the counters.
pub struct ProtocolContext {
    /// Where records are appended and read.
    pub store: Store,
    /// Where every event is counted.
    pub metrics: Arc<Metrics>,
    /// Token → client, or development mode.
    pub auth: Auth,
    /// The running consumer-group dispatchers.
    pub groups: Groups,
    /// Cap on frames read from clients.
    pub max_frame: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Largest credit window granted.
    pub max_credits: u32,
    /// Most bytes queued for a connection before it is closed as a slow
    /// consumer.
    pub max_pending: u64,
    /// Connections open right now (enforces `max_connections`).
    pub connections: AtomicUsize,
    /// Set when `[protocol] tls` is: every connection is TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The running configuration (admin requests: replay).
    pub config: crate::server::SharedConfig,
}

/// Accepts binary-protocol connections.
pub struct ClientListener {
    /// Shared with every session.
    ctx: Arc<ProtocolContext>,
    /// The bound socket, taken by `started`.
    socket: Option<TcpListener>,
}

impl ClientListener {
    /// A listener actor for an already bound socket.
    pub fn new(ctx: Arc<ProtocolContext>, socket: TcpListener) -> Self {
        Self {
            ctx,
            socket: Some(socket),
        }
    }
}

impl Actor for ClientListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(socket) = self.socket.take() {
            ctx.add_stream(crate::accept::accepts(socket));
        }
    }
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for ClientListener {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, _ctx: &mut Context<Self>) {
        let (mut stream, peer) = match item {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "protocol accept failed");
                return;
            }
        };
        if self.ctx.connections.load(Ordering::Relaxed) >= self.ctx.max_connections {
            let message = format!(
                "the broker is at its limit of {} protocol connections",
                self.ctx.max_connections
            );
            ProtocolErrorSent {
                peer,
                kind: "max_connections",
                request_id: CONNECTION,
                message: &message,
            }
            .emit(&self.ctx.metrics);
            let refusal = frame::to_bytes(
                &ServerFrame::Error {
                    request_id: CONNECTION,
                    code: ErrorCode::LimitReached.as_u16(),
                    message,
                },
                MAX_FRAME,
            );
            actix::spawn(async move {
                if let Ok(bytes) = refusal {
                    let _ = stream.write_all(&bytes).await;
                }
                let _ = stream.shutdown().await;
            });
            return;
        }
        let _ = stream.set_nodelay(true);
        self.ctx.connections.fetch_add(1, Ordering::Relaxed);
        ClientConnected { peer }.emit(&self.ctx.metrics);
        match self.ctx.tls.clone() {
            None => ClientSession::start_for(self.ctx.clone(), Box::new(stream), peer),
            Some(acceptor) => {
                let ctx = self.ctx.clone();
                actix::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => ClientSession::start_for(ctx, Box::new(tls), peer),
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "protocol TLS handshake failed");
                            ctx.connections.fetch_sub(1, Ordering::Relaxed);
                            ClientDisconnected { peer, client: None }.emit(&ctx.metrics);
                        }
                        Err(_) => {
                            tracing::info!(%peer, "protocol TLS handshake timed out");
                            ctx.connections.fetch_sub(1, Ordering::Relaxed);
                            ClientDisconnected { peer, client: None }.emit(&ctx.metrics);
                        }
                    }
                });
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The accept stream never ends on its own; keep the actor alive.
    }
}
