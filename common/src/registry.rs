//! The conn node registry ([`crate::keys`]) read and written in one place. Reading: SMEMBERS the
//! node set, MGET the lease keys, parse; logic routes pushes with it, the operator scales on it,
//! `gim cluster status` prints it. Writing: a conn node's lease (conn's `registry` module renews
//! it; tests register fake nodes the same way).
//!
//! Every key lives in the `{gim:nodes}` slot, so the MULTI below works on a Redis Cluster too.

use crate::keys::{self, NodeInfo};
use crate::rds::Redis;
use redis::RedisResult;
use std::time::Duration;

/// What the registry says right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// Nodes whose lease is live and whose entry is well formed, by node id.
    pub live: Vec<NodeInfo>,
    /// Ids in the set whose lease key has expired: the node died (or drained without cleanup).
    pub expired: Vec<String>,
    /// Ids whose lease holds an entry that does not parse or names no usable gRPC address
    /// (logged, never used: a bad entry must not take down its reader).
    pub malformed: Vec<String>,
}

impl Registry {
    /// Signed-in connections summed over live nodes, draining ones included.
    pub fn connections(&self) -> u64 {
        self.live.iter().map(|n| n.connections).sum()
    }
}

/// Reads the registry: two round trips, both in the registry's one cluster slot.
pub async fn read(redis: &Redis) -> RedisResult<Registry> {
    let mut ids: Vec<String> = redis
        .query(redis::cmd("SMEMBERS").arg(keys::NODES_SET))
        .await?;
    if ids.is_empty() {
        return Ok(Registry::default());
    }
    ids.sort();
    let lease_keys: Vec<String> = ids.iter().map(|i| keys::node_key(i)).collect();
    let values: Vec<Option<String>> = redis.query(redis::cmd("MGET").arg(&lease_keys)).await?;
    Ok(classify(ids.into_iter().zip(values)))
}

/// Drops ids whose lease has expired from the set (a reader's clean-up; a node that still lives
/// re-adds itself at its next renewal).
pub async fn prune(redis: &Redis, expired: &[String]) -> RedisResult<()> {
    if expired.is_empty() {
        return Ok(());
    }
    redis
        .query::<i64>(redis::cmd("SREM").arg(keys::NODES_SET).arg(expired))
        .await
        .map(drop)
}

/// Writes (or renews) a node's lease for `lease` and adds its id to the set, which a reader may
/// have pruned while Redis was unreachable and the lease lapsed. Returns whether the lease key
/// still existed: false after a Redis restart or flush (or a lapsed lease).
pub async fn register(redis: &Redis, info: &NodeInfo, lease: Duration) -> RedisResult<bool> {
    let json = serde_json::to_string(info).expect("NodeInfo serializes");
    let key = keys::node_key(&info.node_id);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("EXISTS")
        .arg(&key)
        .cmd("SET")
        .arg(&key)
        .arg(json)
        .arg("PX")
        .arg(lease.as_millis().max(1) as u64)
        .ignore()
        .cmd("SADD")
        .arg(keys::NODES_SET)
        .arg(&info.node_id)
        .ignore();
    let (existed,): (bool,) = redis.pipe(&pipe).await?;
    Ok(existed)
}

/// Removes a node's lease and set membership (a clean exit).
pub async fn deregister(redis: &Redis, node_id: &str) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(keys::node_key(node_id))
        .ignore()
        .cmd("SREM")
        .arg(keys::NODES_SET)
        .arg(node_id)
        .ignore();
    redis.pipe::<()>(&pipe).await
}

/// One node's entry, if its lease is live and well formed (for tests and diagnostics).
pub async fn lease(redis: &Redis, node_id: &str) -> RedisResult<Option<NodeInfo>> {
    let v: Option<String> = redis
        .query(redis::cmd("GET").arg(keys::node_key(node_id)))
        .await?;
    Ok(v.and_then(|v| parse(&v).ok()))
}

/// Sorts (id, lease value) pairs into live, expired and malformed.
pub fn classify(entries: impl IntoIterator<Item = (String, Option<String>)>) -> Registry {
    let mut r = Registry::default();
    for (id, value) in entries {
        let Some(value) = value else {
            r.expired.push(id);
            continue;
        };
        match parse(&value) {
            Ok(info) => r.live.push(info),
            Err(why) => {
                tracing::warn!(node_id = %id, why, "skipping a malformed node registry entry");
                r.malformed.push(id);
            }
        }
    }
    r
}

/// A lease value as conn writes it: JSON [`NodeInfo`] (unknown fields from a newer conn are
/// ignored) whose `grpc_addr` is a `host:port` a gRPC client can dial.
fn parse(value: &str) -> Result<NodeInfo, &'static str> {
    let info: NodeInfo = serde_json::from_str(value).map_err(|_| "not a NodeInfo")?;
    let authority: Result<tonic::codegen::http::uri::Authority, _> = info.grpc_addr.parse();
    match authority {
        Ok(a) if a.port_u16().is_some() && !a.host().is_empty() && !a.as_str().contains('@') => {
            Ok(info)
        }
        _ => Err("grpc_addr is not host:port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, addr: &str, connections: u64) -> String {
        serde_json::to_string(&NodeInfo {
            node_id: id.into(),
            grpc_addr: addr.into(),
            connections,
            accepting: true,
            updated_ms: 0,
        })
        .unwrap()
    }

    #[test]
    fn malformed_entries_are_skipped_and_named() {
        let r = classify([
            ("a".to_string(), Some(entry("a", "10.0.0.1:50000", 10))),
            ("b".to_string(), None),
            ("c".to_string(), Some("garbage".to_string())),
            ("d".to_string(), Some(entry("d", "no port", 5))),
            ("e".to_string(), Some(entry("e", "http://x:1/path", 5))),
            ("f".to_string(), Some(entry("f", "conn-f.gim:50000", 32))),
        ]);
        let live: Vec<&str> = r.live.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(live, ["a", "f"]);
        assert_eq!(r.expired, ["b"]);
        assert_eq!(r.malformed, ["c", "d", "e"]);
        assert_eq!(r.connections(), 42);
    }

    #[test]
    fn fields_a_newer_conn_adds_are_ignored() {
        let v = r#"{"node_id":"a","grpc_addr":"h:1","connections":3,"accepting":false,
                    "updated_ms":5,"zone":"eu-1"}"#;
        let r = classify([("a".to_string(), Some(v.to_string()))]);
        assert_eq!(r.live.len(), 1);
        assert!(!r.live[0].accepting);
    }
}
