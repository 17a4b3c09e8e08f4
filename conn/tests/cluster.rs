//! Two conn nodes and a real logic in-process, against the test MariaDB and Redis: clients on TCP
//! and WebSocket exchange messages across nodes, a device signing in on another node closes its
//! old connection, and a draining node sends its clients to the other node without losing a message.
//!
//! Redis db 9 by default (GIM_TEST_REDIS_URL overrides): the node registry is global per db and
//! these nodes must not show up in other crates' tests.

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use gim_common::config::{ConnConfig, LogicConfig};
use gim_common::keys;
use gim_common::rds::Redis;
use gim_common::registry;
use gim_common::shutdown::Shutdown;
use gim_common::token::AppKey;
use gim_conn::ConnHandle;
use gim_proto::connect::v1::{
    Input, KickNotice, Message as Push, MessageBody, MessageContent, MessageItem, Output,
    PackageType, ReceiverType, ReconnectNotice, SendMessageInput, SendMessageOutput, SignInInput,
    SyncInput, SyncOutput, Text, message_content::Content,
};
use gim_proto::frame::{FrameCodec, put_frame};
use gim_proto::logic::v1 as pb;
use gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient;
use gim_proto::logic::v1::logic_server_ext_client::LogicServerExtClient;
use prost::Message as _;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(15);

/// The internal APIs run authenticated, as deployed.
const INTERNAL_SECRET: &str = "conn-test-internal-secret";

fn redis_url() -> String {
    gim_test_support::redis_url(9)
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn now() -> i64 {
    gim_common::token::now_secs()
}

struct Node {
    handle: Option<ConnHandle>,
    shutdown: Shutdown,
    tcp: SocketAddr,
    ws: SocketAddr,
    id: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

struct Cluster {
    logic_shutdown: Shutdown,
    app: i64,
    key: AppKey,
    client_ext: LogicClientExtClient<tonic::transport::Channel>,
    a: Node,
    b: Node,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.logic_shutdown.trigger();
    }
}

async fn start_node(logic_int: SocketAddr, name: &str, redis: &str, lease_secs: u64) -> Node {
    let mut cfg = ConnConfig::default();
    cfg.redis.url = redis.into();
    cfg.conn.lease_secs = lease_secs;
    cfg.conn.node_name = name.into();
    cfg.conn.tcp_listen = any();
    cfg.conn.ws_listen = any();
    cfg.conn.grpc_listen = any();
    cfg.conn.admin_listen = any();
    cfg.conn.logic_url = format!("http://{logic_int}");
    cfg.conn.drain_window_secs = 1;
    cfg.internal.secret = INTERNAL_SECRET.into();
    let shutdown = Shutdown::new();
    let h = gim_conn::start(cfg, shutdown.clone()).await.unwrap();
    Node {
        tcp: h.tcp_addr,
        ws: h.ws_addr,
        id: h.node_id.clone(),
        handle: Some(h),
        shutdown,
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_on(&redis_url(), ConnConfig::default().conn.lease_secs).await
    }

    async fn start_on(redis: &str, lease_secs: u64) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut lc = LogicConfig::default();
        lc.mysql.url = gim_test_support::mysql_url();
        lc.mysql.max_connections = 8;
        lc.redis.url = redis.into();
        lc.logic.int_listen = any();
        lc.logic.client_listen = any();
        lc.logic.server_listen = any();
        lc.logic.admin_listen = any();
        lc.internal.secret = INTERNAL_SECRET.into();
        gim_common::telemetry::init(&lc.log);
        let pool = gim_logic::mysql_pool(&lc.mysql).unwrap();
        gim_logic::migrate(&pool).await.unwrap();
        let name = format!("conn-test-{}", &gim_common::telemetry::new_trace_id()[..10]);
        let (app, key) = gim_logic::create_app(&pool, &name).await.unwrap();
        let logic_shutdown = Shutdown::new();
        let logic = gim_logic::start(lc, logic_shutdown.clone()).await.unwrap();
        let channel = |addr: SocketAddr| {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy()
        };
        let client_ext = LogicClientExtClient::new(channel(logic.client_addr));
        let mut server_ext = LogicServerExtClient::new(channel(logic.server_addr));
        let users = (1..=3)
            .map(|id| pb::User {
                user_id: id,
                nickname: format!("user{id}"),
                ..Default::default()
            })
            .collect();
        let mut req = tonic::Request::new(pb::ImportUsersReq { users });
        let tok = key.server_token(app.get(), now(), 3600);
        req.metadata_mut()
            .insert("app_id", app.get().to_string().parse().unwrap());
        req.metadata_mut().insert("token", tok.parse().unwrap());
        server_ext.import_users(req).await.unwrap();
        let a = start_node(logic.int_addr, "conn-a", redis, lease_secs).await;
        let b = start_node(logic.int_addr, "conn-b", redis, lease_secs).await;
        // The logic task keeps running in the background until the cluster is dropped.
        tokio::spawn(logic.wait());
        Cluster {
            logic_shutdown,
            app: app.get(),
            key,
            client_ext,
            a,
            b,
        }
    }

    async fn device(&self) -> i64 {
        gim_test_support::register_device(&mut self.client_ext.clone(), self.app).await
    }

    fn sign_in(&self, user: i64, device: i64) -> SignInInput {
        SignInInput {
            app_id: self.app,
            user_id: user,
            device_id: device,
            token: self.key.device_token(self.app, user, device, now(), 3600),
        }
    }
}

enum Wire {
    Tcp { stream: TcpStream, buf: BytesMut },
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// A minimal client of the long-connection protocol over either transport.
struct Client {
    wire: Wire,
    next_rid: i64,
    /// Pushed messages seen while waiting for something else.
    pushes: Vec<MessageItem>,
    /// Non-push, non-reply envelopes (notices) seen while waiting for something else.
    notices: Vec<Output>,
}

impl Client {
    async fn tcp(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::new(Wire::Tcp {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Sign-in in the upgrade request: as headers (`query == false`) or query parameters.
    async fn ws(addr: SocketAddr, si: Option<&SignInInput>, query: bool) -> Client {
        let mut url = format!("ws://{addr}/ws");
        if let (Some(si), true) = (si, query) {
            url += &format!(
                "?app_id={}&user_id={}&device_id={}&token={}",
                si.app_id, si.user_id, si.device_id, si.token
            );
        }
        let mut req = url.into_client_request().unwrap();
        if let (Some(si), false) = (si, query) {
            let h = req.headers_mut();
            h.insert("app_id", si.app_id.to_string().parse().unwrap());
            h.insert("user_id", si.user_id.to_string().parse().unwrap());
            h.insert("device_id", si.device_id.to_string().parse().unwrap());
            h.insert("token", si.token.parse().unwrap());
        }
        let stream = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        Self::new(Wire::Ws(Box::new(ws)))
    }

    fn new(wire: Wire) -> Client {
        Client {
            wire,
            next_rid: 1,
            pushes: Vec::new(),
            notices: Vec::new(),
        }
    }

    async fn send(&mut self, ty: PackageType, data: impl prost::Message) -> i64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        let input = Input {
            r#type: ty as i32,
            request_id: rid,
            data: data.encode_to_vec().into(),
        }
        .encode_to_vec();
        match &mut self.wire {
            Wire::Tcp { stream, .. } => {
                let mut b = BytesMut::new();
                put_frame(&mut b, &input).unwrap();
                stream.write_all(&b).await.unwrap();
            }
            Wire::Ws(ws) => ws.send(WsMessage::Binary(input.into())).await.unwrap(),
        }
        rid
    }

    /// The next envelope; None when the server closed the connection.
    async fn next(&mut self) -> Option<Output> {
        let read = async {
            match &mut self.wire {
                Wire::Tcp { stream, buf } => loop {
                    if let Some(f) = FrameCodec::default().decode(buf).unwrap() {
                        return Some(Output::decode(f).unwrap());
                    }
                    match stream.read_buf(buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                },
                Wire::Ws(ws) => loop {
                    match ws.next().await {
                        Some(Ok(WsMessage::Binary(b))) => return Some(Output::decode(b).unwrap()),
                        Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                        Some(Ok(_)) => {}
                    }
                },
            }
        };
        timeout(WAIT, read).await.expect("server answered in time")
    }

    /// Reads until `pred` matches, stashing pushes and notices seen on the way.
    async fn until(&mut self, pred: impl Fn(&Output) -> bool) -> Output {
        loop {
            let out = self.next().await.expect("connection closed while waiting");
            if pred(&out) {
                return out;
            }
            self.stash(out);
        }
    }

    fn stash(&mut self, out: Output) {
        if out.r#type == PackageType::Message as i32 && out.request_id == 0 {
            self.pushes
                .push(Push::decode(out.data).unwrap().message.unwrap());
        } else {
            self.notices.push(out);
        }
    }

    async fn request(&mut self, ty: PackageType, data: impl prost::Message) -> Output {
        let rid = self.send(ty, data).await;
        self.until(|o| o.request_id == rid && o.r#type == ty as i32)
            .await
    }

    async fn sign_in(&mut self, si: &SignInInput) {
        let out = self.request(PackageType::SignIn, si.clone()).await;
        assert_eq!(out.code, 0, "sign-in failed: {}", out.message);
    }

    async fn send_text(&mut self, to: i64, text: &str) -> SendMessageOutput {
        let input = SendMessageInput {
            receiver_type: ReceiverType::User as i32,
            receiver_id: to,
            message_body: Some(MessageBody {
                message_type: 1,
                message_content: Some(MessageContent {
                    content: Some(Content::Text(Text { text: text.into() })),
                }),
            }),
            is_persist: true,
            // Unique per send: a repeated id is an idempotent retry and stores nothing new.
            client_request_id: i64::from_str_radix(
                &gim_common::telemetry::new_trace_id()[..15],
                16,
            )
            .unwrap(),
            ..Default::default()
        };
        let out = self.request(PackageType::SendMessage, input).await;
        assert_eq!(out.code, 0, "send failed: {}", out.message);
        SendMessageOutput::decode(out.data).unwrap()
    }

    /// A pushed message, from the stash or the wire.
    async fn push(&mut self, pred: impl Fn(&MessageItem) -> bool) -> MessageItem {
        if let Some(i) = self.pushes.iter().position(&pred) {
            return self.pushes.remove(i);
        }
        loop {
            let out = self.next().await.expect("closed while waiting for a push");
            self.stash(out);
            if let Some(i) = self.pushes.iter().position(&pred) {
                return self.pushes.remove(i);
            }
        }
    }

    /// Every message after `seq`, following `has_more`.
    async fn sync_all(&mut self, mut seq: i64) -> Vec<MessageItem> {
        let mut all = Vec::new();
        loop {
            let out = self.request(PackageType::Sync, SyncInput { seq }).await;
            assert_eq!(out.code, 0, "sync failed: {}", out.message);
            let page = SyncOutput::decode(out.data).unwrap();
            if let Some(last) = page.messages.last() {
                seq = last.seq;
            }
            all.extend(page.messages);
            if !page.has_more {
                return all;
            }
        }
    }

    /// Reads to the end of the connection, stashing what comes.
    async fn closed(&mut self) {
        while let Some(out) = self.next().await {
            self.stash(out);
        }
    }
}

fn text_of(m: &MessageItem) -> String {
    match m
        .message_body
        .as_ref()
        .and_then(|b| b.message_content.as_ref())
        .and_then(|c| c.content.as_ref())
    {
        Some(Content::Text(t)) => t.text.clone(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_on_one_node_and_a_websocket_client_on_the_other_exchange_messages() {
    let c = Cluster::start().await;
    let (d1, d2) = (c.device().await, c.device().await);

    let mut alice = Client::tcp(c.a.tcp).await;
    alice.sign_in(&c.sign_in(1, d1)).await;
    // Bob signs in with upgrade headers, as the original gim's web client did.
    let mut bob = Client::ws(c.b.ws, Some(&c.sign_in(2, d2)), false).await;
    let r = bob.until(|o| o.r#type == PackageType::SignIn as i32).await;
    assert_eq!((r.request_id, r.code), (0, 0), "{}", r.message);

    let sent = alice.send_text(2, "hello bob").await;
    assert!(sent.seq > 0 && sent.message_id > 0);
    let got = bob.push(|m| m.message_id == sent.message_id).await;
    assert_eq!((got.sender_id, got.sender_device_id), (1, d1));
    assert_eq!(text_of(&got), "hello bob");

    let reply = bob.send_text(1, "hi alice").await;
    let got = alice.push(|m| m.message_id == reply.message_id).await;
    assert_eq!((got.sender_id, text_of(&got).as_str()), (2, "hi alice"));

    // What was pushed is also in storage: bob's sync from before it returns both messages.
    let synced = bob.sync_all(got.seq.min(sent.seq) - 1).await;
    let ids: HashSet<i64> = synced.iter().map(|m| m.message_id).collect();
    assert!(ids.contains(&sent.message_id) && ids.contains(&reply.message_id));

    bob.send(PackageType::Heartbeat, ()).await;
    bob.until(|o| o.r#type == PackageType::Heartbeat as i32)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_on_another_node_closes_the_old_connection() {
    let c = Cluster::start().await;
    let d1 = c.device().await;
    let mut old = Client::tcp(c.a.tcp).await;
    old.sign_in(&c.sign_in(1, d1)).await;
    let a = c.a.handle.as_ref().unwrap();
    assert_eq!(a.signed_in(), 1);

    // Same device, query-parameter sign-in on node B.
    let mut new = Client::ws(c.b.ws, Some(&c.sign_in(1, d1)), true).await;
    let r = new.until(|o| o.r#type == PackageType::SignIn as i32).await;
    assert_eq!(r.code, 0, "{}", r.message);

    let kicked = old.until(|o| o.r#type == PackageType::Kicked as i32).await;
    assert!(!KickNotice::decode(kicked.data).unwrap().reason.is_empty());
    old.closed().await;
    let deadline = Instant::now() + WAIT;
    while a.connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "node A still holds the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new connection is the live route: a message to user 1 reaches it.
    let d2 = c.device().await;
    let mut other = Client::tcp(c.a.tcp).await;
    other.sign_in(&c.sign_in(2, d2)).await;
    let sent = other.send_text(1, "after the move").await;
    new.push(|m| m.message_id == sent.message_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_its_clients_to_the_other_node_without_loss_or_duplicates() {
    let mut c = Cluster::start().await;
    let (d1, d2) = (c.device().await, c.device().await);
    let mut alice = Client::tcp(c.a.tcp).await;
    alice.sign_in(&c.sign_in(1, d1)).await;
    let mut bob = Client::tcp(c.b.tcp).await;
    bob.sign_in(&c.sign_in(2, d2)).await;

    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(bob.send_text(1, &format!("m{i}")).await.message_id);
    }
    let first = alice.push(|m| m.message_id == sent[0]).await;
    let before = first.seq - 1;

    let a_id = c.a.id.clone();
    c.a.shutdown.trigger();
    // Sends continue while A drains; whatever A cannot push any more stays in storage.
    for i in 10..20 {
        sent.push(bob.send_text(1, &format!("m{i}")).await.message_id);
    }
    let notice = alice
        .until(|o| o.r#type == PackageType::Reconnect as i32)
        .await;
    ReconnectNotice::decode(notice.data).unwrap();
    alice.closed().await;

    // A node that drained has left the registry and exits well inside its grace period.
    let a = c.a.handle.take().unwrap();
    timeout(Duration::from_secs(10), a.wait())
        .await
        .expect("drained in time")
        .unwrap();
    let r = Redis::connect_url(&redis_url(), WAIT).await.unwrap();
    let lease = registry::lease(&r, &a_id).await.unwrap();
    let reg = registry::read(&r).await.unwrap();
    let member = reg.live.iter().any(|n| n.node_id == a_id)
        || reg.expired.contains(&a_id)
        || reg.malformed.contains(&a_id);
    assert!(lease.is_none() && !member, "node A deregistered: {reg:?}");
    let mut refused = TcpStream::connect(c.a.tcp).await;
    if let Ok(s) = refused.as_mut() {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap_or(0),
            0,
            "nothing accepted any more"
        );
    }

    // Alice reconnects to B and syncs from the last seq she had before the tests' messages.
    let mut alice = Client::tcp(c.b.tcp).await;
    alice.sign_in(&c.sign_in(1, d1)).await;
    let synced = alice.sync_all(before).await;
    let mut by_seq = BTreeMap::new();
    for m in &synced {
        assert!(
            by_seq.insert(m.seq, m.message_id).is_none(),
            "duplicate seq {}",
            m.seq
        );
    }
    let got: Vec<i64> = by_seq.values().copied().collect();
    assert_eq!(got, sent, "every message exactly once, in order");

    let last = bob.send_text(1, "on the new node").await;
    alice.push(|m| m.message_id == last.message_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_flush_nodes_restore_their_lease_and_routes_and_pushes_resume() {
    // A redis-server of the test's own: it is flushed.
    let redis = gim_test_support::OwnRedis::start().await;
    // Lease 3 s: renewed every second, so the loss is noticed within a second.
    let c = Cluster::start_on(&redis.url(), 3).await;
    let (d1, d2) = (c.device().await, c.device().await);
    let mut alice = Client::tcp(c.a.tcp).await;
    alice.sign_in(&c.sign_in(1, d1)).await;
    let mut bob = Client::tcp(c.b.tcp).await;
    bob.sign_in(&c.sign_in(2, d2)).await;
    let before = alice.send_text(2, "before").await;
    bob.push(|m| m.message_id == before.message_id).await;

    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut r).await.unwrap();

    // Both leases and both routes come back while the clients stay connected.
    let route = |user: i64| keys::route_key(gim_common::AppId(c.app), gim_common::UserId(user));
    let deadline = Instant::now() + WAIT;
    loop {
        let (na, nb): (Option<String>, Option<String>) = redis::pipe()
            .get(keys::node_key(&c.a.id))
            .get(keys::node_key(&c.b.id))
            .query_async(&mut r)
            .await
            .unwrap();
        let (ra, rb): (Option<String>, Option<String>) = redis::pipe()
            .hget(route(1), d1)
            .hget(route(2), d2)
            .query_async(&mut r)
            .await
            .unwrap();
        if let (Some(_), Some(_), Some(ra), Some(rb)) = (&na, &nb, &ra, &rb) {
            assert_eq!(keys::parse_route_value(ra).unwrap().0, c.a.id);
            assert_eq!(keys::parse_route_value(rb).unwrap().0, c.b.id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease/routes not restored: a={na:?} b={nb:?} alice={ra:?} bob={rb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reg = registry::read(&Redis::connect_url(&redis.url(), WAIT).await.unwrap())
        .await
        .unwrap();
    let live: HashSet<&str> = reg.live.iter().map(|n| n.node_id.as_str()).collect();
    assert!(
        live.contains(c.a.id.as_str()) && live.contains(c.b.id.as_str()),
        "{reg:?}"
    );

    // Real-time push works again, both ways, on the same connections.
    let after = alice.send_text(2, "after the flush").await;
    let got = bob.push(|m| m.message_id == after.message_id).await;
    assert_eq!(text_of(&got), "after the flush");
    let reply = bob.send_text(1, "got it").await;
    alice.push(|m| m.message_id == reply.message_id).await;
}
