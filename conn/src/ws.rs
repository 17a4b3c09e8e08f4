//! WebSocket long connections at `GET /ws`: one envelope per binary frame.
//!
//! Sign-in may come in the upgrade request, as headers `app_id`, `user_id`, `device_id`, `token`
//! (as the original gim) or as query parameters of the same names (browsers cannot set headers),
//! or later as a SIGN_IN envelope.
//!
//! Before sign-in the socket is read through [`guard::Guarded`]: the upgrade request and each
//! frame are capped (`pre_sign_in_max_frame`) before tungstenite reserves memory for them. The
//! upgrade and the sign-in share one deadline, `sign_in_timeout` after accept.
//!
//! tungstenite's default read buffer is 128 KiB per connection; here it is a few KiB and the
//! write buffer target is small, so many idle connections stay cheap. Text frames, messages above
//! `max_frame_len` and ping floods end the connection (the session logs why).

mod guard;

use crate::session::{CloseReason, Inbound, Transport, TransportError};
use bytes::Bytes;
use futures::{Sink, Stream};
use gim_proto::connect::v1::SignInInput;
pub use guard::{Guarded, MAX_UPGRADE_REQUEST, Refused};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

/// Read buffer per connection (tungstenite's default is 128 KiB).
pub const WS_READ_BUFFER: usize = 4 * 1024;
/// Output is written once this much is buffered, or on flush (which the session does per burst).
const WS_WRITE_BUFFER: usize = 8 * 1024;
/// More pings than this within [`PING_WINDOW`] is a flood.
const MAX_PINGS_PER_WINDOW: u32 = 20;
const PING_WINDOW: Duration = Duration::from_secs(1);

pub fn config(max_frame_len: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        // Back-pressure is the session's bounded queue; this only guards against a runaway.
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_frame_len))
        .max_frame_size(Some(max_frame_len))
}

#[derive(Debug)]
pub struct WsTransport {
    inner: WebSocketStream<Guarded<TcpStream>>,
    pings: u32,
    window_start: Instant,
}

/// Completes the upgrade by `deadline`: `/ws` only, credentials from headers or query. Until
/// [`Transport::signed_in`], frames above `pre_sign_in_max` are refused.
pub async fn accept(
    stream: TcpStream,
    max_frame_len: usize,
    pre_sign_in_max: usize,
    deadline: Instant,
) -> Result<(WsTransport, Option<SignInInput>), CloseReason> {
    let mut creds = None;
    // The Err type is fixed by tungstenite's `Callback`; it is built once per refused upgrade.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != "/ws" {
            let mut r = ErrorResponse::new(Some("not found".into()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Err(r);
        }
        creds = credentials(req.headers(), req.uri().query());
        Ok(resp)
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        Guarded::new(stream, pre_sign_in_max),
        callback,
        Some(config(max_frame_len)),
    );
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => Ok((
            WsTransport {
                inner: ws,
                pings: 0,
                window_start: Instant::now(),
            },
            creds,
        )),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket handshake failed");
            Err(CloseReason::Handshake)
        }
        Err(_) => Err(CloseReason::SignInTimeout),
    }
}

/// Sign-in credentials from upgrade headers, else from the query string. Any of the four names
/// present means the client meant to sign in: missing or malformed ids become 0 and the sign-in
/// is rejected by logic with a reply the client can read.
pub fn credentials(headers: &HeaderMap, query: Option<&str>) -> Option<SignInInput> {
    const NAMES: [&str; 4] = ["app_id", "user_id", "device_id", "token"];
    let from_headers: Vec<Option<String>> = NAMES
        .iter()
        .map(|n| {
            headers
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    let values = if from_headers.iter().any(Option::is_some) {
        from_headers
    } else {
        let pairs: Vec<(String, String)> = query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        let values: Vec<Option<String>> = NAMES
            .iter()
            .map(|n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            .collect();
        if values.iter().all(Option::is_none) {
            return None;
        }
        values
    };
    let num = |i: usize| -> i64 {
        values[i]
            .as_deref()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(SignInInput {
        app_id: num(0),
        user_id: num(1),
        device_id: num(2),
        token: values[3].clone().unwrap_or_default(),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn map_err(e: WsError) -> Option<TransportError> {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => Some(
            TransportError::TooLarge(format!("{size} bytes, maximum {max_size}")),
        ),
        WsError::Io(e) => Some(match Refused::of(&e) {
            Some(r) => TransportError::TooLarge(r.to_string()),
            None => TransportError::Io(e),
        }),
        other => Some(TransportError::Protocol(other.to_string())),
    }
}

impl Stream for WsTransport {
    type Item = Result<Inbound, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let msg = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(map_err(e).map(Err)),
                Some(Ok(m)) => m,
            };
            return Poll::Ready(Some(match msg {
                Message::Binary(b) => Ok(Inbound::Frame(b)),
                Message::Text(_) => Err(TransportError::TextFrame),
                Message::Ping(_) => {
                    // tungstenite queues the pong (only the latest), so a flood costs no memory;
                    // it still costs CPU and bandwidth, hence the cap.
                    let now = Instant::now();
                    if now.duration_since(this.window_start) > PING_WINDOW {
                        this.window_start = now;
                        this.pings = 0;
                    }
                    this.pings += 1;
                    if this.pings > MAX_PINGS_PER_WINDOW {
                        Err(TransportError::PingFlood)
                    } else {
                        Ok(Inbound::Keepalive)
                    }
                }
                Message::Pong(_) => Ok(Inbound::Keepalive),
                Message::Close(_) => return Poll::Ready(None),
                Message::Frame(_) => continue,
            }));
        }
    }
}

impl Sink<Bytes> for WsTransport {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_ready(cx)
            .map_err(ws_write_err)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), TransportError> {
        Pin::new(&mut self.get_mut().inner)
            .start_send(Message::Binary(frame))
            .map_err(ws_write_err)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(ws_write_err)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(ws_write_err)
    }
}

fn ws_write_err(e: WsError) -> TransportError {
    map_err(e).unwrap_or_else(|| TransportError::Io(std::io::ErrorKind::BrokenPipe.into()))
}

impl Transport for WsTransport {
    fn signed_in(&mut self) {
        self.inner.get_mut().open();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    #[test]
    fn headers_win_over_query_and_query_is_decoded() {
        let mut h = HeaderMap::new();
        let q = Some("app_id=1&user_id=2&device_id=3&token=a%2Eb+c");
        let si = credentials(&h, q).unwrap();
        assert_eq!((si.app_id, si.user_id, si.device_id), (1, 2, 3));
        assert_eq!(si.token, "a.b c");
        h.insert("app_id", HeaderValue::from_static("9"));
        h.insert("token", HeaderValue::from_static("t"));
        let si = credentials(&h, q).unwrap();
        assert_eq!((si.app_id, si.user_id, si.token.as_str()), (9, 0, "t"));
        assert!(credentials(&HeaderMap::new(), Some("x=1")).is_none());
        assert!(credentials(&HeaderMap::new(), None).is_none());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
