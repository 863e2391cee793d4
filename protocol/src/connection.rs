//! Bytes ↔ frames over a byte stream.
//!
//! [`FrameReader`] and [`FrameWriter`] wrap the two halves of any tokio
//! stream (TCP, TLS); [`FrameCodec`] does the same job for servers built on
//! `tokio_util`'s `FramedRead`/`FramedWrite`. Both read through
//! [`crate::frame::parse`], so a frame over the cap is refused as soon as its
//! length prefix is in, and the read buffer never holds more than one
//! frame's worth plus one read chunk.

use crate::frame::{self, FrameError, LENGTH_BYTES};
use bincode::{Decode, Encode};
use bytes::{Buf, BytesMut};
use std::marker::PhantomData;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked of the socket per read: large frames arrive in a few reads,
/// small ones do not make the buffer grow.
const READ_CHUNK: usize = 64 << 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The bytes are not a frame.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads frames of type `T` from `R`.
pub struct FrameReader<R, T> {
    /// The read half of the stream.
    stream: R,
    /// Bytes read but not yet consumed; at most one frame plus a chunk.
    buffer: BytesMut,
    /// Frame cap: longer frames are refused before they are buffered.
    max: usize,
    /// What the frames decode to.
    _frames: PhantomData<fn() -> T>,
}

impl<R: AsyncRead + Unpin, T: Decode<()>> FrameReader<R, T> {
    /// A reader refusing frames longer than `max`.
    pub fn new(stream: R, max: usize) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(8 << 10),
            max,
            _frames: PhantomData,
        }
    }

    /// The next frame; `None` when the peer closed cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<T>, ConnectionError> {
        loop {
            match frame::parse::<T>(&self.buffer, self.max) {
                Ok((msg, used)) => {
                    self.buffer.advance(used);
                    return Ok(Some(msg));
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(e.into()),
            }
            // Ask for what the frame still needs, capped at one chunk: the
            // buffer never grows beyond the (already checked) frame length.
            let need = match self.buffer.get(..LENGTH_BYTES) {
                Some(prefix) => {
                    let mut len = [0u8; LENGTH_BYTES];
                    len.copy_from_slice(prefix);
                    (LENGTH_BYTES + u32::from_be_bytes(len) as usize)
                        .saturating_sub(self.buffer.len())
                }
                None => LENGTH_BYTES,
            };
            self.buffer.reserve(need.min(READ_CHUNK));
            let n = self.stream.read_buf(&mut self.buffer).await?;
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }
}

/// Writes frames of type `T` to `W`.
pub struct FrameWriter<W, T> {
    /// The write half of the stream.
    stream: W,
    /// Reused encode buffer.
    buffer: Vec<u8>,
    /// Frame cap of the peer's reads: a larger frame is refused here.
    max: usize,
    /// What the frames encode.
    _frames: PhantomData<fn(T)>,
}

impl<W: AsyncWrite + Unpin, T: Encode> FrameWriter<W, T> {
    /// A writer refusing frames longer than `max`.
    pub fn new(stream: W, max: usize) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            max,
            _frames: PhantomData,
        }
    }

    /// Change the cap (to the peer's, once known).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Encode `msg` and write it out (flushed).
    pub async fn write_frame(&mut self, msg: &T) -> Result<(), ConnectionError> {
        self.buffer.clear();
        frame::encode(msg, &mut self.buffer, self.max)?;
        self.stream.write_all(&self.buffer).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Close the write side.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        self.stream.shutdown().await?;
        Ok(())
    }
}

/// A `tokio_util` codec reading `In` frames and writing `Out` frames.
pub struct FrameCodec<In, Out> {
    /// Cap on frames read.
    max_in: usize,
    /// Cap on frames written.
    max_out: usize,
    /// The two message types.
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the given caps.
    pub fn new(max_in: usize, max_out: usize) -> Self {
        Self {
            max_in,
            max_out,
            _types: PhantomData,
        }
    }
}

impl<In: Decode<()>, Out> tokio_util::codec::Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = ConnectionError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ConnectionError> {
        match frame::parse::<In>(src, self.max_in) {
            Ok((msg, used)) => {
                src.advance(used);
                Ok(Some(msg))
            }
            Err(FrameError::Incomplete) => {
                // The length is checked: room for the rest, one chunk at most.
                if let Some(prefix) = src.get(..LENGTH_BYTES) {
                    let mut len = [0u8; LENGTH_BYTES];
                    len.copy_from_slice(prefix);
                    let total = LENGTH_BYTES + u32::from_be_bytes(len) as usize;
                    src.reserve(total.saturating_sub(src.len()).min(READ_CHUNK));
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, ConnectionError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(ConnectionError::Truncated),
        }
    }
}

impl<In, Out: Encode> tokio_util::codec::Encoder<Out> for FrameCodec<In, Out> {
    type Error = ConnectionError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), ConnectionError> {
        frame::encode(&item, dst, self.max_out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientFrame, ServerFrame};

    #[tokio::test]
    async fn frames_cross_a_socket_pair_in_small_pieces() {
        let (a, b) = tokio::io::duplex(7);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let _keep = (ar, bw);
        let mut w: FrameWriter<_, ClientFrame> = FrameWriter::new(aw, 1 << 20);
        let mut r: FrameReader<_, ClientFrame> = FrameReader::new(br, 1 << 20);
        let sent = ClientFrame::Ping { request_id: 42 };
        let write = tokio::spawn(async move {
            for _ in 0..3 {
                w.write_frame(&ClientFrame::Ping { request_id: 42 })
                    .await
                    .expect("write");
            }
            w.shutdown().await.expect("shutdown");
        });
        for _ in 0..3 {
            assert_eq!(r.read_frame().await.expect("read"), Some(sent.clone()));
        }
        assert_eq!(r.read_frame().await.expect("eof"), None);
        write.await.expect("join");
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_buffering() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r: FrameReader<_, ServerFrame> = FrameReader::new(b, 1024);
        a.write_all(&[0, 1, 0, 0, 1]).await.expect("write");
        let err = r.read_frame().await.expect_err("too large");
        assert!(matches!(
            err,
            ConnectionError::Frame(FrameError::TooLarge { len: 65536, .. })
        ));
    }

    #[tokio::test]
    async fn cut_short_is_truncated() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r: FrameReader<_, ServerFrame> = FrameReader::new(b, 1024);
        a.write_all(&[0, 0, 0, 9, 1]).await.expect("write");
        drop(a);
        assert!(matches!(
            r.read_frame().await,
            Err(ConnectionError::Truncated)
        ));
    }
}
