//! Redis key names shared by conn (writes the node registry), logic (routes, reads the registry)
//! and the operator (reads connection counts).
//!
//! Keys that one call touches together share a `{hash tag}` so every command works on a Redis
//! Cluster: all registry keys live in the `{gim:nodes}` slot; a user's route hash is one key.

use crate::ids::{AppId, UserId};
use serde::{Deserialize, Serialize};

/// SET of registered node ids. Readers drop ids whose lease key has expired.
pub const NODES_SET: &str = "{gim:nodes}:all";

/// Lease key of one conn node: a JSON [`NodeInfo`] with a TTL renewed by the node.
pub fn node_key(node_id: &str) -> String {
    format!("{{gim:nodes}}:node:{node_id}")
}

/// What a conn node publishes about itself under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// `host:port` of its `ConnInt` gRPC server.
    pub grpc_addr: String,
    /// Signed-in connections it holds now.
    pub connections: u64,
    /// false while draining: logic keeps delivering, the operator stops counting it.
    pub accepting: bool,
    /// Unix ms of the last renewal.
    pub updated_ms: i64,
}

/// HASH of a user's online devices: field device_id, value [`route_value`].
pub fn route_key(app: AppId, user: UserId) -> String {
    format!("gim:route:{{{app}:{user}}}")
}

/// A route names the node and the connection on it, so a stale disconnect cannot remove a newer
/// sign-in's route.
pub fn route_value(node_id: &str, conn_id: i64) -> String {
    format!("{node_id}|{conn_id}")
}

/// Inverse of [`route_value`].
pub fn parse_route_value(v: &str) -> Option<(&str, i64)> {
    let (node, conn) = v.rsplit_once('|')?;
    Some((node, conn.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_values_round_trip_and_reject_garbage() {
        let v = route_value("conn-a-1f2e", 42);
        assert_eq!(parse_route_value(&v), Some(("conn-a-1f2e", 42)));
        assert_eq!(parse_route_value("nope"), None);
        assert_eq!(parse_route_value("n|x"), None);
    }

    #[test]
    fn registry_keys_share_one_slot() {
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
        assert_eq!(tag(NODES_SET), tag(&node_key("a")));
        assert_eq!(tag(&route_key(AppId(1), UserId(2))), "{1:2}");
    }
}
