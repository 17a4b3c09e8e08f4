//! Cross-process cache invalidation: a logic process that changes a group (or an app's or a
//! user's policy) publishes its id on a Redis channel; every logic process (itself included)
//! drops its cached copies at once. The
//! caches' TTLs still bound staleness when a message is lost (Redis restart, reconnect); after
//! a reconnect the listener drops every cached group, since it may have missed messages.

use crate::rds::Redis;
use gim_common::shutdown::Shutdown;
use gim_common::{AppId, GroupId, UserId};
use std::sync::Weak;
use std::time::Duration;

pub const CHANNEL: &str = "gim:logic:invalidate";

pub fn group_message(app: AppId, gid: GroupId) -> String {
    format!("g:{app}:{gid}")
}

/// What changed, as published on [`CHANNEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Group(AppId, GroupId),
    /// An app's row: keys, suspension, token policy.
    App(AppId),
    /// A user's policy: suspension, blocks, token cut-offs.
    User(AppId, UserId),
}

impl Changed {
    fn message(self) -> String {
        match self {
            Changed::Group(app, gid) => group_message(app, gid),
            Changed::App(app) => format!("a:{app}"),
            Changed::User(app, user) => format!("u:{app}:{user}"),
        }
    }
}

/// What the listener drops caches on (a trait so this module needs none of the domains).
pub trait Invalidate: Send + Sync + 'static {
    fn drop_group(&self, app: AppId, gid: GroupId);
    fn drop_app(&self, _app: AppId) {}
    fn drop_user(&self, _app: AppId, _user: UserId) {}
    fn drop_all(&self);
}

/// Tells every logic process (this one included) that a group changed. Best effort: the caches'
/// TTLs bound the staleness when the message is lost.
pub fn publish(redis: &Redis, app: AppId, gid: GroupId) {
    publish_change(redis, Changed::Group(app, gid));
}

/// [`publish`] for any change.
pub fn publish_change(redis: &Redis, c: Changed) {
    let redis = redis.clone();
    let msg = c.message();
    tokio::spawn(async move {
        let _ = redis
            .query::<i64>(redis::cmd("PUBLISH").arg(CHANNEL).arg(msg))
            .await;
    });
}

fn parse(msg: &str) -> Option<Changed> {
    let (kind, rest) = msg.split_once(':')?;
    let mut it = rest.split(':');
    let a = AppId(it.next()?.parse().ok()?);
    let second = it.next().map(|v| v.parse::<i64>());
    let c = match (kind, second) {
        ("g", Some(Ok(g))) => Changed::Group(a, GroupId(g)),
        ("u", Some(Ok(u))) => Changed::User(a, UserId(u)),
        ("a", None) => Changed::App(a),
        _ => return None,
    };
    it.next().is_none().then_some(c)
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
                match parse(&payload) {
                    Some(Changed::Group(app, gid)) => s.drop_group(app, gid),
                    Some(Changed::App(app)) => s.drop_app(app),
                    Some(Changed::User(app, user)) => s.drop_user(app, user),
                    None => {}
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
        for c in [
            Changed::Group(AppId(3), GroupId(99)),
            Changed::App(AppId(4)),
            Changed::User(AppId(5), UserId(6)),
        ] {
            assert_eq!(parse(&c.message()), Some(c));
        }
        assert_eq!(parse("x:1:2"), None);
        assert_eq!(parse("a:1:2"), None);
        assert_eq!(parse("u:1"), None);
        assert_eq!(parse("g:1:2:3"), None);
    }
}
