//! One conn node: listeners, the `ConnInt` server, admin HTTP, the registry lease, and the drain.
//!
//! Drain (on the `Shutdown` trigger, i.e. SIGTERM in the binary): readiness goes false, the
//! listeners stop accepting, the lease is renewed with `accepting = false`, every connection gets
//! a RECONNECT notice and is closed, spread evenly over `drain_window_secs` so the reconnect storm
//! reaches the other nodes gradually, then the node deregisters and its servers stop. Logic keeps
//! pushing to the node until then; nothing is lost either way because logic stores before pushing
//! and clients sync after reconnecting.

use crate::admin::{self, AdminState};
use crate::admission::{Full, Slots};
use crate::error::{Error, Result};
use crate::grpc::ConnIntService;
use crate::health::{Dep, Health, spread_reconnects};
use crate::hub::Hub;
use crate::logic::{GrpcLogic, LogicApi};
use crate::metrics::{Metrics, TransportKind};
use crate::registry::Registration;
use crate::session::{self, Accepted, SessionConfig, SessionCtx};
use crate::{tcp, ws};
use gim_common::config::ConnConfig;
use gim_common::error::CODE_INTERNAL;
use gim_common::internal::{AddSecret, CheckSecret, Secret};
use gim_common::shutdown::Shutdown;
use gim_common::telemetry::new_trace_id;
use gim_proto::conn::v1::conn_int_server::ConnIntServer;
use gim_proto::logic::v1::{OfflineReq, RestoreRoutesReq, RouteEntry};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tracing::{debug, info, warn};

const CONN_INT_SERVICE: &str = <ConnIntServer<ConnIntService> as NamedService>::NAME;

/// How long the gRPC and admin servers get to finish in-flight calls at the end of a drain.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(3);

/// A running node, as `start` returns it.
#[derive(Debug)]
pub struct ConnHandle {
    pub tcp_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub node_id: String,
    /// The `ConnInt` address registered for logic.
    pub advertised_addr: String,
    hub: Arc<Hub>,
    slots: Arc<Slots>,
    done: JoinHandle<()>,
}

impl ConnHandle {
    /// Open connections (signed in or not).
    pub fn connections(&self) -> usize {
        self.hub.len()
    }

    pub fn signed_in(&self) -> u64 {
        self.hub.signed_in_count()
    }

    /// Free connection slots: (pending, signed-in) ([`crate::admission`]).
    pub fn free_slots(&self) -> (usize, usize) {
        self.slots.available()
    }

    /// Resolves when the node has drained and stopped (after its `Shutdown` was triggered).
    pub async fn wait(self) -> Result<()> {
        self.done.await.map_err(|e| Error::Serve {
            what: "node",
            reason: e.to_string(),
        })
    }
}

struct Node {
    ctx: Arc<SessionCtx>,
    slots: Arc<Slots>,
    tracker: TaskTracker,
    max_frame_len: usize,
    pre_sign_in_max: usize,
}

/// Accept queue length asked for (the kernel caps it at `net.core.somaxconn`). In a connect
/// storm (every client of a lost node reconnecting at once) a short queue overflows, the kernel
/// drops SYNs, and clients retry only after 1, 3, 7, 15 s: tens of seconds of extra connect
/// latency. tokio's default is 1024.
const LISTEN_BACKLOG: u32 = 16384;

async fn bind(key: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let err = |source| Error::Bind { key, addr, source };
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As std does for listeners: a restarted node rebinds while old connections linger.
    sock.set_reuseaddr(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    let l = sock.listen(LISTEN_BACKLOG).map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "conn".into())
}

/// Starts a node: binds every listener (port 0 works; the bound addresses are in the handle),
/// registers in Redis, and serves until `shutdown` triggers, then drains.
pub async fn start(cfg: ConnConfig, shutdown: Shutdown) -> Result<ConnHandle> {
    let auth = AddSecret(internal_secret(&cfg)?);
    let logic = GrpcLogic::new(&cfg.conn.logic_url, Duration::from_secs(5), auth)
        .map_err(Error::LogicUrl)?;
    start_with_logic(cfg, shutdown, Arc::new(logic)).await
}

/// The cluster secret (see `gim_common::internal`); none is allowed only with a loopback
/// `grpc_listen`, checked again here for configs built in code.
fn internal_secret(cfg: &ConnConfig) -> Result<Option<Secret>> {
    Ok(Secret::from_config(
        &cfg.internal,
        "conn.grpc_listen",
        cfg.conn.grpc_listen,
    )?)
}

/// [`start`] with another `LogicApi` implementation.
pub async fn start_with_logic(
    cfg: ConnConfig,
    shutdown: Shutdown,
    logic: Arc<dyn LogicApi>,
) -> Result<ConnHandle> {
    let c = &cfg.conn;
    let secret = internal_secret(&cfg)?;
    if secret.is_none() {
        info!("no internal.secret: ConnInt takes calls without one (loopback only)");
    }
    let (tcp, tcp_addr) = bind("tcp_listen", c.tcp_listen).await?;
    let (wsl, ws_addr) = bind("ws_listen", c.ws_listen).await?;
    let (grpc, grpc_addr) = bind("grpc_listen", c.grpc_listen).await?;
    let (admin, admin_addr) = bind("admin_listen", c.admin_listen).await?;
    let advertised_addr = if c.advertise_addr.is_empty() {
        let mut a = grpc_addr;
        if a.ip().is_unspecified() {
            a.set_ip([127, 0, 0, 1].into());
        }
        a.to_string()
    } else {
        c.advertise_addr.clone()
    };
    let name = if c.node_name.is_empty() {
        host_name()
    } else {
        c.node_name.clone()
    };
    // A random suffix per start: a restarted node never matches its predecessor's stale routes.
    let node_id = format!("{name}-{}", &new_trace_id()[..8]);

    let redis = gim_common::rds::Redis::connect(&cfg.redis).await?;
    let reg = Registration::new(
        redis,
        node_id.clone(),
        advertised_addr.clone(),
        Duration::from_secs(c.lease_secs),
    );
    reg.renew(0, true).await?;

    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(c.outbound_queue));
    let health = Health::new(reg.lease);
    let scfg = SessionConfig {
        sign_in_timeout: Duration::from_millis(c.sign_in_timeout_ms),
        tcp_idle_timeout: Duration::from_secs(c.tcp_idle_timeout_secs),
        ws_idle_timeout: Duration::from_secs(c.ws_idle_timeout_secs),
        ..SessionConfig::default()
    };
    let ctx = Arc::new(SessionCtx {
        node_id: node_id.clone(),
        logic,
        hub: hub.clone(),
        metrics: metrics.clone(),
        cfg: scfg,
        sign_ins: Arc::new(Semaphore::new(crate::session::SIGN_IN_INFLIGHT)),
        offlines: Arc::new(Semaphore::new(crate::session::OFFLINE_INFLIGHT)),
        health: health.clone(),
    });
    let slots = Slots::new(c.max_connections, c.pending_limit());
    let node = Arc::new(Node {
        ctx,
        slots: slots.clone(),
        tracker: TaskTracker::new(),
        max_frame_len: c.max_frame_len,
        pre_sign_in_max: c.pre_sign_in_max_frame,
    });
    let stop_accept = CancellationToken::new();
    let stop_servers = CancellationToken::new();

    let svc = ConnIntService::new(
        hub.clone(),
        metrics.clone(),
        Duration::from_millis(c.large_group_window_ms),
    );
    let check = {
        let metrics = metrics.clone();
        CheckSecret::new(secret, CONN_INT_SERVICE, move |s| {
            metrics.internal_unauthenticated(s)
        })
    };
    let (reflect_v1, reflect_v1alpha) =
        gim_common::reflection::servers(&[CONN_INT_SERVICE], &[gim_proto::DESCRIPTOR_SET])
            .map_err(|e| Error::Reflection(e.to_string()))?;
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reflect_v1)
            .add_service(reflect_v1alpha)
            .add_service(ConnIntServer::with_interceptor(svc, check))
            .serve_with_incoming_shutdown(
                // The builder's TCP options do not apply to a given listener: without NODELAY,
                // DeliverBatch replies wait for Nagle + delayed ACK, and logic's push batches
                // wait for those replies.
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc),
                    |s| {
                        if let Ok(s) = &s {
                            let _ = s.set_nodelay(true);
                        }
                        s
                    },
                ),
                stop_servers.clone().cancelled_owned(),
            ),
    );
    let admin_state = AdminState {
        health: health.clone(),
        metrics: metrics.clone(),
    };
    let admin_task = tokio::spawn(
        axum::serve(admin, admin::router(admin_state))
            .with_graceful_shutdown(stop_servers.clone().cancelled_owned())
            .into_future(),
    );
    let accept_tasks = [
        tokio::spawn(accept_loop(
            tcp,
            TransportKind::Tcp,
            node.clone(),
            stop_accept.clone(),
        )),
        tokio::spawn(accept_loop(
            wsl,
            TransportKind::Ws,
            node.clone(),
            stop_accept.clone(),
        )),
    ];
    let drain_window = Duration::from_secs(c.drain_window_secs);
    let stop_lease = CancellationToken::new();
    let accepting = Arc::new(AtomicBool::new(true));
    let lease_task = tokio::spawn(renew_loop(
        reg.clone(),
        hub.clone(),
        node.ctx.logic.clone(),
        accepting.clone(),
        health.clone(),
        drain_window,
        stop_lease.clone(),
    ));
    let logic_watch = tokio::spawn(crate::health::watch_logic(
        node.ctx.logic.clone(),
        health.clone(),
        hub.clone(),
        reg.lease / 3,
        drain_window,
        stop_lease.clone(),
    ));
    info!(
        %node_id, %tcp_addr, %ws_addr, %grpc_addr, %admin_addr, advertised = %advertised_addr,
        "conn node started"
    );

    let done = tokio::spawn({
        let hub = hub.clone();
        let node_id = node_id.clone();
        async move {
            shutdown.wait().await;
            info!(%node_id, connections = hub.len(), "draining");
            health.set_draining();
            accepting.store(false, Ordering::Relaxed);
            stop_accept.cancel();
            for t in accept_tasks {
                let _ = t.await;
            }
            if let Err(e) = reg.renew(hub.signed_in_count(), false).await {
                warn!(error = %e, "registry update failed at drain start");
            }
            spread_reconnects(
                hub.clone(),
                drain_window,
                "node draining",
                CancellationToken::new(),
            )
            .await;
            node.tracker.close();
            let grace = node.ctx.cfg.close_linger + node.ctx.cfg.offline_timeout;
            if tokio::time::timeout(grace + Duration::from_secs(1), node.tracker.wait())
                .await
                .is_err()
            {
                warn!(left = hub.len(), "connections still open after the drain");
            }
            stop_lease.cancel();
            let _ = lease_task.await;
            let _ = logic_watch.await;
            if let Err(e) = reg.deregister().await {
                warn!(error = %e, "deregistration failed; the lease will expire");
            }
            stop_servers.cancel();
            // Graceful stops wait for open HTTP/2 connections to wind down; bounded so the
            // process always exits inside its grace period.
            let servers = async {
                match grpc_task.await {
                    Ok(Err(e)) => warn!(error = %e, "ConnInt server failed"),
                    Err(e) => warn!(error = %e, "ConnInt server task failed"),
                    Ok(Ok(())) => {}
                }
                let _ = admin_task.await;
            };
            if tokio::time::timeout(SERVER_STOP_GRACE, servers)
                .await
                .is_err()
            {
                warn!("servers did not stop in time; exiting anyway");
            }
            info!(%node_id, "drained");
        }
    });

    Ok(ConnHandle {
        tcp_addr,
        ws_addr,
        grpc_addr,
        admin_addr,
        node_id,
        advertised_addr,
        hub,
        slots,
        done,
    })
}

/// Routes per `RestoreRoutes` call, so one call stays well under the gRPC message limit.
const RESTORE_CHUNK: usize = 1000;

/// Renews the lease every third of it. When the lease key had vanished (Redis restarted or was
/// flushed) or renewals had been failing, the routes logic keeps for this node's connections may
/// be gone too, and those devices would get no pushes until they reconnect: the renewal has
/// already re-registered the node, so the routes are restored next (retried every tick until
/// logic accepts them all).
async fn renew_loop(
    reg: Registration,
    hub: Arc<Hub>,
    logic: Arc<dyn LogicApi>,
    accepting: Arc<AtomicBool>,
    health: Arc<Health>,
    drain_window: Duration,
    stop: CancellationToken,
) {
    let period = reg.lease / 3;
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut restore_pending = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let accepting = accepting.load(Ordering::Relaxed);
        // Bounded: a Redis that stopped answering must count as lost, not stall the loop.
        let renewed = tokio::time::timeout(period, reg.renew(hub.signed_in_count(), accepting))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            });
        match renewed {
            Ok(existed) => {
                health.observe(Dep::Registry, true, &hub, drain_window);
                if !existed || failing {
                    warn!(
                        node_id = %reg.node_id, lease_was_missing = !existed,
                        "registry lease re-established; restoring routes"
                    );
                    restore_pending = true;
                }
                failing = false;
            }
            Err(e) => {
                failing = true;
                warn!(error = %e, "registry lease renewal failed");
                health.observe(Dep::Registry, false, &hub, drain_window);
                continue;
            }
        }
        if restore_pending {
            restore_pending = !restore_routes(&reg.node_id, &hub, logic.as_ref()).await;
        }
    }
}

/// Sends every signed-in connection's route to logic; true when all chunks were accepted.
async fn restore_routes(node_id: &str, hub: &Hub, logic: &dyn LogicApi) -> bool {
    let conns = hub.signed_in_routes();
    let mut restored = 0u64;
    for chunk in conns.chunks(RESTORE_CHUNK) {
        let req = RestoreRoutesReq {
            node_id: node_id.to_string(),
            routes: chunk
                .iter()
                .map(|(who, c)| RouteEntry {
                    app_id: who.app.get(),
                    user_id: who.user.get(),
                    device_id: who.device.get(),
                    conn_id: c.id.get(),
                })
                .collect(),
        };
        let trace_id = new_trace_id();
        match logic.restore_routes(req, trace_id.clone()).await {
            Ok(r) => restored += u64::from(r.restored),
            Err(status) => {
                warn!(%trace_id, error = %status.message(), "route restore failed; retrying next renewal");
                return false;
            }
        }
    }
    // A connection that closed while its route was being restored already sent its Offline,
    // possibly before the restore wrote the route back: remove such routes again (Offline only
    // deletes a route that still names this node and connection).
    for (who, c) in conns.iter().filter(|(_, c)| c.is_closed()) {
        let req = OfflineReq {
            app_id: who.app.get(),
            user_id: who.user.get(),
            device_id: who.device.get(),
            node_id: node_id.to_string(),
            conn_id: c.id.get(),
            client_addr: String::new(),
        };
        let _ = logic.offline(req, new_trace_id()).await;
    }
    info!(connections = conns.len(), restored, "routes restored");
    true
}

async fn accept_loop(
    listener: TcpListener,
    kind: TransportKind,
    node: Arc<Node>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, transport = kind.as_str(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match node.slots.admit() {
            Ok(slot) => slot,
            Err(full) => {
                node.ctx.metrics.refused.inc();
                debug!(%peer, "connection refused: {}", full.as_str());
                refuse(&stream, kind, full);
                continue;
            }
        };
        let accepted = Accepted {
            kind,
            peer,
            at: Instant::now(),
            slot: Some(slot),
        };
        let n = node.clone();
        node.tracker.spawn(async move {
            handle(&n, stream, accepted).await;
        });
    }
}

/// A clean refusal: a reply the client can read, then a close (never a hang).
fn refuse(stream: &TcpStream, kind: TransportKind, full: Full) {
    let bytes: Vec<u8> = match kind {
        TransportKind::Ws => {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec()
        }
        TransportKind::Tcp => {
            let out = crate::wire::output(
                0,
                0,
                CODE_INTERNAL,
                full.as_str().into(),
                Default::default(),
            );
            let mut buf = bytes::BytesMut::new();
            let payload = crate::wire::encode(&out);
            let _ = gim_proto::frame::put_frame(&mut buf, &payload);
            buf.to_vec()
        }
    };
    let _ = stream.try_write(&bytes);
}

async fn handle(node: &Node, stream: TcpStream, accepted: Accepted) {
    let _ = stream.set_nodelay(true);
    let ctx = &node.ctx;
    let (kind, peer) = (accepted.kind, accepted.peer);
    let io = ctx.metrics.io(kind);
    io.connections.inc();
    let conn = ctx.hub.register();
    match kind {
        TransportKind::Tcp => {
            let t = tcp::TcpTransport::new(stream, node.max_frame_len, node.pre_sign_in_max);
            session::serve(ctx, conn, t, accepted, None).await;
        }
        TransportKind::Ws => {
            // Boxed: the handshake's state is large and needed only once. The upgrade and the
            // sign-in share one deadline from accept.
            let accept = Box::pin(ws::accept(
                stream,
                node.max_frame_len,
                node.pre_sign_in_max,
                accepted.at + ctx.cfg.sign_in_timeout,
            ));
            match accept.await {
                Ok((t, preauth)) => {
                    session::serve(ctx, conn, t, accepted, preauth).await;
                }
                Err(reason) => {
                    drop(accepted);
                    ctx.hub.remove(&conn, false);
                    ctx.metrics.closed(reason.as_str());
                    debug!(%peer, reason = reason.as_str(), "websocket upgrade failed");
                }
            }
        }
    }
    io.connections.dec();
}

#[cfg(test)]
mod tests {
    //! A node over real sockets and the real Redis registry, with the in-memory fake logic.
    use super::*;
    use crate::session::tests::{Call, FakeLogic, sign_in_input};
    use bytes::BytesMut;
    use futures::{SinkExt, StreamExt};
    use gim_common::keys::{self, NodeInfo};
    use gim_proto::connect::v1::{Input, Output, PackageType, ReconnectNotice};
    use gim_proto::frame::FrameCodec;
    use gim_test_support::http_get;
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_util::codec::Decoder;

    const WAIT: Duration = Duration::from_secs(10);

    fn redis_url() -> String {
        gim_test_support::redis_url(9)
    }

    async fn node(
        tweak: impl FnOnce(&mut ConnConfig),
    ) -> (ConnHandle, Shutdown, mpsc::UnboundedReceiver<Call>) {
        node_with(tweak, false).await
    }

    /// [`node`]; with `hold_offline`, logic never answers an Offline call.
    async fn node_with(
        tweak: impl FnOnce(&mut ConnConfig),
        hold_offline: bool,
    ) -> (ConnHandle, Shutdown, mpsc::UnboundedReceiver<Call>) {
        node_full(tweak, hold_offline, Default::default()).await
    }

    /// [`node_with`]; logic's health check fails while `logic_down` is set.
    async fn node_full(
        tweak: impl FnOnce(&mut ConnConfig),
        hold_offline: bool,
        logic_down: Arc<AtomicBool>,
    ) -> (ConnHandle, Shutdown, mpsc::UnboundedReceiver<Call>) {
        let mut cfg = ConnConfig::default();
        cfg.redis.url = redis_url();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        cfg.conn.node_name = "unit".into();
        cfg.conn.tcp_listen = any;
        cfg.conn.ws_listen = any;
        cfg.conn.grpc_listen = any;
        cfg.conn.admin_listen = any;
        cfg.conn.drain_window_secs = 0;
        tweak(&mut cfg);
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = Shutdown::new();
        let logic = FakeLogic {
            calls: tx,
            hold_offline,
            down: logic_down,
        };
        let h = start_with_logic(cfg, shutdown.clone(), Arc::new(logic))
            .await
            .unwrap();
        (h, shutdown, rx)
    }

    fn envelope(ty: PackageType, request_id: i64, data: impl prost::Message) -> Vec<u8> {
        Input {
            r#type: ty as i32,
            request_id,
            data: data.encode_to_vec().into(),
        }
        .encode_to_vec()
    }

    async fn tcp_send(s: &mut TcpStream, payload: &[u8]) {
        let mut b = BytesMut::new();
        gim_proto::frame::put_frame(&mut b, payload).unwrap();
        s.write_all(&b).await.unwrap();
    }

    /// The next frame, or None at EOF.
    async fn tcp_recv(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Output> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(f) = FrameCodec::default().decode(buf).unwrap() {
                    return Some(Output::decode(f).unwrap());
                }
                if s.read_buf(buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("answered in time")
    }

    async fn lease(node_id: &str) -> Option<NodeInfo> {
        let redis = gim_common::rds::Redis::connect_url(&redis_url(), WAIT)
            .await
            .unwrap();
        gim_common::registry::lease(&redis, node_id).await.unwrap()
    }

    #[tokio::test]
    async fn a_vanished_lease_is_re_registered_and_the_routes_restored() {
        let (h, shutdown, mut calls) = node(|c| c.conn.lease_secs = 3).await;
        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().code, 0);
        let conn_id = match calls.recv().await {
            Some(Call::SignIn(r, _)) => r.conn_id,
            other => panic!("expected the sign-in, got {other:?}"),
        };
        // As after a Redis restart or flush: this node's lease key is gone (only this node's key;
        // the shared Redis is never flushed).
        let redis = gim_common::rds::Redis::connect_url(&redis_url(), WAIT)
            .await
            .unwrap();
        let _: () = redis
            .query(redis::cmd("DEL").arg(keys::node_key(&h.node_id)))
            .await
            .unwrap();
        let restore = tokio::time::timeout(WAIT, async {
            loop {
                match calls.recv().await {
                    Some(Call::Restore(req)) => return req,
                    Some(_) => {}
                    None => panic!("fake logic gone"),
                }
            }
        })
        .await
        .expect("routes restored in time");
        assert_eq!(restore.node_id, h.node_id);
        let si = sign_in_input("good");
        assert_eq!(
            restore
                .routes
                .iter()
                .map(|e| (e.app_id, e.user_id, e.device_id, e.conn_id))
                .collect::<Vec<_>>(),
            vec![(si.app_id, si.user_id, si.device_id, conn_id)]
        );
        let info = lease(&h.node_id).await.expect("re-registered");
        assert_eq!(info.connections, 1);
        // Once restored, ordinary renewals do not restore again.
        let quiet = tokio::time::timeout(Duration::from_millis(2500), async {
            loop {
                if let Some(Call::Restore(_)) | None = calls.recv().await {
                    return;
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "restored again without a new loss");
        shutdown.trigger();
        tokio::time::timeout(WAIT, h.wait()).await.unwrap().unwrap();
    }

    /// Signs in over TCP; returns the stream and the first reply.
    async fn tcp_sign_in(h: &ConnHandle, buf: &mut BytesMut) -> (TcpStream, Option<Output>) {
        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        let r = tcp_recv(&mut s, buf).await;
        (s, r)
    }

    async fn wait_ready(admin: SocketAddr, want: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = http_get(admin, "/readyz").await;
            if code == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client signed in while the node serves.
    async fn serving_client(h: &ConnHandle) -> (TcpStream, BytesMut) {
        let mut buf = BytesMut::new();
        let (s, r) = tcp_sign_in(h, &mut buf).await;
        assert_eq!(r.unwrap().code, 0, "signed in while serving");
        assert_eq!(wait_ready(h.admin_addr, 200).await, "ready");
        (s, buf)
    }

    /// After a dependency is lost: readiness false with the reason, the signed-in client told
    /// to reconnect elsewhere and closed, a new sign-in told the same.
    async fn sends_clients_elsewhere(
        h: &ConnHandle,
        mut s: TcpStream,
        mut buf: BytesMut,
        why: &str,
    ) {
        assert_eq!(wait_ready(h.admin_addr, 503).await, why);
        let r = tcp_recv(&mut s, &mut buf).await.expect("a notice");
        assert_eq!(r.r#type, PackageType::Reconnect as i32);
        assert_eq!(ReconnectNotice::decode(r.data).unwrap().reason, why);
        assert!(tcp_recv(&mut s, &mut buf).await.is_none(), "then closed");
        let mut buf = BytesMut::new();
        let (mut s, r) = tcp_sign_in(h, &mut buf).await;
        let r = r.expect("a notice");
        assert_eq!(
            r.r#type,
            PackageType::Reconnect as i32,
            "sign-in sent elsewhere"
        );
        assert!(tcp_recv(&mut s, &mut buf).await.is_none(), "then closed");
    }

    /// Once the dependency is back: ready, and sign-ins succeed.
    async fn serves_again(h: &ConnHandle) {
        assert_eq!(wait_ready(h.admin_addr, 200).await, "ready");
        let mut buf = BytesMut::new();
        let (_s, r) = tcp_sign_in(h, &mut buf).await;
        let r = r.unwrap();
        assert_eq!(
            (r.r#type, r.code),
            (PackageType::SignIn as i32, 0),
            "signs in again"
        );
    }

    #[tokio::test]
    async fn losing_redis_makes_the_node_unready_and_sends_clients_elsewhere_until_it_returns() {
        let mut redis = gim_test_support::OwnRedis::start().await;
        let url = redis.url();
        let (h, shutdown, _calls) = node(|c| {
            c.conn.lease_secs = 3;
            c.redis.url = url;
        })
        .await;
        let (s, buf) = serving_client(&h).await;
        redis.kill().await;
        sends_clients_elsewhere(&h, s, buf, Dep::Registry.lost_reason()).await;
        redis.restart(Duration::ZERO).await;
        serves_again(&h).await;
        shutdown.trigger();
        tokio::time::timeout(WAIT, h.wait()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn losing_logic_makes_the_node_unready_and_sends_clients_elsewhere_until_it_returns() {
        let down = Arc::new(AtomicBool::new(false));
        let (h, shutdown, _calls) = node_full(|c| c.conn.lease_secs = 3, false, down.clone()).await;
        let (s, buf) = serving_client(&h).await;
        down.store(true, Ordering::Relaxed);
        sends_clients_elsewhere(&h, s, buf, Dep::Logic.lost_reason()).await;
        down.store(false, Ordering::Relaxed);
        serves_again(&h).await;
        shutdown.trigger();
        tokio::time::timeout(WAIT, h.wait()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn tcp_sign_in_registry_metrics_and_drain() {
        let (h, shutdown, mut calls) = node(|c| {
            c.conn.lease_secs = 3;
            c.conn.drain_window_secs = 4;
        })
        .await;
        let info = lease(&h.node_id).await.expect("registered");
        assert_eq!(info.grpc_addr, h.advertised_addr);
        assert_eq!(info.grpc_addr, h.grpc_addr.to_string());
        assert!(info.accepting);

        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        let r = tcp_recv(&mut s, &mut buf).await.unwrap();
        assert_eq!((r.r#type, r.request_id, r.code), (1, 1, 0));
        assert!(matches!(calls.recv().await, Some(Call::SignIn(r, _)) if r.node_id == h.node_id));
        // Two envelopes in one write, one split across writes.
        let mut b = BytesMut::new();
        gim_proto::frame::put_frame(&mut b, &envelope(PackageType::Heartbeat, 2, ())).unwrap();
        gim_proto::frame::put_frame(&mut b, &envelope(PackageType::Heartbeat, 3, ())).unwrap();
        s.write_all(&b).await.unwrap();
        for rid in [2, 3] {
            assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().request_id, rid);
        }

        // The renewed lease reports the signed-in connection.
        let deadline = Instant::now() + WAIT;
        while lease(&h.node_id).await.map(|i| i.connections) != Some(1) {
            assert!(
                Instant::now() < deadline,
                "lease never showed the connection"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(
            metrics.contains("gim_conn_sign_ins_total{result=\"ok\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gim_conn_frames_in_total{transport=\"tcp\"} 3"),
            "{metrics}"
        );
        assert_eq!(http_get(h.admin_addr, "/readyz").await.0, 200);
        assert_eq!(http_get(h.admin_addr, "/healthz").await.0, 200);

        let admin = h.admin_addr;
        let node_id = h.node_id.clone();
        // A second connection: the drain spreads the two over its window, so it lasts a while.
        let _quiet = TcpStream::connect(h.tcp_addr).await.unwrap();
        let deadline = Instant::now() + WAIT;
        while h.connections() < 2 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.trigger();
        // Admin still answers during the drain, and says not ready.
        let deadline = Instant::now() + WAIT;
        while http_get(admin, "/readyz").await.0 != 503 {
            assert!(Instant::now() < deadline, "readiness never went false");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = tcp_recv(&mut s, &mut buf).await.unwrap();
        assert_eq!(r.r#type, PackageType::Reconnect as i32);
        assert!(
            tcp_recv(&mut s, &mut buf).await.is_none(),
            "closed after the notice"
        );
        tokio::time::timeout(WAIT, h.wait()).await.unwrap().unwrap();
        assert!(lease(&node_id).await.is_none(), "deregistered");
        let offline = loop {
            match calls.recv().await {
                Some(Call::Offline(o)) => break o,
                Some(_) => {}
                None => panic!("no offline call"),
            }
        };
        assert_eq!(offline.node_id, node_id);
    }

    /// ConnInt serves only logic: a call without the cluster secret, or with another one, is
    /// UNAUTHENTICATED and counted, and a signed-in client is neither pushed to nor kicked.
    #[tokio::test]
    async fn conn_int_refuses_calls_without_the_cluster_secret() {
        use gim_common::internal::{AddSecret, Secret};
        use gim_proto::conn::v1::conn_int_client::ConnIntClient;
        use gim_proto::conn::v1::{BroadcastAppReq, CloseConnReq};
        const SECRET: &str = "conn-unit-internal-secret";
        let (h, _shutdown, mut calls) = node(|c| c.internal.secret = SECRET.into()).await;
        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().code, 0);
        let conn_id = match calls.recv().await {
            Some(Call::SignIn(r, _)) => r.conn_id,
            other => panic!("expected the sign-in, got {other:?}"),
        };
        let si = sign_in_input("good");
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", h.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let wrong = Secret::new("another-clusters-secret").unwrap();
        let close = || CloseConnReq {
            app_id: si.app_id,
            device_id: si.device_id,
            conn_id,
            reason: "forged".into(),
        };
        let broadcast = || BroadcastAppReq {
            app_id: si.app_id,
            message: Some(Default::default()),
        };
        for auth in [AddSecret(None), AddSecret(Some(wrong))] {
            let mut c = ConnIntClient::with_interceptor(ch.clone(), auth);
            let e = c.close_conn(close()).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
            let e = c.broadcast_app(broadcast()).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(
            metrics.contains(
                "gim_conn_internal_unauthenticated_total{service=\"gim.conn.v1.ConnInt\"} 4"
            ),
            "{metrics}"
        );
        // Nothing reached the client: a heartbeat's answer is the next frame it reads.
        tcp_send(&mut s, &envelope(PackageType::Heartbeat, 2, ())).await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().request_id, 2);
        // With the secret, the same calls work: the broadcast arrives, the close kicks.
        let mut c =
            ConnIntClient::with_interceptor(ch, AddSecret(Some(Secret::new(SECRET).unwrap())));
        assert_eq!(
            c.broadcast_app(broadcast())
                .await
                .unwrap()
                .into_inner()
                .delivered,
            1
        );
        assert_eq!(
            tcp_recv(&mut s, &mut buf).await.unwrap().r#type,
            PackageType::Message as i32
        );
        assert!(c.close_conn(close()).await.unwrap().into_inner().closed);
    }

    /// Before sign-in a TCP frame may be at most `pre_sign_in_max_frame`: a 2-byte header
    /// announcing 64 KiB closes the connection at once instead of reserving 64 KiB until the
    /// sign-in timeout, and its slot is free again. After sign-in, frames up to `max_frame_len`
    /// pass.
    #[tokio::test]
    async fn frames_before_sign_in_are_capped() {
        let (h, _shutdown, _calls) = node(|c| c.conn.sign_in_timeout_ms = 600_000).await;
        let free = h.free_slots();
        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        s.write_all(&[0xff, 0xff, 0, 0, 0]).await.unwrap();
        let mut buf = BytesMut::new();
        while tcp_recv(&mut s, &mut buf).await.is_some() {}
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(
            metrics.contains("gim_conn_closes_total{reason=\"frame_too_large\"} 1"),
            "{metrics}"
        );
        wait_until(|| h.free_slots() == free).await;

        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().code, 0);
        tcp_send(&mut s, &big_heartbeat(2)).await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().request_id, 2);
    }

    /// A heartbeat three times the pre-sign-in frame limit.
    fn big_heartbeat(request_id: i64) -> Vec<u8> {
        let max = ConnConfig::default().conn.pre_sign_in_max_frame;
        Input {
            r#type: PackageType::Heartbeat as i32,
            request_id,
            data: vec![7u8; 3 * max].into(),
        }
        .encode_to_vec()
    }

    async fn wait_until(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !f() {
            assert!(Instant::now() < deadline, "condition never held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The same over WebSocket: before sign-in a frame header announcing 64 KiB closes the
    /// connection before tungstenite reserves the payload (it did, on the header alone), and so
    /// does a fragmented message; the pending slot is free again. After sign-in, large messages
    /// pass.
    #[tokio::test]
    async fn websocket_frames_before_sign_in_are_capped() {
        let (h, _shutdown, _calls) = node(|c| {
            c.conn.sign_in_timeout_ms = 600_000;
            c.conn.max_pending_connections = 1;
        })
        .await;
        let free = h.free_slots();
        assert_eq!(free.0, 1);
        // Masked binary frame, FIN, 16-bit length 65 535, then only a few payload bytes.
        let large_header = [0x82, 0x80 | 126, 0xff, 0xff, 1, 2, 3, 4, 0, 0, 0];
        // A first fragment (no FIN) of a small message.
        let fragment = [0x02, 0x80 | 3, 1, 2, 3, 4, 0, 0, 0];
        for raw in [&large_header[..], &fragment[..]] {
            let mut ws = ws_client(h.ws_addr, "/ws").await.unwrap();
            ws.get_mut().write_all(raw).await.unwrap();
            let started = Instant::now();
            while ws_recv(&mut ws).await.is_some() {}
            assert!(started.elapsed() < Duration::from_secs(3), "closed at once");
            wait_until(|| h.free_slots() == free).await;
        }
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(
            metrics.contains("gim_conn_closes_total{reason=\"frame_too_large\"} 2"),
            "{metrics}"
        );

        let mut ws = ws_client(h.ws_addr, "/ws").await.unwrap();
        let si = envelope(PackageType::SignIn, 1, sign_in_input("good"));
        ws.send(WsMessage::Binary(si.into())).await.unwrap();
        assert_eq!(ws_recv(&mut ws).await.unwrap().code, 0);
        ws.send(WsMessage::Binary(big_heartbeat(2).into()))
            .await
            .unwrap();
        assert_eq!(ws_recv(&mut ws).await.unwrap().request_id, 2);
    }

    /// A client that stalls before signing in (here: half an upgrade request, or an upgrade and
    /// then nothing) holds no signed-in slot, and is closed `sign_in_timeout` after accept, the
    /// upgrade included; its pending slot is free again.
    #[tokio::test]
    async fn stalled_upgrades_hold_no_connection_slot_and_close_in_time() {
        const TIMEOUT: Duration = Duration::from_millis(1500);
        let (h, _shutdown, _calls) = node(|c| {
            c.conn.max_connections = 1;
            c.conn.max_pending_connections = 2;
            c.conn.sign_in_timeout_ms = TIMEOUT.as_millis() as u64;
        })
        .await;
        let started = Instant::now();
        let mut stalled = TcpStream::connect(h.ws_addr).await.unwrap();
        stalled
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        wait_until(|| h.connections() == 1).await;
        // The only signed-in slot is still free for a real client.
        let mut s = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut s,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut s, &mut buf).await.unwrap().code, 0);
        let mut rest = Vec::new();
        let _ = stalled.read_to_end(&mut rest).await;
        let took = started.elapsed();
        assert!(
            took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT * 2,
            "closed after {took:?}"
        );
        // The node is full now (one signed in): a new connection is refused at once.
        let mut refused = TcpStream::connect(h.ws_addr).await.unwrap();
        let mut out = String::new();
        refused.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        drop(s);
        wait_until(|| h.free_slots() == (2, 1)).await;

        // An upgrade completed late, then silence: closed at the same deadline from accept,
        // not a whole sign-in timeout after the upgrade.
        let started = Instant::now();
        let raw = TcpStream::connect(h.ws_addr).await.unwrap();
        tokio::time::sleep(TIMEOUT * 2 / 3).await;
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", h.ws_addr), raw)
            .await
            .unwrap();
        while ws_recv(&mut ws).await.is_some() {}
        let took = started.elapsed();
        assert!(took < TIMEOUT + TIMEOUT / 3, "closed after {took:?}");
        wait_until(|| h.free_slots() == (2, 1)).await;
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(
            metrics.contains("gim_conn_closes_total{reason=\"sign_in_timeout\"} 2"),
            "{metrics}"
        );
    }

    /// A closed connection's slot is free while its Offline call still waits for logic.
    #[tokio::test]
    async fn a_closed_connection_frees_its_slot_before_its_offline_completes() {
        let (h, _shutdown, mut calls) = node_with(|c| c.conn.max_connections = 1, true).await;
        let mut buf = BytesMut::new();
        let mut a = TcpStream::connect(h.tcp_addr).await.unwrap();
        tcp_send(
            &mut a,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut a, &mut buf).await.unwrap().code, 0);
        drop(a);
        loop {
            match tokio::time::timeout(WAIT, calls.recv()).await.unwrap() {
                Some(Call::Offline(_)) => break,
                Some(_) => {}
                None => panic!("no offline call"),
            }
        }
        // The Offline call is in flight (and never answered): a new connection gets the slot.
        let mut b = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut buf = BytesMut::new();
        tcp_send(
            &mut b,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut b, &mut buf).await.unwrap().code, 0);
    }

    /// Beyond either pool (connections signing in, signed-in connections) a new connection is
    /// refused at once with a reply it can read; a sign-in that finds the node filled meanwhile
    /// gets 1001 and a close.
    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_cleanly() {
        let (h, _shutdown, _calls) = node(|c| {
            c.conn.max_connections = 1;
            c.conn.max_pending_connections = 2;
        })
        .await;
        let refused = |addr, kind| async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            if kind == TransportKind::Ws {
                let mut out = String::new();
                c.read_to_string(&mut out).await.unwrap();
                assert!(out.starts_with("HTTP/1.1 503"), "{out}");
            } else {
                let mut buf = BytesMut::new();
                let r = tcp_recv(&mut c, &mut buf).await.unwrap();
                assert_eq!(r.code, CODE_INTERNAL);
                assert!(tcp_recv(&mut c, &mut buf).await.is_none());
            }
        };
        let mut a = TcpStream::connect(h.tcp_addr).await.unwrap();
        let _b = TcpStream::connect(h.ws_addr).await.unwrap();
        wait_until(|| h.connections() == 2).await;
        refused(h.tcp_addr, TransportKind::Tcp).await;
        refused(h.ws_addr, TransportKind::Ws).await;

        let mut buf = BytesMut::new();
        tcp_send(
            &mut a,
            &envelope(PackageType::SignIn, 1, sign_in_input("good")),
        )
        .await;
        assert_eq!(tcp_recv(&mut a, &mut buf).await.unwrap().code, 0);
        // The signed-in pool is full now: refused at accept.
        refused(h.tcp_addr, TransportKind::Tcp).await;
        refused(h.ws_addr, TransportKind::Ws).await;
    }

    /// Two clients accepted while one signed-in slot was free: the second sign-in is refused.
    #[tokio::test]
    async fn a_sign_in_that_finds_the_node_full_is_refused() {
        let (h, _shutdown, _calls) = node(|c| {
            c.conn.max_connections = 1;
            c.conn.max_pending_connections = 2;
        })
        .await;
        let mut a = TcpStream::connect(h.tcp_addr).await.unwrap();
        let mut b = TcpStream::connect(h.tcp_addr).await.unwrap();
        wait_until(|| h.connections() == 2).await;
        let (mut ba, mut bb) = (BytesMut::new(), BytesMut::new());
        let si = envelope(PackageType::SignIn, 1, sign_in_input("good"));
        tcp_send(&mut a, &si).await;
        assert_eq!(tcp_recv(&mut a, &mut ba).await.unwrap().code, 0);
        tcp_send(&mut b, &si).await;
        let r = tcp_recv(&mut b, &mut bb).await.unwrap();
        assert_eq!(
            (r.r#type, r.code),
            (PackageType::SignIn as i32, CODE_INTERNAL)
        );
        assert!(tcp_recv(&mut b, &mut bb).await.is_none());
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        assert!(metrics.contains("reason=\"node_full\""), "{metrics}");
    }

    async fn ws_client(
        addr: SocketAddr,
        path: &str,
    ) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
        let s = TcpStream::connect(addr).await.unwrap();
        tokio_tungstenite::client_async(format!("ws://{addr}{path}"), s)
            .await
            .map(|(ws, _)| ws)
    }

    use tokio_tungstenite::WebSocketStream;

    async fn ws_recv(ws: &mut WebSocketStream<TcpStream>) -> Option<Output> {
        tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => return Some(Output::decode(b).unwrap()),
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .expect("answered in time")
    }

    #[tokio::test]
    async fn websocket_binary_frames_text_frames_ping_floods_and_bad_paths() {
        let (h, _shutdown, _calls) = node(|_| {}).await;
        assert!(
            ws_client(h.ws_addr, "/other").await.is_err(),
            "only /ws upgrades"
        );

        let mut ws = ws_client(
            h.ws_addr,
            "/ws?app_id=1&user_id=10&device_id=100&token=good",
        )
        .await
        .unwrap();
        let r = ws_recv(&mut ws).await.unwrap();
        assert_eq!((r.r#type, r.request_id, r.code), (1, 0, 0), "query sign-in");
        ws.send(WsMessage::Binary(
            envelope(PackageType::Heartbeat, 7, ()).into(),
        ))
        .await
        .unwrap();
        assert_eq!(ws_recv(&mut ws).await.unwrap().request_id, 7);
        ws.send(WsMessage::Text("hello".into())).await.unwrap();
        assert_eq!(ws_recv(&mut ws).await.unwrap().code, 1006);
        assert!(ws_recv(&mut ws).await.is_none(), "text frame closes");

        let mut ws = ws_client(h.ws_addr, "/ws").await.unwrap();
        let big = vec![0u8; 70_000];
        let _ = ws.send(WsMessage::Binary(big.into())).await;
        let r = ws_recv(&mut ws).await;
        assert!(
            r.is_none() || r.unwrap().code == 1006,
            "oversized message closes"
        );

        let mut ws = ws_client(h.ws_addr, "/ws").await.unwrap();
        for _ in 0..100 {
            if ws.send(WsMessage::Ping(Default::default())).await.is_err() {
                break;
            }
        }
        while ws_recv(&mut ws).await.is_some() {}
        let metrics = http_get(h.admin_addr, "/metrics").await.1;
        for reason in ["text_frame", "ping_flood"] {
            assert!(
                metrics.contains(&format!("reason=\"{reason}\"")),
                "{reason}: {metrics}"
            );
        }
    }
}
