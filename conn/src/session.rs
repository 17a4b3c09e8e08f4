//! The session state machine (SPEC §2 session rules), shared by TCP and WebSocket.
//!
//! A session knows nothing about sockets: it drives any [`Transport`], a `Stream` of inbound
//! envelopes plus a `Sink` of outbound ones. TCP and WebSocket implement it over their sockets;
//! unit tests implement it over channels and run with paused time.
//!
//! One task per connection runs [`serve`]. It waits on a single hand-written poll over, in order:
//! a control from pushers (kick, drain, overflow), the outbound queue (every pending frame is fed
//! to the transport before one flush, so a burst of pushes becomes one write), the one logic call
//! in flight, the next inbound envelope, and one timer. Inbound is not read while a logic call is
//! in flight: requests are answered in order and a client cannot pile up work on the node.
//!
//! | situation                                   | result                                      |
//! |---------------------------------------------|---------------------------------------------|
//! | no sign-in within `sign_in_timeout`          | close (`sign_in_timeout`)                   |
//! | packet other than SIGN_IN before sign-in     | reply 1002; close after a few (`unauthenticated`) |
//! | sign-in rejected (bad token, 1005, ...)      | error reply, then close (`sign_in_rejected`) |
//! | HEARTBEAT                                   | echoed                                      |
//! | no inbound bytes for the idle timeout        | close (`idle_timeout`)                      |
//! | SYNC, MESSAGE (ack), SEND_MESSAGE, GROUP_SYNC | relayed to logic with a fresh trace id     |
//! | undecodable envelope or payload, empty frame | reply 1006, then close                      |
//! | unknown package type                         | reply 1006, connection stays                |
//! | frame above the maximum, WebSocket text      | reply 1006, then close                      |
//! | outbound queue full (client not reading)     | close at once (`outbound_overflow`), logged |
//! | many 1011 replies within a window (abuse)    | the last reply, then close (`rate_limited`) |
//! | kicked by a newer sign-in of the device      | KICKED notice, then close                   |
//! | node draining                               | RECONNECT notice, then close                |
//! | sign-in while the node does not serve ([`crate::health`]) | RECONNECT notice, then close (`unavailable`) |

use crate::admission::Slot;
use crate::hub::{Conn, Control, Identity, Push};
use crate::logic::{ChangeKind, LogicApi};
use crate::metrics::{Metrics, TransportKind};
use crate::wire;
use bytes::Bytes;
use futures::{Sink, Stream};
use gim_common::error::CODE_INTERNAL;
use gim_common::telemetry::new_trace_id;
use gim_common::{AppId, DeviceId, GimCode, GimError, UserId};
use gim_proto::connect::v1::{
    GetConversationsInput, GetHistoryInput, GetHistoryOutput, GroupSyncInput, GroupSyncOutput,
    Input, KickNotice, MarkReadInput, MessageAck, MessageChangeInput, Output, PackageType,
    ReconnectNotice, SendMessageInput, SendMessageOutput, SignInInput, SyncInput, SyncOutput,
    UpdateConversationInput,
};
use gim_proto::logic::v1::{
    GroupSyncReq, IntGetConversationsReq, IntGetHistoryReq, IntMarkReadReq, IntMessageChangeReq,
    IntSendMessageReq, IntUpdateConversationReq, MessageAckReq, OfflineReq, SendMessageReq,
    SignInReq, SignInResp, SyncReq,
};
use prost::Message as _;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tracing::{debug, info, warn};

/// One inbound item from a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// One envelope (`Input`), not yet decoded. May be empty (a zero-length TCP frame).
    Frame(Bytes),
    /// Bytes arrived that carry no envelope (WebSocket ping/pong): they count against idleness.
    Keepalive,
}

/// Why a transport could not produce or send an envelope.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("frame too large: {0}")]
    TooLarge(String),
    #[error("text frames are not supported")]
    TextFrame,
    #[error("ping flood")]
    PingFlood,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A connection as the session sees it.
///
/// The sink half is used as: `poll_ready` then `start_send` for each pending frame, then one
/// `poll_flush`. Implementations buffer in `start_send` and write in `poll_flush`, which is where
/// several frames become one write.
pub trait Transport:
    Stream<Item = Result<Inbound, TransportError>> + Sink<Bytes, Error = TransportError> + Unpin + Send
{
    /// Called after the connection has been quiet for a while: drop empty buffers so an idle
    /// connection holds as little memory as possible.
    fn release_idle_buffers(&mut self) {}
    /// Called once the connection has signed in: lift the pre-sign-in frame limit.
    fn signed_in(&mut self) {}
}

/// Why a connection ended; also the `reason` label of the closes metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    SignInTimeout,
    IdleTimeout,
    Unauthenticated,
    SignInRejected,
    BadEnvelope,
    BadPayload,
    EmptyFrame,
    FrameTooLarge,
    TextFrame,
    PingFlood,
    Protocol,
    Io,
    Overflow,
    Kicked,
    Drain,
    Handshake,
    /// The sign-in found every signed-in slot taken.
    NodeFull,
    /// The sign-in came while the node does not serve (lost Redis or logic).
    Unavailable,
    /// [`SessionConfig::max_rate_limited`] refusals (1011) within the window.
    RateLimited,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::SignInTimeout => "sign_in_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Unauthenticated => "unauthenticated",
            CloseReason::SignInRejected => "sign_in_rejected",
            CloseReason::BadEnvelope => "bad_envelope",
            CloseReason::BadPayload => "bad_payload",
            CloseReason::EmptyFrame => "empty_frame",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::TextFrame => "text_frame",
            CloseReason::PingFlood => "ping_flood",
            CloseReason::Protocol => "protocol_error",
            CloseReason::Io => "io_error",
            CloseReason::Overflow => "outbound_overflow",
            CloseReason::Kicked => "kicked",
            CloseReason::Drain => "drain",
            CloseReason::Handshake => "handshake_failed",
            CloseReason::NodeFull => "node_full",
            CloseReason::Unavailable => "unavailable",
            CloseReason::RateLimited => "rate_limited",
        }
    }
}

/// Session timing and limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub sign_in_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub ws_idle_timeout: Duration,
    /// Packets tolerated (each answered with 1002) before sign-in, then the connection closes.
    pub max_unauthenticated: u32,
    /// How long a closing connection may take to flush its last frames (error reply, notice).
    pub close_linger: Duration,
    /// Quiet time after which buffers are released.
    pub release_after: Duration,
    /// Bound on the Offline call made when a signed-in connection closes.
    pub offline_timeout: Duration,
    /// How long a closed connection waits for an Offline slot ([`OFFLINE_INFLIGHT`]).
    pub offline_queue_timeout: Duration,
    /// Requests refused with 1011 (rate limited) within `rate_limited_window` after which the
    /// connection closes: a client that ignores retry-after keeps costing logic a call each.
    pub max_rate_limited: u32,
    pub rate_limited_window: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            sign_in_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(660),
            ws_idle_timeout: Duration::from_secs(720),
            max_unauthenticated: 3,
            close_linger: Duration::from_secs(2),
            release_after: Duration::from_secs(5),
            offline_timeout: Duration::from_secs(3),
            offline_queue_timeout: Duration::from_secs(60),
            max_rate_limited: 20,
            rate_limited_window: Duration::from_secs(10),
        }
    }
}

/// What every session of one node shares.
pub struct SessionCtx {
    pub node_id: String,
    pub logic: Arc<dyn LogicApi>,
    pub hub: Arc<crate::hub::Hub>,
    pub metrics: Arc<Metrics>,
    pub cfg: SessionConfig,
    /// Sign-ins of this node in flight at logic ([`SIGN_IN_INFLIGHT`]).
    pub sign_ins: Arc<tokio::sync::Semaphore>,
    /// Offline calls of this node in flight at logic ([`OFFLINE_INFLIGHT`]).
    pub offlines: Arc<tokio::sync::Semaphore>,
    /// Whether the node serves; sign-ins are sent elsewhere while it does not.
    pub health: Arc<crate::health::Health>,
}

/// Most sign-ins one node has in flight at logic at once. In a connect storm beyond what logic
/// serves, the others wait here (cheaply, up to the session's sign-in timeout) instead of
/// queueing inside logic past their call deadline: logic then keeps finishing sign-ins at its
/// capacity instead of timing every one of them out (congestion collapse).
pub const SIGN_IN_INFLIGHT: usize = 64;

/// Most Offline calls one node has in flight at logic at once. When many connections close
/// together (a load balancer cut, 100 000 clients gone in a second) the others wait here. Without
/// the bound they all went out at once, most hit their call deadline inside logic, and the burst
/// of cancelled HTTP/2 streams made logic's server drop the whole conn→logic connection (h2's
/// reset-flood protection), failing every call on it: the routes of ~98 % of those devices stayed
/// in Redis, and the next sign-in of each paid a kick of its dead connection.
pub const OFFLINE_INFLIGHT: usize = 64;

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// A connection as accepted.
#[derive(Debug)]
pub struct Accepted {
    pub kind: TransportKind,
    pub peer: SocketAddr,
    /// When it was accepted: the sign-in deadline counts from here (a WebSocket upgrade included).
    pub at: Instant,
    /// Its slot under the node's connection limits ([`crate::admission`]); None = unlimited.
    pub slot: Option<Slot>,
}

/// Runs one connection to its end, then unregisters it, releases its slot and tells logic it
/// went offline.
///
/// `conn` comes from `ctx.hub.register()`. `preauth` is a sign-in taken from WebSocket upgrade
/// headers or query parameters; it is processed before any frame, as request id 0.
pub async fn serve<T: Transport>(
    ctx: &SessionCtx,
    conn: Arc<Conn>,
    transport: T,
    accepted: Accepted,
    preauth: Option<SignInInput>,
) -> CloseReason {
    let peer = accepted.peer;
    let mut s = Session::new(ctx, conn.clone(), accepted);
    let reason = s.run(transport, preauth).await;
    let signed_in = s.signed_in;
    // The connection is gone: its slot is free now, not after the Offline call below (which
    // may wait for a slot and for logic for seconds).
    drop(s);
    let who = ctx.hub.remove(&conn, signed_in);
    ctx.metrics.closed(reason.as_str());
    if signed_in {
        ctx.metrics.signed_in.dec();
    }
    match reason {
        CloseReason::PeerClosed | CloseReason::Drain | CloseReason::Kicked => {
            debug!(conn_id = %conn.id, %peer, reason = reason.as_str(), "connection closed")
        }
        _ => info!(conn_id = %conn.id, %peer, reason = reason.as_str(), "connection closed"),
    }
    if let Some(who) = who {
        let trace_id = new_trace_id();
        let req = OfflineReq {
            app_id: who.app.get(),
            user_id: who.user.get(),
            device_id: who.device.get(),
            node_id: ctx.node_id.clone(),
            conn_id: conn.id.get(),
            client_addr: peer.to_string(),
        };
        let slot = tokio::time::timeout(
            ctx.cfg.offline_queue_timeout,
            ctx.offlines.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(_slot)) = slot else {
            warn!(%trace_id, conn_id = %conn.id, "offline not sent: no slot in time");
            return reason;
        };
        // Boxed by the trait: the task does not carry a gRPC call's size while the connection lives.
        let call = ctx.logic.offline(req, trace_id.clone());
        match tokio::time::timeout(ctx.cfg.offline_timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                warn!(%trace_id, conn_id = %conn.id, error = %status.message(), "offline failed")
            }
            Err(_) => warn!(%trace_id, conn_id = %conn.id, "offline timed out"),
        }
    }
    reason
}

/// Result of the one logic call in flight.
enum Done {
    SignIn {
        request_id: i64,
        who: Identity,
        trace_id: String,
        result: Result<SignInResp, Status>,
    },
    Reply(Output),
    Nothing,
}

type Inflight = Pin<Box<dyn Future<Output = Done> + Send>>;

enum Event {
    Control(Control),
    Inbound(Option<Result<Inbound, TransportError>>),
    Done(Done),
    Timer,
    WriteError(TransportError),
    Finished,
}

struct Session<'a> {
    ctx: &'a SessionCtx,
    conn: Arc<Conn>,
    kind: TransportKind,
    peer: SocketAddr,
    signed_in: bool,
    who: Option<Identity>,
    unauthenticated: u32,
    /// 1011 replies in the current window, and when the window began.
    rate_limited: (u32, Instant),
    started: Instant,
    last_inbound: Instant,
    idle_timeout: Duration,
    released: bool,
    pending_write: bool,
    inflight: Option<Inflight>,
    closing: Option<(CloseReason, Instant)>,
    slot: Option<Slot>,
}

impl<'a> Session<'a> {
    fn new(ctx: &'a SessionCtx, conn: Arc<Conn>, accepted: Accepted) -> Self {
        let now = Instant::now();
        let kind = accepted.kind;
        Self {
            ctx,
            conn,
            kind,
            peer: accepted.peer,
            signed_in: false,
            who: None,
            unauthenticated: 0,
            rate_limited: (0, now),
            started: accepted.at,
            last_inbound: now,
            idle_timeout: match kind {
                TransportKind::Tcp => ctx.cfg.tcp_idle_timeout,
                TransportKind::Ws => ctx.cfg.ws_idle_timeout,
            },
            released: false,
            pending_write: false,
            inflight: None,
            closing: None,
            slot: accepted.slot,
        }
    }

    async fn run<T: Transport>(&mut self, mut t: T, preauth: Option<SignInInput>) -> CloseReason {
        let sleep = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(sleep);
        if let Some(si) = preauth {
            self.start_sign_in(0, si);
        }
        let mut limit_lifted = false;
        loop {
            let ev = poll_fn(|cx| self.poll_event(cx, &mut t, sleep.as_mut())).await;
            match ev {
                Event::Finished => return self.close_reason(),
                Event::WriteError(e) => {
                    debug!(conn_id = %self.conn.id, error = %e, "write failed");
                    return self.closing.map(|c| c.0).unwrap_or(CloseReason::Io);
                }
                Event::Control(c) => self.on_control(c),
                Event::Inbound(item) => self.on_inbound(item),
                Event::Done(done) => {
                    self.on_done(done);
                    if self.signed_in && !limit_lifted {
                        t.signed_in();
                        limit_lifted = true;
                    }
                }
                Event::Timer => self.on_timer(&mut t),
            }
            let want = self.next_deadline();
            // Deadlines only move later as traffic arrives; the timer is re-armed lazily when it
            // fires early, and eagerly only when a deadline moves earlier (closing, new quiet spell).
            if want < sleep.deadline() || sleep.is_elapsed() {
                sleep.as_mut().reset(want);
            }
        }
    }

    fn close_reason(&self) -> CloseReason {
        self.closing.map(|c| c.0).unwrap_or(CloseReason::PeerClosed)
    }

    fn next_deadline(&self) -> Instant {
        if let Some((_, at)) = self.closing {
            return at;
        }
        let mut at = self.last_inbound + self.idle_timeout;
        if !self.signed_in {
            at = at.min(self.started + self.ctx.cfg.sign_in_timeout);
        }
        if !self.released {
            at = at.min(self.last_inbound + self.ctx.cfg.release_after);
        }
        at
    }

    fn poll_event<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        t: &mut T,
        mut sleep: Pin<&mut Sleep>,
    ) -> Poll<Event> {
        self.conn.register_waker(cx);
        if self.closing.is_none()
            && let Some(c) = self.conn.take_control()
        {
            return Poll::Ready(Event::Control(c));
        }

        // Outbound: feed everything queued, then flush once.
        for _ in 0..4 {
            if self.pending_write {
                match Pin::new(&mut *t).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.pending_write = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteError(e)),
                    Poll::Pending => {}
                }
            }
            let mut fed = false;
            while self.conn.has_queued() {
                match Pin::new(&mut *t).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteError(e)),
                    Poll::Pending => break,
                }
                let Some(frame) = self.conn.pop() else { break };
                let io = self.ctx.metrics.io(self.kind);
                io.frames_out.inc();
                io.bytes_out.inc_by(frame.len() as u64);
                if let Err(e) = Pin::new(&mut *t).start_send(frame) {
                    return Poll::Ready(Event::WriteError(e));
                }
                fed = true;
            }
            if !fed {
                break;
            }
            self.pending_write = true;
        }

        if self.closing.is_some() {
            if !self.pending_write
                && !self.conn.has_queued()
                && Pin::new(&mut *t).poll_close(cx).is_ready()
            {
                return Poll::Ready(Event::Finished);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Finished);
            }
            return Poll::Pending;
        }

        if let Some(f) = self.inflight.as_mut() {
            if let Poll::Ready(done) = f.as_mut().poll(cx) {
                self.inflight = None;
                return Poll::Ready(Event::Done(done));
            }
        } else if let Poll::Ready(item) = Pin::new(&mut *t).poll_next(cx) {
            return Poll::Ready(Event::Inbound(item));
        }

        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Poll::Pending
    }

    fn begin_close(&mut self, reason: CloseReason) {
        if self.closing.is_some() {
            return;
        }
        let linger = if reason == CloseReason::Overflow {
            // The client does not read: nothing more can reach it.
            Duration::ZERO
        } else {
            self.ctx.cfg.close_linger
        };
        self.closing = Some((reason, Instant::now() + linger));
        self.inflight = None;
    }

    fn send(&mut self, out: &Output) {
        if let Push::Overflow = self.conn.push_own(wire::encode(out)) {
            // The control set by the overflow is picked up on the next poll.
            debug!(conn_id = %self.conn.id, "reply overflowed the outbound queue");
        }
    }

    fn reply(&mut self, ty: i32, request_id: i64, code: i32, message: &str) {
        let out = wire::output(ty, request_id, code, message.to_string(), Bytes::new());
        self.send(&out);
    }

    fn send_reconnect(&mut self, after_ms: i64, reason: &str) {
        let data = ReconnectNotice {
            reason: reason.into(),
            after_ms,
        }
        .encode_to_vec()
        .into();
        let out = wire::output(PackageType::Reconnect as i32, 0, 0, String::new(), data);
        self.send(&out);
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Kick(reason) => {
                let data = KickNotice { reason }.encode_to_vec().into();
                let out = wire::output(PackageType::Kicked as i32, 0, 0, String::new(), data);
                self.send(&out);
                self.begin_close(CloseReason::Kicked);
            }
            Control::Drain { after_ms, reason } => {
                self.send_reconnect(after_ms, reason);
                self.begin_close(CloseReason::Drain);
            }
            Control::Overflow => {
                warn!(
                    conn_id = %self.conn.id,
                    peer = %self.peer,
                    "outbound queue overflow: the client does not read, closing"
                );
                self.conn.clear_queue();
                self.begin_close(CloseReason::Overflow);
            }
        }
    }

    fn on_inbound(&mut self, item: Option<Result<Inbound, TransportError>>) {
        let bad = PackageType::Unknown as i32;
        match item {
            None => self.begin_close(CloseReason::PeerClosed),
            Some(Err(e)) => {
                debug!(conn_id = %self.conn.id, error = %e, "transport error");
                let reason = match e {
                    TransportError::TooLarge(_) => {
                        self.reply(bad, 0, GimCode::BadRequest.as_i32(), "frame too large");
                        CloseReason::FrameTooLarge
                    }
                    TransportError::TextFrame => {
                        let msg = "text frames are not supported: send binary frames";
                        self.reply(bad, 0, GimCode::BadRequest.as_i32(), msg);
                        CloseReason::TextFrame
                    }
                    TransportError::PingFlood => CloseReason::PingFlood,
                    TransportError::Protocol(_) => CloseReason::Protocol,
                    TransportError::Io(_) => CloseReason::Io,
                };
                self.begin_close(reason);
            }
            Some(Ok(Inbound::Keepalive)) => {
                self.touch();
                // A WebSocket ping is answered by the transport on its next flush.
                self.pending_write = true;
            }
            Some(Ok(Inbound::Frame(frame))) => {
                self.touch();
                let io = self.ctx.metrics.io(self.kind);
                io.frames_in.inc();
                io.bytes_in.inc_by(frame.len() as u64);
                self.on_frame(frame);
            }
        }
    }

    fn touch(&mut self) {
        self.last_inbound = Instant::now();
        self.released = false;
    }

    fn on_frame(&mut self, frame: Bytes) {
        let bad_request = GimCode::BadRequest.as_i32();
        let unknown = PackageType::Unknown as i32;
        if frame.is_empty() {
            self.reply(unknown, 0, bad_request, "empty frame");
            return self.begin_close(CloseReason::EmptyFrame);
        }
        let Ok(input) = Input::decode(frame) else {
            self.reply(unknown, 0, bad_request, "undecodable envelope");
            return self.begin_close(CloseReason::BadEnvelope);
        };
        let (raw_ty, rid) = (input.r#type, input.request_id);
        let ty = PackageType::try_from(raw_ty).unwrap_or(PackageType::Unknown);

        let Some(who) = self.who.filter(|_| self.signed_in) else {
            if ty == PackageType::SignIn {
                match SignInInput::decode(input.data) {
                    Ok(si) => self.start_sign_in(rid, si),
                    Err(_) => {
                        self.reply(raw_ty, rid, bad_request, "undecodable SignInInput");
                        self.begin_close(CloseReason::BadPayload);
                    }
                }
                return;
            }
            self.unauthenticated += 1;
            let code = GimCode::Unauthorized.as_i32();
            self.reply(raw_ty, rid, code, "sign in first");
            if self.unauthenticated >= self.ctx.cfg.max_unauthenticated {
                self.begin_close(CloseReason::Unauthenticated);
            }
            return;
        };

        macro_rules! payload {
            ($t:ty) => {
                match <$t>::decode(input.data) {
                    Ok(v) => v,
                    Err(_) => {
                        let msg = concat!("undecodable ", stringify!($t));
                        self.reply(raw_ty, rid, bad_request, msg);
                        return self.begin_close(CloseReason::BadPayload);
                    }
                }
            };
        }

        let logic = self.ctx.logic.clone();
        let trace_id = new_trace_id();
        let (app_id, user_id, device_id) = (who.app.get(), who.user.get(), who.device.get());
        match ty {
            PackageType::Heartbeat => self.reply(raw_ty, rid, 0, ""),
            PackageType::Sync => {
                let input = payload!(SyncInput);
                let req = SyncReq {
                    app_id,
                    user_id,
                    device_id,
                    seq: input.seq,
                    limit: 0,
                };
                debug!(%trace_id, conn_id = %self.conn.id, seq = input.seq, "sync");
                self.inflight = Some(Box::pin(async move {
                    match logic.sync(req, trace_id.clone()).await {
                        Ok(resp) => {
                            let mut page = SyncOutput {
                                messages: resp.messages,
                                has_more: resp.has_more,
                            };
                            let fits = wire::fit_page(&mut page.messages, &mut page.has_more);
                            page_reply(raw_ty, rid, fits, &page)
                        }
                        Err(s) => Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "sync")),
                    }
                }));
            }
            PackageType::Message => {
                let ack = payload!(MessageAck);
                let req = MessageAckReq {
                    app_id,
                    user_id,
                    device_id,
                    device_ack: ack.device_ack,
                    receive_time: ack.receive_time,
                };
                self.inflight = Some(Box::pin(async move {
                    // As in the original, a successful ack gets no reply.
                    match logic.message_ack(req, trace_id.clone()).await {
                        Ok(_) => Done::Nothing,
                        Err(s) => Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "ack")),
                    }
                }));
            }
            PackageType::SendMessage => {
                let m = payload!(SendMessageInput);
                let req = IntSendMessageReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(SendMessageReq {
                        receiver_type: m.receiver_type,
                        receiver_id: m.receiver_id,
                        to_user_ids: m.to_user_ids,
                        message_body: m.message_body,
                        send_time: m.send_time,
                        is_persist: m.is_persist,
                        client_request_id: m.client_request_id,
                        sender_id: 0,
                    }),
                };
                debug!(%trace_id, conn_id = %self.conn.id, "send message");
                self.inflight = Some(Box::pin(async move {
                    match logic.send_message(req, trace_id.clone()).await {
                        Ok(r) => {
                            let data = SendMessageOutput {
                                seq: r.seq,
                                message_id: r.message_id,
                            }
                            .encode_to_vec()
                            .into();
                            Done::Reply(wire::output(raw_ty, rid, 0, String::new(), data))
                        }
                        Err(s) => Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "send")),
                    }
                }));
            }
            PackageType::GroupSync => {
                let g = payload!(GroupSyncInput);
                let req = GroupSyncReq {
                    app_id,
                    user_id,
                    group_id: g.group_id,
                    seq: g.seq,
                    limit: 0,
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.group_sync(req, trace_id.clone()).await {
                        Ok(resp) => {
                            let mut page = GroupSyncOutput {
                                messages: resp.messages,
                                has_more: resp.has_more,
                            };
                            let fits = wire::fit_page(&mut page.messages, &mut page.has_more);
                            page_reply(raw_ty, rid, fits, &page)
                        }
                        Err(s) => {
                            Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "group sync"))
                        }
                    }
                }));
            }
            PackageType::GetConversations => {
                let req = IntGetConversationsReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(payload!(GetConversationsInput)),
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.get_conversations(req, trace_id.clone()).await {
                        Ok(out) => Done::Reply(encoded(raw_ty, rid, &out)),
                        Err(s) => {
                            Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "conversations"))
                        }
                    }
                }));
            }
            PackageType::UpdateConversation => {
                let req = IntUpdateConversationReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(payload!(UpdateConversationInput)),
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.update_conversation(req, trace_id.clone()).await {
                        Ok(out) => Done::Reply(encoded(raw_ty, rid, &out)),
                        Err(s) => Done::Reply(error_reply(
                            raw_ty,
                            rid,
                            &s,
                            &trace_id,
                            "update conversation",
                        )),
                    }
                }));
            }
            PackageType::MarkRead => {
                let req = IntMarkReadReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(payload!(MarkReadInput)),
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.mark_read(req, trace_id.clone()).await {
                        Ok(out) => Done::Reply(encoded(raw_ty, rid, &out)),
                        Err(s) => Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "mark read")),
                    }
                }));
            }
            PackageType::GetHistory => {
                let req = IntGetHistoryReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(payload!(GetHistoryInput)),
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.get_history(req, trace_id.clone()).await {
                        Ok(out) => {
                            let mut page = GetHistoryOutput {
                                messages: out.messages,
                                has_more: out.has_more,
                            };
                            // Newest first: a cut page drops older messages, still has_more.
                            let fits = wire::fit_page(&mut page.messages, &mut page.has_more);
                            page_reply(raw_ty, rid, fits, &page)
                        }
                        Err(s) => Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "history")),
                    }
                }));
            }
            PackageType::RecallMessage | PackageType::EditMessage | PackageType::DeleteMessage => {
                let kind = match ty {
                    PackageType::RecallMessage => ChangeKind::Recall,
                    PackageType::EditMessage => ChangeKind::Edit,
                    _ => ChangeKind::Delete,
                };
                let req = IntMessageChangeReq {
                    app_id,
                    user_id,
                    device_id,
                    req: Some(payload!(MessageChangeInput)),
                };
                self.inflight = Some(Box::pin(async move {
                    match logic.change_message(kind, req, trace_id.clone()).await {
                        Ok(out) => Done::Reply(encoded(raw_ty, rid, &out)),
                        Err(s) => {
                            Done::Reply(error_reply(raw_ty, rid, &s, &trace_id, "change message"))
                        }
                    }
                }));
            }
            PackageType::SignIn => self.reply(raw_ty, rid, bad_request, "already signed in"),
            _ => self.reply(raw_ty, rid, bad_request, "unsupported package type"),
        }
    }

    fn start_sign_in(&mut self, request_id: i64, si: SignInInput) {
        if let Some(reason) = self.ctx.health.unavailable() {
            // Signing in here would leave the client unreachable (no lease: logic routes no push
            // here) or fail at logic: tell it to try another node.
            debug!(conn_id = %self.conn.id, reason, "sign-in refused: node not serving");
            self.ctx.metrics.sign_in("refused");
            self.send_reconnect(0, reason);
            return self.begin_close(CloseReason::Unavailable);
        }
        if let Some(Err(full)) = self.slot.as_mut().map(Slot::promote) {
            let ty = PackageType::SignIn as i32;
            debug!(conn_id = %self.conn.id, "sign-in refused: {}", full.as_str());
            self.ctx.metrics.sign_in("refused");
            self.reply(ty, request_id, CODE_INTERNAL, full.as_str());
            return self.begin_close(CloseReason::NodeFull);
        }
        let who = Identity {
            app: AppId(si.app_id),
            user: UserId(si.user_id),
            device: DeviceId(si.device_id),
        };
        // Set before logic records the route, so a push racing the sign-in reply finds the
        // connection; pushes only name it after logic accepted the token.
        self.conn.set_identity(Some(who));
        self.who = Some(who);
        let trace_id = new_trace_id();
        let req = SignInReq {
            app_id: si.app_id,
            user_id: si.user_id,
            device_id: si.device_id,
            token: si.token,
            node_id: self.ctx.node_id.clone(),
            conn_id: self.conn.id.get(),
            client_addr: self.peer.to_string(),
        };
        let logic = self.ctx.logic.clone();
        let permits = self.ctx.sign_ins.clone();
        self.inflight = Some(Box::pin(async move {
            // Never closed; a session that gives up (sign-in timeout) drops this wait.
            let _permit = permits.acquire_owned().await;
            let result = logic.sign_in(req, trace_id.clone()).await;
            Done::SignIn {
                request_id,
                who,
                trace_id,
                result,
            }
        }));
    }

    fn on_done(&mut self, done: Done) {
        let ty = PackageType::SignIn as i32;
        match done {
            Done::Nothing => {}
            Done::Reply(out) => {
                self.send(&out);
                if out.code == GimCode::RateLimited.as_i32() {
                    self.on_rate_limited();
                }
            }
            Done::SignIn {
                request_id,
                who,
                trace_id,
                result: Ok(resp),
            } => {
                self.signed_in = true;
                self.ctx
                    .hub
                    .signed_in(&self.conn, who, &resp.large_group_ids);
                self.ctx.metrics.signed_in.inc();
                self.ctx.metrics.sign_in("ok");
                info!(
                    %trace_id,
                    conn_id = %self.conn.id,
                    app_id = %who.app,
                    user_id = %who.user,
                    device_id = %who.device,
                    transport = self.kind.as_str(),
                    "signed in"
                );
                self.reply(ty, request_id, 0, "");
            }
            Done::SignIn {
                request_id,
                trace_id,
                result: Err(status),
                ..
            } => {
                self.conn.set_identity(None);
                self.who = None;
                let business = GimError::from_status(&status).is_some();
                self.ctx
                    .metrics
                    .sign_in(if business { "rejected" } else { "error" });
                let out = error_reply(ty, request_id, &status, &trace_id, "sign in");
                debug!(%trace_id, conn_id = %self.conn.id, code = out.code, "sign-in rejected");
                self.send(&out);
                self.begin_close(CloseReason::SignInRejected);
            }
        }
    }

    /// Counts a 1011 reply; closes the connection at the limit within the window.
    fn on_rate_limited(&mut self) {
        let now = Instant::now();
        let (n, since) = &mut self.rate_limited;
        if now.duration_since(*since) > self.ctx.cfg.rate_limited_window {
            (*n, *since) = (0, now);
        }
        *n += 1;
        if *n >= self.ctx.cfg.max_rate_limited {
            warn!(conn_id = %self.conn.id, peer = %self.peer, "rate limited repeatedly, closing");
            self.begin_close(CloseReason::RateLimited);
        }
    }

    fn on_timer<T: Transport>(&mut self, t: &mut T) {
        let now = Instant::now();
        if !self.signed_in && now >= self.started + self.ctx.cfg.sign_in_timeout {
            self.begin_close(CloseReason::SignInTimeout);
        } else if now >= self.last_inbound + self.idle_timeout {
            self.begin_close(CloseReason::IdleTimeout);
        } else if !self.released && now >= self.last_inbound + self.ctx.cfg.release_after {
            t.release_idle_buffers();
            self.released = true;
        }
    }
}

/// A page reply (SYNC, GROUP_SYNC), already cut to one frame by [`wire::fit_page`].
/// A successful reply carrying `msg`.
fn encoded(ty: i32, request_id: i64, msg: &impl prost::Message) -> Output {
    wire::output(ty, request_id, 0, String::new(), msg.encode_to_vec().into())
}

fn page_reply(ty: i32, request_id: i64, fits: bool, page: &impl prost::Message) -> Done {
    if !fits {
        warn!(request_id, "a stored message is larger than one frame");
        let msg = "message too large for one frame".to_string();
        return Done::Reply(wire::output(
            ty,
            request_id,
            CODE_INTERNAL,
            msg,
            Bytes::new(),
        ));
    }
    Done::Reply(wire::output(
        ty,
        request_id,
        0,
        String::new(),
        page.encode_to_vec().into(),
    ))
}

/// The reply for a failed logic call: the business code and message, or 1001 with the trace id
/// (the cause is logged here and in logic under the same trace id, never sent to the client).
fn error_reply(ty: i32, request_id: i64, status: &Status, trace_id: &str, what: &str) -> Output {
    match GimError::from_status(status) {
        Some(e) => {
            let mut out = wire::output(ty, request_id, e.code.as_i32(), e.message, Bytes::new());
            out.retry_after_ms = e.retry_after_ms;
            out
        }
        None => {
            warn!(
                %trace_id,
                grpc_code = ?status.code(),
                error = %status.message(),
                "{what} failed"
            );
            let msg = format!("internal error (trace id {trace_id})");
            wire::output(ty, request_id, CODE_INTERNAL, msg, Bytes::new())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
