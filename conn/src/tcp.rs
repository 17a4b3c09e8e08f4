//! TCP long connections: the [`Transport`] over a socket with gim's 2-byte length framing.
//!
//! Memory is what limits a conn node, so this transport holds no buffer while idle: it waits for
//! readability before allocating a read buffer, reuses that buffer across the frames of a burst
//! (frames are split off it without copying), and gives both buffers back when the session reports
//! the connection quiet. Outbound frames are appended to one write buffer and written by one
//! `flush`, so the frames pending for a connection leave in as few writes as the socket allows.

use crate::session::{Inbound, Transport, TransportError};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use gim_proto::frame::{FrameCodec, FrameError, put_frame};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Read granularity: small, because thousands of connections may be mid-read at once; a larger
/// frame makes the codec reserve exactly what it needs.
const READ_CHUNK: usize = 2048;
/// Above this much unwritten output, `poll_ready` waits for the socket (back-pressure).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// A write buffer that grew beyond this during a burst is released once empty.
const WRITE_KEEP: usize = 8 * 1024;

#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
    codec: FrameCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    eof: bool,
    /// The frame limit once signed in.
    max_frame_len: usize,
}

impl TcpTransport {
    /// Frames above `pre_sign_in_max` are refused until [`Transport::signed_in`]: the codec
    /// reserves a frame's full length on its 2-byte header, so without this cap two bytes from
    /// an unauthenticated client held 64 KiB until the sign-in timeout (≈1.2 GB at the default
    /// connection limit).
    pub fn new(stream: TcpStream, max_frame_len: usize, pre_sign_in_max: usize) -> Self {
        Self {
            stream,
            codec: FrameCodec::new(max_frame_len.min(pre_sign_in_max)),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            eof: false,
            max_frame_len,
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.wbuf.advance(n);
        }
        if self.wbuf.capacity() > WRITE_KEEP {
            self.wbuf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl Stream for TcpTransport {
    type Item = Result<Inbound, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.codec.decode(&mut this.rbuf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(Inbound::Frame(frame)))),
                Ok(None) => {}
                Err(FrameError::InboundTooLarge { len, max }) => {
                    let msg = format!("{len} bytes, maximum {max}");
                    return Poll::Ready(Some(Err(TransportError::TooLarge(msg))));
                }
                Err(e) => return Poll::Ready(Some(Err(TransportError::Protocol(e.to_string())))),
            }
            if this.eof {
                return Poll::Ready(None);
            }
            // Wait for data before touching the buffer, so an idle connection allocates nothing.
            ready!(this.stream.poll_read_ready(cx))?;
            if this.rbuf.capacity() - this.rbuf.len() < READ_CHUNK / 4 {
                this.rbuf.reserve(READ_CHUNK);
            }
            match this.stream.try_read_buf(&mut this.rbuf) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                // Readiness was stale; the next poll_read_ready registers for the next wakeup.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

impl Sink<Bytes> for TcpTransport {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let this = self.get_mut();
        if this.wbuf.len() >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), TransportError> {
        put_frame(&mut self.get_mut().wbuf, &frame)
            .map_err(|e| TransportError::Protocol(e.to_string()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream)
            .poll_flush(cx)
            .map_err(Into::into)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream)
            .poll_shutdown(cx)
            .map_err(Into::into)
    }
}

impl Transport for TcpTransport {
    fn signed_in(&mut self) {
        self.codec = FrameCodec::new(self.max_frame_len);
    }

    fn release_idle_buffers(&mut self) {
        // Only empty buffers: a partial frame must survive a quiet spell.
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpTransport, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (TcpTransport::new(server, 1024, 1024), client)
    }

    #[tokio::test]
    async fn frames_split_and_coalesced_across_reads_decode() {
        let (mut t, mut c) = pair().await;
        c.write_all(&[0, 3, b'a', b'b']).await.unwrap();
        c.flush().await.unwrap();
        tokio::task::yield_now().await;
        c.write_all(&[b'c', 0, 0, 0, 1, b'z']).await.unwrap();
        assert_eq!(
            t.next().await.unwrap().unwrap(),
            Inbound::Frame(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            t.next().await.unwrap().unwrap(),
            Inbound::Frame(Bytes::new())
        );
        assert_eq!(
            t.next().await.unwrap().unwrap(),
            Inbound::Frame(Bytes::from_static(b"z"))
        );
        drop(c);
        assert!(t.next().await.is_none(), "eof ends the stream");
    }

    #[tokio::test]
    async fn oversized_length_prefix_is_an_error() {
        let (mut t, mut c) = pair().await;
        c.write_all(&[0xFF, 0xFF]).await.unwrap();
        assert!(matches!(
            t.next().await.unwrap(),
            Err(TransportError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn pending_frames_leave_in_one_write_and_buffers_are_released() {
        let (mut t, mut c) = pair().await;
        for p in [&b"one"[..], b"two", b"three"] {
            t.feed(Bytes::copy_from_slice(p)).await.unwrap();
        }
        assert_eq!(
            t.wbuf.len(),
            5 + 5 + 7,
            "all three frames buffered before the flush"
        );
        t.flush().await.unwrap();
        let mut got = vec![0u8; 17];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..5], &[0, 3, b'o', b'n', b'e']);
        c.write_all(&[0, 1, b'x']).await.unwrap();
        t.next().await.unwrap().unwrap();
        assert!(t.rbuf.capacity() > 0);
        t.release_idle_buffers();
        assert_eq!((t.rbuf.capacity(), t.wbuf.capacity()), (0, 0));
    }
}
