//! Accepted TCP connections as a stream, so that a listener actor can take
//! them one at a time through `StreamHandler` (MLLP listeners and the
//! binary-protocol listener alike). An accept error is an item of the
//! stream, not its end: the listener logs it and keeps listening.

use futures_util::Stream;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Every connection `socket` accepts, for as long as the stream is polled.
pub fn accepts(
    socket: TcpListener,
) -> impl Stream<Item = std::io::Result<(TcpStream, SocketAddr)>> {
    futures_util::stream::unfold(socket, |s| async move {
        let next = s.accept().await;
        Some((next, s))
    })
}
