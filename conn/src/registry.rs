//! The node's entry in the Redis registry (see `gim_common::keys`): a JSON `NodeInfo` under a
//! PX lease, renewed every third of it, plus membership of the nodes set. Routes are logic's;
//! a node that dies simply stops renewing, and logic ignores routes naming it once the lease ends.

use gim_common::keys::NodeInfo;
use gim_common::{rds::Redis, registry};
use std::time::Duration;

/// This node's registry entry.
#[derive(Debug, Clone)]
pub struct Registration {
    redis: Redis,
    pub node_id: String,
    pub grpc_addr: String,
    pub lease: Duration,
}

impl Registration {
    pub fn new(redis: Redis, node_id: String, grpc_addr: String, lease: Duration) -> Self {
        Self {
            redis,
            node_id,
            grpc_addr,
            lease,
        }
    }

    /// Writes (or renews) the lease ([`registry::register`]). Returns whether the lease key
    /// still existed: false after a Redis restart or flush (or a lapsed lease), which means the
    /// routes logic kept for this node's connections are likely gone too.
    pub async fn renew(&self, connections: u64, accepting: bool) -> redis::RedisResult<bool> {
        let info = NodeInfo {
            node_id: self.node_id.clone(),
            grpc_addr: self.grpc_addr.clone(),
            connections,
            accepting,
            updated_ms: gim_common::now_ms(),
        };
        registry::register(&self.redis, &info, self.lease).await
    }

    pub async fn deregister(&self) -> redis::RedisResult<()> {
        registry::deregister(&self.redis, &self.node_id).await
    }

    /// The registered entry, if the lease is live (for tests and diagnostics).
    pub async fn read(&self) -> redis::RedisResult<Option<NodeInfo>> {
        registry::lease(&self.redis, &self.node_id).await
    }
}
