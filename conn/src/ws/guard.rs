//! The byte stream under a WebSocket before sign-in, checked as it is read.
//!
//! tungstenite reserves a frame's whole payload length as soon as it has parsed the frame's
//! header, and its limits are fixed when the connection is built. So, below it, this stream reads
//! the upgrade request (at most [`MAX_UPGRADE_REQUEST`] bytes) and then follows the frame headers:
//! before sign-in a frame announcing more than the pre-sign-in limit, or a fragmented message, is
//! refused before tungstenite sees its header. Once signed in ([`Guarded::open`]) bytes pass
//! unexamined and tungstenite's own limits (`max_frame_len`) apply.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest upgrade request (request line and headers). Browsers send a few hundred bytes plus
/// their cookies for the host; credentials in the query string add about one token.
pub const MAX_UPGRADE_REQUEST: usize = 16 * 1024;

/// The error a refused read carries (inside an `io::Error` of kind `InvalidData`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("upgrade request above {MAX_UPGRADE_REQUEST} bytes")]
    UpgradeRequest,
    #[error("{len} bytes before sign-in, maximum {max}")]
    FrameTooLarge { len: u64, max: usize },
    #[error("fragmented message before sign-in")]
    Fragmented,
}

impl Refused {
    /// The refusal inside an `io::Error` from this stream, if any.
    pub fn of(e: &io::Error) -> Option<&Refused> {
        e.get_ref().and_then(|i| i.downcast_ref::<Refused>())
    }
}

#[derive(Debug)]
enum State {
    /// Reading the upgrade request; `tail` holds its last four bytes (to find `\r\n\r\n`).
    Request { read: usize, tail: u32 },
    /// Following frames: `hdr[..have]` of the next header, or `skip` payload bytes to pass.
    Frames {
        hdr: [u8; 14],
        have: usize,
        skip: u64,
    },
    /// Signed in: nothing is examined.
    Open,
}

#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    state: State,
    max_frame: usize,
}

impl<S> Guarded<S> {
    /// `max_frame`: the largest payload (= message, since fragments are refused) before sign-in.
    pub fn new(inner: S, max_frame: usize) -> Self {
        Self {
            inner,
            state: State::Request { read: 0, tail: 0 },
            max_frame,
        }
    }

    /// Signed in: stop examining.
    pub fn open(&mut self) {
        self.state = State::Open;
    }

    fn inspect(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Open => return Ok(()),
                State::Request { read, tail } => {
                    let mut end = None;
                    for (i, b) in bytes.iter().enumerate() {
                        *tail = (*tail << 8) | u32::from(*b);
                        if *tail == u32::from_be_bytes(*b"\r\n\r\n") {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    let used = end.unwrap_or(bytes.len());
                    *read += used;
                    if *read > MAX_UPGRADE_REQUEST {
                        return Err(Refused::UpgradeRequest);
                    }
                    bytes = &bytes[used..];
                    if end.is_some() {
                        self.state = State::Frames {
                            hdr: [0; 14],
                            have: 0,
                            skip: 0,
                        };
                    }
                }
                State::Frames { hdr, have, skip } => {
                    if *skip > 0 {
                        let n = (*skip).min(bytes.len() as u64);
                        *skip -= n;
                        bytes = &bytes[n as usize..];
                        continue;
                    }
                    hdr[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if let Some(len) = header_complete(&hdr[..*have]) {
                        let (fin, opcode) = (hdr[0] & 0x80 != 0, hdr[0] & 0x0f);
                        // Control frames (opcode 8..) are at most 125 bytes by RFC 6455 (and
                        // tungstenite checks that); data frames must be whole messages here.
                        if opcode < 8 && (!fin || opcode == 0) {
                            return Err(Refused::Fragmented);
                        }
                        if len > self.max_frame as u64 {
                            return Err(Refused::FrameTooLarge {
                                len,
                                max: self.max_frame,
                            });
                        }
                        *have = 0;
                        *skip = len;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The payload length once `hdr` holds a whole frame header (2 to 14 bytes).
fn header_complete(hdr: &[u8]) -> Option<u64> {
    if hdr.len() < 2 {
        return None;
    }
    let masked = hdr[1] & 0x80 != 0;
    let (ext, short) = match hdr[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let need = 2 + ext + if masked { 4 } else { 0 };
    if hdr.len() < need {
        return None;
    }
    Some(short.unwrap_or_else(|| {
        hdr[2..2 + ext]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }))
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(r) = this.inspect(&buf.filled()[before..]) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, r)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&len.to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]); // mask
        f.extend(std::iter::repeat_n(0u8, len.min(1 << 20) as usize));
        f
    }

    fn guard() -> Guarded<()> {
        Guarded::new((), 4096)
    }

    const REQ: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn frames_within_the_limit_pass_split_anywhere() {
        let mut bytes = REQ.to_vec();
        for len in [0, 5, 125, 126, 4096] {
            bytes.extend(frame(true, 2, len));
            bytes.extend(frame(true, 9, 3)); // ping
        }
        for chunk in [1, 3, 7, 1000] {
            let mut g = guard();
            for c in bytes.chunks(chunk) {
                g.inspect(c).unwrap();
            }
            assert!(matches!(
                g.state,
                State::Frames {
                    have: 0,
                    skip: 0,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_large_header_or_a_fragment_is_refused_before_its_payload() {
        let mut g = guard();
        g.inspect(REQ).unwrap();
        let f = frame(true, 2, 65_535);
        assert_eq!(
            g.inspect(&f[..8]).unwrap_err(),
            Refused::FrameTooLarge {
                len: 65_535,
                max: 4096
            }
        );
        let mut g = guard();
        let mut b = REQ.to_vec();
        b.extend(frame(false, 2, 10));
        assert_eq!(g.inspect(&b).unwrap_err(), Refused::Fragmented);
        let mut g = guard();
        g.inspect(REQ).unwrap();
        assert_eq!(
            g.inspect(&frame(true, 2, 1 << 40)[..14]).unwrap_err(),
            Refused::FrameTooLarge {
                len: 1 << 40,
                max: 4096
            }
        );
    }

    #[test]
    fn the_upgrade_request_is_bounded_and_open_examines_nothing() {
        let mut g = guard();
        let junk = vec![b'a'; MAX_UPGRADE_REQUEST];
        g.inspect(&junk).unwrap();
        assert_eq!(g.inspect(b"a").unwrap_err(), Refused::UpgradeRequest);
        let mut g = guard();
        g.inspect(REQ).unwrap();
        g.open();
        g.inspect(&frame(true, 2, 65_535)).unwrap();
    }
}
