//! Test harness: a logic instance on free ports against the test MariaDB and Redis, a fresh app
//! (tenant) per test so tests never collide, request helpers, and a fake conn node that records
//! calls. The shared fixtures (URLs, polling, HTTP probes, private redis-servers) are
//! `gim_test_support`'s, re-exported here.
#![allow(dead_code)]

// Each test file uses a different part of these.
#[allow(unused_imports)]
pub use gim_test_support::{
    OwnRedis, RedisCluster, eventually, free_port, http, http_get, mysql_url, rand_u64,
};

use gim_common::config::LogicConfig;
use gim_common::internal::{AddSecret, Secret, SecretChannel};
use gim_common::keys::{self, NodeInfo};
use gim_common::registry;
use gim_common::shutdown::Shutdown;
use gim_common::token::AppKey;
use gim_common::{AppId, GimCode, GimError};
use gim_logic::LogicHandle;
use gim_proto::conn::v1 as cpb;
use gim_proto::conn::v1::conn_int_server::{ConnInt, ConnIntServer};
use gim_proto::connect::v1 as wire;
use gim_proto::logic::v1 as pb;
use gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient;
use gim_proto::logic::v1::logic_int_client::LogicIntClient;
use gim_proto::logic::v1::logic_server_ext_client::LogicServerExtClient;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Db 7: the node registry is global per Redis db, and these tests register fake conn nodes that
/// other crates' tests must not see.
pub fn redis_url() -> String {
    gim_test_support::redis_url(7)
}

/// The internal APIs run authenticated in tests, as deployed.
pub const INTERNAL_SECRET: &str = "logic-test-internal-secret";

pub fn test_config() -> LogicConfig {
    let mut cfg = LogicConfig::default();
    cfg.mysql.url = mysql_url();
    cfg.mysql.max_connections = 8;
    // Generous deadlines: tests share two cores with parallel builds. The outage tests set their
    // own short ones.
    cfg.mysql.acquire_timeout_ms = 5000;
    cfg.redis.timeout_ms = 3000;
    cfg.redis.url = redis_url();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    cfg.logic.int_listen = any;
    cfg.logic.client_listen = any;
    cfg.logic.server_listen = any;
    cfg.logic.admin_listen = any;
    cfg.internal.secret = INTERNAL_SECRET.into();
    cfg
}

pub async fn migrated_pool() -> sqlx::MySqlPool {
    let pool = sqlx::MySqlPool::connect(&mysql_url()).await.unwrap();
    gim_logic::migrate(&pool).await.unwrap();
    pool
}

pub struct Ctx {
    pub logic: LogicHandle,
    pub shutdown: Shutdown,
    pub app: AppId,
    pub key: AppKey,
    pub pool: sqlx::MySqlPool,
    pub cfg: LogicConfig,
    pub int: LogicIntClient<SecretChannel>,
    pub client: LogicClientExtClient<Channel>,
    pub server: LogicServerExtClient<Channel>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Ctx {
    pub async fn start() -> Ctx {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(cfg: LogicConfig) -> Ctx {
        gim_common::telemetry::init(&cfg.log);
        let pool = migrated_pool().await;
        let (app, key) = gim_logic::create_app(&pool, &format!("t{}", rand_u64()))
            .await
            .unwrap();
        let shutdown = Shutdown::new();
        let logic = gim_logic::start(cfg.clone(), shutdown.clone())
            .await
            .unwrap();
        let int = LogicIntClient::with_interceptor(
            channel(logic.int_addr).await,
            AddSecret(Some(Secret::new(INTERNAL_SECRET).unwrap())),
        );
        let client = LogicClientExtClient::new(channel(logic.client_addr).await);
        let server = LogicServerExtClient::new(channel(logic.server_addr).await);
        Ctx {
            logic,
            shutdown,
            app,
            key,
            pool,
            cfg,
            int,
            client,
            server,
        }
    }

    pub fn now() -> i64 {
        gim_common::token::now_secs()
    }

    pub fn device_token(&self, user: i64, device: i64) -> String {
        self.key
            .device_token(self.app.0, user, device, Self::now(), 3600)
    }

    /// A client request with a valid device token.
    pub fn creq<T>(&self, msg: T, user: i64, device: i64) -> Request<T> {
        let tok = self.device_token(user, device);
        with_client_meta(msg, self.app.0, user, device, &tok)
    }

    /// A business-server request with a valid server token.
    pub fn sreq<T>(&self, msg: T) -> Request<T> {
        let tok = self.key.server_token(self.app.0, Self::now(), 3600);
        with_server_meta(msg, self.app.0, &tok)
    }

    pub async fn register_device(&self) -> i64 {
        gim_test_support::register_device(&mut self.client.clone(), self.app.0).await
    }

    pub async fn import_users(&self, ids: &[i64]) {
        let users = ids
            .iter()
            .map(|id| pb::User {
                user_id: *id,
                nickname: format!("user{id}"),
                ..Default::default()
            })
            .collect();
        let mut s = self.server.clone();
        s.import_users(self.sreq(pb::ImportUsersReq { users }))
            .await
            .unwrap();
    }

    /// Signs (user, device) in on `node` as conn would.
    pub async fn sign_in(&self, user: i64, device: i64, node: &str, conn: i64) -> pb::SignInResp {
        let mut c = self.int.clone();
        c.sign_in(pb::SignInReq {
            app_id: self.app.0,
            user_id: user,
            device_id: device,
            token: self.device_token(user, device),
            node_id: node.into(),
            conn_id: conn,
            client_addr: "127.0.0.1:1".into(),
        })
        .await
        .unwrap()
        .into_inner()
    }

    pub async fn sync(&self, user: i64, device: i64, seq: i64, limit: i32) -> pb::SyncResp {
        let mut c = self.int.clone();
        c.sync(pb::SyncReq {
            app_id: self.app.0,
            user_id: user,
            device_id: device,
            seq,
            limit,
        })
        .await
        .unwrap()
        .into_inner()
    }

    /// Sends text from a user over LogicClientExt.
    pub async fn send_text(
        &self,
        user: i64,
        device: i64,
        rt: wire::ReceiverType,
        to: i64,
        text: &str,
        req_id: i64,
    ) -> Result<pb::SendMessageResp, Status> {
        let mut c = self.client.clone();
        c.send_message(self.creq(send_req(rt, to, text, req_id), user, device))
            .await
            .map(|r| r.into_inner())
    }
}

pub fn with_client_meta<T>(msg: T, app: i64, user: i64, device: i64, tok: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let m = r.metadata_mut();
    m.insert("app_id", app.to_string().parse().unwrap());
    m.insert("user_id", user.to_string().parse().unwrap());
    m.insert("device_id", device.to_string().parse().unwrap());
    m.insert("token", tok.parse().unwrap());
    r
}

pub fn with_server_meta<T>(msg: T, app: i64, tok: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("app_id", app.to_string().parse().unwrap());
    r.metadata_mut().insert("token", tok.parse().unwrap());
    r
}

pub fn text_body(text: &str) -> wire::MessageBody {
    wire::MessageBody {
        message_type: wire::MessageType::Text as i32,
        message_content: Some(wire::MessageContent {
            content: Some(wire::message_content::Content::Text(wire::Text {
                text: text.into(),
            })),
        }),
    }
}

pub fn send_req(rt: wire::ReceiverType, to: i64, text: &str, req_id: i64) -> pb::SendMessageReq {
    pb::SendMessageReq {
        receiver_type: rt as i32,
        receiver_id: to,
        to_user_ids: vec![],
        message_body: Some(text_body(text)),
        send_time: 0,
        is_persist: true,
        client_request_id: req_id,
        sender_id: 0,
    }
}

pub fn text_of(item: &wire::MessageItem) -> String {
    match item
        .message_body
        .as_ref()
        .and_then(|b| b.message_content.as_ref())
        .and_then(|c| c.content.as_ref())
    {
        Some(wire::message_content::Content::Text(t)) => t.text.clone(),
        other => panic!("not text: {other:?}"),
    }
}

/// The gim code of a failed call (panics on success or on a non-business error).
pub fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> GimCode {
    match r {
        Ok(v) => panic!("expected a business error, got {v:?}"),
        Err(s) => {
            GimError::from_status(&s)
                .unwrap_or_else(|| panic!("not a business error: {s:?}"))
                .code
        }
    }
}

pub fn gim_msg<T: std::fmt::Debug>(r: Result<T, Status>) -> String {
    match r {
        Ok(v) => panic!("expected a business error, got {v:?}"),
        Err(s) => s.message().to_string(),
    }
}

// ------------------------------------------------------------------------------ fake conn node

#[derive(Debug, Clone)]
pub enum Call {
    Deliver(cpb::DeliverBatchReq),
    Broadcast(cpb::BroadcastLargeGroupReq),
    Update(cpb::UpdateLargeGroupMembersReq),
    App(cpb::BroadcastAppReq),
    Close(cpb::CloseConnReq),
    CloseAll(cpb::CloseConnsReq),
}

#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// `x-trace-id` of every call, in order.
    pub traces: Arc<Mutex<Vec<String>>>,
    /// When set, every call fails (a broken node).
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn record(&self, c: Call) -> Result<(), Status> {
        self.calls.lock().unwrap().push(c);
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(Status::internal("broken test node"))
        } else {
            Ok(())
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn delivers(&self) -> Vec<cpb::DeliverBatchReq> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Deliver(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// CloseConns calls for one app.
    pub fn close_alls(&self, app: i64) -> Vec<cpb::CloseConnsReq> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::CloseAll(d) if d.app_id == app => Some(d),
                _ => None,
            })
            .collect()
    }

    pub fn broadcasts(&self) -> Vec<cpb::BroadcastLargeGroupReq> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Broadcast(d) => Some(d),
                _ => None,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl ConnInt for Recorder {
    async fn deliver_message(
        &self,
        _r: Request<cpb::DeliverMessageReq>,
    ) -> Result<Response<cpb::DeliverMessageResp>, Status> {
        Err(Status::unimplemented("logic uses DeliverBatch"))
    }

    async fn deliver_batch(
        &self,
        r: Request<cpb::DeliverBatchReq>,
    ) -> Result<Response<cpb::DeliverBatchResp>, Status> {
        let n = r.get_ref().targets.len() as u32;
        if let Some(t) = r.metadata().get(gim_common::TRACE_ID_HEADER) {
            self.traces
                .lock()
                .unwrap()
                .push(t.to_str().unwrap().to_string());
        }
        self.record(Call::Deliver(r.into_inner()))?;
        Ok(Response::new(cpb::DeliverBatchResp {
            delivered: n,
            missing: 0,
        }))
    }

    async fn broadcast_large_group(
        &self,
        r: Request<cpb::BroadcastLargeGroupReq>,
    ) -> Result<Response<cpb::BroadcastLargeGroupResp>, Status> {
        self.record(Call::Broadcast(r.into_inner()))?;
        Ok(Response::new(cpb::BroadcastLargeGroupResp { delivered: 1 }))
    }

    async fn update_large_group_members(
        &self,
        r: Request<cpb::UpdateLargeGroupMembersReq>,
    ) -> Result<Response<cpb::UpdateLargeGroupMembersResp>, Status> {
        self.record(Call::Update(r.into_inner()))?;
        Ok(Response::new(cpb::UpdateLargeGroupMembersResp {}))
    }

    async fn broadcast_app(
        &self,
        r: Request<cpb::BroadcastAppReq>,
    ) -> Result<Response<cpb::BroadcastAppResp>, Status> {
        self.record(Call::App(r.into_inner()))?;
        Ok(Response::new(cpb::BroadcastAppResp { delivered: 1 }))
    }

    async fn close_conn(
        &self,
        r: Request<cpb::CloseConnReq>,
    ) -> Result<Response<cpb::CloseConnResp>, Status> {
        self.record(Call::Close(r.into_inner()))?;
        Ok(Response::new(cpb::CloseConnResp { closed: true }))
    }

    async fn close_conns(
        &self,
        r: Request<cpb::CloseConnsReq>,
    ) -> Result<Response<cpb::CloseConnsResp>, Status> {
        self.record(Call::CloseAll(r.into_inner()))?;
        Ok(Response::new(cpb::CloseConnsResp { closed: 1 }))
    }
}

/// A conn node stand-in: serves ConnInt on a free port and registers in the Redis registry.
pub struct FakeNode {
    pub node_id: String,
    pub addr: SocketAddr,
    pub rec: Recorder,
    shutdown: Shutdown,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Common's Redis handle on one server (for registry writes the way conn makes them).
pub async fn rds(url: &str) -> gim_common::rds::Redis {
    gim_common::rds::Redis::connect_url(url, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Common's Redis handle on a Redis Cluster's seed nodes.
pub async fn rds_cluster(nodes: &[String]) -> gim_common::rds::Redis {
    let cfg = gim_common::config::RedisConfig {
        cluster_nodes: nodes.to_vec(),
        timeout_ms: 5000,
        ..Default::default()
    };
    gim_common::rds::Redis::connect(&cfg).await.unwrap()
}

impl FakeNode {
    pub async fn start(redis_url: &str) -> FakeNode {
        let node = Self::serve().await;
        node.register(&rds(redis_url).await).await;
        node
    }

    /// Registered on a Redis Cluster (the registry keys share one hash slot).
    pub async fn start_cluster(nodes: &[String]) -> FakeNode {
        let node = Self::serve().await;
        node.register(&rds_cluster(nodes).await).await;
        node
    }

    async fn serve() -> FakeNode {
        let rec = Recorder::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let svc = ConnIntServer::new(rec.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    sd.wait(),
                )
                .await
                .unwrap();
        });
        let node_id = format!("test-node-{}", rand_u64());
        FakeNode {
            node_id,
            addr,
            rec,
            shutdown,
        }
    }

    /// Registers with a 30 s lease, as conn does.
    pub async fn register(&self, redis: &gim_common::rds::Redis) {
        let info = NodeInfo {
            node_id: self.node_id.clone(),
            grpc_addr: self.addr.to_string(),
            connections: 0,
            accepting: true,
            updated_ms: gim_common::now_ms(),
        };
        registry::register(redis, &info, Duration::from_secs(30))
            .await
            .unwrap();
    }

    /// Lets the lease lapse, as a dead node's would (it stays in the node set).
    pub async fn expire(&self, redis_url: &str) {
        let _: () = rds(redis_url)
            .await
            .query(redis::cmd("DEL").arg(keys::node_key(&self.node_id)))
            .await
            .unwrap();
    }
}
