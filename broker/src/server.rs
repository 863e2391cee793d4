//! Starting a configured broker inside an actix system: open the store, bind
//! every listener, start the actors. Binding happens before any actor runs,
//! so that a port in use stops start-up with a clear error instead of a
//! half-started broker.

use crate::mllp::{ListenerContext, MllpListener};
use crate::storage::{StorageError, Store, StoreOptions};
use actix::Actor;
use medbus_config::Config;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// A listener could not bind its address.
    #[error("listener {name:?} cannot listen on {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A listener as bound.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// Listener name.
    pub name: String,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Topic it writes to.
    pub topic: String,
}

/// A running broker.
pub struct Server {
    /// The message store.
    pub store: Store,
    /// Every MLLP listener, bound.
    pub listeners: Vec<BoundListener>,
}

/// Start everything `config` describes. Must run inside an `actix::System`.
pub async fn start(config: &Config, data_dir: &Path) -> Result<Server, ServerError> {
    let store = Store::open(
        data_dir,
        StoreOptions {
            durability: config.storage.durability,
            max_batch: *config.storage.max_batch_records.get_ref(),
            observer: None,
        },
    )?;
    let mut bound = Vec::new();
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let addr = l.listen.get_ref().clone();
        let socket = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind {
                name: l.name().to_string(),
                addr: addr.clone(),
                source,
            })?;
        let local = socket.local_addr().map_err(|source| ServerError::Bind {
            name: l.name().to_string(),
            addr,
            source,
        })?;
        bound.push(BoundListener {
            name: l.name().to_string(),
            addr: local,
            topic: l.topic().to_string(),
        });
        let ctx = Arc::new(ListenerContext {
            name: l.name().to_string(),
            topic: l.topic().to_string(),
            dead_letter_topic: l.dead_letter_topic(),
            store: store.clone(),
            max_frame: l.max_frame_bytes(),
            max_connections: *l.max_connections.get_ref(),
            idle_timeout: l.idle_timeout.get_ref().0,
            dedup_window: l.dedup_window.0,
            log_payloads: config.log_payloads,
            connections: AtomicUsize::new(0),
        });
        sockets.push((ctx, socket));
    }
    for (ctx, socket) in sockets {
        MllpListener::new(ctx, socket).start();
    }
    Ok(Server {
        store,
        listeners: bound,
    })
}
