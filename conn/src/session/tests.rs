//! The session driven over channels with paused time: no sockets, no logic process.

use super::*;
use crate::hub::Hub;
use crate::logic::LogicFuture;
use gim_common::GroupId;
use gim_proto::connect::v1::{Message as PushMessage, MessageItem};
use gim_proto::logic::v1::{
    GroupSyncResp, MessageAckResp, OfflineResp, RestoreRoutesReq, RestoreRoutesResp,
    SendMessageResp, SyncResp,
};
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

#[derive(Debug)]
pub(crate) enum Call {
    SignIn(SignInReq, String),
    Sync(SyncReq, String),
    Ack(MessageAckReq),
    Offline(OfflineReq),
    Send(IntSendMessageReq, String),
    GroupSync(GroupSyncReq),
    Restore(RestoreRoutesReq),
}

/// Accepts token "good" (large groups [7]); a send to receiver 0 fails as if the store were down.
pub(crate) struct FakeLogic {
    pub(crate) calls: mpsc::UnboundedSender<Call>,
    /// Offline calls are recorded and then never answered (a hung logic).
    pub(crate) hold_offline: bool,
    /// While set, the health check says logic does not serve.
    pub(crate) down: Arc<std::sync::atomic::AtomicBool>,
}

fn ready<T: Send + 'static>(v: Result<T, Status>) -> LogicFuture<T> {
    Box::pin(async move { v })
}

impl LogicApi for FakeLogic {
    fn ping(&self) -> LogicFuture<bool> {
        let up = !self.down.load(std::sync::atomic::Ordering::Relaxed);
        ready(Ok(up))
    }
    fn sign_in(&self, req: SignInReq, trace_id: String) -> LogicFuture<SignInResp> {
        let ok = req.token == "good";
        let _ = self.calls.send(Call::SignIn(req, trace_id));
        ready(if ok {
            Ok(SignInResp {
                large_group_ids: vec![7],
            })
        } else {
            Err(GimError::unauthorized("bad token").to_status())
        })
    }
    fn sync(&self, req: SyncReq, trace_id: String) -> LogicFuture<SyncResp> {
        let messages = (req.seq.saturating_add(1)..=req.seq.saturating_add(3))
            .map(|seq| MessageItem {
                seq,
                ..Default::default()
            })
            .collect();
        let _ = self.calls.send(Call::Sync(req, trace_id));
        ready(Ok(SyncResp {
            messages,
            has_more: false,
        }))
    }
    fn message_ack(&self, req: MessageAckReq, _: String) -> LogicFuture<MessageAckResp> {
        let _ = self.calls.send(Call::Ack(req));
        ready(Ok(MessageAckResp {}))
    }
    fn offline(&self, req: OfflineReq, _: String) -> LogicFuture<OfflineResp> {
        let _ = self.calls.send(Call::Offline(req));
        if self.hold_offline {
            return Box::pin(futures::future::pending());
        }
        ready(Ok(OfflineResp {}))
    }
    fn send_message(&self, req: IntSendMessageReq, trace: String) -> LogicFuture<SendMessageResp> {
        let fail = req.req.as_ref().is_some_and(|r| r.receiver_id == 0);
        let _ = self.calls.send(Call::Send(req, trace));
        ready(if fail {
            Err(Status::unavailable("store down"))
        } else {
            Ok(SendMessageResp {
                seq: 42,
                message_id: 99,
            })
        })
    }
    fn group_sync(&self, req: GroupSyncReq, _: String) -> LogicFuture<GroupSyncResp> {
        let _ = self.calls.send(Call::GroupSync(req));
        ready(Ok(GroupSyncResp::default()))
    }
    fn restore_routes(&self, req: RestoreRoutesReq, _: String) -> LogicFuture<RestoreRoutesResp> {
        let restored = req.routes.len() as u32;
        let _ = self.calls.send(Call::Restore(req));
        ready(Ok(RestoreRoutesResp { restored }))
    }
}

/// A transport over channels. Each flush delivers the frames fed since the last one as one batch,
/// so tests can see coalescing; a small batch channel makes a client that stops reading block the
/// session exactly as a full socket would.
pub(crate) struct ChanTransport {
    inbound: mpsc::Receiver<Result<Inbound, TransportError>>,
    out: PollSender<Vec<Bytes>>,
    pending: Vec<Bytes>,
}

impl Stream for ChanTransport {
    type Item = Result<Inbound, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx)
    }
}

impl Sink<Bytes> for ChanTransport {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.pending.len() >= 16 {
            return self.poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }
    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        self.pending.push(item);
        Ok(())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let broken = || TransportError::Io(std::io::ErrorKind::BrokenPipe.into());
        match self.out.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(broken())),
            Poll::Ready(Ok(())) => {}
        }
        let batch = std::mem::take(&mut self.pending);
        self.out.send_item(batch).map_err(|_| broken())?;
        Poll::Ready(Ok(()))
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        self.out.close();
        Poll::Ready(Ok(()))
    }
}

impl Transport for ChanTransport {}

pub(crate) struct Harness {
    pub ctx: Arc<SessionCtx>,
    pub calls: mpsc::UnboundedReceiver<Call>,
}

pub(crate) fn harness(queue_cap: usize) -> Harness {
    let (tx, calls) = mpsc::unbounded_channel();
    let ctx = Arc::new(SessionCtx {
        node_id: "node-test".into(),
        logic: Arc::new(FakeLogic {
            calls: tx,
            hold_offline: false,
            down: Default::default(),
        }),
        hub: Arc::new(Hub::new(queue_cap)),
        metrics: Arc::new(Metrics::new()),
        cfg: SessionConfig::default(),
        sign_ins: Arc::new(tokio::sync::Semaphore::new(2)),
        offlines: Arc::new(tokio::sync::Semaphore::new(2)),
        health: crate::health::Health::new(std::time::Duration::from_secs(15)),
    });
    Harness { ctx, calls }
}

pub(crate) struct Client {
    tx: mpsc::Sender<Result<Inbound, TransportError>>,
    rx: mpsc::Receiver<Vec<Bytes>>,
    buf: VecDeque<Output>,
    pub batches: usize,
    pub conn: Arc<Conn>,
    task: JoinHandle<CloseReason>,
}

impl Harness {
    pub fn connect(&self, preauth: Option<SignInInput>, out_batches: usize) -> Client {
        let (tx, inbound) = mpsc::channel(64);
        let (out, rx) = mpsc::channel(out_batches);
        let conn = self.ctx.hub.register();
        let t = ChanTransport {
            inbound,
            out: PollSender::new(out),
            pending: Vec::new(),
        };
        let ctx = self.ctx.clone();
        let c = conn.clone();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let task = tokio::spawn(async move {
            let accepted = Accepted {
                kind: TransportKind::Tcp,
                peer,
                at: Instant::now(),
                slot: None,
            };
            serve(&ctx, c, t, accepted, preauth).await
        });
        Client {
            tx,
            rx,
            buf: VecDeque::new(),
            batches: 0,
            conn,
            task,
        }
    }
}

pub(crate) fn sign_in_input(token: &str) -> SignInInput {
    SignInInput {
        app_id: 1,
        user_id: 10,
        device_id: 100,
        token: token.into(),
    }
}

impl Client {
    pub(crate) async fn raw(&self, item: Result<Inbound, TransportError>) {
        let _ = self.tx.send(item).await;
    }

    async fn send(&self, ty: PackageType, request_id: i64, data: impl prost::Message) {
        let input = Input {
            r#type: ty as i32,
            request_id,
            data: data.encode_to_vec().into(),
        };
        self.raw(Ok(Inbound::Frame(input.encode_to_vec().into())))
            .await;
    }

    async fn recv(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.buf.pop_front() {
                return Some(o);
            }
            let batch = self.rx.recv().await?;
            self.batches += 1;
            for f in batch {
                self.buf.push_back(Output::decode(f).unwrap());
            }
        }
    }

    async fn sign_in(&mut self, token: &str) -> Output {
        self.send(PackageType::SignIn, 1, sign_in_input(token))
            .await;
        self.recv().await.unwrap()
    }

    async fn closed(mut self) -> CloseReason {
        while self.recv().await.is_some() {}
        self.task.await.unwrap()
    }
}

fn sign_in_of(calls: &mut mpsc::UnboundedReceiver<Call>) -> (SignInReq, String) {
    match calls.try_recv().unwrap() {
        Call::SignIn(r, t) => (r, t),
        other => panic!("expected sign-in, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn sign_in_by_packet_indexes_large_groups_and_heartbeat_is_echoed() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    let r = c.sign_in("good").await;
    assert_eq!((r.r#type, r.request_id, r.code), (1, 1, 0));
    let (req, trace) = sign_in_of(&mut h.calls);
    assert_eq!((req.app_id, req.user_id, req.device_id), (1, 10, 100));
    assert_eq!(
        (req.node_id.as_str(), req.conn_id),
        ("node-test", c.conn.id.get())
    );
    assert_eq!(trace.len(), 16, "trace id sent to logic");
    let in_group = h.ctx.hub.group_conns(AppId(1), GroupId(7));
    assert_eq!(
        in_group.len(),
        1,
        "large groups from SignInResp are indexed"
    );
    assert_eq!(h.ctx.hub.signed_in_count(), 1);

    c.send(PackageType::Heartbeat, 5, ()).await;
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id, r.code), (3, 5, 0));

    drop(c.tx);
    let reason = c.task.await.unwrap();
    assert_eq!(reason, CloseReason::PeerClosed);
    assert!(matches!(h.calls.try_recv(), Ok(Call::Offline(o)) if o.conn_id == c.conn.id.get()));
    assert!(h.ctx.hub.group_conns(AppId(1), GroupId(7)).is_empty());
    assert_eq!(h.ctx.hub.signed_in_count(), 0);
    assert!(h.ctx.hub.is_empty());
}

#[tokio::test(start_paused = true)]
async fn sign_in_from_upgrade_credentials_happens_before_any_frame() {
    let mut h = harness(16);
    let mut c = h.connect(Some(sign_in_input("good")), 8);
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id, r.code), (1, 0, 0));
    sign_in_of(&mut h.calls);
    c.send(PackageType::Heartbeat, 2, ()).await;
    assert_eq!(c.recv().await.unwrap().code, 0);
}

#[tokio::test(start_paused = true)]
async fn packets_before_sign_in_get_1002_then_the_connection_closes() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    for rid in 1..=3 {
        c.send(PackageType::Sync, rid, SyncInput { seq: 0 }).await;
        let r = c.recv().await.unwrap();
        assert_eq!((r.request_id, r.code), (rid, 1002));
    }
    assert_eq!(c.closed().await, CloseReason::Unauthenticated);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_signs_in_is_closed_after_the_timeout() {
    let h = harness(16);
    let started = Instant::now();
    let c = h.connect(None, 8);
    assert_eq!(c.closed().await, CloseReason::SignInTimeout);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_token_gets_the_error_reply_then_a_close() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    let r = c.sign_in("forged").await;
    assert_eq!((r.r#type, r.code), (1, 1002));
    let conn = c.conn.clone();
    assert_eq!(c.closed().await, CloseReason::SignInRejected);
    sign_in_of(&mut h.calls);
    assert!(
        h.calls.try_recv().is_err(),
        "no offline for a rejected sign-in"
    );
    assert!(conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_and_heartbeats_keep_them_open() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    c.send(PackageType::Heartbeat, 2, ()).await;
    assert_eq!(c.recv().await.unwrap().request_id, 2);
    let beat = Instant::now();
    assert_eq!(c.closed().await, CloseReason::IdleTimeout);
    let idle = beat.elapsed();
    assert!(
        idle >= Duration::from_secs(660) && idle < Duration::from_secs(663),
        "{idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_envelope_gets_1006_then_a_close() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.raw(Ok(Inbound::Frame(Bytes::from_static(&[0xFF, 0xFF, 0xFF]))))
        .await;
    assert_eq!(c.recv().await.unwrap().code, 1006);
    assert_eq!(c.closed().await, CloseReason::BadEnvelope);

    let mut c = h.connect(None, 8);
    c.raw(Ok(Inbound::Frame(Bytes::new()))).await;
    assert_eq!(c.recv().await.unwrap().code, 1006);
    assert_eq!(c.closed().await, CloseReason::EmptyFrame);

    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    c.send(PackageType::Sync, 3, Bytes::from_static(b"\xFF\xFF"))
        .await;
    let r = c.recv().await.unwrap();
    assert_eq!((r.request_id, r.code), (3, 1006));
    assert_eq!(c.closed().await, CloseReason::BadPayload);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_get_a_reply_where_useful_then_a_close() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.raw(Err(TransportError::TextFrame)).await;
    assert_eq!(c.recv().await.unwrap().code, 1006);
    assert_eq!(c.closed().await, CloseReason::TextFrame);

    let mut c = h.connect(None, 8);
    c.raw(Err(TransportError::TooLarge("big".into()))).await;
    assert_eq!(c.recv().await.unwrap().code, 1006);
    assert_eq!(c.closed().await, CloseReason::FrameTooLarge);

    let c = h.connect(None, 8);
    c.raw(Err(TransportError::PingFlood)).await;
    assert_eq!(c.closed().await, CloseReason::PingFlood);
}

#[tokio::test(start_paused = true)]
async fn unknown_package_types_get_1006_and_the_connection_stays() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    let input = Input {
        r#type: 99,
        request_id: 4,
        data: Bytes::new(),
    };
    c.raw(Ok(Inbound::Frame(input.encode_to_vec().into())))
        .await;
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id, r.code), (99, 4, 1006));
    c.send(PackageType::SignIn, 5, sign_in_input("good")).await;
    assert_eq!(c.recv().await.unwrap().code, 1006, "second sign-in refused");
    c.send(PackageType::Heartbeat, 6, ()).await;
    assert_eq!(c.recv().await.unwrap().request_id, 6);
}

#[tokio::test(start_paused = true)]
async fn requests_are_relayed_to_logic_with_trace_ids_and_answered_in_order() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    // Pipelined: nothing is read while the sign-in is in flight, so order is kept.
    c.send(PackageType::SignIn, 1, sign_in_input("good")).await;
    c.send(PackageType::Sync, 2, SyncInput { seq: 10 }).await;
    let send = SendMessageInput {
        receiver_type: 1,
        receiver_id: 11,
        client_request_id: 77,
        is_persist: true,
        ..Default::default()
    };
    c.send(PackageType::SendMessage, 3, send).await;
    c.send(
        PackageType::Message,
        4,
        MessageAck {
            device_ack: 12,
            receive_time: 5,
        },
    )
    .await;
    c.send(
        PackageType::GroupSync,
        5,
        GroupSyncInput {
            group_id: 7,
            seq: 0,
        },
    )
    .await;
    c.send(PackageType::Heartbeat, 6, ()).await;

    assert_eq!(c.recv().await.unwrap().request_id, 1);
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id, r.code), (2, 2, 0));
    let page = SyncOutput::decode(r.data).unwrap();
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, page.has_more), (vec![11, 12, 13], false));
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id, r.code), (5, 3, 0));
    let out = SendMessageOutput::decode(r.data).unwrap();
    assert_eq!((out.seq, out.message_id), (42, 99));
    let r = c.recv().await.unwrap();
    assert_eq!((r.r#type, r.request_id), (7, 5), "the ack got no reply");
    assert_eq!(c.recv().await.unwrap().request_id, 6);

    sign_in_of(&mut h.calls);
    let mut traces = Vec::new();
    match h.calls.try_recv().unwrap() {
        Call::Sync(r, t) => {
            assert_eq!((r.app_id, r.user_id, r.device_id, r.seq), (1, 10, 100, 10));
            traces.push(t);
        }
        other => panic!("{other:?}"),
    }
    match h.calls.try_recv().unwrap() {
        Call::Send(r, t) => {
            let inner = r.req.unwrap();
            assert_eq!(
                (r.user_id, inner.receiver_id, inner.client_request_id),
                (10, 11, 77)
            );
            traces.push(t);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(h.calls.try_recv().unwrap(), Call::Ack(a) if a.device_ack == 12));
    assert!(
        matches!(h.calls.try_recv().unwrap(), Call::GroupSync(g) if g.group_id == 7 && g.user_id == 10)
    );
    assert_ne!(traces[0], traces[1], "a trace id per request");
}

#[tokio::test(start_paused = true)]
async fn a_logic_failure_that_is_not_a_business_error_is_1001_with_the_trace_id() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    c.send(PackageType::SendMessage, 9, SendMessageInput::default())
        .await;
    let r = c.recv().await.unwrap();
    assert_eq!((r.request_id, r.code), (9, CODE_INTERNAL));
    sign_in_of(&mut h.calls);
    let Call::Send(_, trace) = h.calls.try_recv().unwrap() else {
        panic!()
    };
    assert!(r.message.contains(&trace), "{}", r.message);
    assert!(!r.message.contains("store down"), "causes stay in the logs");
}

#[tokio::test(start_paused = true)]
async fn a_superseded_connection_gets_kicked_then_closed_and_goes_offline() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    sign_in_of(&mut h.calls);
    assert!(c.conn.control(Control::Kick("signed in elsewhere".into())));
    let r = c.recv().await.unwrap();
    assert_eq!(r.r#type, PackageType::Kicked as i32);
    assert_eq!(
        KickNotice::decode(r.data).unwrap().reason,
        "signed in elsewhere"
    );
    let id = c.conn.id.get();
    assert_eq!(c.closed().await, CloseReason::Kicked);
    assert!(
        matches!(h.calls.try_recv(), Ok(Call::Offline(o)) if o.conn_id == id && o.node_id == "node-test")
    );
}

#[tokio::test(start_paused = true)]
async fn draining_sends_a_reconnect_notice_then_closes() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    c.conn.control(Control::Drain {
        after_ms: 250,
        reason: "node draining",
    });
    let r = c.recv().await.unwrap();
    assert_eq!(r.r#type, PackageType::Reconnect as i32);
    assert_eq!(ReconnectNotice::decode(r.data).unwrap().after_ms, 250);
    assert_eq!(c.closed().await, CloseReason::Drain);
}

fn push(item_seq: i64) -> Bytes {
    wire::push_frame(&MessageItem {
        seq: item_seq,
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn pushes_pending_together_leave_in_one_write() {
    let h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    let before = c.batches;
    for seq in 1..=5 {
        let r = h
            .ctx
            .hub
            .deliver(AppId(1), DeviceId(100), c.conn.id, push(seq));
        assert_eq!(r, Push::Queued);
    }
    for seq in 1..=5 {
        let r = c.recv().await.unwrap();
        assert_eq!(r.r#type, PackageType::Message as i32);
        let m = PushMessage::decode(r.data).unwrap().message.unwrap();
        assert_eq!(m.seq, seq);
    }
    assert_eq!(c.batches - before, 1, "five pending pushes, one write");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_when_its_queue_overflows() {
    let h = harness(4);
    // One batch of room in the "socket", and the client never reads.
    let mut c = h.connect(None, 1);
    c.sign_in("good").await;
    let mut overflowed = false;
    for seq in 1..=100 {
        tokio::task::yield_now().await;
        match h
            .ctx
            .hub
            .deliver(AppId(1), DeviceId(100), c.conn.id, push(seq))
        {
            Push::Queued => {}
            Push::Overflow => {
                overflowed = true;
                break;
            }
            Push::Closed => panic!("closed before overflowing"),
        }
    }
    assert!(overflowed);
    let reason = c.task.await.unwrap();
    assert_eq!(reason, CloseReason::Overflow);
    let closes = h.ctx.metrics.encode();
    assert!(closes.contains("reason=\"outbound_overflow\""), "{closes}");
}

#[test]
fn an_idle_connection_task_is_small() {
    // The per-connection task holds the session future inline; heavy calls are boxed.
    let h = harness(4);
    let conn = h.ctx.hub.register();
    let (_tx, inbound) = mpsc::channel(1);
    let (out, _rx) = mpsc::channel(1);
    let t = ChanTransport {
        inbound,
        out: PollSender::new(out),
        pending: Vec::new(),
    };
    let accepted = Accepted {
        kind: TransportKind::Tcp,
        peer: "127.0.0.1:1".parse().unwrap(),
        at: Instant::now(),
        slot: None,
    };
    let fut = serve(&h.ctx, conn, t, accepted, None);
    let size = std::mem::size_of_val(&fut);
    assert!(size < 2048, "session future is {size} bytes");
}

mod fuzz {
    //! Arbitrary bytes through the TCP codec and the session decoder: every input ends in replies
    //! and a close, never a panic. `PROPTEST_CASES` scales it (CI runs a short pass).
    use super::*;
    use bytes::BytesMut;
    use gim_proto::frame::FrameCodec;
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Raw bytes: mostly undecodable envelopes.
            prop::collection::vec(any::<u8>(), 0..64),
            // Well-formed envelopes of any type around arbitrary payloads: exercises the payload
            // decoders and every package type, known or not.
            (
                0i32..12,
                any::<i64>(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(ty, request_id, data)| {
                    Input {
                        r#type: ty,
                        request_id,
                        data: data.into(),
                    }
                    .encode_to_vec()
                }),
        ]
    }

    fn wire_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            prop::collection::vec(frame_strategy(), 0..24).prop_map(|frames| {
                let mut b = BytesMut::new();
                for f in frames {
                    gim_proto::frame::put_frame(&mut b, &f).unwrap();
                }
                b.to_vec()
            }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_the_codec_or_the_session(
            wire in wire_strategy(),
            signed_in in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let h = harness(64);
                let preauth = signed_in.then(|| sign_in_input("good"));
                let mut c = h.connect(preauth, 4);
                let mut rx = std::mem::replace(&mut c.rx, mpsc::channel(1).1);
                let reader = tokio::spawn(async move {
                    let mut n = 0usize;
                    while let Some(batch) = rx.recv().await {
                        for f in batch {
                            assert!(f.len() <= gim_proto::frame::MAX_FRAME_LEN);
                            Output::decode(f).expect("server frames decode");
                            n += 1;
                        }
                    }
                    n
                });
                let mut codec = FrameCodec::new(1024);
                let mut buf = BytesMut::from(&wire[..]);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(f)) => c.raw(Ok(Inbound::Frame(f))).await,
                        Ok(None) => break,
                        Err(e) => {
                            c.raw(Err(TransportError::TooLarge(e.to_string()))).await;
                            break;
                        }
                    }
                }
                let Client { tx, task, .. } = c;
                drop(tx);
                task.await.expect("session did not panic");
                reader.await.expect("reader did not panic");
            });
        }
    }
}

#[tokio::test(start_paused = true)]
async fn sign_ins_beyond_the_in_flight_bound_wait_for_a_slot_instead_of_failing() {
    let mut h = harness(16);
    // The harness allows two sign-ins in flight; the test holds both slots (a storm in progress).
    let held = h.ctx.sign_ins.clone().acquire_many_owned(2).await.unwrap();
    let mut c = h.connect(None, 8);
    c.send(PackageType::SignIn, 1, sign_in_input("good")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.calls.try_recv().is_err(),
        "no slot: logic is not called yet"
    );
    drop(held);
    let r = c.recv().await.unwrap();
    assert_eq!(
        (r.r#type, r.code),
        (PackageType::SignIn as i32, 0),
        "signed in once a slot freed"
    );
    let (req, _) = sign_in_of(&mut h.calls);
    assert_eq!(req.user_id, 10);
    // The slot is given back after the call.
    assert_eq!(h.ctx.sign_ins.available_permits(), 2);
}

#[tokio::test(start_paused = true)]
async fn offline_calls_beyond_the_in_flight_bound_wait_for_a_slot() {
    let mut h = harness(16);
    let mut c = h.connect(None, 8);
    c.sign_in("good").await;
    let _ = sign_in_of(&mut h.calls);
    let id = c.conn.id.get();
    // Both Offline slots busy (a mass disconnect in progress): the closed connection waits.
    let held = h.ctx.offlines.clone().acquire_many_owned(2).await.unwrap();
    let Client { tx, task, .. } = c;
    drop(tx);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        h.calls.try_recv().is_err(),
        "no slot: Offline not called yet, and not given up after the call timeout either"
    );
    drop(held);
    task.await.expect("session did not panic");
    assert!(
        matches!(h.calls.try_recv(), Ok(Call::Offline(o)) if o.conn_id == id),
        "Offline sent once a slot freed"
    );
    assert_eq!(h.ctx.offlines.available_permits(), 2, "slot given back");
}
