//! The NATS client protocol over WebSocket, as much of it as the fan-out peer (P5) needs:
//! `INFO` in, `CONNECT`, `SUB`, `PUB`, `PING`/`PONG` out, `MSG` in. nats-server's WebSocket
//! listener carries the plain text protocol in binary frames, and a frame may hold several
//! operations or part of one, so incoming bytes go through [`Parser`].

use bytes::{Buf, Bytes, BytesMut};

/// The subject every P5 subscriber listens on.
pub const SUBJECT: &str = "gim.bench.p5";

/// What a subscriber sends after the server's `INFO`: no acknowledgements (`verbose` off), no
/// echo of its own messages, then the subscription and a `PING` whose `PONG` says the server has
/// registered it.
pub fn subscribe(sid: u64) -> Bytes {
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1,\
         \"lang\":\"gim-bench\",\"version\":\"0\"}}\r\nSUB {SUBJECT} {sid}\r\nPING\r\n"
    )
    .into()
}

/// The publisher's `CONNECT` (it subscribes to nothing).
pub fn connect_only() -> Bytes {
    Bytes::from_static(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1,\"lang\":\"gim-bench\",\"version\":\"0\"}\r\nPING\r\n",
    )
}

pub fn publish(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 40);
    b.extend_from_slice(format!("PUB {SUBJECT} {}\r\n", payload.len()).as_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

pub const PONG: &[u8] = b"PONG\r\n";

/// One server operation.
#[derive(Debug, PartialEq)]
pub enum Op {
    Info,
    Msg(Bytes),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Incremental parser of the server's byte stream.
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
}

/// A control line longer than this is not NATS (INFO lines are a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

impl Parser {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete operation, `Ok(None)` when more bytes are needed.
    pub fn next_op(&mut self) -> anyhow::Result<Option<Op>> {
        let Some(eol) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            anyhow::ensure!(self.buf.len() <= MAX_LINE, "NATS control line too long");
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.buf[..eol])?;
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let op = match verb.as_str() {
            "MSG" => {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let len: usize = line
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("bad MSG line {line:?}"))?;
                if self.buf.len() < eol + 2 + len + 2 {
                    return Ok(None);
                }
                self.buf.advance(eol + 2);
                let payload = self.buf.split_to(len).freeze();
                self.buf.advance(2);
                return Ok(Some(Op::Msg(payload)));
            }
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "INFO" => Op::Info,
            "-ERR" => Op::Err(line.to_string()),
            _ => anyhow::bail!("unexpected NATS operation {line:?}"),
        };
        self.buf.advance(eol + 2);
        Ok(Some(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_and_batched_operations() {
        let mut p = Parser::default();
        p.feed(b"INFO {\"server_id\":\"x\"}\r\nPI");
        assert_eq!(p.next_op().unwrap(), Some(Op::Info));
        assert_eq!(p.next_op().unwrap(), None);
        p.feed(b"NG\r\nMSG gim.bench.p5 7 5\r\nhel");
        assert_eq!(p.next_op().unwrap(), Some(Op::Ping));
        assert_eq!(p.next_op().unwrap(), None, "payload incomplete");
        p.feed(b"lo\r\nMSG a 1 r 2\r\n\r\n\r\n-ERR 'Slow Consumer'\r\n");
        assert_eq!(
            p.next_op().unwrap(),
            Some(Op::Msg(Bytes::from_static(b"hello")))
        );
        // A payload may itself hold CRLF: the length decides, not the line end.
        assert_eq!(
            p.next_op().unwrap(),
            Some(Op::Msg(Bytes::from_static(b"\r\n")))
        );
        assert!(matches!(p.next_op().unwrap(), Some(Op::Err(_))));
        assert_eq!(p.next_op().unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = Parser::default();
        p.feed(b"HTTP/1.1 400\r\n");
        assert!(p.next_op().is_err());
    }

    #[test]
    fn publish_frames_the_payload() {
        assert_eq!(&publish(b"ab")[..], b"PUB gim.bench.p5 2\r\nab\r\n");
    }
}
