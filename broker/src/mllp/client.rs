//! A blocking MLLP client for the command-line tools (`medbus send`,
//! `medbus bench`): one connection, send a framed message, read one ACK
//! frame, every read and write bounded by a timeout and the ACK by a size
//! cap. The broker's own destinations use the async link in
//! `destination::link`.

use bytes::{Bytes, BytesMut};
use medbus_mllp::{Decoded, MllpCodec, MllpError};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tokio_util::codec::Decoder;

/// Why an exchange produced no ACK frame.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Sending failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// Reading failed (including a read timeout).
    #[error("no ACK: {0}")]
    Read(std::io::Error),
    /// The peer closed the connection first.
    #[error("connection closed before the ACK")]
    Closed,
    /// The answer was cut short by a new start block.
    #[error("truncated ACK frame")]
    Truncated,
    /// The answer exceeded the cap.
    #[error("ACK larger than {0} bytes")]
    TooLarge(usize),
}

/// One blocking MLLP connection.
pub struct BlockingClient {
    stream: TcpStream,
    codec: MllpCodec,
    buf: BytesMut,
}

impl BlockingClient {
    /// Connect to `addr` within `connect_timeout`; reads and writes then
    /// time out after `io_timeout`; ACKs over `max_ack` bytes are refused.
    pub fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
        max_ack: usize,
    ) -> std::io::Result<BlockingClient> {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        Ok(BlockingClient {
            stream,
            codec: MllpCodec::new(max_ack),
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Change how long a read waits (for the next exchanges).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Send one already framed message and read one ACK frame.
    pub fn exchange_framed(&mut self, frame: &[u8]) -> Result<Bytes, ExchangeError> {
        self.stream.write_all(frame).map_err(ExchangeError::Write)?;
        let mut chunk = [0u8; 4096];
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Decoded::Frame(f))) => return Ok(f),
                Ok(Some(Decoded::Truncated(_))) => return Err(ExchangeError::Truncated),
                Ok(Some(Decoded::Oversized { limit, .. })) => {
                    return Err(ExchangeError::TooLarge(limit))
                }
                Ok(None) => {}
                Err(MllpError::Io(e)) => return Err(ExchangeError::Read(e)),
            }
            let n = self.stream.read(&mut chunk).map_err(ExchangeError::Read)?;
            if n == 0 {
                return Err(ExchangeError::Closed);
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}
