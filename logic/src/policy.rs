//! The rules a tenant sets on its app and users, applied to every sign-in, client call and send:
//! app and user suspension, and blocks between users.
//!
//! Reads are off the hot path: the app's rules ride on the app row [`Apps`] caches with its key,
//! and a user's rules (suspension, the users it blocked) are one cache entry per (app, user),
//! loaded for many users in one query ([`Batcher`]) — a sign-in loads them, so a user's sends
//! find them cached. A change drops the entry in this process at once and in every other logic
//! process through the invalidation channel ([`inval`]); the TTL bounds staleness only when a
//! message is lost (and the listener drops everything after a reconnect).

use crate::apps::{AppInfo, Apps};
use crate::base::Base;
use crate::batch::Batcher;
use crate::cache::TtlCache;
use crate::db::{self, lit};
use crate::error::{Error, Result};
use crate::groups::inval::{self, Changed};
use crate::push::{Nodes, Spawner};
use crate::rds::Redis;
use crate::users::Users;
use crate::validate;
use gim_common::{AppId, DeviceId, GimCode, UserId};
use gim_proto::conn::v1::CloseConnsReq;
use sqlx::MySqlPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The most users one user may block.
pub const BLOCKS_MAX: i64 = 10_000;

/// How long a user's rules are served from the cache when no invalidation arrives.
const USER_TTL: Duration = Duration::from_secs(60);

/// One user's rules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    pub suspended: bool,
    /// Users whose 1:1 sends to this user are refused (1020).
    pub blocked: HashSet<i64>,
}

pub struct Policies {
    pool: MySqlPool,
    redis: Redis,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    apps: Arc<Apps>,
    users: Arc<Users>,
    cache: TtlCache<(AppId, UserId), Arc<UserPolicy>>,
    loads: Batcher<(AppId, UserId), Result<Arc<UserPolicy>>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policies")
    }
}

impl Policies {
    pub fn new(b: &Base, apps: Arc<Apps>, users: Arc<Users>) -> Self {
        let c = db::BATCH_CONCURRENCY;
        Self {
            loads: db::batcher("user_policy", &b.pool, &b.metrics, b.deadline, c, load),
            pool: b.pool.clone(),
            redis: b.redis.clone(),
            nodes: b.nodes.clone(),
            spawner: b.spawner.clone(),
            apps,
            users,
            cache: TtlCache::new(USER_TTL, 500_000),
        }
    }

    /// A user's rules (cached).
    pub async fn user(&self, app: AppId, user: UserId) -> Result<Arc<UserPolicy>> {
        if let Some(p) = self.cache.get(&(app, user)) {
            return Ok(p);
        }
        let p = self.loads.try_call((app, user), "policy batcher").await?;
        self.cache.insert((app, user), p.clone());
        Ok(p)
    }

    /// A client's device token for (app, user, device), then the app's and the user's rules:
    /// 1002 (token), 1021 (app suspended), 1022 (user suspended). Every client call and sign-in.
    pub async fn auth_device(
        &self,
        app: AppId,
        user: UserId,
        device: DeviceId,
        tok: &str,
    ) -> Result<()> {
        self.apps.auth_device(app, user, device, tok).await?;
        self.require_user_active(app, user).await?;
        Ok(())
    }

    /// 1021 when the app is suspended.
    pub async fn require_app_active(&self, app: AppId) -> Result<Arc<AppInfo>> {
        let info = self.apps.app(app).await?;
        if info.suspended {
            return Err(GimCode::AppSuspended.into());
        }
        Ok(info)
    }

    /// 1021 when the app is suspended, 1022 when the user is.
    pub async fn require_user_active(&self, app: AppId, user: UserId) -> Result<Arc<UserPolicy>> {
        self.require_app_active(app).await?;
        let p = self.user(app, user).await?;
        if p.suspended {
            return Err(GimCode::UserSuspended.into());
        }
        Ok(p)
    }

    /// 1020 when `receiver` has blocked `sender`.
    pub async fn require_not_blocked(
        &self,
        app: AppId,
        receiver: UserId,
        sender: UserId,
    ) -> Result<()> {
        if receiver != sender && self.user(app, receiver).await?.blocked.contains(&sender.0) {
            return Err(GimCode::Blocked.into());
        }
        Ok(())
    }

    /// `user` blocks `other` (idempotent): 1006 for itself or over [`BLOCKS_MAX`], 1010 when
    /// `other` is not a user of the app.
    pub async fn block(&self, app: AppId, user: UserId, other: UserId) -> Result<()> {
        validate::id("user_id", other.0)?;
        if other == user {
            return Err(Error::bad_request("user_id", "a user cannot block itself"));
        }
        self.users.users_exist(app, "user_id", &[other.0]).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM user_block WHERE app_id = ? AND user_id = ?")
                .bind(app.0)
                .bind(user.0)
                .fetch_one(&self.pool)
                .await?;
        if n >= BLOCKS_MAX {
            return Err(Error::bad_request(
                "user_id",
                format!("at most {BLOCKS_MAX} blocked users"),
            ));
        }
        sqlx::query(
            "INSERT IGNORE INTO user_block (app_id, user_id, blocked_user_id) VALUES (?, ?, ?)",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(other.0)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        Ok(())
    }

    /// Lifts a block (idempotent).
    pub async fn unblock(&self, app: AppId, user: UserId, other: UserId) -> Result<()> {
        validate::id("user_id", other.0)?;
        sqlx::query(
            "DELETE FROM user_block WHERE app_id = ? AND user_id = ? AND blocked_user_id = ?",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(other.0)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        Ok(())
    }

    /// The users `user` has blocked, in id order.
    pub async fn blocked(&self, app: AppId, user: UserId) -> Result<Vec<i64>> {
        let mut v: Vec<i64> = self
            .user(app, user)
            .await?
            .blocked
            .iter()
            .copied()
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Suspends an app's clients (or lifts it); suspending closes their live connections on
    /// every conn node. Returns the connections closed. 1002 for an unknown app.
    pub async fn set_app_suspended(&self, app: AppId, suspended: bool) -> Result<u32> {
        self.apps.app(app).await?;
        sqlx::query("UPDATE app SET suspended = ? WHERE app_id = ?")
            .bind(suspended as i8)
            .bind(app.0)
            .execute(&self.pool)
            .await?;
        self.apps.drop_app(app);
        inval::publish_change(&self.redis, Changed::App(app));
        tracing::info!(%app, suspended, "app suspension changed");
        if !suspended {
            return Ok(0);
        }
        Ok(self.close(app, UserId(0), "app suspended").await)
    }

    /// Suspends a user (or lifts it); suspending closes its live connections on every conn node.
    /// Returns the connections closed.
    pub async fn set_user_suspended(
        &self,
        app: AppId,
        user: UserId,
        suspended: bool,
    ) -> Result<u32> {
        validate::id("user_id", user.0)?;
        self.apps.app(app).await?;
        sqlx::query(
            "INSERT INTO user_policy (app_id, user_id, device_id, suspended) VALUES (?, ?, 0, ?) \
             ON DUPLICATE KEY UPDATE suspended = VALUES(suspended)",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(suspended as i8)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        tracing::info!(%app, %user, suspended, "user suspension changed");
        if !suspended {
            return Ok(0);
        }
        Ok(self.close(app, user, "user suspended").await)
    }

    /// Closes the app's (user 0) or one user's connections on every node now, and once more a
    /// second later: a sign-in that passed its checks on another logic process just before the
    /// change reached it may complete after the first sweep. A suspended app or user has no
    /// legitimate connection, so the second sweep closes nothing it should keep.
    async fn close(&self, app: AppId, user: UserId, reason: &str) -> u32 {
        let req = CloseConnsReq {
            app_id: app.0,
            user_id: user.0,
            device_id: 0,
            reason: reason.into(),
        };
        let closed = match self.nodes.close_everywhere(req.clone()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e.chain(), %app, %user, "close on suspension failed");
                0
            }
        };
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = nodes.close_everywhere(req).await;
            })
            .await;
        closed
    }

    fn changed_user(&self, app: AppId, user: UserId) {
        self.cache.remove(&(app, user));
        inval::publish_change(&self.redis, Changed::User(app, user));
    }

    /// A user's rules changed in another process.
    pub fn drop_user(&self, app: AppId, user: UserId) {
        self.cache.remove(&(app, user));
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all(&self) {
        self.cache.retain(|_| false);
    }
}

/// The rules of many users in one text query ([`lit`]), or one query per user when that fails
/// (so each caller gets its own error).
async fn load(pool: MySqlPool, keys: Vec<(AppId, UserId)>) -> Vec<Result<Arc<UserPolicy>>> {
    if keys.len() > 1
        && let Ok(v) = load_many(&pool, &keys).await
    {
        return v.into_iter().map(Ok).collect();
    }
    let each = keys.iter().map(|k| {
        let pool = &pool;
        async move { Ok(load_many(pool, std::slice::from_ref(k)).await?.remove(0)) }
    });
    futures::future::join_all(each).await
}

/// Each row is (app, user, kind, value): kind 0 the user's suspension, kind 1 one blocked user.
async fn load_many(pool: &MySqlPool, keys: &[(AppId, UserId)]) -> Result<Vec<Arc<UserPolicy>>> {
    use std::fmt::Write as _;
    let mut cond = String::new();
    lit::join(&mut cond, keys, " OR ", |s, (a, u)| {
        let _ = write!(s, "(app_id = {} AND user_id = {})", a.0, u.0);
    });
    let sql = format!(
        "SELECT app_id, user_id, 0, CAST(suspended AS SIGNED) FROM user_policy \
         WHERE device_id = 0 AND ({cond}) \
         UNION ALL SELECT app_id, user_id, 1, blocked_user_id FROM user_block WHERE {cond}"
    );
    let rows = lit::rows::<4>(pool, sql).await?;
    let mut by: std::collections::HashMap<(i64, i64), UserPolicy> = Default::default();
    for [a, u, kind, v] in rows {
        let p = by.entry((a, u)).or_default();
        match kind {
            0 => p.suspended = v != 0,
            _ => {
                p.blocked.insert(v);
            }
        }
    }
    Ok(keys
        .iter()
        .map(|(a, u)| Arc::new(by.remove(&(a.0, u.0)).unwrap_or_default()))
        .collect())
}
