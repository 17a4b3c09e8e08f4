//! Delivery to conn nodes: the node registry (read from Redis, cached ~1 s), a pool of gRPC
//! channels per node address, route lookup, and the batched pushes.
//!
//! Pushes are best effort (the message is already durable; sync fills gaps): every node call has
//! its own deadline, runs concurrently with the others, and a failure is counted in metrics and
//! never fails or delays delivery to other nodes.

use crate::error::Result;
use crate::metrics::Metrics;
use crate::rds::{Redis, slot};
use gim_common::internal::{AddSecret, SecretChannel};
use gim_common::keys;
use gim_common::{AppId, DeviceId, Seq, UserId};
use gim_proto::conn::v1::conn_int_client::ConnIntClient;
use gim_proto::conn::v1::{
    BroadcastAppReq, BroadcastLargeGroupReq, CloseConnReq, CloseConnsReq, DeliverBatchReq,
    DeliverTarget, UpdateLargeGroupMembersReq,
};
use gim_proto::connect::v1::MessageItem;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

/// How long the live-node list is reused before re-reading the registry.
const REGISTRY_TTL: Duration = Duration::from_secs(1);
/// Deadline of one call to a conn node.
const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(2);

type NodeMap = Arc<HashMap<String, String>>;

tokio::task_local! {
    /// The trace id of the request being served (set by the gRPC layer, carried into background
    /// pushes), forwarded to conn in `x-trace-id` so one send's logic and conn log lines join.
    pub static TRACE_ID: String;
}

/// The gRPC endpoint of a registry address (`host:port`).
fn endpoint(addr: &str) -> std::result::Result<Endpoint, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
}

/// A request to a conn node, carrying the current trace id.
fn traced<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(Ok(v)) = TRACE_ID.try_with(|t| t.parse()) {
        r.metadata_mut().insert(gim_common::TRACE_ID_HEADER, v);
    }
    r
}

pub struct Nodes {
    redis: Redis,
    metrics: Arc<Metrics>,
    cache: Mutex<Option<(Instant, NodeMap)>>,
    refresh: tokio::sync::Mutex<()>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The cluster secret every `ConnInt` call carries.
    auth: AddSecret,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nodes")
    }
}

/// One message's write-diffusion push: every online device of each owner in `copies` gets
/// `item` with that owner's seq, except `exclude`.
#[derive(Debug)]
pub struct PushJob {
    pub app: AppId,
    pub item: MessageItem,
    pub copies: Vec<(UserId, Seq)>,
    pub exclude: Option<DeviceId>,
    /// Trace id of the send (from the gRPC layer), forwarded to conn.
    pub trace: Option<String>,
}

/// One device's connection, from its route.
#[derive(Debug, Clone)]
pub struct Route {
    pub device: DeviceId,
    pub node_id: String,
    pub conn_id: i64,
}

impl Nodes {
    pub fn new(redis: Redis, metrics: Arc<Metrics>, auth: AddSecret) -> Self {
        Self {
            redis,
            metrics,
            auth,
            cache: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Live nodes: node_id -> gRPC address. Cached for about a second.
    pub async fn live(&self) -> Result<NodeMap> {
        if let Some((at, m)) = &*self.cache.lock().expect("lock")
            && at.elapsed() < REGISTRY_TTL
        {
            return Ok(m.clone());
        }
        self.refresh(None).await
    }

    /// Re-reads the registry unless another task did since `seen` (single flight).
    async fn refresh(&self, seen: Option<Instant>) -> Result<NodeMap> {
        let _g = self.refresh.lock().await;
        if let Some((at, m)) = &*self.cache.lock().expect("lock") {
            let fresh_enough = match seen {
                Some(s) => *at > s,
                None => at.elapsed() < REGISTRY_TTL,
            };
            if fresh_enough {
                return Ok(m.clone());
            }
        }
        let reg = gim_common::registry::read(&self.redis).await?;
        let live: HashMap<String, String> = reg
            .live
            .into_iter()
            .map(|n| (n.node_id, n.grpc_addr))
            .collect();
        // The lease expired: the node is dead (or drained without cleanup).
        let _ = gim_common::registry::prune(&self.redis, &reg.expired).await;
        let live = Arc::new(live);
        // Drop channels of nodes that left, so the pool does not grow with node churn.
        {
            let addrs: std::collections::HashSet<&String> = live.values().collect();
            self.channels
                .lock()
                .expect("lock")
                .retain(|a, _| addrs.contains(a));
        }
        *self.cache.lock().expect("lock") = Some((Instant::now(), live.clone()));
        Ok(live)
    }

    /// Live nodes, re-reading the registry once if a route names a node we do not know yet (a
    /// node that registered within the cache lifetime).
    async fn live_for(&self, node_ids: impl Iterator<Item = &str>) -> Result<NodeMap> {
        let before = Instant::now();
        let live = self.live().await?;
        let mut unknown = false;
        for n in node_ids {
            if !live.contains_key(n) {
                unknown = true;
                break;
            }
        }
        if unknown {
            let stale = self
                .cache
                .lock()
                .expect("lock")
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() > Duration::from_millis(100));
            if stale {
                return self.refresh(Some(before)).await;
            }
        }
        Ok(live)
    }

    pub fn client(&self, addr: &str) -> ConnIntClient<SecretChannel> {
        let mut ch = self.channels.lock().expect("lock");
        let channel = ch.entry(addr.to_string()).or_insert_with(|| {
            endpoint(addr)
                .expect("live() admits valid addresses only")
                .connect_timeout(Duration::from_secs(1))
                .timeout(NODE_CALL_TIMEOUT)
                .tcp_nodelay(true)
                .connect_lazy()
        });
        ConnIntClient::with_interceptor(channel.clone(), self.auth.clone())
    }

    /// The online devices of each user, from their route hashes (one pipeline per slot).
    pub async fn routes(&self, app: AppId, users: &[UserId]) -> Result<Vec<Vec<Route>>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        let route_keys: Vec<String> = users.iter().map(|u| keys::route_key(app, *u)).collect();
        for (i, k) in route_keys.iter().enumerate() {
            let s = if self.redis.is_cluster() { slot(k) } else { 0 };
            groups.entry(s).or_default().push(i);
        }
        let calls = groups.values().map(|idx| {
            let mut p = redis::pipe();
            for &i in idx {
                p.cmd("HGETALL").arg(&route_keys[i]);
            }
            async move { self.redis.pipe::<Vec<HashMap<String, String>>>(&p).await }
        });
        let results = futures::future::try_join_all(calls).await?;
        let mut out = vec![Vec::new(); users.len()];
        for (idx, maps) in groups.values().zip(results) {
            for (&i, m) in idx.iter().zip(maps) {
                out[i] = m
                    .into_iter()
                    .filter_map(|(dev, v)| {
                        let device = DeviceId(dev.parse().ok()?);
                        let (node, conn) = keys::parse_route_value(&v)?;
                        Some(Route {
                            device,
                            node_id: node.to_string(),
                            conn_id: conn,
                        })
                    })
                    .collect();
            }
        }
        Ok(out)
    }

    /// Per-receiver items: copy `i` (owner, seq) gets `items[i]`. One DeliverBatch per node.
    pub async fn deliver_each(
        &self,
        app: AppId,
        items: Vec<MessageItem>,
        copies: &[(UserId, Seq)],
    ) -> Result<()> {
        let trace = TRACE_ID.try_with(|t| t.clone()).ok();
        let jobs = items
            .into_iter()
            .zip(copies)
            .map(|(item, c)| PushJob {
                app,
                item,
                copies: vec![*c],
                exclude: None,
                trace: trace.clone(),
            })
            .collect();
        self.deliver_app(app, jobs).await
    }

    /// Write-diffusion pushes of many concurrent sends at once (see [`crate::batch`]): one route
    /// lookup pipeline per app and one DeliverBatch per node for the whole batch, instead of one
    /// of each per message. Best effort like every push; a failed lookup is logged.
    pub async fn deliver_jobs(&self, jobs: Vec<PushJob>) -> Vec<()> {
        let n = jobs.len();
        let mut by_app: BTreeMap<i64, Vec<PushJob>> = BTreeMap::new();
        for j in jobs {
            by_app.entry(j.app.0).or_default().push(j);
        }
        let calls = by_app.into_iter().map(|(app, jobs)| async move {
            if let Err(e) = self.deliver_app(AppId(app), jobs).await {
                tracing::warn!(error = %e.chain(), "push: route lookup failed");
            }
        });
        futures::future::join_all(calls).await;
        vec![(); n]
    }

    async fn deliver_app(&self, app: AppId, jobs: Vec<PushJob>) -> Result<()> {
        let users: Vec<UserId> = jobs
            .iter()
            .flat_map(|j| j.copies.iter().map(|c| c.0))
            .collect();
        let routes = self.routes(app, &users).await?;
        let live = self
            .live_for(routes.iter().flatten().map(|r| r.node_id.as_str()))
            .await?;
        // node -> (targets, job indexes used in order, job index -> position in that list)
        type PerNode = (Vec<DeliverTarget>, Vec<usize>, HashMap<usize, u32>);
        let mut per_node: HashMap<&str, PerNode> = HashMap::new();
        let copies = jobs
            .iter()
            .enumerate()
            .flat_map(|(ji, j)| j.copies.iter().map(move |c| (ji, c.1.get())));
        for ((ji, seq), rs) in copies.zip(&routes) {
            for r in rs {
                if Some(r.device) == jobs[ji].exclude || !live.contains_key(&r.node_id) {
                    continue;
                }
                let (targets, used, pos) = per_node.entry(&r.node_id).or_default();
                let local = *pos.entry(ji).or_insert_with(|| {
                    used.push(ji);
                    used.len() as u32 - 1
                });
                targets.push(DeliverTarget {
                    app_id: app.0,
                    device_id: r.device.0,
                    conn_id: r.conn_id,
                    message_index: local,
                    seq,
                });
            }
        }
        let calls = per_node.into_iter().map(|(node, (targets, used, _))| {
            let req = DeliverBatchReq {
                messages: used.iter().map(|&ji| jobs[ji].item.clone()).collect(),
                targets,
            };
            // The call carries the trace ids of every send it delivers, comma-separated, so
            // each send's logic and conn log lines still join.
            let traces: Vec<&str> = used
                .iter()
                .filter_map(|&ji| jobs[ji].trace.as_deref())
                .collect();
            let mut request = tonic::Request::new(req);
            if !traces.is_empty()
                && let Ok(v) = traces.join(",").parse()
            {
                request
                    .metadata_mut()
                    .insert(gim_common::TRACE_ID_HEADER, v);
            }
            let addr = live[node].clone();
            async move {
                let mut c = self.client(&addr);
                self.observe("deliver_batch", c.deliver_batch(request))
                    .await;
            }
        });
        futures::future::join_all(calls).await;
        Ok(())
    }

    /// One BroadcastLargeGroup per live node; returns the nodes called.
    pub async fn broadcast_large_group(&self, req: BroadcastLargeGroupReq) -> Result<usize> {
        let live = self.live().await?;
        let calls = live.values().map(|addr| {
            let req = req.clone();
            async move {
                let mut c = self.client(addr);
                self.observe(
                    "broadcast_large_group",
                    c.broadcast_large_group(traced(req)),
                )
                .await
            }
        });
        Ok(futures::future::join_all(calls).await.len())
    }

    /// BroadcastApp on every live node; returns the nodes that answered.
    pub async fn broadcast_app(&self, app: AppId, item: MessageItem) -> Result<usize> {
        let live = self.live().await?;
        let calls = live.values().map(|addr| {
            let req = BroadcastAppReq {
                app_id: app.0,
                message: Some(item.clone()),
            };
            async move {
                let mut c = self.client(addr);
                self.observe("broadcast_app", c.broadcast_app(traced(req)))
                    .await
            }
        });
        Ok(futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count())
    }

    /// Tells every live node about a large group's membership change.
    pub async fn update_large_group(&self, req: UpdateLargeGroupMembersReq) -> Result<()> {
        let live = self.live().await?;
        let calls = live.values().map(|addr| {
            let req = req.clone();
            async move {
                let mut c = self.client(addr);
                self.observe(
                    "update_large_group",
                    c.update_large_group_members(traced(req)),
                )
                .await
            }
        });
        futures::future::join_all(calls).await;
        Ok(())
    }

    /// Supersede: closes an older connection of a device, if its node is alive.
    pub async fn close_conn(&self, node_id: &str, req: CloseConnReq) -> Result<bool> {
        let live = self.live_for(std::iter::once(node_id)).await?;
        let Some(addr) = live.get(node_id) else {
            return Ok(false);
        };
        let mut c = self.client(addr);
        Ok(self.observe("close_conn", c.close_conn(traced(req))).await)
    }

    /// CloseConns on every live node (suspension, forced logout): closes the app's, the user's
    /// or one device's connections wherever they are, routes or not. Returns the connections
    /// closed on the nodes that answered.
    pub async fn close_everywhere(&self, req: CloseConnsReq) -> Result<u32> {
        let live = self.live().await?;
        let calls = live.values().map(|addr| {
            let req = req.clone();
            async move {
                let mut c = self.client(addr);
                let r = tokio::time::timeout(NODE_CALL_TIMEOUT, c.close_conns(traced(req))).await;
                let (outcome, closed) = match r {
                    Ok(Ok(resp)) => ("ok", resp.into_inner().closed),
                    Ok(Err(status)) => {
                        tracing::warn!(node = %addr, code = ?status.code(), "close_conns failed");
                        ("error", 0)
                    }
                    Err(_) => {
                        tracing::warn!(node = %addr, "close_conns timed out");
                        ("timeout", 0)
                    }
                };
                self.metrics.push("close_conns", outcome);
                closed
            }
        });
        Ok(futures::future::join_all(calls).await.into_iter().sum())
    }

    async fn observe<T>(
        &self,
        call: &'static str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> bool {
        match tokio::time::timeout(NODE_CALL_TIMEOUT, fut).await {
            Ok(Ok(_)) => {
                self.metrics.push(call, "ok");
                true
            }
            Ok(Err(status)) => {
                self.metrics.push(call, "error");
                tracing::debug!(call, code = ?status.code(), "conn node call failed");
                false
            }
            Err(_) => {
                self.metrics.push(call, "timeout");
                tracing::debug!(call, "conn node call timed out");
                false
            }
        }
    }
}

/// Push tasks in flight; when all are taken, senders wait (backpressure instead of growth).
const PUSH_PERMITS: usize = 4096;

/// Runs pushes in the background, at most [`PUSH_PERMITS`] at once, each in the trace-id scope
/// of the request that started it.
#[derive(Debug, Clone)]
pub struct Spawner {
    permits: Arc<Semaphore>,
}

impl Default for Spawner {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(PUSH_PERMITS)),
        }
    }
}

impl Spawner {
    /// Waits for a permit, then spawns `fut`.
    pub async fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("push semaphore is never closed");
        let trace = TRACE_ID.try_with(|t| t.clone()).ok();
        tokio::spawn(async move {
            match trace {
                Some(t) => TRACE_ID.scope(t, fut).await,
                None => fut.await,
            }
            drop(permit);
        });
    }
}
