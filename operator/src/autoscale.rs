//! Conn-tier autoscaling by live connections, read from the node registry conn keeps in Redis
//! (`gim_common::registry`). The operator only reads the registry; it never writes or prunes it.

use crate::crd::ConnAutoscaling;
use gim_common::rds::Redis;
use gim_common::registry;
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

/// Reads the registry with common's reader (malformed entries are logged and not counted).
pub async fn read_registry(redis_url: &str, timeout: Duration) -> anyhow::Result<RegistrySnapshot> {
    let fut = async {
        let redis = Redis::connect_url(redis_url, timeout).await?;
        let r = registry::read(&redis).await?;
        anyhow::Ok(RegistrySnapshot {
            nodes: r.live.len().try_into().unwrap_or(u32::MAX),
            connections: r.connections(),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("redis registry read timed out after {timeout:?}"))?
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
}
