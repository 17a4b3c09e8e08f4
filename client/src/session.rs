//! One signed-in long connection: framing for TCP or WebSocket, request/response matching by
//! `request_id`, heartbeats, and a queue of pushes. It does not reconnect; [`crate::Client`] does.
//!
//! Three tasks serve a session: a writer (owns the sink), a reader (owns the stream, routes replies
//! to their waiting request and pushes to the notice queue) and a heartbeat. Whichever notices the
//! connection is gone cancels the session's token, which stops the other two and fails every
//! pending request with [`ClientError::Closed`].

use crate::{ClientError, Endpoint};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use gim_proto::connect::v1::{
    Input, KickNotice, Message, MessageAck, Output, PackageType, ReconnectNotice, SignInInput,
};
use gim_proto::frame::{FrameCodec, FrameError};
use prost::Message as _;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

type FrameSink = Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Who signs in. The token is a device token minted by the app's business server.
#[derive(Clone)]
pub struct Credentials {
    pub app_id: i64,
    pub user_id: i64,
    pub device_id: i64,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    // Tokens are credentials: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("app_id", &self.app_id)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Timing and queue sizes of one connection.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub connect_timeout: Duration,
    /// How long a request waits for its reply before failing with [`ClientError::Timeout`].
    pub request_timeout: Duration,
    /// Heartbeat period; a heartbeat without a reply within `request_timeout` closes the session.
    /// Must stay well under the server's idle timeout (11 min TCP, 12 min WS by default).
    pub heartbeat_interval: Duration,
    /// Pushes waiting for the application. When full, further pushes are dropped and
    /// [`Session::overflowed`] fires: the owner syncs to recover them from the server.
    pub push_queue: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            push_queue: 1024,
        }
    }
}

/// Something the server sent without being asked.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A pushed message (seq 0 when not persisted).
    Message(gim_proto::connect::v1::MessageItem),
    /// The node is draining: reconnect elsewhere after `after_ms`.
    Reconnect(ReconnectNotice),
    /// The same device signed in elsewhere; the server closes this connection next.
    Kicked(KickNotice),
}

/// A signed-in connection. Cheap to share (`Arc`); dropping the last handle closes it.
pub struct Session {
    endpoint: Endpoint,
    out: mpsc::Sender<Bytes>,
    pending: Arc<Mutex<HashMap<i64, oneshot::Sender<Output>>>>,
    next_id: AtomicI64,
    closed: CancellationToken,
    close_reason: Arc<Mutex<Option<String>>>,
    overflow: Arc<Notify>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Session {
    /// Connects, signs in and starts the heartbeat. Returns the session and its push queue; the
    /// queue ends when the connection does.
    pub async fn connect(
        endpoint: &Endpoint,
        creds: &Credentials,
        opts: &SessionOptions,
    ) -> Result<(Arc<Session>, mpsc::Receiver<Notice>), ClientError> {
        let (sink, stream) = tokio::time::timeout(opts.connect_timeout, open(endpoint))
            .await
            .map_err(|_| ClientError::Connect {
                endpoint: endpoint.to_string(),
                reason: format!("timed out after {:?}", opts.connect_timeout),
            })??;
        // Outbound frames queue here; requests wait for room rather than grow memory.
        let (out_tx, out_rx) = mpsc::channel(256);
        let (notice_tx, notice_rx) = mpsc::channel(opts.push_queue.max(1));
        let session = Arc::new(Session {
            endpoint: endpoint.clone(),
            out: out_tx,
            pending: Arc::default(),
            next_id: AtomicI64::new(1),
            closed: CancellationToken::new(),
            close_reason: Arc::default(),
            overflow: Arc::new(Notify::new()),
            request_timeout: opts.request_timeout,
        });
        tokio::spawn(write_loop(sink, out_rx, session.closed.clone()));
        tokio::spawn(read_loop(
            stream,
            notice_tx,
            session.pending.clone(),
            session.closed.clone(),
            session.close_reason.clone(),
            session.overflow.clone(),
        ));
        let sign_in = SignInInput {
            app_id: creds.app_id,
            device_id: creds.device_id,
            user_id: creds.user_id,
            token: creds.token.clone(),
        };
        session.request(PackageType::SignIn, &sign_in).await?;
        tokio::spawn(heartbeat_loop(
            Arc::downgrade(&session),
            opts.heartbeat_interval,
            session.closed.clone(),
        ));
        Ok((session, notice_rx))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and waits for the reply with the same `request_id`. A non-zero reply code
    /// becomes an error; on success the reply's `data` is returned.
    pub async fn request(
        &self,
        kind: PackageType,
        body: &impl prost::Message,
    ) -> Result<Bytes, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let input = Input {
            r#type: kind as i32,
            request_id: id,
            data: body.encode_to_vec().into(),
        };
        let res = async {
            if self.closed.is_cancelled() {
                return Err(ClientError::Closed);
            }
            self.out
                .send(input.encode_to_vec().into())
                .await
                .map_err(|_| ClientError::Closed)?;
            tokio::select! {
                out = rx => out.map_err(|_| ClientError::Closed),
                _ = tokio::time::sleep(self.request_timeout) => Err(ClientError::Timeout(self.request_timeout)),
            }
        }
        .await;
        self.pending.lock().expect("pending lock").remove(&id);
        let out = res?;
        if out.code != 0 {
            let mut e = ClientError::from_code(out.code, out.message);
            if let ClientError::Gim(g) = &mut e {
                g.retry_after_ms = out.retry_after_ms;
            }
            return Err(e);
        }
        Ok(out.data)
    }

    /// Sends a packet that gets no reply worth waiting for (an ACK).
    pub async fn send_oneway(
        &self,
        kind: PackageType,
        body: &impl prost::Message,
    ) -> Result<(), ClientError> {
        let input = Input {
            r#type: kind as i32,
            request_id: 0,
            data: body.encode_to_vec().into(),
        };
        self.out
            .send(input.encode_to_vec().into())
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Acknowledges everything up to `seq` for this device.
    pub async fn ack(&self, seq: i64) -> Result<(), ClientError> {
        let ack = MessageAck {
            device_ack: seq,
            receive_time: gim_common::now_ms(),
        };
        self.send_oneway(PackageType::Message, &ack).await
    }

    /// Closes the connection; pending requests fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.set_reason("closed by the client");
        self.closed.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the connection is gone, for whatever reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Why the connection ended, when known.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().expect("reason lock").clone()
    }

    /// Fires when a push was dropped because the push queue was full: sync to get it back.
    pub async fn overflowed(&self) {
        self.overflow.notified().await
    }

    fn set_reason(&self, reason: &str) {
        set_reason(&self.close_reason, reason);
    }
}

fn set_reason(slot: &Mutex<Option<String>>, reason: &str) {
    let mut r = slot.lock().expect("reason lock");
    if r.is_none() {
        *r = Some(reason.to_string());
    }
}

async fn open(endpoint: &Endpoint) -> Result<(FrameSink, FrameStream), ClientError> {
    let connect_err = |e: &dyn std::fmt::Display| ClientError::Connect {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    };
    let tcp = TcpStream::connect(endpoint.authority())
        .await
        .map_err(|e| connect_err(&e))?;
    let _ = tcp.set_nodelay(true);
    match endpoint {
        Endpoint::Tcp(_) => {
            let (sink, stream) = Framed::new(tcp, FrameCodec::default()).split::<Bytes>();
            let sink = sink.sink_map_err(|e: FrameError| io::Error::other(e.to_string()));
            let stream = stream.map(|r| r.map_err(|e| io::Error::other(e.to_string())));
            Ok((Box::pin(sink), Box::pin(stream)))
        }
        Endpoint::Ws(url) => {
            let (ws, _resp) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map_err(|e| connect_err(&e))?;
            let (sink, stream) = ws.split();
            let sink = sink
                .sink_map_err(|e| io::Error::other(e.to_string()))
                .with(|b: Bytes| async move { Ok::<_, io::Error>(WsMessage::Binary(b)) });
            // Text, ping and pong frames carry no envelope; tungstenite answers pings itself.
            let stream = stream.filter_map(|m| async move {
                match m {
                    Ok(WsMessage::Binary(b)) => Some(Ok(b)),
                    Ok(WsMessage::Close(_)) => None,
                    Ok(_) => None,
                    Err(e) => Some(Err(io::Error::other(e.to_string()))),
                }
            });
            Ok((Box::pin(sink), Box::pin(stream)))
        }
    }
}

async fn write_loop(mut sink: FrameSink, mut rx: mpsc::Receiver<Bytes>, closed: CancellationToken) {
    loop {
        tokio::select! {
            _ = closed.cancelled() => break,
            frame = rx.recv() => match frame {
                Some(f) => {
                    if sink.send(f).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = sink.close().await;
    closed.cancel();
}

async fn read_loop(
    mut stream: FrameStream,
    notices: mpsc::Sender<Notice>,
    pending: Arc<Mutex<HashMap<i64, oneshot::Sender<Output>>>>,
    closed: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    overflow: Arc<Notify>,
) {
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
            f = stream.next() => f,
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                set_reason(&reason, &format!("read failed: {e}"));
                break;
            }
            None => {
                set_reason(&reason, "server closed the connection");
                break;
            }
        };
        let out = match Output::decode(frame) {
            Ok(o) => o,
            Err(e) => {
                set_reason(&reason, &format!("undecodable envelope: {e}"));
                break;
            }
        };
        if out.request_id != 0 {
            let waiter = pending
                .lock()
                .expect("pending lock")
                .remove(&out.request_id);
            if let Some(w) = waiter {
                let _ = w.send(out);
            }
            continue;
        }
        let notice = match out.r#type() {
            PackageType::Message => match Message::decode(out.data) {
                Ok(Message { message: Some(m) }) => Notice::Message(m),
                // An empty MESSAGE (e.g. an ACK echo) carries nothing to deliver.
                Ok(_) => continue,
                Err(e) => {
                    set_reason(&reason, &format!("undecodable push: {e}"));
                    break;
                }
            },
            PackageType::Reconnect => {
                Notice::Reconnect(ReconnectNotice::decode(out.data).unwrap_or_default())
            }
            PackageType::Kicked => {
                set_reason(&reason, "kicked");
                Notice::Kicked(KickNotice::decode(out.data).unwrap_or_default())
            }
            // Unknown or unsolicited packets from a newer server are ignored, not fatal.
            _ => continue,
        };
        match notices.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(n)) => {
                // Never block the reader: replies to requests must keep flowing. Pushed messages
                // are recovered by sync; control notices are rare enough to wait for.
                match n {
                    Notice::Message(_) => overflow.notify_one(),
                    other => {
                        let _ = notices.send(other).await;
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
    closed.cancel();
    // Dropping the waiters fails their requests with Closed.
    pending.lock().expect("pending lock").clear();
}

async fn heartbeat_loop(
    session: std::sync::Weak<Session>,
    every: Duration,
    closed: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(s) = session.upgrade() else { return };
        if let Err(e) = s.request(PackageType::Heartbeat, &()).await {
            // A heartbeat without an answer means a dead peer: give up on this connection so
            // the owner reconnects instead of waiting for TCP to notice.
            s.set_reason(&format!("heartbeat failed: {e}"));
            s.closed.cancel();
            return;
        }
    }
}
