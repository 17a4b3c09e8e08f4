//! Cross-process cache invalidation: a logic process that changes a group publishes its id on a
//! Redis channel; every logic process (itself included) drops its cached copies at once. The
//! caches' TTLs still bound staleness when a message is lost (Redis restart, reconnect); after
//! a reconnect the listener drops every cached group, since it may have missed messages.

use crate::rds::Redis;
use gim_common::shutdown::Shutdown;
use gim_common::{AppId, GroupId};
use std::sync::Weak;
use std::time::Duration;

pub const CHANNEL: &str = "gim:logic:invalidate";

pub fn group_message(app: AppId, gid: GroupId) -> String {
    format!("g:{app}:{gid}")
}

/// What the listener drops caches on (the group domain; a trait so this module needs no groups).
pub trait Invalidate: Send + Sync + 'static {
    fn drop_group(&self, app: AppId, gid: GroupId);
    fn drop_all(&self);
}

/// Tells every logic process (this one included) that a group changed. Best effort: the caches'
/// TTLs bound the staleness when the message is lost.
pub fn publish(redis: &Redis, app: AppId, gid: GroupId) {
    let redis = redis.clone();
    let msg = group_message(app, gid);
    tokio::spawn(async move {
        let _ = redis
            .query::<i64>(redis::cmd("PUBLISH").arg(CHANNEL).arg(msg))
            .await;
    });
}

fn parse(msg: &str) -> Option<(AppId, GroupId)> {
    let mut it = msg.strip_prefix("g:")?.split(':');
    let app = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    Some((AppId(app), GroupId(gid)))
}

/// Subscribes (re-subscribing after failures) until shutdown. `url` is the single server, or any
/// node of a cluster (PUBLISH reaches every node of a cluster).
pub fn spawn_listener<T: Invalidate>(state: Weak<T>, url: String, shutdown: Shutdown) {
    use futures::StreamExt as _;
    tokio::spawn(async move {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return;
        };
        while !shutdown.is_triggered() {
            let sub = async {
                let mut ps = client.get_async_pubsub().await.ok()?;
                ps.subscribe(CHANNEL).await.ok()?;
                Some(ps)
            };
            let ps = tokio::select! {
                _ = shutdown.wait() => return,
                ps = tokio::time::timeout(Duration::from_secs(2), sub) => ps.ok().flatten(),
            };
            let Some(mut ps) = ps else {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            match state.upgrade() {
                Some(s) => s.drop_all(),
                None => return,
            }
            let mut stream = ps.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.wait() => return,
                    m = stream.next() => m,
                };
                let Some(msg) = msg else { break };
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                let Some(s) = state.upgrade() else { return };
                if let Some((app, gid)) = parse(&payload) {
                    s.drop_group(app, gid);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = group_message(AppId(3), GroupId(99));
        assert_eq!(parse(&m), Some((AppId(3), GroupId(99))));
        assert_eq!(parse("x:1:2"), None);
    }
}
