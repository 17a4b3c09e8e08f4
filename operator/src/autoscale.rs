//! Conn-tier autoscaling by live connections, read from the node registry conn keeps in Redis
//! (`gim_common::keys`). The operator only reads the registry; it never writes or prunes it.

use crate::crd::ConnAutoscaling;
use gim_common::keys::{self, NodeInfo};
use std::time::Duration;

/// What the registry says right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistrySnapshot {
    /// Live nodes (lease key present).
    pub nodes: u32,
    /// Signed-in connections summed over live nodes, draining ones included: their clients are
    /// still connected until they move.
    pub connections: u64,
}

/// Reads the registry: SMEMBERS the node set, MGET the lease keys, skip ids whose lease expired.
pub async fn read_registry(redis_url: &str, timeout: Duration) -> anyhow::Result<RegistrySnapshot> {
    let fut = async {
        let client = redis::Client::open(redis_url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::NODES_SET)
            .query_async(&mut con)
            .await?;
        if ids.is_empty() {
            return Ok(RegistrySnapshot::default());
        }
        let node_keys: Vec<String> = ids.iter().map(|id| keys::node_key(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&node_keys)
            .query_async(&mut con)
            .await?;
        Ok(summarize(values.iter().flatten().map(String::as_str)))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("redis registry read timed out after {timeout:?}"))?
}

/// Sums the JSON `NodeInfo` values; entries that do not parse are skipped (a newer conn may add
/// fields we do not know, which still parse; garbage does not count).
pub fn summarize<'a>(values: impl Iterator<Item = &'a str>) -> RegistrySnapshot {
    let mut s = RegistrySnapshot::default();
    for v in values {
        if let Ok(info) = serde_json::from_str::<NodeInfo>(v) {
            s.nodes += 1;
            s.connections += info.connections;
        }
    }
    s
}

/// The replica count connection autoscaling asks for, ignoring cool-down: enough pods that each
/// holds at most the target, within [min, max].
pub fn wanted_replicas(a: &ConnAutoscaling, connections: u64) -> i32 {
    let target = a.target_connections_per_pod.max(1) as u64;
    let need = connections.div_ceil(target).min(i32::MAX as u64) as i32;
    need.clamp(a.min_replicas, a.max_replicas.max(a.min_replicas))
}

/// Decision with cool-down: `current` is what runs now, `since_last_change` the time since the
/// operator last changed it (None = never). Returns the count to run and whether it changed.
/// A count outside [min, max] (the bounds were edited) is corrected at once, without cool-down.
pub fn decide(
    a: &ConnAutoscaling,
    current: i32,
    connections: Option<u64>,
    since_last_change: Option<Duration>,
) -> (i32, bool) {
    let max = a.max_replicas.max(a.min_replicas);
    if current < a.min_replicas || current > max {
        let v = current.clamp(a.min_replicas, max);
        return (v, true);
    }
    let Some(conns) = connections else {
        // Registry unreadable: hold, never scale on missing data.
        return (current, false);
    };
    let wanted = wanted_replicas(a, conns);
    if wanted == current {
        return (current, false);
    }
    let cooled = since_last_change
        .is_none_or(|d| d >= Duration::from_secs(a.cooldown_seconds.max(0) as u64));
    if cooled {
        (wanted, true)
    } else {
        (current, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> ConnAutoscaling {
        ConnAutoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_connections_per_pod: 1000,
            cooldown_seconds: 60,
        }
    }

    #[test]
    fn wanted_is_ceiling_within_bounds() {
        assert_eq!(wanted_replicas(&a(), 0), 2);
        assert_eq!(wanted_replicas(&a(), 2500), 3);
        assert_eq!(wanted_replicas(&a(), 3000), 3);
        assert_eq!(wanted_replicas(&a(), 3001), 4);
        assert_eq!(wanted_replicas(&a(), 1_000_000), 6);
    }

    #[test]
    fn cooldown_holds_changes_and_bounds_apply_at_once() {
        let long = Some(Duration::from_secs(120));
        let short = Some(Duration::from_secs(5));
        assert_eq!(decide(&a(), 2, Some(4500), long), (5, true));
        assert_eq!(decide(&a(), 2, Some(4500), None), (5, true));
        assert_eq!(decide(&a(), 2, Some(4500), short), (2, false));
        assert_eq!(decide(&a(), 5, Some(100), short), (5, false));
        assert_eq!(decide(&a(), 5, None, long), (5, false));
        assert_eq!(decide(&a(), 9, Some(100), short), (6, true));
        assert_eq!(decide(&a(), 1, None, short), (2, true));
    }

    #[test]
    fn summarize_skips_garbage() {
        let n = |c: u64| {
            serde_json::to_string(&NodeInfo {
                node_id: "n".into(),
                grpc_addr: "x:1".into(),
                connections: c,
                accepting: true,
                updated_ms: 0,
            })
            .unwrap()
        };
        let vals = [n(10), "garbage".to_string(), n(32)];
        let s = summarize(vals.iter().map(String::as_str));
        assert_eq!(
            s,
            RegistrySnapshot {
                nodes: 2,
                connections: 42
            }
        );
    }
}
