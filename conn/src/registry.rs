//! The node's entry in the Redis registry (see `gim_common::keys`): a JSON `NodeInfo` under a
//! PX lease, renewed every third of it, plus membership of the nodes set. Routes are logic's;
//! a node that dies simply stops renewing, and logic ignores routes naming it once the lease ends.

use gim_common::config::RedisConfig;
use gim_common::keys::{self, NodeInfo};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::time::Duration;

/// Single server or cluster; registry keys share one hash slot, so a MULTI works on both.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    pub async fn connect(cfg: &RedisConfig) -> redis::RedisResult<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        if cfg.cluster_nodes.is_empty() {
            let client = redis::Client::open(cfg.url.as_str())?;
            let mc = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2);
            Ok(Self::Single(
                ConnectionManager::new_with_config(client, mc).await?,
            ))
        } else {
            let client = redis::cluster::ClusterClient::builder(cfg.cluster_nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        }
    }

    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            RedisConn::Single(c) => pipe.query_async(c).await,
            RedisConn::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

/// This node's registry entry.
#[derive(Debug, Clone)]
pub struct Registration {
    redis: RedisConn,
    pub node_id: String,
    pub grpc_addr: String,
    pub lease: Duration,
}

impl Registration {
    pub fn new(redis: RedisConn, node_id: String, grpc_addr: String, lease: Duration) -> Self {
        Self {
            redis,
            node_id,
            grpc_addr,
            lease,
        }
    }

    /// Writes (or renews) the lease. Also re-adds the id to the set, which a reader may have
    /// pruned while Redis was unreachable and the lease lapsed. Returns whether the lease key
    /// still existed: false after a Redis restart or flush (or a lapsed lease), which means the
    /// routes logic kept for this node's connections are likely gone too.
    pub async fn renew(&mut self, connections: u64, accepting: bool) -> redis::RedisResult<bool> {
        let info = NodeInfo {
            node_id: self.node_id.clone(),
            grpc_addr: self.grpc_addr.clone(),
            connections,
            accepting,
            updated_ms: gim_common::now_ms(),
        };
        let json = serde_json::to_string(&info).expect("NodeInfo serializes");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EXISTS")
            .arg(keys::node_key(&self.node_id))
            .cmd("SET")
            .arg(keys::node_key(&self.node_id))
            .arg(json)
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(keys::NODES_SET)
            .arg(&self.node_id)
            .ignore();
        let (existed,): (bool,) = self.redis.query(&pipe).await?;
        Ok(existed)
    }

    pub async fn deregister(&mut self) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(keys::node_key(&self.node_id))
            .ignore()
            .cmd("SREM")
            .arg(keys::NODES_SET)
            .arg(&self.node_id)
            .ignore();
        self.redis.query::<()>(&pipe).await
    }

    /// The registered entry, if the lease is live (for tests and diagnostics).
    pub async fn read(&mut self) -> redis::RedisResult<Option<NodeInfo>> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(keys::node_key(&self.node_id));
        let (v,): (Option<String>,) = self.redis.query(&pipe).await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }
}
