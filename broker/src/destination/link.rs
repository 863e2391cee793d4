//! The MLLP client side of a destination: one connection, one message in
//! flight. An ACK counts only if its MSA-2 names the message sent; any other
//! ACK is reported and ignored. On a timeout the caller drops the link, so a
//! late ACK can never be read as the answer to the next message.

use crate::ack::{read_ack, AckReply};
use crate::tls::Io;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use medbus_mllp::{Decoded, MllpCodec};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// An open connection to a receiver.
pub struct Link {
    framed: Framed<Box<dyn Io>, MllpCodec>,
}

/// TLS to use on a link.
pub type LinkTls = (
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
);

/// Why no usable ACK came.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Could not connect.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No ACK naming the message within the deadline.
    #[error("no ACK naming {control_id:?} within {timeout:?} ({wrong} ACKs for other messages)")]
    Timeout {
        /// The message's MSH-10.
        control_id: String,
        /// The deadline.
        timeout: Duration,
        /// ACKs received that named another message.
        wrong: u32,
    },
    /// The receiver closed the connection or the socket failed.
    #[error("connection lost: {0}")]
    Lost(String),
}

impl Link {
    /// Connect within `timeout`.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        max_ack: usize,
        tls: Option<&LinkTls>,
    ) -> Result<Link, LinkError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| LinkError::Connect(format!("timed out after {timeout:?}")))?
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), stream))
                    .await
                    .map_err(|_| LinkError::Connect("TLS handshake timed out".into()))?
                    .map_err(|e| LinkError::Connect(format!("TLS handshake failed: {e}")))?;
                Box::new(tls)
            }
        };
        Ok(Link {
            framed: Framed::new(io, MllpCodec::new(max_ack)),
        })
    }

    /// Send `payload` and wait for the ACK whose MSA-2 is `control_id`.
    /// `on_wrong` is told of every ACK that names another message.
    pub async fn exchange(
        &mut self,
        payload: &[u8],
        control_id: &str,
        timeout: Duration,
        mut on_wrong: impl FnMut(),
    ) -> Result<AckReply, LinkError> {
        self.framed
            .send(Bytes::copy_from_slice(payload))
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wrong = 0;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next()).await;
            let frame = match next {
                Err(_) => {
                    return Err(LinkError::Timeout {
                        control_id: control_id.to_string(),
                        timeout,
                        wrong,
                    })
                }
                Ok(None) => return Err(LinkError::Lost("closed by the receiver".into())),
                Ok(Some(Err(e))) => return Err(LinkError::Lost(e.to_string())),
                // A cut-short or oversized answer names nothing we can trust.
                Ok(Some(Ok(Decoded::Truncated(_) | Decoded::Oversized { .. }))) => {
                    wrong += 1;
                    on_wrong();
                    continue;
                }
                Ok(Some(Ok(Decoded::Frame(f)))) => f,
            };
            match read_ack(&frame) {
                Some(ack) if ack.answers == control_id => return Ok(ack),
                _ => {
                    wrong += 1;
                    on_wrong();
                }
            }
        }
    }
}
